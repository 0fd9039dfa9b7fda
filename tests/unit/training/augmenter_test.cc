#include "server/training/augmenter.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include "gtest/gtest.h"

namespace kaizen::training {
namespace {

TEST(AugmenterTest, AugmentationKeepsShapeAndChangesPixels) {
  const torch::Tensor images = torch::rand({8, 3, 28, 28});
  kaizen::v1::Augmentation o;
  o.set_enabled(true);
  o.set_random_crop_padding(3);
  o.set_horizontal_flip(true);
  o.set_rotation_degrees(10);
  o.set_brightness(0.2);
  o.set_contrast(0.2);
  Augmenter augmenter(o);
  ASSERT_TRUE(augmenter.active());
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1);
  const torch::Tensor out = augmenter.Apply(images, gen);
  EXPECT_EQ(out.sizes(), images.sizes());
  EXPECT_GT((out - images).abs().mean().item<double>(), 0.01);
  EXPECT_GE(out.min().item<double>(), 0.0);
  EXPECT_LE(out.max().item<double>(), 1.0);
  // Reproducible for a seed.
  at::Generator again = at::make_generator<at::CPUGeneratorImpl>(1);
  EXPECT_TRUE(torch::equal(out, augmenter.Apply(images, again)));

  // A flip alone is exact: every image is itself or its mirror image.
  kaizen::v1::Augmentation flip_only;
  flip_only.set_enabled(true);
  flip_only.set_horizontal_flip(true);
  const torch::Tensor flipped = Augmenter(flip_only).Apply(images, gen);
  int mirrored = 0;
  for (int64_t i = 0; i < 8; ++i) {
    const bool same = torch::allclose(flipped[i], images[i], 0, 1e-5);
    const bool mirror = torch::allclose(flipped[i], images[i].flip({2}), 0, 1e-5);
    EXPECT_TRUE(same || mirror) << i;
    mirrored += mirror ? 1 : 0;
  }
  EXPECT_GT(mirrored, 0);
  // Disabled: untouched.
  kaizen::v1::Augmentation off;
  EXPECT_TRUE(torch::equal(Augmenter(off).Apply(images, gen), images));
}

}  // namespace
}  // namespace kaizen::training
