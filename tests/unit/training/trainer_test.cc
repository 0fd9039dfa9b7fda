#include "server/training/trainer.h"

#include <optional>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/training/training_test_util.h"

namespace kaizen::training {
namespace {

using testing::Builtin;
using ::testing::HasSubstr;

struct Recorder {
  std::vector<Checkpoint> checkpoints;
  std::vector<kaizen::v1::EpochMetrics> epochs;
  std::vector<kaizen::v1::StepProgress> steps;
  Callbacks callbacks() {
    Callbacks c;
    c.on_checkpoint = [this](const Checkpoint& cp) {
      checkpoints.push_back(cp);
      return absl::OkStatus();
    };
    c.on_epoch = [this](const kaizen::v1::EpochMetrics& m) { epochs.push_back(m); };
    c.on_step = [this](const kaizen::v1::StepProgress& p) { steps.push_back(p); };
    return c;
  }
};

TrainerOptions Options(kaizen::v1::Strategy strategy, const testing::BaseModel& base,
                       kaizen::v1::Hyperparameters hp) {
  TrainerOptions o;
  o.strategy = strategy;
  o.hyperparameters = std::move(hp);
  o.base = base.module;
  o.base_metadata = base.metadata;
  return o;
}

TEST(TrainerTest, LearnsSeparableData) {
  datasets::DecodedDataset train = testing::SyntheticDataset(2, 24, 28, 1, 1);
  datasets::DecodedDataset val = testing::SyntheticDataset(2, 10, 28, 1, 2);
  // Enough steps (24) for BatchNorm's running statistics to follow the weights.
  auto hp = testing::FastHyperparameters(4, /*batch=*/8);
  hp.set_learning_rate(3e-3);
  Recorder rec;
  auto result = Train(Options(kaizen::v1::STRATEGY_SCRATCH, Builtin("cnn-small"), hp),
                      {&train, &val}, rec.callbacks());
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->epochs_completed, 4);
  EXPECT_GE(result->last.val_accuracy(), 0.9);
  EXPECT_EQ(result->best_metric_name, "val_accuracy");
  ASSERT_EQ(rec.epochs.size(), 4u);
  EXPECT_LT(rec.epochs.back().train_loss(), rec.epochs.front().train_loss());
  EXPECT_EQ(rec.epochs.back().per_class_accuracy().size(), 2u);
  EXPECT_GT(rec.epochs.back().samples_per_second(), 0);
  // 48 images in batches of 8: 6 steps per epoch.
  ASSERT_EQ(rec.steps.size(), 24u);
  EXPECT_EQ(rec.steps.back().step(), 24);
  EXPECT_EQ(rec.steps.back().total_steps(), 24);
  // Checkpoint metadata describes the new classifier.
  ASSERT_EQ(rec.checkpoints.size(), 4u);
  const kaizen::v1::Model& m = rec.checkpoints.back().metadata;
  EXPECT_EQ(m.class_names_size(), 2);
  EXPECT_EQ(m.head().out_features(), 2);
  EXPECT_EQ(m.head().module_path(), "fc");
  EXPECT_EQ(m.source(), kaizen::v1::MODEL_SOURCE_FINE_TUNED);
  EXPECT_EQ(m.architecture(), "cnn-small");
  EXPECT_TRUE(m.metrics().contains("val_accuracy"));
  EXPECT_EQ(rec.checkpoints.back().epoch, 4);
  torch::NoGradGuard no_grad;
  EXPECT_EQ(
      rec.checkpoints.back().module.forward({torch::zeros({1, 1, 28, 28})}).toTensor().sizes(),
      (std::vector<int64_t>{1, 2}));
}

TEST(TrainerTest, FeatureCacheSkipsBackboneAfterFirstEpoch) {
  datasets::DecodedDataset train = testing::SyntheticDataset(2, 40);
  auto hp = testing::FastHyperparameters(1);
  hp.set_learning_rate(0.01);
  hp.mutable_validation()->set_split(0.2);
  const testing::BaseModel base = Builtin("resnet-small");
  auto one =
      Train(Options(kaizen::v1::STRATEGY_FEATURE_EXTRACTION, base, hp), {&train, nullptr}, {});
  hp.set_epochs(4);
  Recorder rec;
  auto four = Train(Options(kaizen::v1::STRATEGY_FEATURE_EXTRACTION, base, hp), {&train, nullptr},
                    rec.callbacks());
  ASSERT_TRUE(one.ok() && four.ok());
  // One pass over train (64) and validation (16) images; none afterwards.
  EXPECT_EQ(one->backbone_forward_batches, 2);
  EXPECT_EQ(four->backbone_forward_batches, one->backbone_forward_batches);
  EXPECT_GT(rec.epochs[3].val_accuracy(), 0.0);
  // Augmentation needs fresh features every step.
  hp.mutable_augmentation()->set_enabled(true);
  hp.mutable_augmentation()->set_horizontal_flip(true);
  hp.set_epochs(1);
  auto augmented =
      Train(Options(kaizen::v1::STRATEGY_FEATURE_EXTRACTION, base, hp), {&train, nullptr}, {});
  ASSERT_TRUE(augmented.ok());
  EXPECT_EQ(augmented->backbone_forward_batches, 4 + 1);  // 4 steps + evaluation
}

TEST(TrainerTest, SameSeedSameLoss) {
  datasets::DecodedDataset train = testing::SyntheticDataset(3, 12);
  auto hp = testing::FastHyperparameters(2);
  hp.mutable_augmentation()->set_enabled(true);
  hp.mutable_augmentation()->set_random_crop_padding(2);
  hp.mutable_augmentation()->set_horizontal_flip(true);
  hp.mutable_head()->set_kind(kaizen::v1::HEAD_KIND_MLP);
  hp.mutable_head()->set_hidden_units(16);
  hp.mutable_head()->set_dropout(0.5);
  const testing::BaseModel base = Builtin("cnn-small");
  auto a = Train(Options(kaizen::v1::STRATEGY_FULL, base, hp), {&train, nullptr}, {});
  auto b = Train(Options(kaizen::v1::STRATEGY_FULL, base, hp), {&train, nullptr}, {});
  hp.set_seed(8);
  auto c = Train(Options(kaizen::v1::STRATEGY_FULL, base, hp), {&train, nullptr}, {});
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_NEAR(a->last.train_loss(), b->last.train_loss(), 1e-6);
  EXPECT_NE(a->last.train_loss(), c->last.train_loss());
}

TEST(TrainerTest, ResumeMatchesUninterruptedRun) {
  datasets::DecodedDataset train = testing::SyntheticDataset(2, 16);
  for (auto strategy : {kaizen::v1::STRATEGY_FULL, kaizen::v1::STRATEGY_FEATURE_EXTRACTION}) {
    auto hp = testing::FastHyperparameters(4);
    hp.mutable_optimizer()->set_kind(kaizen::v1::OPTIMIZER_ADAMW);
    hp.mutable_optimizer()->set_weight_decay(0.01);
    hp.mutable_schedule()->set_kind(kaizen::v1::SCHEDULE_COSINE);
    hp.mutable_schedule()->set_warmup_epochs(1);
    hp.set_label_smoothing(0.1);
    if (strategy == kaizen::v1::STRATEGY_FULL) {
      hp.mutable_augmentation()->set_enabled(true);
      hp.mutable_augmentation()->set_random_crop_padding(2);
      hp.set_backbone_lr_multiplier(0.1);
    }
    const testing::BaseModel base = Builtin("resnet-small");
    auto straight = Train(Options(strategy, base, hp), {&train, nullptr}, {});
    ASSERT_TRUE(straight.ok()) << straight.status();

    // Two epochs, then a "crash": the checkpoint after epoch 2 is all that is left.
    Recorder first;
    int steps = 0;
    Callbacks crash = first.callbacks();
    crash.should_stop = [&] { return steps++ >= 4; };  // 2 steps per epoch
    auto part = Train(Options(strategy, base, hp), {&train, nullptr}, crash);
    ASSERT_TRUE(part.ok()) << part.status();
    ASSERT_GE(first.checkpoints.size(), 2u);
    const Checkpoint& cp = first.checkpoints[1];
    ASSERT_EQ(cp.epoch, 2);

    TrainerOptions resumed = Options(strategy, base, hp);
    resumed.base = cp.module;
    resumed.base_metadata = cp.metadata;
    resumed.resume_state = cp.resume_state;
    Recorder second;
    auto rest = Train(resumed, {&train, nullptr}, second.callbacks());
    ASSERT_TRUE(rest.ok()) << rest.status();
    EXPECT_EQ(rest->epochs_completed, 4);
    EXPECT_EQ(second.epochs.size(), 2u);
    EXPECT_EQ(second.steps.front().step(), 5);
    EXPECT_NEAR(rest->last.train_loss(), straight->last.train_loss(), 1e-5)
        << kaizen::v1::Strategy_Name(strategy);
  }
}

TEST(TrainerTest, CancelWritesFinalCheckpoint) {
  datasets::DecodedDataset train = testing::SyntheticDataset(2, 16);
  auto hp = testing::FastHyperparameters(3);
  Recorder rec;
  Callbacks callbacks = rec.callbacks();
  int checks = 0;
  callbacks.should_stop = [&] { return ++checks > 3; };  // stop before step 2 of epoch 2
  auto result = Train(Options(kaizen::v1::STRATEGY_FULL, Builtin("cnn-small"), hp),
                      {&train, nullptr}, callbacks);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(result->cancelled);
  EXPECT_EQ(result->epochs_completed, 1);
  ASSERT_EQ(rec.checkpoints.size(), 2u);  // after epoch 1, and the final one
  EXPECT_EQ(rec.checkpoints.back().epoch, 1);
  EXPECT_FALSE(rec.checkpoints.back().resume_state.empty());
  EXPECT_EQ(rec.steps.size(), 3u);

  // A checkpoint error aborts training with that status.
  Callbacks failing;
  failing.on_checkpoint = [](const Checkpoint&) { return absl::DataLossError("disk full"); };
  auto failed = Train(Options(kaizen::v1::STRATEGY_FULL, Builtin("cnn-small"), hp),
                      {&train, nullptr}, failing);
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kDataLoss);
}

