// A Llama decoder on its own, loaded from a Hugging Face style directory.
#include <algorithm>
#include <filesystem>

#include "core/json_reader.h"
#include "kernels/kernels.h"
#include "model/model_impl.h"

namespace evla {

struct LanguageModel::Impl {
  LlamaConfig cfg;
  std::unique_ptr<WeightStore> weights;
  std::unique_ptr<Llama> llm;
};

LanguageModel::~LanguageModel() = default;

std::shared_ptr<const LanguageModel> LanguageModel::load(const std::string& dir) {
  const std::string cfg_path = (std::filesystem::path(dir) / "config.json").string();
  if (!std::filesystem::exists(cfg_path)) throw Error(dir + ": no config.json");
  std::shared_ptr<LanguageModel> m(new LanguageModel());
  m->impl_ = std::make_unique<Impl>();
  m->impl_->cfg = parse_hf_llama_config(read_json_file(cfg_path), cfg_path);
  m->impl_->weights = std::make_unique<WeightStore>(io::TensorStore::open_dir(dir));
  m->impl_->llm = std::make_unique<Llama>(m->impl_->cfg, *m->impl_->weights, true);
  return m;
}

int LanguageModel::vocab_size() const { return impl_->cfg.vocab_size; }

LanguageModel::Output LanguageModel::forward(const std::vector<int>& ids, int threads) const {
  if (ids.empty()) throw Error("LanguageModel::forward: no tokens");
  const LlamaConfig& c = impl_->cfg;
  ThreadPool pool(threads > 0 ? threads : ThreadPool::default_threads());
  kernels::init_blas();
  const int T = int(ids.size()), D = c.hidden_size;
  Output out;
  out.tokens = T;
  out.hidden_size = D;
  out.vocab_size = c.vocab_size;

  struct Keep : Observer {  // every layer's input, then the last layer's output
    Output* o;
    bool wants(Stage stage) const override { return stage == Stage::LlmHidden; }
    void on(const StageOutput& h) override { o->hidden.emplace_back(h.data, h.data + size_t(h.rows) * h.cols); }
  } keep;
  keep.o = &out;

  std::vector<float> x(size_t(T) * D);
  impl_->llm->embed(ids.data(), T, x.data());
  std::vector<int> positions(T);
  for (int i = 0; i < T; ++i) positions[i] = i;
  LlamaScratch s;
  impl_->llm->forward(x, positions, SequenceLayout{}, impl_->llm->layers(), Schedule::dense_llm(c), s, pool, &keep);
  out.final_hidden.resize(size_t(T) * D);
  impl_->llm->final_norm(x.data(), T, out.final_hidden.data());
  out.logits.resize(size_t(T) * c.vocab_size);
  impl_->llm->logits(out.final_hidden.data(), T, out.logits.data(), pool);
  return out;
}

std::vector<int> LanguageModel::generate_greedy(const std::vector<int>& prompt, int n_new,
                                                int threads) const {
  // Re-runs the whole sequence per token: these are test-sized models and the
  // policy itself never generates, so no KV cache is kept.
  std::vector<int> ids = prompt;
  for (int i = 0; i < n_new; ++i) {
    Output o = forward(ids, threads);
    const float* last = o.logits.data() + size_t(o.tokens - 1) * o.vocab_size;
    ids.push_back(int(std::max_element(last, last + o.vocab_size) - last));
  }
  return ids;
}

}  // namespace evla
