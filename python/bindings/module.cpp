// `import evla`: the policy from Python, with the observation keys and checks
// of `evla serve` (see docs/serving.md).
//
//   policy = evla.Policy("models/evla-tiny-random", plan=None, threads=None)
//   out = policy.infer({"observation/image": img_uint8_hwc, "prompt": "pick up the can"})
//   out["actions"]    # float32 [horizon, dim]
//   out["cognition"]  # float32 [hidden_size], the feature that conditioned the action head
//   policy.infer(obs, lm_layer_input=11)["lm_layer_input"]  # float32 [tokens, hidden_size]
//   # checking against another implementation (e.g. CogACT's PyTorch code):
//   out = policy.infer(obs, noise=n, step_noise=z, token_ids=ids, unnorm_key="bridge_orig",
//                      intermediates=True)
//   out["intermediates"]["vision.0.features"]  # float32, flat; names in infer.__doc__
//
// infer() releases the GIL while the policy runs; one Policy object serves one
// call at a time (others wait on its lock), so use one per thread for parallelism.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <mutex>
#include <optional>
#include <vector>

#include "evla/evla.h"
#include "serve/protocol.h"
#ifdef EVLA_PY_SIM
#include "sim/env.h"
#endif

namespace py = pybind11;
using namespace evla;
using serve::ProtocolError;

namespace {

// obs["a/b"], else obs["a"]["b"] (as the server's lookup).
py::object lookup(const py::dict& obs, const std::string& key) {
  if (obs.contains(key)) return obs[py::str(key)];
  for (size_t p = key.find('/'); p != std::string::npos; p = key.find('/', p + 1)) {
    std::string head = key.substr(0, p);
    if (obs.contains(head) && py::isinstance<py::dict>(obs[py::str(head)])) {
      py::object v = lookup(obs[py::str(head)].cast<py::dict>(), key.substr(p + 1));
      if (!v.is_none()) return v;
    }
  }
  return py::none();
}

py::object need(const py::dict& obs, const std::string& key) {
  py::object v = lookup(obs, key);
  if (v.is_none()) throw ProtocolError("missing key '" + key + "'");
  return v;
}

// The checks run on a C-contiguous view; `keep` owns it.
serve::ArrayView view(const py::array& a, py::object* keep) {
  *keep = py::module_::import("numpy").attr("ascontiguousarray")(a);
  auto c = keep->cast<py::array>();
  serve::ArrayView v;
  v.dtype = py::str(c.dtype().attr("str")).cast<std::string>();
  for (py::ssize_t i = 0; i < c.ndim(); ++i) v.shape.push_back(int64_t(c.shape(i)));
  v.data = static_cast<const uint8_t*>(c.data());
  v.size = size_t(c.nbytes());
  return v;
}

py::dict metadata_dict(const serve::Metadata& m) {
  py::dict d, plan;
  plan["name"] = m.plan_name;
  plan["dense"] = m.plan_dense;
  plan["summary"] = m.plan_summary;
  d["server"] = "evla";
  d["model"] = m.model;
  d["family"] = m.family;
  d["action_horizon"] = m.action_horizon;
  d["action_steps"] = m.action_steps;
  d["action_dim"] = m.action_dim;
  d["image_keys"] = m.image_keys;
  d["image_size"] = m.image_size;
  d["state_key"] = m.state_key;
  d["state_dim"] = m.state_dim;
  d["prompt_key"] = m.prompt_key;
  d["seed_key"] = m.seed_key;
  d["plan"] = plan;
  return d;
}

py::array_t<uint8_t> image_to_numpy(const Image& img) {
  py::array_t<uint8_t> a({img.height, img.width, 3});
  std::memcpy(a.mutable_data(), img.rgb.data(), img.rgb.size());
  return a;
}

// What one inference shows beyond its outputs: the input of one LM layer (every
// token's residual stream; what training the LM's top layers alone starts from,
// python/train/finetune_head.py), the visual tokens a plan's selection kept,
// and, when asked, every intermediate the parity fixtures hold.
struct InferCapture : Observer {
  int layer;  // -1: no layer input wanted
  int tokens = 0, width = 0;
  std::vector<float> x;
  std::optional<std::vector<int32_t>> kept;
  std::optional<Recorder> record;
  InferCapture(int l, bool intermediates) : layer(l) {
    if (intermediates) record.emplace();
  }
  bool wants(Stage s) const override {
    return (s == Stage::LlmHidden && layer >= 0) || s == Stage::LlmKeptTokens || (record && record->wants(s));
  }
  void on(const StageOutput& o) override {
    if (o.stage == Stage::LlmHidden && o.index == layer) {
      x.assign(o.data, o.data + size_t(o.rows) * o.cols);
      tokens = o.rows;
      width = o.cols;
    }
    if (o.stage == Stage::LlmKeptTokens) kept.emplace(o.ids, o.ids + o.cols);
    if (record && record->wants(o.stage)) record->on(o);
  }
};

// Any numeric array (or sequence) as float32 values, C order.
std::vector<float> float_values(const py::array& a) {
  auto c = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(a);
  if (!c) throw py::value_error("expected a numeric array");
  return std::vector<float>(c.data(), c.data() + c.size());
}

class PyPolicy {
 public:
  PyPolicy(const std::string& model_dir, std::optional<std::string> plan, std::optional<int> threads,
           std::optional<std::vector<std::string>> image_keys, std::optional<std::string> state_key,
           std::optional<std::string> prompt_key) {
    serve::ObsKeys keys;
    if (image_keys) keys.images = *image_keys;
    if (state_key) keys.state = *state_key;
    if (prompt_key) keys.prompt = *prompt_key;
    py::gil_scoped_release nogil;  // loading reads the weights from disk
    model_ = Model::load(model_dir);
    Plan p = plan ? Plan::load(*plan) : Plan{};
    policy_ = std::make_unique<Policy>(model_, PolicyOptions{threads.value_or(0)});
    policy_->set_plan(p);
    meta_ = serve::make_metadata(*model_, p, keys, 1);
  }