TEST(TrainerTest, NanLossFailsWithClearError) {
  datasets::DecodedDataset train = testing::SyntheticDataset(2, 16);
  auto hp = testing::FastHyperparameters(3);
  hp.mutable_optimizer()->set_kind(kaizen::v1::OPTIMIZER_SGD);
  hp.set_learning_rate(1e12);
  auto result =
      Train(Options(kaizen::v1::STRATEGY_SCRATCH, Builtin("cnn-small"), hp), {&train, nullptr}, {});
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(result.status().message()),
              ::testing::MatchesRegex("loss became (NaN|Inf) at epoch [0-9]+ step [0-9]+ "
                                      "\\(learning rate 1e\\+12\\); lower the learning rate"));
}

TEST(TrainerTest, EarlyStoppingStopsAfterPatience) {
  datasets::DecodedDataset train = testing::SyntheticDataset(2, 16);
  datasets::DecodedDataset val = testing::SyntheticDataset(2, 4, 28, 1, 3);
  auto hp = testing::FastHyperparameters(20);
  hp.set_learning_rate(0.05);
  hp.mutable_early_stopping()->set_enabled(true);
  hp.mutable_early_stopping()->set_patience(2);
  hp.mutable_early_stopping()->set_metric("val_accuracy");
  Recorder rec;
  auto result = Train(Options(kaizen::v1::STRATEGY_FEATURE_EXTRACTION, Builtin("cnn-small"), hp),
                      {&train, &val}, rec.callbacks());
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(result->stopped_early);
  EXPECT_LT(result->epochs_completed, 20);
  EXPECT_EQ(result->epochs_completed, result->best_epoch + 2);
  int best = 0;
  for (const auto& cp : rec.checkpoints) best += cp.is_best ? 1 : 0;
  EXPECT_GE(best, 1);
  EXPECT_TRUE(rec.checkpoints[result->best_epoch - 1].is_best);
}

