#include "server/training/trainer.h"

#include <algorithm>
#include <cmath>
#include <iostream>
#include <optional>
#include <tuple>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/datasets/record_file.h"
#include "server/imaging/normalizer.h"
#include "server/training/exemplar_memory.h"
#include "server/training/head.h"
#include "server/training/hyperparameters.h"
#include "server/training/image_set.h"
#include "tests/test_util/temp_dir.h"
#include "tests/unit/training/training_test_util.h"

namespace kaizen::training {
namespace {

using fixtures::Builtin;
using ::testing::HasSubstr;
using ::testing::Not;

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

TrainerOptions Options(kaizen::v1::Strategy strategy, const fixtures::BaseModel& base,
                       kaizen::v1::Hyperparameters hp) {
  TrainerOptions o;
  o.strategy = strategy;
  o.hyperparameters = std::move(hp);
  o.base = base.module;
  o.base_metadata = base.metadata;
  return o;
}

TEST(TrainerTest, LearnsSeparableData) {
  datasets::DecodedDataset train = fixtures::SyntheticDataset(2, 24, 28, 1, 1);
  datasets::DecodedDataset val = fixtures::SyntheticDataset(2, 10, 28, 1, 2);
  // Enough steps (24) for BatchNorm's running statistics to follow the weights.
  auto hp = fixtures::FastHyperparameters(4, /*batch=*/8);
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
  datasets::DecodedDataset train = fixtures::SyntheticDataset(2, 40);
  auto hp = fixtures::FastHyperparameters(1);
  hp.set_learning_rate(0.01);
  hp.mutable_validation()->set_split(0.2);
  const fixtures::BaseModel base = Builtin("resnet-small");
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
  ASSERT_EQ(rec.epochs.size(), 4u);
  EXPECT_GT(rec.epochs[3].val_accuracy(), 0.0);
  // Augmentation needs fresh features every step.
  hp.mutable_augmentation()->set_enabled(true);
  hp.mutable_augmentation()->set_horizontal_flip(true);
  hp.set_epochs(1);
  auto augmented =
      Train(Options(kaizen::v1::STRATEGY_FEATURE_EXTRACTION, base, hp), {&train, nullptr}, {});
  ASSERT_TRUE(augmented.ok());
  // The features' statistics (for the head's standardised input), 4 steps,
  // evaluation.
  EXPECT_EQ(augmented->backbone_forward_batches, 1 + 4 + 1);
}

TEST(TrainerTest, SameSeedSameLoss) {
  datasets::DecodedDataset train = fixtures::SyntheticDataset(3, 12);
  auto hp = fixtures::FastHyperparameters(2);
  hp.mutable_augmentation()->set_enabled(true);
  hp.mutable_augmentation()->set_random_crop_padding(2);
  hp.mutable_augmentation()->set_horizontal_flip(true);
  hp.mutable_head()->set_kind(kaizen::v1::HEAD_KIND_MLP);
  hp.mutable_head()->set_hidden_units(16);
  hp.mutable_head()->set_dropout(0.5);
  const fixtures::BaseModel base = Builtin("cnn-small");
  auto a = Train(Options(kaizen::v1::STRATEGY_FULL, base, hp), {&train, nullptr}, {});
  auto b = Train(Options(kaizen::v1::STRATEGY_FULL, base, hp), {&train, nullptr}, {});
  hp.set_seed(8);
  auto c = Train(Options(kaizen::v1::STRATEGY_FULL, base, hp), {&train, nullptr}, {});
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_NEAR(a->last.train_loss(), b->last.train_loss(), 1e-6);
  EXPECT_NE(a->last.train_loss(), c->last.train_loss());
}

TEST(TrainerTest, ResumeMatchesUninterruptedRun) {
  datasets::DecodedDataset train = fixtures::SyntheticDataset(2, 16);
  for (auto strategy : {kaizen::v1::STRATEGY_FULL, kaizen::v1::STRATEGY_FEATURE_EXTRACTION}) {
    auto hp = fixtures::FastHyperparameters(4);
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
    const fixtures::BaseModel base = Builtin("resnet-small");
    auto straight = Train(Options(strategy, base, hp), {&train, nullptr}, {});
    ASSERT_TRUE(straight.ok()) << straight.status();

    // Two epochs, then a "crash": the checkpoint after epoch 2 is all that is left.
    Recorder first;
    Callbacks crash = first.callbacks();
    // 2 steps per epoch: stop before the fifth (should_stop is also asked
    // during passes, so count steps, not calls).
    crash.should_stop = [&first] { return first.steps.size() >= 4; };
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

// Pausing stops between two steps of an epoch; resuming from that
// checkpoint must continue with the very next step as if nothing had
// happened: the same loss at every step and every epoch's metrics, and the
// same final weights, as a run that never stopped (on the CPU). The
// settings draw on every kind of state a step depends on: the sampler's
// shuffled order, the augmentation generator (crops, flips), LibTorch's
// global generator (the MLP head's dropout), the optimizer's moments, the
// warm-up and cosine schedule, the epoch's running sums and, for
// FEATURE_EXTRACTION, the feature cache that is rebuilt on resume.
class PauseResumeTest : public ::testing::TestWithParam<std::tuple<kaizen::v1::Strategy, bool>> {};

TEST_P(PauseResumeTest, PausedMidEpochContinuesWithTheSameLosses) {
  const kaizen::v1::Strategy strategy = std::get<0>(GetParam());
  const bool streamed = std::get<1>(GetParam());
  datasets::DecodedDataset train = fixtures::SyntheticDataset(2, 20);
  // Streamed from a record file (a budget of 0 bytes), the stop's
  // checkpoint recalibrates BatchNorm in the middle of the epoch's pass and
  // the resumed run starts its pass at the stopped step.
  test_util::TempDir dir;
  TrainingData data{&train, nullptr};
  if (streamed) {
    ASSERT_TRUE(datasets::WriteRawRecordFile(dir.File("train.krf"), train).ok());
    auto file = datasets::RecordFile::Open(dir.File("train.krf"));
    ASSERT_TRUE(file.ok()) << file.status();
    data = TrainingData{};
    data.train_file = std::move(*file);
  }
  auto options = [&](kaizen::v1::Strategy s, const fixtures::BaseModel& b,
                     const kaizen::v1::Hyperparameters& h) {
    TrainerOptions o = Options(s, b, h);
    o.max_image_memory_bytes = streamed ? 0 : o.max_image_memory_bytes;
    return o;
  };
  auto hp = fixtures::FastHyperparameters(3, /*batch=*/8);
  hp.mutable_optimizer()->set_kind(kaizen::v1::OPTIMIZER_ADAMW);
  hp.mutable_optimizer()->set_weight_decay(0.01);
  hp.mutable_schedule()->set_kind(kaizen::v1::SCHEDULE_COSINE);
  hp.mutable_schedule()->set_warmup_epochs(1);
  hp.set_label_smoothing(0.1);
  hp.mutable_validation()->set_split(0.2);
  hp.mutable_head()->set_kind(kaizen::v1::HEAD_KIND_MLP);
  hp.mutable_head()->set_hidden_units(16);
  hp.mutable_head()->set_dropout(0.3);
  hp.set_backbone_lr_multiplier(0.1);
  if (strategy != kaizen::v1::STRATEGY_FEATURE_EXTRACTION) {
    hp.mutable_augmentation()->set_enabled(true);
    hp.mutable_augmentation()->set_random_crop_padding(2);
    hp.mutable_augmentation()->set_horizontal_flip(true);
  }
  if (strategy == kaizen::v1::STRATEGY_FINE_TUNE) hp.set_head_warmup_epochs(1);
  const fixtures::BaseModel base = Builtin("resnet-small");

  Recorder straight;
  auto whole = Train(options(strategy, base, hp), data, straight.callbacks());
  ASSERT_TRUE(whole.ok()) << whole.status();
  // 32 training images in batches of 8: 4 steps per epoch, 12 in all.
  ASSERT_EQ(straight.steps.size(), 12u);

  // Stops before global steps 3 and 7 (the third step of epochs 1 and 2) and
  // before step 9 (the first of epoch 3, an epoch boundary), each run
  // resuming from the previous one's last checkpoint.
  std::vector<kaizen::v1::StepProgress> steps;
  std::vector<kaizen::v1::EpochMetrics> epochs;
  std::optional<Checkpoint> from;
  for (int64_t stop_after : {2, 6, 8, 12}) {
    TrainerOptions o = options(strategy, base, hp);
    if (from) {
      o.base = from->module;
      o.base_metadata = from->metadata;
      o.resume_state = from->resume_state;
    }
    Recorder part;
    Callbacks c = part.callbacks();
    const int64_t done_before = static_cast<int64_t>(steps.size());
    c.should_stop = [&part, done_before, stop_after] {
      return done_before + static_cast<int64_t>(part.steps.size()) >= stop_after;
    };
    auto result = Train(o, data, c);
    ASSERT_TRUE(result.ok()) << result.status();
    ASSERT_FALSE(part.steps.empty());
    EXPECT_EQ(part.steps.front().step(), done_before + 1) << "resumed at the wrong step";
    steps.insert(steps.end(), part.steps.begin(), part.steps.end());
    epochs.insert(epochs.end(), part.epochs.begin(), part.epochs.end());
    ASSERT_FALSE(part.checkpoints.empty());
    from = part.checkpoints.back();
    if (stop_after < 12) {
      EXPECT_TRUE(result->cancelled);
      EXPECT_EQ(from->epoch, stop_after / 4) << "a checkpoint counts completed epochs";
    } else {
      EXPECT_FALSE(result->cancelled);
      EXPECT_EQ(result->epochs_completed, 3);
    }
  }

  double worst = 0;
  ASSERT_EQ(steps.size(), straight.steps.size());
  for (size_t i = 0; i < steps.size(); ++i) {
    EXPECT_EQ(steps[i].step(), straight.steps[i].step());
    EXPECT_NEAR(steps[i].loss(), straight.steps[i].loss(), 1e-6) << "step " << i + 1;
    EXPECT_DOUBLE_EQ(steps[i].learning_rate(), straight.steps[i].learning_rate());
    worst = std::max(worst, std::abs(steps[i].loss() - straight.steps[i].loss()));
  }
  ASSERT_EQ(epochs.size(), straight.epochs.size());
  for (size_t i = 0; i < epochs.size(); ++i) {
    const auto& a = epochs[i];
    const auto& b = straight.epochs[i];
    EXPECT_EQ(a.epoch(), b.epoch());
    EXPECT_NEAR(a.train_loss(), b.train_loss(), 1e-6) << "epoch " << b.epoch();
    EXPECT_NEAR(a.train_accuracy(), b.train_accuracy(), 1e-9) << "epoch " << b.epoch();
    EXPECT_NEAR(a.val_loss(), b.val_loss(), 1e-6) << "epoch " << b.epoch();
    EXPECT_NEAR(a.val_accuracy(), b.val_accuracy(), 1e-9) << "epoch " << b.epoch();
    EXPECT_DOUBLE_EQ(a.learning_rate(), b.learning_rate());
    worst = std::max(
        {worst, std::abs(a.train_loss() - b.train_loss()), std::abs(a.val_loss() - b.val_loss())});
  }
  // The same final weights.
  const auto resumed_weights = fixtures::Snapshot(from->module);
  const auto straight_weights = fixtures::Snapshot(straight.checkpoints.back().module);
  ASSERT_EQ(resumed_weights.size(), straight_weights.size());
  for (size_t i = 0; i < resumed_weights.size(); ++i) {
    ASSERT_EQ(resumed_weights[i].first, straight_weights[i].first);
    const double diff = (resumed_weights[i].second.to(torch::kDouble) -
                         straight_weights[i].second.to(torch::kDouble))
                            .abs()
                            .max()
                            .item<double>();
    EXPECT_LE(diff, 1e-6) << resumed_weights[i].first;
    worst = std::max(worst, diff);
  }
  std::cout << kaizen::v1::Strategy_Name(strategy) << (streamed ? " streamed" : "")
            << ": largest difference from the uninterrupted run (losses, weights): " << worst
            << "\n";
}

INSTANTIATE_TEST_SUITE_P(
    EveryStrategy, PauseResumeTest,
    ::testing::Combine(::testing::Values(kaizen::v1::STRATEGY_FEATURE_EXTRACTION,
                                         kaizen::v1::STRATEGY_FINE_TUNE, kaizen::v1::STRATEGY_FULL,
                                         kaizen::v1::STRATEGY_SCRATCH),
                       ::testing::Bool()),
    [](const ::testing::TestParamInfo<std::tuple<kaizen::v1::Strategy, bool>>& info) {
      // Without "STRATEGY_".
      return kaizen::v1::Strategy_Name(std::get<0>(info.param)).substr(9) +
             (std::get<1>(info.param) ? "_streamed" : "");
    });

// A checkpoint that stands at a step its epoch no longer has (the batch size
// changed) is refused rather than resumed somewhere else.
TEST(TrainerTest, AResumePositionBeyondTheEpochIsRefused) {
  datasets::DecodedDataset train = fixtures::SyntheticDataset(2, 16);
  auto hp = fixtures::FastHyperparameters(2);
  const fixtures::BaseModel base = Builtin("cnn-small");
  Recorder rec;
  Callbacks c = rec.callbacks();
  c.should_stop = [&rec] { return rec.steps.size() >= 1; };
  auto part = Train(Options(kaizen::v1::STRATEGY_FULL, base, hp), {&train, nullptr}, c);
  ASSERT_TRUE(part.ok()) << part.status();
  ASSERT_FALSE(rec.checkpoints.empty());
  const Checkpoint& cp = rec.checkpoints.back();
  // Batches of 32 leave one step per epoch; the checkpoint stands at step 2.
  hp.set_batch_size(32);
  TrainerOptions o = Options(kaizen::v1::STRATEGY_FULL, base, hp);
  o.base = cp.module;
  o.base_metadata = cp.metadata;
  o.resume_state = cp.resume_state;
  auto resumed = Train(o, {&train, nullptr}, {});
  ASSERT_FALSE(resumed.ok());
  EXPECT_EQ(resumed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(resumed.status().message()), HasSubstr("batch size changed"));
}

TEST(TrainerTest, CancelWritesFinalCheckpoint) {
  datasets::DecodedDataset train = fixtures::SyntheticDataset(2, 16);
  auto hp = fixtures::FastHyperparameters(3);
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
  datasets::DecodedDataset train = fixtures::SyntheticDataset(2, 16);
  auto hp = fixtures::FastHyperparameters(3);
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
  datasets::DecodedDataset train = fixtures::SyntheticDataset(2, 16);
  datasets::DecodedDataset val = fixtures::SyntheticDataset(2, 4, 28, 1, 3);
  auto hp = fixtures::FastHyperparameters(20);
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

TrainerOptions Distilling(const fixtures::BaseModel& student, const fixtures::BaseModel& teacher,
                          kaizen::v1::Hyperparameters hp) {
  TrainerOptions o = Options(kaizen::v1::STRATEGY_DISTILL, student, std::move(hp));
  TrainerOptions::Distillation d;
  d.teacher = teacher.module;
  d.teacher_metadata = teacher.metadata;
  d.temperature = 4;
  d.alpha = 0.7;
  o.distillation = d;
  return o;
}

TEST(TrainerTest, DistillRunsTheTeacherOnEveryAugmentedBatchOrOnceWithoutAugmentation) {
  datasets::DecodedDataset train = fixtures::SyntheticDataset(2, 24, 28, 1, 1);
  datasets::DecodedDataset val = fixtures::SyntheticDataset(2, 10, 28, 1, 2);
  const fixtures::BaseModel teacher = Builtin("resnet-small", 2);
  auto hp = fixtures::FastHyperparameters(2, 16);
  hp.mutable_augmentation()->set_enabled(false);
  auto cached = Train(Distilling(Builtin("cnn-small", 2), teacher, hp), {&train, &val}, {});
  ASSERT_TRUE(cached.ok()) << cached.status();
  // 48 images in one cache pass, then one pass over the 20 validation images.
  EXPECT_EQ(cached->teacher_forward_batches, 2);
  EXPECT_EQ(cached->validation_examples, 20);
  EXPECT_GE(cached->teacher_val_accuracy, 0);
  EXPECT_LE(cached->teacher_val_accuracy, 1);

  hp.mutable_augmentation()->set_enabled(true);
  hp.mutable_augmentation()->set_random_crop_padding(2);
  auto augmented = Train(Distilling(Builtin("cnn-small", 2), teacher, hp), {&train, &val}, {});
  ASSERT_TRUE(augmented.ok()) << augmented.status();
  // Three steps per epoch, each on a freshly augmented batch, plus validation.
  EXPECT_EQ(augmented->teacher_forward_batches, 2 * 3 + 1);
  // Both teachers were the same model on the same images.
  EXPECT_DOUBLE_EQ(augmented->teacher_val_accuracy, cached->teacher_val_accuracy);
}

TEST(TrainerTest, ADistilledStudentLearnsFromAGoodTeacherAlone) {
  // A teacher trained on the labels, then a student that sees only its
  // softened outputs (alpha 1): it must learn the task from them.
  datasets::DecodedDataset train = fixtures::SyntheticDataset(2, 24, 28, 1, 1);
  datasets::DecodedDataset val = fixtures::SyntheticDataset(2, 10, 28, 1, 2);
  Recorder teacher_rec;
  auto hp = fixtures::FastHyperparameters(4, 16);
  auto taught = Train(Options(kaizen::v1::STRATEGY_SCRATCH, Builtin("cnn-small", 2), hp),
                      {&train, &val}, teacher_rec.callbacks());
  ASSERT_TRUE(taught.ok()) << taught.status();
  ASSERT_FALSE(teacher_rec.checkpoints.empty());
  fixtures::BaseModel teacher{teacher_rec.checkpoints.back().module,
                              teacher_rec.checkpoints.back().metadata};
  TrainerOptions o = Distilling(Builtin("cnn-small", 2, 28, 1, /*seed=*/9), teacher, hp);
  o.distillation->alpha = 1.0;
  auto student = Train(o, {&train, &val}, {});
  ASSERT_TRUE(student.ok()) << student.status();
  EXPECT_GE(student->teacher_val_accuracy, 0.9);
  EXPECT_GE(student->last.val_accuracy(), 0.9);
}

TEST(TrainerTest, DistillWithoutATeacherIsRefused) {
  datasets::DecodedDataset train = fixtures::SyntheticDataset(2, 4);
  auto r = Train(Options(kaizen::v1::STRATEGY_DISTILL, Builtin("cnn-small", 2),
                         fixtures::FastHyperparameters(1)),
                 {&train, nullptr}, {});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("needs a teacher"));
}

TEST(TrainerTest, RejectsUnsupportedStrategiesAndData) {
  datasets::DecodedDataset train = fixtures::SyntheticDataset(2, 4);
  const fixtures::BaseModel base = Builtin("cnn-small");
  auto hp = fixtures::FastHyperparameters(1);
  // INCREMENTAL without its previous model.
  auto inc = Train(Options(kaizen::v1::STRATEGY_INCREMENTAL, base, hp), {&train, nullptr}, {});
  EXPECT_EQ(inc.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(inc.status().message()), HasSubstr("needs the previous model"));
  EXPECT_EQ(
      Train(Options(kaizen::v1::STRATEGY_FULL, base, hp), {nullptr, nullptr}, {}).status().code(),
      absl::StatusCode::kInvalidArgument);
  // A torch failure becomes a Status with the place it happened.
  fixtures::BaseModel wrong = Builtin("cnn-small", 10, 28, /*channels=*/3);
  wrong.metadata.set_input_shape(0, 1);  // metadata lies about the channels
  auto failed = Train(Options(kaizen::v1::STRATEGY_FULL, wrong, hp), {&train, nullptr}, {});
  ASSERT_FALSE(failed.ok());
  EXPECT_THAT(std::string(failed.status().message()), HasSubstr("epoch 1 step 1: "));
}

// The images of `data` as a checkpoint's module takes them.
torch::Tensor ModelInput(const datasets::DecodedDataset& data, const kaizen::v1::Model& meta) {
  auto set = ConvertDataset(data, {meta.input_shape().begin(), meta.input_shape().end()});
  EXPECT_TRUE(set.ok()) << set.status();
  imaging::Normalizer normalizer(meta.normalization(), meta.input_shape(0), torch::kCPU);
  return normalizer.Normalize(imaging::Normalizer::ToUnit(set->images));
}

torch::Tensor Labels(const datasets::DecodedDataset& data) {
  std::vector<int64_t> labels;
  for (const auto& r : data.records) labels.push_back(r.label);
  return torch::tensor(labels, torch::kLong);
}

// Eval-mode logits of `module`, or, with `batch_statistics`, the logits with
// every BatchNorm layer normalising by the statistics of this very batch.
torch::Tensor Logits(torch::jit::Module module, const torch::Tensor& x, bool batch_statistics) {
  torch::jit::Module copy = module.deepcopy();
  copy.eval();
  if (batch_statistics) {
    for (const auto& m : copy.named_modules()) {
      if (m.value.hasattr("running_mean")) {
        torch::jit::Module bn = m.value;
        bn.train();
      }
    }
  }
  torch::NoGradGuard no_grad;
  return copy.forward({x}).toTensor();
}

// A from-scratch model trained on augmented images with batches that leave
// BatchNorm's moving averages behind the weights: the last checkpoint's
// statistics are recomputed on the un-augmented training images, so in eval
// mode it gives the logits of normalising the whole training set by its own
// statistics, and it says how many layers it recalibrated.
TEST(TrainerTest, BatchNormIsRecalibratedOnTheTrainingImages) {
  datasets::DecodedDataset train = fixtures::SyntheticDataset(2, 12);
  auto hp = fixtures::FastHyperparameters(3, /*batch=*/8);
  hp.set_learning_rate(0.01);
  hp.mutable_augmentation()->set_enabled(true);
  hp.mutable_augmentation()->set_random_crop_padding(3);
  hp.mutable_augmentation()->set_brightness(0.4);
  Recorder rec;
  std::vector<std::string> messages;
  Callbacks callbacks = rec.callbacks();
  callbacks.on_message = [&](const std::string& m) { messages.push_back(m); };
  const fixtures::BaseModel base = Builtin("cnn-small");
  auto result =
      Train(Options(kaizen::v1::STRATEGY_SCRATCH, base, hp), {&train, nullptr}, callbacks);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->batchnorm_recalibrated, 3);
  ASSERT_EQ(rec.checkpoints.size(), 3u);
  const Checkpoint& last = rec.checkpoints.back();
  EXPECT_EQ(last.metadata.metrics().at("bn_recalibrated"), 3);
  ASSERT_EQ(messages.size(), 1u);
  EXPECT_THAT(messages[0], HasSubstr("running statistics of the 3 layers that trained"));
  EXPECT_EQ(result->notes, messages);

  const torch::Tensor x = ModelInput(train, last.metadata);
  const torch::Tensor eval = Logits(last.module, x, /*batch_statistics=*/false);
  const torch::Tensor batch = Logits(last.module, x, /*batch_statistics=*/true);
  const double scale = batch.abs().max().item<double>();
  // Up to the unbiased variance (N-1 rather than N over 24 x 7 x 7 values).
  EXPECT_LT((eval - batch).abs().max().item<double>(), 2e-3 * std::max(1.0, scale));

  // The same job and seed give the same statistics (a resume recomputes
  // them identically).
  Recorder again;
  ASSERT_TRUE(
      Train(Options(kaizen::v1::STRATEGY_SCRATCH, base, hp), {&train, nullptr}, again.callbacks())
          .ok());
  const auto a = fixtures::Snapshot(last.module);
  const auto b = fixtures::Snapshot(again.checkpoints.back().module);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(torch::equal(a[i].second, b[i].second));
}

// Without validation or early stopping a long run checkpoints after every
// ceil(epochs / 10)th epoch and the last, each with recomputed BatchNorm
// statistics, and its best version is one of them; with validation data
// every epoch has its checkpoint.
TEST(TrainerTest, LongRunsWithoutValidationCheckpointAboutTenTimes) {
  datasets::DecodedDataset train = fixtures::SyntheticDataset(2, 4);
  auto hp = fixtures::FastHyperparameters(25, /*batch=*/8);
  Recorder rec;
  const fixtures::BaseModel base = Builtin("cnn-small");
  auto result =
      Train(Options(kaizen::v1::STRATEGY_SCRATCH, base, hp), {&train, nullptr}, rec.callbacks());
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(rec.epochs.size(), 25u) << "every epoch still reports";
  std::vector<int32_t> epochs;
  for (const Checkpoint& cp : rec.checkpoints) {
    epochs.push_back(cp.epoch);
    EXPECT_EQ(cp.metadata.metrics().at("bn_recalibrated"), 3) << "epoch " << cp.epoch;
  }
  EXPECT_THAT(epochs, ::testing::ElementsAre(3, 6, 9, 12, 15, 18, 21, 24, 25));
  EXPECT_THAT(epochs, ::testing::Contains(result->best_epoch));
  int best = 0;
  for (const Checkpoint& cp : rec.checkpoints) best += cp.is_best ? 1 : 0;
  EXPECT_GE(best, 1);

  // A run resumed from the checkpoint of epoch 12 continues on the same
  // schedule to the same final weights.
  TrainerOptions o = Options(kaizen::v1::STRATEGY_SCRATCH, base, hp);
  o.base = rec.checkpoints[3].module;
  o.base_metadata = rec.checkpoints[3].metadata;
  o.resume_state = rec.checkpoints[3].resume_state;
  Recorder resumed;
  ASSERT_TRUE(Train(o, {&train, nullptr}, resumed.callbacks()).ok());
  ASSERT_EQ(resumed.checkpoints.size(), 5u);
  EXPECT_EQ(resumed.checkpoints.front().epoch, 15);
  const auto a = fixtures::Snapshot(rec.checkpoints.back().module);
  const auto b = fixtures::Snapshot(resumed.checkpoints.back().module);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(torch::equal(a[i].second, b[i].second));

  // With validation data, a checkpoint after every epoch.
  datasets::DecodedDataset val = fixtures::SyntheticDataset(2, 2, 28, 1, 2);
  hp.set_epochs(12);
  Recorder validated;
  ASSERT_TRUE(
      Train(Options(kaizen::v1::STRATEGY_SCRATCH, base, hp), {&train, &val}, validated.callbacks())
          .ok());
  EXPECT_EQ(validated.checkpoints.size(), 12u);
}

// FINE_TUNE trains the top block: only its BatchNorm layers are
// recalibrated; the frozen ones keep the base's statistics exactly.
TEST(TrainerTest, FrozenBatchNormKeepsThePretrainedStatistics) {
  datasets::DecodedDataset train = fixtures::SyntheticDataset(2, 12);
  auto hp = fixtures::FastHyperparameters(2, /*batch=*/8);
  hp.set_trainable_blocks(1);
  hp.set_backbone_lr_multiplier(0.1);
  const fixtures::BaseModel base = Builtin("resnet-small");
  Recorder rec;
  auto result =
      Train(Options(kaizen::v1::STRATEGY_FINE_TUNE, base, hp), {&train, nullptr}, rec.callbacks());
  ASSERT_TRUE(result.ok()) << result.status();
  // layer3: two blocks of two BatchNorm layers, and the shortcut's.
  EXPECT_EQ(result->batchnorm_recalibrated, 5);
  ASSERT_FALSE(result->notes.empty());
  EXPECT_THAT(result->notes.back(), HasSubstr("10 frozen layers kept their pretrained statistics"));
  const auto before = fixtures::Snapshot(base.module);
  const auto after = fixtures::Snapshot(rec.checkpoints.back().module);
  int compared = 0;
  for (const auto& [name, value] : after) {
    if (name.find("running_") == std::string::npos || name.rfind("layer3.", 0) == 0) continue;
    for (const auto& [base_name, base_value] : before) {
      if (base_name != name) continue;
      EXPECT_TRUE(torch::equal(value, base_value)) << name;
      ++compared;
    }
  }
  EXPECT_EQ(compared, 20);  // running mean and var of the 10 frozen layers
}

// A backbone whose features are 1000 times larger than usual (like a
// randomly initialised torchvision resnet50's): the head trains on
// standardised features, starts at a sane loss with the default
// hyperparameters and converges, and the exported model, which has the
// standardisation folded into its head, scores what the trainer measured.
TEST(TrainerTest, FeatureExtractionConvergesWhateverTheFeatureScale) {
  datasets::DecodedDataset train = fixtures::SyntheticDataset(2, 20);
  datasets::DecodedDataset val = fixtures::SyntheticDataset(2, 10, 28, 1, 2);
  fixtures::BaseModel base = Builtin("cnn-small");
  {
    // Scaling the last BatchNorm's affine map scales the features: ReLU,
    // max- and average-pooling are positively homogeneous.
    torch::NoGradGuard no_grad;
    auto bn = FindSubmodule(base.module, "features.block3.bn");
    ASSERT_TRUE(bn.ok());
    bn->attr("weight").toTensor().mul_(1000);
    bn->attr("bias").toTensor().mul_(1000);
  }
  kaizen::v1::Hyperparameters requested;
  requested.set_seed(3);
  // The feature cache, which 40 images would not get by default.
  requested.mutable_augmentation()->set_enabled(false);
  auto hp = ResolveHyperparameters(kaizen::v1::STRATEGY_FEATURE_EXTRACTION, requested, 40);
  ASSERT_TRUE(hp.ok()) << hp.status();
  Recorder rec;
  auto result = Train(Options(kaizen::v1::STRATEGY_FEATURE_EXTRACTION, base, *hp), {&train, &val},
                      rec.callbacks());
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_FALSE(rec.steps.empty());
  // ln 2 = 0.69 for a head that knows nothing; raw features gave hundreds.
  EXPECT_LT(rec.steps.front().loss(), 2.0);
  EXPECT_GE(result->last.train_accuracy(), 0.95);
  EXPECT_GE(result->last.val_accuracy(), 0.9);
  ASSERT_FALSE(result->notes.empty());
  EXPECT_THAT(result->notes.front(), HasSubstr("standardised"));

  const Checkpoint& last = rec.checkpoints.back();
  const torch::Tensor logits = Logits(last.module, ModelInput(val, last.metadata), false);
  const double loss = torch::nn::functional::cross_entropy(logits, Labels(val)).item<double>();
  EXPECT_NEAR(loss, result->last.val_loss(), 1e-3 * std::max(1.0, loss));
  const double accuracy = logits.argmax(1).eq(Labels(val)).to(torch::kDouble).mean().item<double>();
  EXPECT_NEAR(accuracy, result->last.val_accuracy(), 0.051);  // one image of 20 at most
}

// A validation split that would leave a class fewer than 8 training images
// is not taken: the job says so and trains on every image (the checkpoint
// metric is train_loss, early stopping is off); a split that leaves enough
// is kept.
TEST(TrainerTest, TinyDatasetsTrainOnEveryImageInsteadOfSplitting) {
  datasets::DecodedDataset tiny = fixtures::SyntheticDataset(2, 5);
  auto hp = fixtures::FastHyperparameters(3, /*batch=*/16);
  hp.mutable_validation()->set_split(0.2);
  hp.mutable_early_stopping()->set_enabled(true);
  hp.mutable_early_stopping()->set_patience(1);
  Recorder rec;
  std::vector<std::string> messages;
  Callbacks callbacks = rec.callbacks();
  callbacks.on_message = [&](const std::string& m) { messages.push_back(m); };
  const fixtures::BaseModel base = Builtin("cnn-small");
  auto result = Train(Options(kaizen::v1::STRATEGY_FULL, base, hp), {&tiny, nullptr}, callbacks);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_FALSE(messages.empty());
  EXPECT_THAT(messages[0], HasSubstr("a 0.2 split would leave a class 4 training images"));
  EXPECT_THAT(messages[0],
              HasSubstr("all 10 images without validation and without early stopping"));
  EXPECT_EQ(result->best_metric_name, "train_loss");
  EXPECT_FALSE(result->stopped_early);
  EXPECT_EQ(result->epochs_completed, 3);
  ASSERT_EQ(rec.epochs.size(), 3u);
  EXPECT_EQ(rec.epochs.back().val_accuracy(), 0);
  EXPECT_FALSE(rec.checkpoints.back().metadata.metrics().contains("val_accuracy"));
  // All 10 images in one batch: one step per epoch.
  EXPECT_EQ(rec.steps.size(), 3u);

  // 10 per class at 0.2: 8 train, just enough.
  datasets::DecodedDataset enough = fixtures::SyntheticDataset(2, 10);
  hp.mutable_early_stopping()->set_enabled(false);
  Recorder kept;
  auto split =
      Train(Options(kaizen::v1::STRATEGY_FULL, base, hp), {&enough, nullptr}, kept.callbacks());
  ASSERT_TRUE(split.ok()) << split.status();
  EXPECT_EQ(split->best_metric_name, "val_accuracy");
  EXPECT_TRUE(kept.checkpoints.back().metadata.metrics().contains("val_accuracy"));
  for (const std::string& note : split->notes) EXPECT_THAT(note, Not(HasSubstr("validation")));
}

// INCREMENTAL: a 2-class model learns 2 more classes; the memory holds the
// old classes' exemplars chosen from the base's images and the new ones',
// bounded, the same on every run with the seed.
TEST(TrainerTest, IncrementalGrowsTheClassListAndStoresABoundedMemory) {
  const datasets::DecodedDataset all = fixtures::SyntheticDataset(4, 12);
  const datasets::DecodedDataset old_data = ShrinkMemory(all, {"class0", "class1"}, 1000);
  datasets::DecodedDataset new_data = ShrinkMemory(all, {"class2", "class3"}, 1000);
  auto hp = fixtures::FastHyperparameters(2, /*batch=*/8);
  Recorder base_rec;
  auto base_run = Train(Options(kaizen::v1::STRATEGY_FULL, Builtin("cnn-small", 2), hp),
                        {&old_data, nullptr}, base_rec.callbacks());
  ASSERT_TRUE(base_run.ok()) << base_run.status();
  ASSERT_FALSE(base_rec.checkpoints.empty());
  const Checkpoint& base = base_rec.checkpoints.back();

  const std::vector<std::string> merged =
      MergeClassNames({"class0", "class1"}, {"class3", "class2", "class0"});
  EXPECT_EQ(merged, (std::vector<std::string>{"class0", "class1", "class3", "class2"}));
  new_data =
      ShrinkMemory(new_data, MergeClassNames({"class0", "class1"}, new_data.class_names), 1000);

  auto run = [&](Recorder* rec) {
    TrainerOptions o;
    o.strategy = kaizen::v1::STRATEGY_INCREMENTAL;
    o.hyperparameters = hp;
    o.hyperparameters.mutable_validation()->set_split(0.25);
    o.base = base.module;
    o.base_metadata = base.metadata;
    TrainerOptions::Incremental inc;
    inc.previous = base.module;
    inc.previous_metadata = base.metadata;
    auto resolved = ResolveIncremental(kaizen::v1::STRATEGY_INCREMENTAL, {}, 5);
    EXPECT_TRUE(resolved.ok());
    inc.options = *resolved;
    inc.options.set_exemplars_per_class(3);
    inc.memory_source = &old_data;
    o.incremental = inc;
    return Train(o, {&new_data, nullptr}, rec->callbacks());
  };
  Recorder rec;
  auto result = run(&rec);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_FALSE(rec.checkpoints.empty());
  const Checkpoint& cp = rec.checkpoints.back();
  EXPECT_EQ(
      std::vector<std::string>(cp.metadata.class_names().begin(), cp.metadata.class_names().end()),
      (std::vector<std::string>{"class0", "class1", "class2", "class3"}));
  EXPECT_EQ(cp.metadata.head().out_features(), 4);
  ASSERT_NE(cp.exemplars, nullptr);
  EXPECT_EQ(MemoryClassCounts(*cp.exemplars), (std::vector<int64_t>{3, 3, 3, 3}));
  EXPECT_EQ(cp.exemplars->records[0].height, 28);
  // Old classes replayed class-balanced: each up to the new classes' mean.
  EXPECT_GT(result->incremental.replayed, 6);
  // Validation holds only new-data images: old classes are unmeasured there.
  ASSERT_FALSE(rec.epochs.empty());
  EXPECT_EQ(rec.epochs.back().old_class_examples(), 0);
  EXPECT_GT(rec.epochs.back().new_class_examples(), 0);
  EXPECT_EQ(result->incremental.old_examples, 0);
  EXPECT_EQ(result->incremental.new_accuracy_before, 0);  // it cannot name them
  // The same memory again with the same seed (what a resumed job rebuilds).
  Recorder again;
  ASSERT_TRUE(run(&again).ok());
  ASSERT_NE(again.checkpoints.back().exemplars, nullptr);
  EXPECT_EQ(again.checkpoints.back().exemplars->pixels, cp.exemplars->pixels);
}

}  // namespace
}  // namespace kaizen::training