  py::dict infer(const py::dict& obs, std::optional<int> lm_layer_input, std::optional<py::array> noise,
                 std::optional<py::array> step_noise, std::optional<std::vector<int>> token_ids,
                 std::optional<std::string> unnorm_key, bool intermediates) {
    const int n_layers = model_->llm_layers();
    if (lm_layer_input && (*lm_layer_input < 0 || *lm_layer_input >= n_layers))
      throw py::value_error("lm_layer_input " + std::to_string(*lm_layer_input) + ": the LM has layers 0.." +
                            std::to_string(n_layers - 1));
    // After a token selection the rows are the kept tokens, whose positions are not returned.
    const TokenPlan& tokens = policy_->plan().tokens;
    if (lm_layer_input && tokens.enabled && *lm_layer_input >= tokens.after_layer)
      throw py::value_error("lm_layer_input " + std::to_string(*lm_layer_input) +
                            ": the plan selects tokens from layer " + std::to_string(tokens.after_layer) +
                            " on; ask for an earlier layer or use the policy without a plan");
    Observation o;
    for (const auto& key : meta_.image_keys) {
      py::object v = need(obs, key);
      if (!py::isinstance<py::array>(v)) throw ProtocolError(key + ": expected a numpy uint8 array (H×W×3)");
      py::object keep;
      o.images.push_back(serve::image_from_array(key, view(v.cast<py::array>(), &keep)));
    }
    if (meta_.state_dim > 0) {
      py::object keep;
      py::array a = py::module_::import("numpy").attr("asarray")(need(obs, meta_.state_key));
      o.state = serve::state_from_array(meta_.state_key, view(a, &keep), meta_.state_dim);
    }
    py::object prompt = need(obs, meta_.prompt_key);
    if (py::isinstance<py::bytes>(prompt)) o.instruction = prompt.cast<std::string>();
    else if (py::isinstance<py::str>(prompt)) o.instruction = prompt.cast<std::string>();
    else throw ProtocolError(meta_.prompt_key + ": expected a string");
    py::object seed = lookup(obs, meta_.seed_key);
    if (!seed.is_none()) {
      py::int_ s = py::reinterpret_steal<py::int_>(PyNumber_Index(seed.ptr()));
      if (!s) throw py::error_already_set();
      if (s < py::int_(0)) throw ProtocolError(meta_.seed_key + ": expected a non-negative integer");
      o.seed = s.cast<uint64_t>();
    }

    if (noise) o.noise = float_values(*noise);
    if (step_noise) o.step_noise = float_values(*step_noise);
    if (token_ids) o.token_ids = *token_ids;
    if (unnorm_key) o.unnorm_key = *unnorm_key;

    ActionChunk chunk;
    std::vector<float> c;  // copied under the lock: the next call overwrites the policy's
    InferCapture capture(lm_layer_input.value_or(-1), intermediates);
    {
      py::gil_scoped_release nogil;
      std::lock_guard lock(mu_);  // after releasing the GIL, so a waiter never blocks Python
      chunk = policy_->infer(o, &capture);
      c = policy_->cognition();
    }
    py::array_t<float> actions({chunk.horizon, chunk.dim});
    std::memcpy(actions.mutable_data(), chunk.actions.data(), chunk.actions.size() * sizeof(float));
    const Timing& t = chunk.timing;
    py::dict timing;
    timing["infer_ms"] = t.total_ms;
    timing["vision_ms"] = t.vision_ms;
    timing["projector_ms"] = t.projector_ms;
    timing["llm_ms"] = t.llm_ms;
    timing["action_head_ms"] = t.action_head_ms;
    timing["total_ms"] = t.total_ms;
    py::array_t<float> cognition(py::ssize_t(c.size()));
    if (!c.empty())  // a SmolVLA model has no cognition feature (memcpy from null is undefined)
      std::memcpy(cognition.mutable_data(), c.data(), c.size() * sizeof(float));
    py::dict out;
    out["actions"] = actions;
    out["cognition"] = cognition;
    out["policy_timing"] = timing;
    if (lm_layer_input) {
      if (capture.tokens == 0)  // the plan dropped the layer
        throw py::value_error("lm_layer_input " + std::to_string(*lm_layer_input) + ": the layer did not run");
      py::array_t<float> h({capture.tokens, capture.width});
      std::memcpy(h.mutable_data(), capture.x.data(), capture.x.size() * sizeof(float));
      out["lm_layer_input"] = h;
    }
    if (intermediates) {
      py::dict inter;
      for (const auto& [name, v] : capture.record->tensors) {
        py::array_t<float> a(py::ssize_t(v.size()));
        std::memcpy(a.mutable_data(), v.data(), v.size() * sizeof(float));
        inter[py::str(name)] = a;
      }
      const std::vector<int>& ids = capture.record->prompt_ids;
      py::array_t<int32_t> t(py::ssize_t(ids.size()));
      for (size_t i = 0; i < ids.size(); ++i) t.mutable_data()[i] = int32_t(ids[i]);
      inter["token_ids"] = t;
      out["intermediates"] = inter;
    }
    if (capture.kept) {
      py::array_t<int32_t> k(py::ssize_t(capture.kept->size()));
      std::memcpy(k.mutable_data(), capture.kept->data(), capture.kept->size() * sizeof(int32_t));
      out["kept_visual_tokens"] = k;
    }
    return out;
  }

