// Loads a model through the installed public API and prints one action row.
#include <evla/evla.h>

#include <cstdio>

int main(int argc, char** argv) {
  if (argc != 3) return 2;
  try {
    auto model = evla::Model::load(argv[1]);
    evla::Policy policy(model, evla::PolicyOptions{1});
    evla::Observation obs;
    obs.images.push_back(evla::load_image(argv[2]));
    obs.instruction = "pick up the red block";
    const evla::ActionChunk chunk = policy.infer(obs);
    std::printf("%d x %d actions, first %.6f\n", chunk.horizon, chunk.dim, chunk.actions.at(0));
  } catch (const evla::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
