#include "server/training/hyperparameters.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kaizen::training {
namespace {

using ::testing::HasSubstr;

TEST(HyperparametersTest, ResolvesDefaultsPerStrategy) {
  kaizen::v1::Hyperparameters none;
  auto fe = ResolveHyperparameters(kaizen::v1::STRATEGY_FEATURE_EXTRACTION, none, 100);
  auto ft = ResolveHyperparameters(kaizen::v1::STRATEGY_FINE_TUNE, none, 100);
  auto full = ResolveHyperparameters(kaizen::v1::STRATEGY_FULL, none, 100);
  auto scratch = ResolveHyperparameters(kaizen::v1::STRATEGY_SCRATCH, none, 100);
  ASSERT_TRUE(fe.ok() && ft.ok() && full.ok() && scratch.ok());
  for (const auto* hp : {&*fe, &*ft, &*full, &*scratch}) {
    EXPECT_GT(hp->epochs(), 0);
    EXPECT_GT(hp->batch_size(), 0);
    EXPECT_GT(hp->learning_rate(), 0);
    EXPECT_NE(hp->seed(), 0u);
    EXPECT_NE(hp->optimizer().kind(), kaizen::v1::OPTIMIZER_UNSPECIFIED);
    EXPECT_NE(hp->schedule().kind(), kaizen::v1::SCHEDULE_UNSPECIFIED);
    EXPECT_EQ(hp->head().kind(), kaizen::v1::HEAD_KIND_LINEAR);
    EXPECT_DOUBLE_EQ(hp->drop_last_fraction(), 0.5);
    // 100 images: every one trains.
    EXPECT_EQ(hp->validation().split(), 0);
  }
  // The frozen backbone's features are cached only without augmentation.
  EXPECT_FALSE(fe->augmentation().enabled());
  EXPECT_TRUE(ft->augmentation().enabled());
  EXPECT_GT(fe->learning_rate(), ft->learning_rate());
  EXPECT_EQ(ft->trainable_blocks(), 1);
  EXPECT_LT(ft->backbone_lr_multiplier(), 1.0);
  EXPECT_LT(full->backbone_lr_multiplier(), 1.0);
  EXPECT_DOUBLE_EQ(scratch->backbone_lr_multiplier(), 1.0);

  // Explicit values win; a large dataset holds out validation data.
  kaizen::v1::Hyperparameters some;
  some.set_learning_rate(0.5);
  some.set_epochs(3);
  some.mutable_augmentation()->set_enabled(false);
  auto big = ResolveHyperparameters(kaizen::v1::STRATEGY_FINE_TUNE, some, 50000);
  ASSERT_TRUE(big.ok());
  EXPECT_DOUBLE_EQ(big->learning_rate(), 0.5);
  EXPECT_EQ(big->epochs(), 3);
  EXPECT_FALSE(big->augmentation().enabled());
  EXPECT_GT(big->validation().split(), 0);
}

TEST(HyperparametersTest, OnlyAZeroSeedIsDrawnAtRandom) {
  kaizen::v1::Hyperparameters some;
  some.set_epochs(3);
  // An unset seed is drawn: two resolutions differ in it and in nothing else.
  auto first = ResolveHyperparameters(kaizen::v1::STRATEGY_FULL, some, 100);
  auto second = ResolveHyperparameters(kaizen::v1::STRATEGY_FULL, some, 100);
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_NE(first->seed(), 0u);
  EXPECT_NE(first->seed(), second->seed());
  first->clear_seed();
  second->clear_seed();
  EXPECT_EQ(first->DebugString(), second->DebugString());
  // A given seed is kept.
  some.set_seed(5);
  auto seeded = ResolveHyperparameters(kaizen::v1::STRATEGY_FULL, some, 100);
  ASSERT_TRUE(seeded.ok());
  EXPECT_EQ(seeded->seed(), 5u);
  seeded->clear_seed();
  EXPECT_EQ(seeded->DebugString(), first->DebugString());
}

TEST(HyperparametersTest, RejectsOutOfRangeHyperparameters) {
  auto expect_error = [](kaizen::v1::Hyperparameters hp, const std::string& text) {
    auto r = ResolveHyperparameters(kaizen::v1::STRATEGY_FINE_TUNE, hp, 100);
    ASSERT_FALSE(r.ok()) << text;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(text));
  };
  kaizen::v1::Hyperparameters hp;
  hp.set_learning_rate(-1);
  expect_error(hp, "hyperparameters.learning_rate is -1; it must be > 0");
  hp = {};
  hp.set_epochs(-2);
  expect_error(hp, "hyperparameters.epochs is -2");
  hp = {};
  hp.set_label_smoothing(1.5);
  expect_error(hp, "hyperparameters.label_smoothing is 1.5");
  hp = {};
  hp.mutable_validation()->set_split(0.95);
  expect_error(hp, "hyperparameters.validation.split is 0.95");
  hp = {};
  hp.mutable_early_stopping()->set_metric("f1");
  expect_error(hp, "early_stopping.metric");
  hp = {};
  hp.mutable_early_stopping()->set_enabled(true);
  hp.mutable_validation()->set_split(0);
  expect_error(hp, "needs validation data");
  hp = {};
  hp.set_epochs(3);
  hp.set_head_warmup_epochs(3);
  expect_error(hp, "head_warmup_epochs is 3");
  hp = {};
  hp.mutable_optimizer()->set_momentum(1.0);
  expect_error(hp, "optimizer.momentum is 1");
  EXPECT_FALSE(
      ResolveHyperparameters(kaizen::v1::STRATEGY_UNSPECIFIED, kaizen::v1::Hyperparameters(), 10)
          .ok());
}

}  // namespace
}  // namespace kaizen::training