  py::dict metadata() const { return metadata_dict(meta_); }

 private:
  std::shared_ptr<const Model> model_;
  std::unique_ptr<Policy> policy_;
  serve::Metadata meta_;
  std::mutex mu_;
};

#ifdef EVLA_PY_SIM
sim::EpisodeSpec spec_of(const std::string& split, const std::string& task, uint64_t seed) {
  return sim::EpisodeSpec{sim::parse_split(split), sim::parse_task(task), seed};
}

void bind_sim(py::module_& m) {
  auto s = m.def_submodule("sim", "The built-in tabletop simulator (evla::sim::Env)");
  s.attr("ACTION_DIM") = sim::kActionDim;
  s.attr("STATE_DIM") = sim::kStateDim;
  s.def("tasks", [] {
    std::vector<std::string> names;
    for (auto t : sim::all_tasks()) names.push_back(sim::task_name(t));
    return names;
  });
  py::class_<sim::Env>(s, "Env")
      .def(py::init([](const std::string& split, const std::string& task, uint64_t seed) {
             auto env = std::make_unique<sim::Env>();
             env->reset(spec_of(split, task, seed));
             return env;
           }),
           py::arg("split") = "matching", py::arg("task") = "pick", py::arg("seed") = 0)
      .def("reset", [](sim::Env& e, const std::string& split, const std::string& task,
                       uint64_t seed) { e.reset(spec_of(split, task, seed)); },
           py::arg("split") = "matching", py::arg("task") = "pick", py::arg("seed") = 0)
      .def("render", [](const sim::Env& e, int width, int height) { return image_to_numpy(e.render(width, height)); },
           py::arg("width") = 64, py::arg("height") = 64, "uint8 [height, width, 3]")
      .def_property_readonly("instruction", &sim::Env::instruction)
      .def("state", [](const sim::Env& e) {
        auto v = e.state();
        return py::array_t<float>(py::ssize_t(v.size()), v.data());
      })
      .def("step", [](sim::Env& e, py::array_t<float, py::array::c_style | py::array::forcecast> a) {
        if (a.size() != sim::kActionDim)
          throw ProtocolError("step: expected " + std::to_string(sim::kActionDim) + " action values");
        e.step(a.data());
      }, py::arg("action"))
      .def_property_readonly("success", &sim::Env::success)
      .def_property_readonly("done", &sim::Env::done)
      .def_property_readonly("steps", &sim::Env::steps)
      .def_property_readonly("max_steps", &sim::Env::max_steps);
}
#endif

}  // namespace

