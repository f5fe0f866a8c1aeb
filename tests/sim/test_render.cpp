// Rendering: determinism, the background cache, sizes, and that what the
// policy must see (objects, gripper state, the split's look) is visible.
#include <gtest/gtest.h>

#include <cstdlib>

#include "evla/error.h"
#include "sim/render.h"
#include "sim/tasks.h"

namespace evla::sim {
namespace {

// Pixels whose colour differs noticeably (sum of channel differences > 30).
int changed_pixels(const Image& a, const Image& b) {
  EXPECT_EQ(a.rgb.size(), b.rgb.size());
  int n = 0;
  for (size_t p = 0; p + 2 < a.rgb.size(); p += 3) {
    int d = 0;
    for (int c = 0; c < 3; ++c) d += std::abs(int(a.rgb[p + c]) - int(b.rgb[p + c]));
    n += d > 30;
  }
  return n;
}

TEST(SimRender, SizesAndBadSizes) {
  Episode ep = make_episode({Split::Matching, Task::Pick, 1});
  for (auto [w, h] : {std::pair{64, 64}, {128, 128}, {96, 64}}) {
    Image img = render(ep.scene, ep.look, w, h);
    EXPECT_EQ(img.width, w);
    EXPECT_EQ(img.height, h);
    EXPECT_EQ(img.rgb.size(), size_t(w) * h * 3);
  }
  EXPECT_THROW(render(ep.scene, ep.look, 4, 64), Error);
  EXPECT_THROW(render(ep.scene, ep.look, 64, 64, 0), Error);
}

TEST(SimRender, DeterministicAndCacheMatchesUncached) {
  Renderer cached;
  for (Split sp : {Split::Matching, Split::Variants, Split::Randomized})
    for (Task t : all_tasks()) {
      Episode ep = make_episode({sp, t, 3});
      Image a = render(ep.scene, ep.look, 64, 64);
      EXPECT_EQ(a.rgb, render(ep.scene, ep.look, 64, 64).rgb);
      EXPECT_EQ(a.rgb, cached.render(ep.scene, ep.look, 64, 64).rgb);  // the cache is refreshed per look
      EXPECT_EQ(a.rgb, cached.render(ep.scene, ep.look, 64, 64).rgb);  // and reused
    }
}

TEST(SimRender, VariantLookChangesMostOfTheImage) {
  Episode m = make_episode({Split::Matching, Task::Pick, 8});
  for (uint64_t seed = 0; seed < 10; ++seed) {
    Episode v = make_episode({Split::Variants, Task::Pick, seed});
    // Same scene, the variant's look: table, wall, light and camera all change.
    int changed = changed_pixels(render(m.scene, m.look, 64, 64), render(m.scene, v.look, 64, 64));
    EXPECT_GT(changed, 64 * 64 / 2) << seed;
  }
}

TEST(SimRender, EveryObjectIsVisibleAt64px) {
  // Removing any one object must change a clear patch of the first frame
  // (the gripper may hide part of one); objects are ~100 px on average.
  for (Split sp : {Split::Matching, Split::Variants})
    for (Task t : all_tasks()) {
      long total = 0, count = 0;
      for (uint64_t seed = 0; seed < 20; ++seed) {
        Episode ep = make_episode({sp, t, seed});
        Image full = render(ep.scene, ep.look, 64, 64);
        for (size_t i = 0; i < ep.scene.objects.size(); ++i) {
          Scene s = ep.scene;
          s.objects.erase(s.objects.begin() + long(i));
          int changed = changed_pixels(full, render(s, ep.look, 64, 64));
          EXPECT_GE(changed, 8) << split_name(sp) << " " << task_name(t) << " seed " << seed << " object " << i;
          total += changed, ++count;
        }
      }
      EXPECT_GT(total / count, 70) << split_name(sp) << " " << task_name(t);
    }
}

TEST(SimRender, GripperOpeningAndHeightShow) {
  Episode ep = make_episode({Split::Matching, Task::Pick, 2});
  Scene s = ep.scene;
  s.gripper.pos = {0, -0.2f, 0.05f};
  Image open = render(s, ep.look, 64, 64);
  s.gripper.closure = 1;
  EXPECT_GE(changed_pixels(open, render(s, ep.look, 64, 64)), 6);
  s.gripper.closure = 0;
  s.gripper.pos.z = 0.15f;
  EXPECT_GE(changed_pixels(open, render(s, ep.look, 64, 64)), 30);
}

}  // namespace
}  // namespace evla::sim