TEST(TrainerTest, RejectsUnsupportedStrategiesAndData) {
  datasets::DecodedDataset train = testing::SyntheticDataset(2, 4);
  const testing::BaseModel base = Builtin("cnn-small");
  auto hp = testing::FastHyperparameters(1);
  auto inc = Train(Options(kaizen::v1::STRATEGY_INCREMENTAL, base, hp), {&train, nullptr}, {});
  EXPECT_EQ(inc.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(inc.status().message()),
              HasSubstr("arrives with the incremental/distillation work"));
  EXPECT_EQ(
      Train(Options(kaizen::v1::STRATEGY_FULL, base, hp), {nullptr, nullptr}, {}).status().code(),
      absl::StatusCode::kInvalidArgument);
  // A torch failure becomes a Status with the place it happened.
  testing::BaseModel wrong = Builtin("cnn-small", 10, 28, /*channels=*/3);
  wrong.metadata.set_input_shape(0, 1);  // metadata lies about the channels
  auto failed = Train(Options(kaizen::v1::STRATEGY_FULL, wrong, hp), {&train, nullptr}, {});
  ASSERT_FALSE(failed.ok());
  EXPECT_THAT(std::string(failed.status().message()), HasSubstr("epoch 1 step 1: "));
}

}  // namespace
}  // namespace kaizen::training
