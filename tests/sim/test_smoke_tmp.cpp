#include <gtest/gtest.h>
#include <cstdlib>
#include "sim/env.h"
#include "sim/render.h"
using namespace evla::sim;
// Debug contact sheet: tasks across, splits down.
static void blit(evla::Image& dst, const evla::Image& a, int f, int ox, int oy) {
  for (int y = 0; y < a.height * f; ++y) for (int x = 0; x < a.width * f; ++x)
    for (int c = 0; c < 3; ++c) dst.pixel(ox + x, oy + y)[c] = a.pixel(x / f, y / f)[c];
}
TEST(SimSmoke, Pngs) {
  int size = getenv("SIZE") ? atoi(getenv("SIZE")) : 64;
  int seed = getenv("SEED") ? atoi(getenv("SEED")) : 7;
  int f = 192 / size;
  evla::Image sheet(5 * 192, 2 * 192);
  for (int t = 0; t < kNumTasks; ++t) for (int sp = 0; sp < 2; ++sp) {
    Env env; env.reset({Split(sp), Task(t), uint64_t(seed)});
    Episode ep = env.episode();
    if (getenv("CAM")) { sscanf(getenv("CAM"), "%f,%f,%f,%f,%f", &ep.look.camera.eye.y, &ep.look.camera.eye.z, &ep.look.camera.target.y, &ep.look.camera.target.z, &ep.look.camera.fov_y_deg); }
    Scene s = ep.scene;
    if (getenv("GZ")) s.gripper.pos.z = atof(getenv("GZ"));
    blit(sheet, render(s, ep.look, size, size), f, t * 192, sp * 192);
    printf("%s %s: %s\n", task_name(Task(t)), split_name(Split(sp)), env.instruction().c_str());
  }
  evla::save_png("/tmp/sim_sheet.png", sheet);
  if (getenv("ONE")) {
    int t, sp; sscanf(getenv("ONE"), "%d,%d", &t, &sp);
    Env env; env.reset({Split(sp), Task(t), uint64_t(seed)});
    Scene s = env.episode().scene;
    if (getenv("GZ")) s.gripper.pos.z = atof(getenv("GZ"));
    auto img = render(s, env.episode().look, size, size);
    evla::Image big(img.width * (512 / size), img.height * (512 / size));
    blit(big, img, 512 / size, 0, 0);
    evla::save_png("/tmp/sim_one.png", big);
  }
}
#include "sim/expert.h"
#include <chrono>
TEST(SimSmoke, ExpertRate) {
  int n = getenv("N") ? atoi(getenv("N")) : 100;
  float noise = getenv("NOISE") ? atof(getenv("NOISE")) : 1.0f;
  for (int sp = 0; sp < 2; ++sp) for (int t = 0; t < kNumTasks; ++t) {
    int ok = 0; long steps = 0; int maxs = 0; std::string fails;
    for (int i = 0; i < n; ++i) {
      Env env; env.reset({Split(sp), Task(t), uint64_t(i)});
      Expert ex(env.episode(), ExpertNoise::level(noise), i);
      float a[4];
      while (!env.done()) { ex.act(env.scene(), a); env.step(a); }
      ok += env.success(); steps += env.steps(); if (env.success()) maxs = std::max(maxs, env.steps());
      if (!env.success()) fails += std::to_string(i) + " ";
    }
    printf("%-9s %-14s success %3d/%d  mean steps %.1f  max(success) %d  fails: %s\n", split_name(Split(sp)), task_name(Task(t)), ok, n, double(steps) / n, maxs, fails.c_str());
  }
}
TEST(SimSmoke, Trace) {
  if (!getenv("TRACE")) return;
  int t, sp, seed; sscanf(getenv("TRACE"), "%d,%d,%d", &t, &sp, &seed);
  float noise = getenv("NOISE") ? atof(getenv("NOISE")) : 1.0f;
  Env env; env.reset({Split(sp), Task(t), uint64_t(seed)});
  Expert ex(env.episode(), ExpertNoise::level(noise), seed);
  printf("%s\n", env.instruction().c_str());
  auto& sc = env.scene();
  printf("handle %.3f %.3f %.3f  open %.3f %.3f\n", sc.handle_center(env.episode().goal.drawer).x, sc.handle_center(env.episode().goal.drawer).y, sc.handle_center(env.episode().goal.drawer).z, sc.opening[0], sc.opening[1]);
  float a[4];
  while (!env.done()) { ex.act(env.scene(), a); env.step(a);
    auto& g = env.scene().gripper;
    printf("%3d a=(%.3f %.3f %.3f %.0f) p=(%.3f %.3f %.3f) c=%.2f hd=%d ho=%d open=%.3f %.3f\n", env.steps(), a[0], a[1], a[2], a[3], g.pos.x, g.pos.y, g.pos.z, g.closure, g.held_drawer, g.held_object, env.scene().opening[0], env.scene().opening[1]);
  }
}
TEST(SimSmoke, Speed) {
  int size = getenv("SIZE") ? atoi(getenv("SIZE")) : 64;
  long steps = 0; auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 50; ++i) {
    Env env; env.reset({Split(i % 2), Task(i % 5), uint64_t(i)});
    Expert ex(env.episode(), ExpertNoise::level(1), i);
    float a[4];
    while (!env.done()) { auto img = env.render(size, size); ex.act(env.scene(), a); env.step(a); ++steps; }
  }
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  printf("%ld steps in %.3f s: %.0f steps/s at %d px\n", steps, s, steps / s, size);
}
