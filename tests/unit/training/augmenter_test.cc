#include "server/training/augmenter.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <set>

#include "gtest/gtest.h"

namespace kaizen::training {
namespace {

at::Generator Seeded(uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

kaizen::v1::Augmentation Enabled() {
  kaizen::v1::Augmentation o;
  o.set_enabled(true);
  return o;
}

kaizen::v1::Augmentation Everything() {
  kaizen::v1::Augmentation o = Enabled();
  o.set_random_crop_padding(3);
  o.set_horizontal_flip(true);
  o.set_rotation_degrees(10);
  o.set_brightness(0.2);
  o.set_contrast(0.2);
  return o;
}

// [n, 1, size, size] of zeros with one white pixel at (x, y) in every image.
torch::Tensor OnePixel(int64_t n, int64_t size, int64_t x, int64_t y) {
  torch::Tensor images = torch::zeros({n, 1, size, size});
  images.index_put_({torch::indexing::Slice(), 0, y, x}, 1.0f);
  return images;
}

TEST(AugmenterTest, DisabledOrEmptyOptionsReturnTheInputUntouched) {
  const torch::Tensor images = torch::rand({4, 3, 8, 8}, Seeded(3));
  kaizen::v1::Augmentation off = Everything();
  off.set_enabled(false);  // every augmentation set, but not enabled
  Augmenter disabled(off);
  EXPECT_FALSE(disabled.active());
  at::Generator gen = Seeded(1);
  EXPECT_TRUE(disabled.Apply(images, gen).is_same(images));

  Augmenter empty(Enabled());  // enabled, but nothing to do
  EXPECT_FALSE(empty.active());
  EXPECT_TRUE(empty.Apply(images, gen).is_same(images));

  EXPECT_TRUE(Augmenter(Everything()).active());
}

TEST(AugmenterTest, HorizontalFlipMirrorsSomeImagesExactlyAndLeavesTheRest) {
  // A left-to-right ramp: its mirror image is different everywhere but the
  // middle column.
  const torch::Tensor ramp = torch::linspace(0.0, 1.0, 9).view({1, 1, 1, 9}).expand({64, 3, 9, 9});
  const torch::Tensor mirror = torch::flip(ramp, {3});
  kaizen::v1::Augmentation o = Enabled();
  o.set_horizontal_flip(true);
  at::Generator gen = Seeded(7);
  const torch::Tensor out = Augmenter(o).Apply(ramp.contiguous(), gen);
  ASSERT_EQ(out.sizes(), ramp.sizes());
  int mirrored = 0, kept = 0;
  for (int64_t i = 0; i < 64; ++i) {
    const bool same = torch::allclose(out[i], ramp[i], 0, 1e-5);
    const bool flipped = torch::allclose(out[i], mirror[i], 0, 1e-5);
    EXPECT_TRUE(same || flipped) << "image " << i << " is neither the input nor its mirror";
    mirrored += flipped;
    kept += same;
  }
  // Each image flips with probability 1/2: both happen among 64.
  EXPECT_GT(mirrored, 0);
  EXPECT_GT(kept, 0);
}

TEST(AugmenterTest, RandomCropMovesAPixelByAtMostThePadding) {
  constexpr int kPad = 2;
  const torch::Tensor images = OnePixel(200, 16, 8, 8);
  kaizen::v1::Augmentation o = Enabled();
  o.set_random_crop_padding(kPad);
  at::Generator gen = Seeded(11);
  const torch::Tensor out = Augmenter(o).Apply(images, gen);
  std::set<int64_t> dxs, dys;
  for (int64_t i = 0; i < out.size(0); ++i) {
    const torch::Tensor plane = out[i][0];
    // Integer shifts land exactly on pixels: the white pixel moves whole.
    const int64_t at = plane.argmax().item<int64_t>();
    const int64_t dx = at % 16 - 8, dy = at / 16 - 8;
    EXPECT_NEAR(plane.max().item<float>(), 1.0f, 1e-5) << "image " << i;
    EXPECT_NEAR(plane.sum().item<float>(), 1.0f, 1e-4) << "image " << i;
    EXPECT_LE(std::abs(dx), kPad) << "image " << i;
    EXPECT_LE(std::abs(dy), kPad) << "image " << i;
    dxs.insert(dx);
    dys.insert(dy);
  }
  // Offsets are drawn from -pad..pad on each axis; 200 images see them all.
  EXPECT_EQ(dxs.size(), 2u * kPad + 1) << "x offsets seen";
  EXPECT_EQ(dys.size(), 2u * kPad + 1) << "y offsets seen";
}

TEST(AugmenterTest, RotationTurnsALineAboutTheCentreWithinTheMaximumAngle) {
  // A horizontal line through the centre pixel of a 33x33 image, 16 wide.
  constexpr double kMaxDegrees = 30;
  torch::Tensor images = torch::zeros({32, 1, 33, 33});
  images.index_put_({torch::indexing::Slice(), 0, 16, torch::indexing::Slice(8, 25)}, 1.0f);
  kaizen::v1::Augmentation o = Enabled();
  o.set_rotation_degrees(kMaxDegrees);
  at::Generator gen = Seeded(5);
  const torch::Tensor out = Augmenter(o).Apply(images, gen);
  // The line's ends are 8 pixels from the centre: at most 8 sin(30) = 4 rows
  // off, plus one for bilinear spread.
  const int64_t max_rows_off =
      static_cast<int64_t>(std::ceil(8 * std::sin(kMaxDegrees * M_PI / 180.0))) + 1;
  int turned = 0;
  for (int64_t i = 0; i < out.size(0); ++i) {
    const torch::Tensor plane = out[i][0];
    // The centre maps onto itself.
    EXPECT_NEAR(plane[16][16].item<float>(), 1.0f, 1e-4) << "image " << i;
    const torch::Tensor lit_rows = (plane > 0.25f).any(1).nonzero().view(-1);
    const int64_t off = std::max(std::abs(lit_rows.min().item<int64_t>() - 16),
                                 std::abs(lit_rows.max().item<int64_t>() - 16));
    EXPECT_LE(off, max_rows_off) << "image " << i;
    turned += off >= 2;
  }
  EXPECT_GT(turned, 0) << "no image was visibly rotated";
}

TEST(AugmenterTest, BrightnessScalesEachImageWithinTheConfiguredFactor) {
  const torch::Tensor grey = torch::full({64, 3, 4, 4}, 0.5f);
  kaizen::v1::Augmentation o = Enabled();
  o.set_brightness(0.2);
  at::Generator gen = Seeded(13);
  const torch::Tensor out = Augmenter(o).Apply(grey, gen);
  int brighter = 0, darker = 0;
  for (int64_t i = 0; i < out.size(0); ++i) {
    // One factor per image: a flat image stays flat, at 0.5 * [0.8, 1.2].
    const float value = out[i][0][0][0].item<float>();
    EXPECT_TRUE(torch::allclose(out[i], torch::full_like(out[i], value))) << "image " << i;
    EXPECT_GE(value, 0.4f - 1e-6f) << "image " << i;
    EXPECT_LE(value, 0.6f + 1e-6f) << "image " << i;
    brighter += value > 0.5f;
    darker += value < 0.5f;
  }
  EXPECT_GT(brighter, 0);
  EXPECT_GT(darker, 0);
}

TEST(AugmenterTest, BrightenedWhiteSaturatesAtOne) {
  const torch::Tensor white = torch::ones({64, 1, 4, 4});
  kaizen::v1::Augmentation o = Enabled();
  o.set_brightness(0.5);
  at::Generator gen = Seeded(17);
  const torch::Tensor out = Augmenter(o).Apply(white, gen);
  int saturated = 0, darker = 0;
  for (int64_t i = 0; i < out.size(0); ++i) {
    const float value = out[i].max().item<float>();
    // A factor above 1 would push white past 1: it stays exactly 1.
    EXPECT_LE(value, 1.0f) << "image " << i;
    saturated += value == 1.0f;
    darker += value < 1.0f - 1e-4f;
  }
  EXPECT_GT(saturated, 0);
  EXPECT_GT(darker, 0);
}

TEST(AugmenterTest, ContrastScalesTheDistanceFromTheMeanAndKeepsTheMean) {
  // Left half 0.25, right half 0.75: mean 0.5, halves 0.5 apart.
  torch::Tensor halves = torch::full({64, 1, 4, 8}, 0.25f);
  halves.index_put_(
      {torch::indexing::Slice(), 0, torch::indexing::Slice(), torch::indexing::Slice(4, 8)}, 0.75f);
  kaizen::v1::Augmentation o = Enabled();
  o.set_contrast(0.2);
  at::Generator gen = Seeded(19);
  const torch::Tensor out = Augmenter(o).Apply(halves, gen);
  int more = 0, less = 0;
  for (int64_t i = 0; i < out.size(0); ++i) {
    EXPECT_NEAR(out[i].mean().item<float>(), 0.5f, 1e-5) << "image " << i;
    const float spread = out[i][0][0][7].item<float>() - out[i][0][0][0].item<float>();
    EXPECT_GE(spread, 0.5f * 0.8f - 1e-5f) << "image " << i;
    EXPECT_LE(spread, 0.5f * 1.2f + 1e-5f) << "image " << i;
    more += spread > 0.5f;
    less += spread < 0.5f;
  }
  EXPECT_GT(more, 0);
  EXPECT_GT(less, 0);
}

TEST(AugmenterTest, SameSeedSameOutputAcrossAugmentersAndOtherSeedsDiffer) {
  const torch::Tensor images = torch::rand({8, 3, 28, 28}, Seeded(2));
  // Two augmenters built separately from the same options, each with its
  // own generator.
  at::Generator first_gen = Seeded(1), second_gen = Seeded(1), other_gen = Seeded(2);
  const torch::Tensor first = Augmenter(Everything()).Apply(images, first_gen);
  const torch::Tensor second = Augmenter(Everything()).Apply(images, second_gen);
  const torch::Tensor other = Augmenter(Everything()).Apply(images, other_gen);
  EXPECT_EQ(first.sizes(), images.sizes());
  EXPECT_GT((first - images).abs().mean().item<double>(), 0.01);
  EXPECT_TRUE(torch::equal(first, second));
  EXPECT_FALSE(torch::allclose(first, other));
  // The generator advances: the next batch is augmented differently.
  const torch::Tensor next = Augmenter(Everything()).Apply(images, first_gen);
  EXPECT_FALSE(torch::allclose(first, next));
}

}  // namespace
}  // namespace kaizen::training
