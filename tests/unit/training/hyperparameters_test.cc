#include "server/training/hyperparameters.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/training/exemplar_memory.h"

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
  // From 50 images up, FEATURE_EXTRACTION caches the frozen backbone's
  // features and FINE_TUNE its frozen layers' outputs, which needs no
  // augmentation; the other strategies augment.
  EXPECT_FALSE(fe->augmentation().enabled());
  EXPECT_FALSE(ft->augmentation().enabled());
  EXPECT_TRUE(full->augmentation().enabled());
  EXPECT_TRUE(scratch->augmentation().enabled());
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

// Steps, not epochs, are the budget on tiny datasets: 5 images per class x 5
// classes get an even batch size and at least 300 optimiser steps, with a
// warm-up over a share of them; explicit epochs or batch size win.
TEST(HyperparametersTest, BudgetsTinyDatasetsInOptimiserSteps) {
  kaizen::v1::Hyperparameters none;
  auto steps = [](const kaizen::v1::Hyperparameters& h, int64_t n) {
    const int64_t batches = (n + h.batch_size() - 1) / h.batch_size();
    return batches * h.epochs();
  };
  auto ft = ResolveHyperparameters(kaizen::v1::STRATEGY_FINE_TUNE, none, 25);
  ASSERT_TRUE(ft.ok()) << ft.status();
  EXPECT_EQ(ft->batch_size(), 13);  // 13 + 12
  EXPECT_EQ(ft->epochs(), 150);     // 300 steps, not 30 x 2 = 60
  EXPECT_GE(steps(*ft, 25), 300);
  // Warm-up over 5% of the steps (15), not one 2-step epoch.
  EXPECT_DOUBLE_EQ(ft->schedule().warmup_epochs(), 7.5);
  EXPECT_EQ(ft->schedule().kind(), kaizen::v1::SCHEDULE_COSINE);

  auto fe = ResolveHyperparameters(kaizen::v1::STRATEGY_FEATURE_EXTRACTION, none, 25);
  ASSERT_TRUE(fe.ok());
  EXPECT_EQ(fe->batch_size(), 5);
  EXPECT_EQ(fe->epochs(), 60);
  EXPECT_EQ(fe->schedule().warmup_epochs(), 0);
  // Below 50 images the backbone runs every step on augmented images.
  EXPECT_TRUE(fe->augmentation().enabled());
  EXPECT_TRUE(fe->augmentation().horizontal_flip());
  EXPECT_GT(fe->augmentation().random_crop_padding(), 0);
  auto fe49 = ResolveHyperparameters(kaizen::v1::STRATEGY_FEATURE_EXTRACTION, none, 49);
  auto fe50 = ResolveHyperparameters(kaizen::v1::STRATEGY_FEATURE_EXTRACTION, none, 50);
  ASSERT_TRUE(fe49.ok() && fe50.ok());
  EXPECT_TRUE(fe49->augmentation().enabled());
  EXPECT_FALSE(fe50->augmentation().enabled());
  auto ft49 = ResolveHyperparameters(kaizen::v1::STRATEGY_FINE_TUNE, none, 49);
  auto ft50 = ResolveHyperparameters(kaizen::v1::STRATEGY_FINE_TUNE, none, 50);
  auto incremental50 = ResolveHyperparameters(kaizen::v1::STRATEGY_INCREMENTAL, none, 50);
  ASSERT_TRUE(ft49.ok() && ft50.ok() && incremental50.ok());
  EXPECT_TRUE(ft49->augmentation().enabled());
  EXPECT_GT(ft49->augmentation().random_crop_padding(), 0);
  EXPECT_FALSE(ft50->augmentation().enabled());
  EXPECT_TRUE(incremental50->augmentation().enabled());  // not measured: as before
  kaizen::v1::Hyperparameters on;
  on.mutable_augmentation()->set_enabled(true);
  auto ft_on = ResolveHyperparameters(kaizen::v1::STRATEGY_FINE_TUNE, on, 5000);
  ASSERT_TRUE(ft_on.ok());
  EXPECT_TRUE(ft_on->augmentation().enabled());
  // An explicit choice wins at any size.
  kaizen::v1::Hyperparameters off;
  off.mutable_augmentation()->set_enabled(false);
  auto fe_off = ResolveHyperparameters(kaizen::v1::STRATEGY_FEATURE_EXTRACTION, off, 25);
  ASSERT_TRUE(fe_off.ok());
  EXPECT_FALSE(fe_off->augmentation().enabled());

  // 20 per class: 10 steps of 10 a epoch, and the epoch default gives more
  // than the minimum.
  auto twenty = ResolveHyperparameters(kaizen::v1::STRATEGY_SCRATCH, none, 100);
  ASSERT_TRUE(twenty.ok());
  EXPECT_EQ(twenty->batch_size(), 10);
  EXPECT_EQ(twenty->epochs(), 30);
  EXPECT_DOUBLE_EQ(twenty->schedule().warmup_epochs(), 1.5);

  // Large datasets keep the epoch defaults, the preferred batch size and one
  // warm-up epoch.
  auto big = ResolveHyperparameters(kaizen::v1::STRATEGY_FULL, none, 50000);
  ASSERT_TRUE(big.ok());
  EXPECT_EQ(big->batch_size(), 64);
  EXPECT_EQ(big->epochs(), 10);
  EXPECT_DOUBLE_EQ(big->schedule().warmup_epochs(), 1);

  // The caller's epochs win; a batch size of theirs is budgeted around.
  kaizen::v1::Hyperparameters some;
  some.set_epochs(30);
  auto fixed = ResolveHyperparameters(kaizen::v1::STRATEGY_FINE_TUNE, some, 25);
  ASSERT_TRUE(fixed.ok());
  EXPECT_EQ(fixed->epochs(), 30);
  EXPECT_EQ(fixed->batch_size(), 13);
  some = {};
  some.set_batch_size(16);
  auto batch16 = ResolveHyperparameters(kaizen::v1::STRATEGY_FINE_TUNE, some, 25);
  ASSERT_TRUE(batch16.ok());
  EXPECT_EQ(batch16->batch_size(), 16);
  EXPECT_EQ(batch16->epochs(), 150);  // 16 + 9: two steps an epoch

  // A validation split counts only the images left to train on: 100 at 0.5
  // trains on 50 (batches of 10, 5 a epoch: 60 epochs).
  some = {};
  some.mutable_validation()->set_split(0.5);
  auto split = ResolveHyperparameters(kaizen::v1::STRATEGY_SCRATCH, some, 100);
  ASSERT_TRUE(split.ok());
  EXPECT_EQ(split->batch_size(), 10);
  EXPECT_EQ(split->epochs(), 60);

  // Early stopping's default patience grows with the epochs.
  some = {};
  some.mutable_early_stopping()->set_enabled(true);
  some.mutable_validation()->set_split(0.2);
  auto patient = ResolveHyperparameters(kaizen::v1::STRATEGY_SCRATCH, some, 25);
  ASSERT_TRUE(patient.ok());
  EXPECT_GE(patient->early_stopping().patience(), patient->epochs() / 10);
}

