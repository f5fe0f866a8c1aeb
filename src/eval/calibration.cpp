#include "eval/calibration.h"

#include <algorithm>
#include <cstring>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/json_reader.h"
#include "io/safetensors.h"
#include "sim/env.h"
#include "sim/expert.h"

namespace evla::eval {

std::vector<Observation> calibration_from_sim(const CalibrationOptions& o) {
  if (o.every < 1) throw Error("calibration: every must be ≥ 1");
  std::vector<Observation> out;
  for (int i = 0; i < o.episodes; ++i) {
    const sim::EpisodeSpec spec{o.split, o.tasks[size_t(i) % o.tasks.size()], o.seed + uint64_t(i)};
    sim::Env env;
    env.reset(spec);
    sim::Expert expert(env.episode(), sim::ExpertNoise::level(1), spec.seed);
    float action[sim::kActionDim];
    while (!env.done()) {
      if (env.steps() % o.every == 0) {
        Observation obs;
        obs.images.push_back(env.render(o.image_size, o.image_size));
        obs.instruction = env.instruction();
        if (o.with_state) obs.state = env.state();
        obs.seed = uint64_t(out.size());
        out.push_back(std::move(obs));
      }
      expert.act(env.scene(), action);
      env.step(action);
    }
  }
  return out;
}

std::vector<Observation> calibration_from_demos(const std::string& dir, int max_samples, int every,
                                                bool with_state) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(dir)) throw Error(dir + ": not a demonstration directory");
  std::vector<std::string> shards;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".safetensors") shards.push_back(e.path().string());
  std::sort(shards.begin(), shards.end());
  if (shards.empty()) throw Error(dir + ": no .safetensors shards");
  std::vector<Observation> out;
  int64_t frame_counter = 0;
  for (const std::string& path : shards) {
    auto f = io::SafetensorsFile::open(path);
    const io::TensorInfo* img = f->find("image");
    const io::TensorInfo* st = f->find("state");
    if (!img || img->dtype != io::DType::U8 || img->shape.size() != 4 || img->shape[3] != 3)
      throw Error(path + ": tensor 'image' must be U8 [N, H, W, 3]");
    if (!f->metadata().count("episodes")) throw Error(path + ": metadata lacks 'episodes'");
    const nlohmann::json eps = parse_json(f->metadata().at("episodes"), path + ": metadata 'episodes'");
    const int64_t N = img->shape[0], H = img->shape[1], W = img->shape[2];
    std::vector<float> states;
    if (with_state) {
      if (!st) throw Error(path + ": no 'state' tensor");
      states = io::to_f32(*st);
    }
    for (const auto& ep : eps) {
      const int64_t first = ep.at("first_frame").get<int64_t>(), n = ep.at("frames").get<int64_t>();
      if (first < 0 || first + n > N) throw Error(path + ": episode frames outside the shard");
      for (int64_t t = first; t < first + n; ++t, ++frame_counter) {
        if (frame_counter % every != 0) continue;
        Observation obs;
        Image im(static_cast<int>(W), static_cast<int>(H));
        std::memcpy(im.rgb.data(), img->data + size_t(t) * H * W * 3, im.rgb.size());
        obs.images.push_back(std::move(im));
        obs.instruction = ep.at("instruction").get<std::string>();
        if (with_state) {
          const size_t sd = states.size() / size_t(N);
          obs.state.assign(states.begin() + t * sd, states.begin() + (t + 1) * sd);
        }
        obs.seed = uint64_t(out.size());
        out.push_back(std::move(obs));
        if (int(out.size()) >= max_samples) return out;
      }
    }
  }
  return out;
}

}  // namespace evla::eval