PYBIND11_MODULE(evla, m) {
  m.doc() = "evla: diffusion Vision-Language-Action policies on CPU";
  m.attr("__version__") = "0.1.0";
  py::register_exception<ProtocolError>(m, "ObservationError", PyExc_ValueError);
  py::register_exception<Error>(m, "Error", PyExc_RuntimeError);

  py::class_<PyPolicy>(m, "Policy")
      .def(py::init<const std::string&, std::optional<std::string>, std::optional<int>,
                    std::optional<std::vector<std::string>>, std::optional<std::string>,
                    std::optional<std::string>>(),
           py::arg("model_dir"), py::arg("plan") = py::none(), py::arg("threads") = py::none(),
           py::arg("image_keys") = py::none(), py::arg("state_key") = py::none(),
           py::arg("prompt_key") = py::none())
      .def("infer", &PyPolicy::infer, py::arg("obs"), py::arg("lm_layer_input") = py::none(), py::kw_only(),
           py::arg("noise") = py::none(), py::arg("step_noise") = py::none(), py::arg("token_ids") = py::none(),
           py::arg("unnorm_key") = py::none(), py::arg("intermediates") = false,
           "obs: dict with the server's keys (numpy uint8 H×W×3 images, state, prompt, optional seed).\n"
           "Returns {'actions': float32 [horizon, dim], 'cognition': float32 [hidden_size] (the feature that\n"
           "conditioned the action head), 'policy_timing': {...}}; with lm_layer_input=L also\n"
           "'lm_layer_input': float32 [tokens, hidden_size], the input of LM layer L (every token); under a\n"
           "plan that selects visual tokens also 'kept_visual_tokens': int32 [kept], the kept tokens' indices\n"
           "among the visual tokens (patch order, image after image).\n"
           "Verification hooks (keyword only): noise= float32 [horizon, dim] initial diffusion noise instead of\n"
           "the seed's; step_noise= [steps, horizon, dim] noise DDPM adds at each step; token_ids= the prompt's\n"
           "ids (BOS ... cognition token) instead of tokenizing; unnorm_key= the dataset whose statistics\n"
           "un-normalise the actions; intermediates=True adds 'intermediates': {name: float32 flat array} with\n"
           "'vision.<i>.features' [patches, width], 'projector.out', 'llm.hidden.<l>', 'llm.cognition',\n"
           "'dit.eps.<s>', 'dit.x.<s>', 'actions.sample' (before clipping), 'actions.normalized', 'actions',\n"
           "and 'token_ids' (int32).")
      .def_property_readonly("metadata", &PyPolicy::metadata);

  m.def("load_image", [](const std::string& path) { return image_to_numpy(load_image(path)); },
        "PNG or JPEG file -> uint8 [H, W, 3]");
#ifdef EVLA_PY_SIM
  bind_sim(m);
#endif
}