TEST(HyperparametersTest, DistillTrainsEveryLayerAtOneRateWithAugmentation) {
  auto d = ResolveHyperparameters(kaizen::v1::STRATEGY_DISTILL, {}, 100);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_DOUBLE_EQ(d->backbone_lr_multiplier(), 1.0);
  EXPECT_DOUBLE_EQ(d->learning_rate(), 3e-3);
  EXPECT_TRUE(d->augmentation().enabled());
  EXPECT_DOUBLE_EQ(d->label_smoothing(), 0.1);
}

TEST(HyperparametersTest, ResolvesDistillationDefaultsAndRanges) {
  kaizen::v1::DistillationOptions o;
  o.set_teacher_model("big:2");
  auto d = ResolveDistillation(kaizen::v1::STRATEGY_DISTILL, o);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->teacher_model(), "big:2");
  EXPECT_DOUBLE_EQ(d->temperature(), 4.0);
  EXPECT_DOUBLE_EQ(d->alpha(), 0.7);
  o.set_temperature(2);
  o.set_alpha(1);
  d = ResolveDistillation(kaizen::v1::STRATEGY_DISTILL, o);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_DOUBLE_EQ(d->temperature(), 2);
  EXPECT_DOUBLE_EQ(d->alpha(), 1);

  auto message = [](const kaizen::v1::DistillationOptions& x, kaizen::v1::Strategy s) {
    const absl::Status st = ResolveDistillation(s, x).status();
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
    return std::string(st.message());
  };
  kaizen::v1::DistillationOptions bad = o;
  bad.set_temperature(0.5);
  EXPECT_EQ(message(bad, kaizen::v1::STRATEGY_DISTILL),
            "distillation.temperature is 0.5; it must be in [1, 100]");
  bad = o;
  bad.set_alpha(1.5);
  EXPECT_EQ(message(bad, kaizen::v1::STRATEGY_DISTILL),
            "distillation.alpha is 1.5; it must be in (0, 1]");
  bad.set_alpha(-0.2);
  EXPECT_EQ(message(bad, kaizen::v1::STRATEGY_DISTILL),
            "distillation.alpha is -0.2; it must be in (0, 1]");
  bad = o;
  bad.clear_teacher_model();
  EXPECT_THAT(message(bad, kaizen::v1::STRATEGY_DISTILL),
              HasSubstr("distillation.teacher_model is empty"));
  // Other strategies take no distillation options, and need none.
  EXPECT_THAT(message(o, kaizen::v1::STRATEGY_FINE_TUNE),
              HasSubstr("distillation is set but strategy is STRATEGY_FINE_TUNE"));
  EXPECT_TRUE(ResolveDistillation(kaizen::v1::STRATEGY_FINE_TUNE, {}).ok());
}

