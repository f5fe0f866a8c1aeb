#include "sim/dataset.h"

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/thread_pool.h"
#include "evla/error.h"
#include "io/safetensors.h"
#include "sim/env.h"

namespace evla::sim {

void task_targets(const Scene& s, const Goal& g, float* out) {
  Vec3 object, dest;
  if (g.object >= 0) {
    object = s.objects[size_t(g.object)].pos;
    dest = object;
    if (g.task == Task::MoveNear) dest = s.objects[size_t(g.anchor)].pos;
    if (g.task == Task::PutInDrawer)
      dest = {s.drawer_x(g.drawer), geom::kCabFront - s.opening[size_t(g.drawer)] / 2, geom::kTrayFloor};
  } else {
    object = dest = s.handle_center(g.drawer);
  }
  const float v[kTargetDim] = {object.x, object.y, object.z, dest.x, dest.y, dest.z};
  std::copy(v, v + kTargetDim, out);
}

void scene_objects(const Scene& s, float* out) {
  if (s.objects.size() > size_t(kMaxObjects))
    throw Error("sim::scene_objects: " + std::to_string(s.objects.size()) + " objects, more than kMaxObjects = " +
                std::to_string(kMaxObjects));
  std::fill(out, out + kMaxObjects * 4, 0.0f);
  for (size_t i = 0; i < s.objects.size(); ++i) {
    const Vec3& p = s.objects[i].pos;
    const float row[4] = {p.x, p.y, p.z, 1.0f};
    std::copy(row, row + 4, out + i * 4);
  }
}

void image_points(const Projection& view, const float* xyz, int rows, int stride, bool padded, float* out) {
  for (int i = 0; i < rows; ++i) {
    const float* p = xyz + size_t(i) * stride;
    float x = 0, y = 0;
    if (!(padded && p[3] == 0) && !view.project({p[0], p[1], p[2]}, &x, &y))
      throw Error("sim::image_points: a point lies behind the camera");
    out[2 * i] = x, out[2 * i + 1] = y;
  }
}

void record_frame(Demo& d, const Env& env, const Image& img) {
  d.images.insert(d.images.end(), img.rgb.begin(), img.rgb.end());
  const std::vector<float> state = env.state();
  d.states.insert(d.states.end(), state.begin(), state.end());
  float tg[kTargetDim];
  task_targets(env.scene(), env.episode().goal, tg);
  d.targets.insert(d.targets.end(), tg, tg + kTargetDim);
  float objs[kMaxObjects * 4];
  scene_objects(env.scene(), objs);
  d.objects.insert(d.objects.end(), objs, objs + kMaxObjects * 4);
  const Projection view(img.width, img.height, env.episode().look.camera);
  float tg_px[4], objs_px[kMaxObjects * 2];
  image_points(view, tg, 2, 3, false, tg_px);
  image_points(view, objs, kMaxObjects, 4, true, objs_px);
  d.target_image.insert(d.target_image.end(), tg_px, tg_px + 4);
  d.objects_image.insert(d.objects_image.end(), objs_px, objs_px + kMaxObjects * 2);
}

Demo record_demo(const EpisodeSpec& spec, const DemoOptions& options) {
  Env env;
  env.reset(spec);
  // The noise seed depends on the whole spec, so tasks sharing a seed differ.
  Expert expert(env.episode(), options.noise, spec.seed * 31 + uint64_t(spec.task) * 7 + uint64_t(spec.split));
  Demo d;
  d.spec = spec;
  d.instruction = env.instruction();
  while (!env.done()) {
    record_frame(d, env, env.render(options.image_size, options.image_size));
    float a[kActionDim];
    expert.act(env.scene(), a);
    d.actions.insert(d.actions.end(), a, a + kActionDim);
    env.step(a);
  }
  d.steps = env.steps();
  d.success = env.success();
  return d;
}

std::vector<float> action_chunks(const Demo& demo, int chunk) {
  if (chunk < 1) throw Error("sim::action_chunks: chunk must be >= 1, got " + std::to_string(chunk));
  const int n = demo.steps;
  float pad[kActionDim] = {0, 0, 0, n > 0 ? demo.actions[size_t(n - 1) * kActionDim + 3] : 0.0f};
  std::vector<float> out(size_t(n) * chunk * kActionDim);
  for (int t = 0; t < n; ++t)
    for (int c = 0; c < chunk; ++c) {
      const float* src = t + c < n ? &demo.actions[size_t(t + c) * kActionDim] : pad;
      std::copy(src, src + kActionDim, &out[(size_t(t) * chunk + c) * kActionDim]);
    }
  return out;
}

std::vector<float> expert_chunk(const Episode& ep, const Scene& scene, int chunk) {
  if (chunk < 1) throw Error("sim::expert_chunk: chunk must be >= 1, got " + std::to_string(chunk));
  Expert expert = Expert::take_over(ep, scene);
  Scene s = scene;
  std::vector<float> out(size_t(chunk) * kActionDim);
  bool done = is_success(s, ep.goal);
  float last_gripper = s.gripper.closure >= 0.5f ? 1.0f : 0.0f;
  for (int c = 0; c < chunk; ++c) {
    float* a = &out[size_t(c) * kActionDim];
    if (done) {
      a[0] = a[1] = a[2] = 0, a[3] = last_gripper;
      continue;
    }
    expert.act(s, a);
    step(s, a);
    last_gripper = a[3];
    done = is_success(s, ep.goal);
  }
  return out;
}

void write_shard(const std::string& path, const std::vector<Demo>& demos, int64_t first_index,
                 const DemoOptions& options) {
  const int64_t size = options.image_size, chunk = options.chunk;
  std::vector<uint8_t> images;
  std::vector<float> states, actions, targets, objects, target_image, objects_image;
  std::vector<int32_t> episode;
  nlohmann::json meta = nlohmann::json::array();
  for (size_t i = 0; i < demos.size(); ++i) {
    const Demo& d = demos[i];
    if (d.images.size() != size_t(d.steps) * size * size * 3)
      throw Error("sim::write_shard: " + path + ": demo " + std::to_string(i) + " was recorded at another image size");
    const size_t steps = size_t(d.steps);
    if (d.states.size() != steps * kStateDim || d.actions.size() != steps * kActionDim ||
        d.targets.size() != steps * kTargetDim || d.objects.size() != steps * kMaxObjects * 4 ||
        d.target_image.size() != steps * 4 || d.objects_image.size() != steps * kMaxObjects * 2 ||
        (!d.chunks.empty() && d.chunks.size() != steps * size_t(chunk) * kActionDim))
      throw Error("sim::write_shard: " + path + ": demo " + std::to_string(i) +
                  " has per-frame arrays that do not match its " + std::to_string(d.steps) + " steps");
    const int64_t index = first_index + int64_t(i);
    meta.push_back({{"index", index},
                    {"first_frame", episode.size()},
                    {"frames", d.steps},
                    {"task", task_name(d.spec.task)},
                    {"split", split_name(d.spec.split)},
                    {"seed", d.spec.seed},
                    {"camera_jitter", d.spec.camera_jitter},
                    {"instruction", d.instruction},
                    {"success", d.success},
                    {"labels", d.chunks.empty() ? "executed" : "expert_takeover"}});
    images.insert(images.end(), d.images.begin(), d.images.end());
    states.insert(states.end(), d.states.begin(), d.states.end());
    targets.insert(targets.end(), d.targets.begin(), d.targets.end());
    objects.insert(objects.end(), d.objects.begin(), d.objects.end());
    target_image.insert(target_image.end(), d.target_image.begin(), d.target_image.end());
    objects_image.insert(objects_image.end(), d.objects_image.begin(), d.objects_image.end());
    std::vector<float> c = d.chunks.empty() ? action_chunks(d, int(chunk)) : d.chunks;
    actions.insert(actions.end(), c.begin(), c.end());
    episode.insert(episode.end(), size_t(d.steps), int32_t(index));
  }
  const int64_t n = int64_t(episode.size());
  io::SafetensorsWriter w;
  w.add("image", io::DType::U8, {n, size, size, 3}, images.data(), images.size());
  w.add_f32("state", {n, kStateDim}, states.data());
  w.add_f32("action", {n, chunk, kActionDim}, actions.data());
  w.add_f32("target", {n, kTargetDim}, targets.data());
  w.add_f32("objects", {n, kMaxObjects, 4}, objects.data());
  w.add_f32("target_image", {n, 4}, target_image.data());
  w.add_f32("objects_image", {n, kMaxObjects, 2}, objects_image.data());
  w.add("episode", io::DType::I32, {n}, episode.data(), episode.size() * sizeof(int32_t));
  const ExpertNoise& z = options.noise;
  nlohmann::json info = {
      {"format", "evla-sim-demos/1"},
      {"image_size", size},
      {"chunk", chunk},
      {"action_dim", kActionDim},
      {"action", "dx, dy, dz (table units, each clipped to +-max_delta), gripper (0 open .. 1 closed)"},
      {"max_delta", geom::kMaxDelta},
      {"state_dim", kStateDim},
      {"state", "gripper x, y, z (table units), finger opening (1 open .. 0 closed)"},
      {"target_dim", kTargetDim},
      {"target", "object x, y, z; destination x, y, z (table units; privileged, for auxiliary losses)"},
      {"max_objects", kMaxObjects},
      {"objects", "per object in scene order: x, y, z, 1; zero rows pad to max_objects (privileged)"},
      {"target_image", "target's object x, y and destination x, y in pixels of the frame (privileged)"},
      {"objects_image", "each object's x, y in pixels of the frame; padding rows 0 (privileged)"},
      {"noise", {{"jitter", z.jitter}, {"slow", z.slow}, {"perturb", z.perturb}, {"action", z.action}}},
  };
  w.set_metadata("info", info.dump());
  w.set_metadata("episodes", meta.dump());
  w.write(path);
}

DatasetReport write_dataset(const std::string& dir, const DatasetOptions& options,
                            const std::function<void(int, int)>& progress, const DemoRecorder& record) {
  if (options.tasks.empty()) throw Error("sim::write_dataset: no tasks given");
  if (options.episodes < 0 || options.episodes_per_shard < 1 || options.threads < 1)
    throw Error("sim::write_dataset: episodes, episodes_per_shard and threads must be positive");
  if (options.demo.chunk < 1 || options.demo.image_size < 8 || options.demo.image_size > 4096)
    throw Error("sim::write_dataset: chunk must be >= 1 and image_size in [8, 4096]");
  // A bad jitter is refused before the directory is made (make_episode checks it).
  if (options.camera_jitter != 0)
    make_episode({options.split, options.tasks.front(), options.seed, kAllVariantFactors, options.camera_jitter});
  std::filesystem::create_directories(dir);
  ThreadPool pool(options.threads);
  DatasetReport report;
  std::vector<Demo> pending;  // kept demos not yet written
  auto flush = [&] {
    char name[32];
    std::snprintf(name, sizeof name, "shard-%05d.safetensors", int(report.shards.size()));
    std::string path = (std::filesystem::path(dir) / name).string();
    write_shard(path, pending, report.episodes, options.demo);
    for (const Demo& d : pending) report.frames += d.steps;
    report.episodes += int(pending.size());
    report.shards.push_back(path);
    pending.clear();
  };
  const int n_tasks = int(options.tasks.size());
  // Batches small enough for frequent progress, large enough to keep the threads busy.
  const int batch = 8 * options.threads;
  for (int begin = 0; begin < options.episodes; begin += batch) {
    const int end = std::min(options.episodes, begin + batch);
    std::vector<Demo> demos(size_t(end - begin));
    std::vector<std::string> errors(size_t(end - begin));  // the pool does not carry exceptions back
    pool.run(end - begin, [&](int i) {
      const int e = begin + i;
      EpisodeSpec spec{options.split, options.tasks[size_t(e % n_tasks)], options.seed + uint64_t(e)};
      spec.camera_jitter = options.camera_jitter;
      try {
        demos[size_t(i)] = record ? record(spec, i % pool.size()) : record_demo(spec, options.demo);
      } catch (const std::exception& ex) {
        errors[size_t(i)] = ex.what();
      }
    });
    for (size_t i = 0; i < errors.size(); ++i)
      if (!errors[i].empty())
        throw Error("sim::write_dataset: episode " + std::to_string(begin + int(i)) + ": " + errors[i]);
    for (Demo& d : demos) {
      if (!d.success) ++report.failed;
      if (!d.success && !record && !options.keep_failed) continue;
      pending.push_back(std::move(d));
      if (int(pending.size()) == options.episodes_per_shard) flush();
    }
    if (progress) progress(end, options.episodes);
  }
  if (!pending.empty()) flush();
  return report;
}

}  // namespace evla::sim