TEST(HyperparametersTest, ResolvesIncrementalDefaultsAndRanges) {
  auto o = ResolveIncremental(kaizen::v1::STRATEGY_INCREMENTAL, {}, 99);
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->exemplars_per_class(), 50);
  EXPECT_EQ(o->max_exemplars(), 2000);
  EXPECT_EQ(o->distillation_weight(), 1.0);
  EXPECT_EQ(o->temperature(), 2.0);
  EXPECT_EQ(o->selection(), kaizen::v1::EXEMPLAR_SELECTION_HERDING);
  EXPECT_EQ(o->seed(), 99u);
  EXPECT_FALSE(o->disable_rehearsal());
  kaizen::v1::IncrementalOptions x;
  x.set_temperature(200);
  EXPECT_THAT(
      std::string(ResolveIncremental(kaizen::v1::STRATEGY_INCREMENTAL, x, 1).status().message()),
      HasSubstr("incremental.temperature"));
  x.Clear();
  x.set_exemplars_per_class(-1);
  EXPECT_EQ(ResolveIncremental(kaizen::v1::STRATEGY_INCREMENTAL, x, 1).status().code(),
            absl::StatusCode::kInvalidArgument);
  // Bounded: the memory's cost grows with both.
  x.set_exemplars_per_class(kMaxExemplarsPerClass + 1);
  EXPECT_THAT(
      std::string(ResolveIncremental(kaizen::v1::STRATEGY_INCREMENTAL, x, 1).status().message()),
      HasSubstr("incremental.exemplars_per_class is 10001"));
  x.Clear();
  x.set_max_exemplars(kMaxExemplarsInAll + 1);
  EXPECT_THAT(
      std::string(ResolveIncremental(kaizen::v1::STRATEGY_INCREMENTAL, x, 1).status().message()),
      HasSubstr("incremental.max_exemplars is 100001"));
  x.Clear();
  x.set_distillation_weight(-0.5);
  EXPECT_THAT(
      std::string(ResolveIncremental(kaizen::v1::STRATEGY_INCREMENTAL, x, 1).status().message()),
      HasSubstr("incremental.distillation_weight"));
  // Other strategies: refused when set, fine when empty.
  x.Clear();
  x.set_disable_rehearsal(true);
  const absl::Status st = ResolveIncremental(kaizen::v1::STRATEGY_FINE_TUNE, x, 1).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), HasSubstr("STRATEGY_INCREMENTAL only"));
  EXPECT_TRUE(ResolveIncremental(kaizen::v1::STRATEGY_FINE_TUNE, {}, 1).ok());
}

}  // namespace
}  // namespace kaizen::training
