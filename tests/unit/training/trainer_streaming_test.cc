// The trainer on record files: converted into memory when they fit the
// job's image budget, streamed through the RecordLoader when they do not.
// Both must train exactly as the decoded in-memory dataset does, and a
// streamed job's memory must not grow with its dataset. Also the
// frozen-prefix cache, in memory and streamed.
#include <malloc.h>

#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/datasets/record_file.h"
#include "server/training/image_source.h"
#include "server/training/resume_state.h"
#include "server/training/trainer.h"
#include "tests/test_util/image_fixtures.h"
#include "tests/test_util/temp_dir.h"
#include "tests/unit/training/training_test_util.h"

namespace kaizen::training {
namespace {

using fixtures::Builtin;
using ::testing::AnyOf;
using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::Not;

std::shared_ptr<const datasets::RecordFile> OpenFile(const std::string& path) {
  auto file = datasets::RecordFile::Open(path);
  EXPECT_TRUE(file.ok()) << file.status();
  return file.ok() ? std::shared_ptr<const datasets::RecordFile>(std::move(*file)) : nullptr;
}

std::shared_ptr<const datasets::RecordFile> RawRecords(const test_util::TempDir& dir,
                                                       const std::string& name,
                                                       const datasets::DecodedDataset& data) {
  const std::string path = dir.File(name);
  EXPECT_TRUE(datasets::WriteRawRecordFile(path, data).ok());
  return OpenFile(path);
}

struct Outcome {
  absl::StatusOr<TrainResult> result = absl::UnknownError("not run");
  std::vector<kaizen::v1::EpochMetrics> epochs;
  std::vector<double> step_losses;
  std::vector<Checkpoint> checkpoints;
};

Outcome TrainOnce(const TrainerOptions& options, const TrainingData& data,
                  std::function<bool()> should_stop = nullptr) {
  Outcome run;
  Callbacks cb;
  cb.should_stop = std::move(should_stop);
  cb.on_epoch = [&](const kaizen::v1::EpochMetrics& m) { run.epochs.push_back(m); };
  cb.on_step = [&](const kaizen::v1::StepProgress& p) { run.step_losses.push_back(p.loss()); };
  cb.on_checkpoint = [&](const Checkpoint& c) {
    run.checkpoints.push_back(c);
    return absl::OkStatus();
  };
  run.result = Train(options, data, cb);
  return run;
}

TrainerOptions Options(kaizen::v1::Strategy strategy, const fixtures::BaseModel& base,
                       kaizen::v1::Hyperparameters hp) {
  TrainerOptions o;
  o.strategy = strategy;
  o.hyperparameters = std::move(hp);
  o.base = base.module;
  o.base_metadata = base.metadata;
  o.loader_threads = 3;
  o.prefetch_batches = 2;
  return o;
}

bool Streamed(const TrainResult& r) {
  for (const std::string& note : r.notes) {
    if (absl::StrContains(note, "stream from the dataset's record file")) return true;
  }
  return false;
}

void ExpectSameTraining(const Outcome& a, const Outcome& b) {
  ASSERT_TRUE(a.result.ok()) << a.result.status();
  ASSERT_TRUE(b.result.ok()) << b.result.status();
  ASSERT_EQ(a.step_losses.size(), b.step_losses.size());
  for (size_t i = 0; i < a.step_losses.size(); ++i) {
    EXPECT_NEAR(a.step_losses[i], b.step_losses[i], 1e-6) << "step " << i + 1;
  }
  ASSERT_EQ(a.epochs.size(), b.epochs.size());
  for (size_t e = 0; e < a.epochs.size(); ++e) {
    EXPECT_NEAR(a.epochs[e].val_loss(), b.epochs[e].val_loss(), 1e-6) << "epoch " << e + 1;
    EXPECT_EQ(a.epochs[e].val_accuracy(), b.epochs[e].val_accuracy()) << "epoch " << e + 1;
  }
  ASSERT_FALSE(a.checkpoints.empty());
  ASSERT_EQ(a.checkpoints.size(), b.checkpoints.size());
  const auto pa = fixtures::Snapshot(a.checkpoints.back().module);
  const auto pb = fixtures::Snapshot(b.checkpoints.back().module);
  ASSERT_EQ(pa.size(), pb.size());
  for (size_t i = 0; i < pa.size(); ++i) {
    EXPECT_LT((pa[i].second.to(torch::kDouble) - pb[i].second.to(torch::kDouble))
                  .abs()
                  .max()
                  .item<double>(),
              1e-5)
        << pa[i].first;
  }
  EXPECT_EQ(a.checkpoints.back().metadata.metrics().at("bn_recalibrated"),
            b.checkpoints.back().metadata.metrics().at("bn_recalibrated"));
}

struct StrategyCase {
  kaizen::v1::Strategy strategy;
  const char* base;
  bool augment;
};

class StreamedParityTest : public ::testing::TestWithParam<StrategyCase> {};

// The decoded dataset, the record file converted into memory and the record
// file streamed (a budget of 0 bytes) give the same losses, validation
// metrics, BatchNorm statistics and weights.
TEST_P(StreamedParityTest, StreamingTrainsAsTheDatasetInMemoryDoes) {
  const StrategyCase c = GetParam();
  test_util::TempDir dir;
  const datasets::DecodedDataset data = fixtures::SyntheticDataset(3, 20, 30, 1, 5);
  const auto file = RawRecords(dir, "train.krf", data);
  auto hp = fixtures::FastHyperparameters(2, 8);
  hp.set_learning_rate(0.01);
  hp.mutable_validation()->set_split(0.25);
  if (c.augment) {
    hp.mutable_augmentation()->set_enabled(true);
    hp.mutable_augmentation()->set_random_crop_padding(2);
    hp.mutable_augmentation()->set_horizontal_flip(true);
  }
  const fixtures::BaseModel base = Builtin(c.base);
  TrainerOptions options = Options(c.strategy, base, hp);

  const Outcome decoded = TrainOnce(options, {&data, nullptr});
  TrainingData from_file;
  from_file.train_file = file;
  const Outcome loaded = TrainOnce(options, from_file);
  options.max_image_memory_bytes = 0;
  const Outcome streamed = TrainOnce(options, from_file);

  ExpectSameTraining(decoded, loaded);
  ExpectSameTraining(decoded, streamed);
  ASSERT_TRUE(loaded.result.ok() && streamed.result.ok());
  EXPECT_FALSE(Streamed(*loaded.result));
  EXPECT_TRUE(Streamed(*streamed.result));
}

INSTANTIATE_TEST_SUITE_P(
    Strategies, StreamedParityTest,
    ::testing::Values(StrategyCase{kaizen::v1::STRATEGY_FEATURE_EXTRACTION, "resnet-small", false},
                      StrategyCase{kaizen::v1::STRATEGY_FEATURE_EXTRACTION, "cnn-small", true},
                      StrategyCase{kaizen::v1::STRATEGY_FINE_TUNE, "resnet-small", false},
                      StrategyCase{kaizen::v1::STRATEGY_FULL, "resnet-small", true},
                      StrategyCase{kaizen::v1::STRATEGY_SCRATCH, "cnn-small", false}),
    [](const ::testing::TestParamInfo<StrategyCase>& info) {
      std::string name = kaizen::v1::Strategy_Name(info.param.strategy).substr(9);
      name += std::string("_") + (info.param.base[0] == 'r' ? "resnet" : "cnn");
      if (info.param.augment) name += "_augmented";
      return name;
    });

bool Noted(const TrainResult& r, const std::string& text) {
  for (const std::string& note : r.notes) {
    if (absl::StrContains(note, text)) return true;
  }
  return false;
}

// FINE_TUNE without augmentation runs the frozen layers below its first
// trainable block once per image (the frozen-prefix cache) and only the rest
// at each step, in memory and streamed: the same losses, validation metrics,
// BatchNorm statistics and weights as running the whole model every step.
TEST(TrainerPrefixCacheTest, FineTuneFromTheFrozenPrefixTrainsAsTheWholeModelDoes) {
  test_util::TempDir dir;
  const datasets::DecodedDataset data = fixtures::SyntheticDataset(3, 20, 28, 1, 5);
  auto hp = fixtures::FastHyperparameters(3, 8);
  hp.set_learning_rate(0.01);
  hp.mutable_validation()->set_split(0.25);
  hp.set_trainable_blocks(1);
  for (const std::string name : {"resnet-small", "cnn-small"}) {
    SCOPED_TRACE(name);
    const fixtures::BaseModel base = Builtin(name);
    TrainerOptions options = Options(kaizen::v1::STRATEGY_FINE_TUNE, base, hp);
    options.max_prefix_cache_bytes = 0;
    const Outcome whole = TrainOnce(options, {&data, nullptr});
    options.max_prefix_cache_bytes = int64_t{1} << 30;
    const Outcome cached = TrainOnce(options, {&data, nullptr});
    TrainingData from_file;
    from_file.train_file = RawRecords(dir, name + ".krf", data);
    options.max_image_memory_bytes = 0;
    const Outcome streamed = TrainOnce(options, from_file);
    ExpectSameTraining(whole, cached);
    ExpectSameTraining(whole, streamed);
    ASSERT_TRUE(whole.result.ok() && cached.result.ok() && streamed.result.ok());
    EXPECT_FALSE(Noted(*whole.result, "ran once"));
    EXPECT_TRUE(Noted(*cached.result, "ran once for the 60 images"));
    EXPECT_TRUE(Noted(*streamed.result, "ran once for the 60 images"));
    EXPECT_TRUE(Streamed(*streamed.result));
  }
}

// A stop asked for during an epoch's opening pass over the dataset (the
// FEATURE_EXTRACTION feature cache, the FINE_TUNE frozen-prefix cache) ends
// that pass between two of its chunks, not after it, in memory and streamed:
// the job checkpoints before its first step, and resuming from that
// checkpoint trains as a run that never stopped.
TEST(TrainerStopTest, AStopDuringAnOpeningPassEndsItBetweenTwoChunks) {
  test_util::TempDir dir;
  // 300 images of 28x28: the passes take 256 at a time, 2 chunks.
  const datasets::DecodedDataset data = fixtures::SyntheticDataset(2, 150, 28, 1, 5);
  auto hp = fixtures::FastHyperparameters(2, 64);
  hp.set_learning_rate(0.01);
  hp.set_trainable_blocks(1);
  const fixtures::BaseModel base = Builtin("resnet-small");
  for (const kaizen::v1::Strategy strategy :
       {kaizen::v1::STRATEGY_FEATURE_EXTRACTION, kaizen::v1::STRATEGY_FINE_TUNE}) {
    for (const bool streamed : {false, true}) {
      SCOPED_TRACE(kaizen::v1::Strategy_Name(strategy) + (streamed ? " streamed" : ""));
      TrainerOptions options = Options(strategy, base, hp);
      options.max_prefix_cache_bytes = int64_t{1} << 30;
      TrainingData input{&data, nullptr};
      if (streamed) {
        input = TrainingData();
        input.train_file = RawRecords(dir, absl::StrCat(static_cast<int>(strategy), ".krf"), data);
        options.max_image_memory_bytes = 0;
      }
      const Outcome straight = TrainOnce(options, input);
      ASSERT_TRUE(straight.result.ok()) << straight.result.status();

      int checks = 0;  // the second check, after the pass's first chunk, stops
      const Outcome stopped = TrainOnce(options, input, [&checks] { return ++checks >= 2; });
      ASSERT_TRUE(stopped.result.ok()) << stopped.result.status();
      EXPECT_EQ(checks, 2);
      EXPECT_TRUE(stopped.result->cancelled);
      EXPECT_EQ(stopped.result->epochs_completed, 0);
      EXPECT_TRUE(stopped.step_losses.empty());
      EXPECT_FALSE(Noted(*stopped.result, "ran once"));
      if (strategy == kaizen::v1::STRATEGY_FEATURE_EXTRACTION) {
        EXPECT_EQ(stopped.result->backbone_forward_batches, 1) << "the pass went on";
      }
      ASSERT_EQ(stopped.checkpoints.size(), 1u);
      const Checkpoint& cp = stopped.checkpoints.front();
      EXPECT_EQ(cp.epoch, 0);
      EXPECT_FALSE(cp.resume_state.empty());

      TrainerOptions again = options;
      again.base = cp.module;
      again.base_metadata = cp.metadata;
      again.resume_state = cp.resume_state;
      const Outcome resumed = TrainOnce(again, input);
      if (strategy == kaizen::v1::STRATEGY_FEATURE_EXTRACTION && !streamed) {
        // "No statistics yet" holds only before the first step.
        auto state = DecodeResumeState(cp.resume_state);
        ASSERT_TRUE(state.ok()) << state.status();
        state->global_step = 3;
        TrainerOptions damaged = again;
        damaged.resume_state = EncodeResumeState(*state);
        const Outcome refused = TrainOnce(damaged, input);
        ASSERT_FALSE(refused.result.ok());
        EXPECT_THAT(std::string(refused.result.status().message()),
                    HasSubstr("feature standardisation is damaged"));
      }
      ExpectSameTraining(straight, resumed);
      if (strategy == kaizen::v1::STRATEGY_FINE_TUNE) {
        EXPECT_TRUE(Noted(*resumed.result, "ran once for the 300 images"));
      }
    }
  }
}

TEST(TrainerPrefixCacheTest, AugmentationOrTooSmallABudgetRunsTheWholeModel) {
  const datasets::DecodedDataset data = fixtures::SyntheticDataset(3, 10, 28, 1, 5);
  auto hp = fixtures::FastHyperparameters(1, 8);
  hp.set_trainable_blocks(1);
  const fixtures::BaseModel base = Builtin("resnet-small");
  TrainerOptions options = Options(kaizen::v1::STRATEGY_FINE_TUNE, base, hp);
  options.max_prefix_cache_bytes = 1024;
  const Outcome small = TrainOnce(options, {&data, nullptr});
  ASSERT_TRUE(small.result.ok()) << small.result.status();
  EXPECT_TRUE(Noted(*small.result, "over the server's --max_prefix_cache_mb"));
  EXPECT_FALSE(Noted(*small.result, "ran once"));
  options.max_prefix_cache_bytes = int64_t{1} << 30;
  hp.mutable_augmentation()->set_enabled(true);
  hp.mutable_augmentation()->set_horizontal_flip(true);
  options.hyperparameters = hp;
  const Outcome augmented = TrainOnce(options, {&data, nullptr});
  ASSERT_TRUE(augmented.result.ok()) << augmented.result.status();
  EXPECT_FALSE(Noted(*augmented.result, "ran once"));
}

// Three blocks and a Linear head named like the built-ins' (fc); `a_code`
// is the first block's forward, over its 3x3 convolution `w`.
fixtures::BaseModel ThreeBlocks(const std::string& a_code, int64_t classes) {
  fixtures::BaseModel base = Builtin("cnn-small", classes);
  torch::manual_seed(7);
  const auto conv = [](const std::string& name, int64_t in, const std::string& code) {
    torch::jit::Module m(c10::QualifiedName("__torch__.test.Conv" + name));
    m.register_parameter("w", torch::randn({4, in, 3, 3}) * 0.3, false);
    m.define("def forward(self, x):\n    return " + code + "\n");
    return m;
  };
  torch::jit::Module net(c10::QualifiedName("__torch__.test.ThreeBlocks" + a_code.substr(0, 5)));
  net.register_module("a", conv("A" + a_code.substr(0, 5), 1, a_code));
  net.register_module("b", conv("B", 4, "torch.relu(torch.conv2d(x, self.w, None, 1, 1))"));
  net.register_module("c", conv("C", 4, "torch.relu(torch.conv2d(x, self.w, None, 1, 1))"));
  torch::jit::Module fc(c10::QualifiedName("__torch__.test.Fc"));
  fc.register_parameter("weight", torch::randn({classes, 4}) * 0.3, false);
  fc.register_parameter("bias", torch::zeros({classes}), false);
  fc.define("def forward(self, x):\n    return torch.linear(x, self.weight, self.bias)\n");
  net.register_module("fc", fc);
  net.define(R"(
def forward(self, x):
    return self.fc.forward(self.c.forward(self.b.forward(self.a.forward(x))).mean([2, 3]))
)");
  base.module = net;
  base.metadata.mutable_head()->set_in_features(4);
  return base;
}

// The cache is kept only for a prefix that gives each image one output:
// frozen layers that are random, or whose output depends on the rest of the
// batch, make every step run the whole backbone, with a note saying why.
TEST(TrainerPrefixCacheTest, ARandomOrBatchDependentFrozenPrefixRunsTheWholeModel) {
  const datasets::DecodedDataset data = fixtures::SyntheticDataset(3, 8, 28, 1, 5);
  auto hp = fixtures::FastHyperparameters(1, 8);
  hp.set_trainable_blocks(1);
  for (const auto& [a_code, cached] : std::vector<std::pair<std::string, bool>>{
           {"torch.relu(torch.conv2d(x, self.w, None, 1, 1))", true},
           {"torch.dropout(torch.conv2d(x, self.w, None, 1, 1), 0.5, True)", false},
           {"torch.conv2d(x - x.mean(), self.w, None, 1, 1)", false}}) {
    SCOPED_TRACE(a_code);
    TrainerOptions options = Options(kaizen::v1::STRATEGY_FINE_TUNE, ThreeBlocks(a_code, 3), hp);
    options.max_prefix_cache_bytes = int64_t{1} << 30;
    const Outcome run = TrainOnce(options, {&data, nullptr});
    ASSERT_TRUE(run.result.ok()) << run.result.status();
    EXPECT_EQ(Noted(*run.result, "ran once for the 24 images"), cached);
    EXPECT_EQ(Noted(*run.result, "are random or depend on the rest of the batch"), !cached);
  }
}

// channels_last runs the same model with other kernels: the same first loss
// to float rounding, then losses within 1% as rounding differences grow over
// the steps, for FULL and for FINE_TUNE from the frozen-prefix cache; a
// channels-last checkpoint answers plain input as its weights laid out
// plainly do. (The two checkpoints themselves differ as far as the steps'
// rounding carried them: on one AMD EPYC, FULL's logits on the training
// images by 7% of their scale after six steps whose losses were within
// 1.4%.)
TEST(TrainerMemoryFormatTest, ChannelsLastTrainsTheSameModel) {
  const datasets::DecodedDataset data = fixtures::SyntheticDataset(3, 12, 28, 1, 5);
  auto hp = fixtures::FastHyperparameters(2, 8);
  hp.set_learning_rate(0.01);
  hp.mutable_validation()->set_split(0.25);
  hp.set_trainable_blocks(1);
  const fixtures::BaseModel base = Builtin("resnet-small");
  for (const kaizen::v1::Strategy strategy :
       {kaizen::v1::STRATEGY_FULL, kaizen::v1::STRATEGY_FINE_TUNE}) {
    SCOPED_TRACE(kaizen::v1::Strategy_Name(strategy));
    TrainerOptions options = Options(strategy, base, hp);
    const Outcome plain = TrainOnce(options, {&data, nullptr});
    options.channels_last = true;
    const Outcome nhwc = TrainOnce(options, {&data, nullptr});
    ASSERT_TRUE(plain.result.ok() && nhwc.result.ok());
    ASSERT_EQ(plain.step_losses.size(), nhwc.step_losses.size());
    // The first step computes the same loss to float rounding; later steps
    // train on weights that rounding has moved a little (SGD amplifies it).
    ASSERT_FALSE(plain.step_losses.empty());
    EXPECT_NEAR(plain.step_losses[0], nhwc.step_losses[0], 1e-5);
    for (size_t i = 0; i < plain.step_losses.size(); ++i) {
      EXPECT_NEAR(plain.step_losses[i], nhwc.step_losses[i], 0.01 * plain.step_losses[i] + 1e-3)
          << "step " << i + 1;
    }
    ASSERT_FALSE(nhwc.checkpoints.empty());
    torch::jit::Module a = plain.checkpoints.back().module;
    torch::jit::Module b = nhwc.checkpoints.back().module;
    // The option took effect: convolutions with several input channels are
    // laid out channels-last in its checkpoint, not in the other.
    int layouts_checked = 0;
    const auto plain_params = a.named_parameters();
    auto in_plain = plain_params.begin();
    for (const auto& p : b.named_parameters()) {
      const torch::Tensor wa = (*in_plain++).value;
      if (p.value.dim() != 4 || p.value.size(1) < 2 || p.value.size(2) * p.value.size(3) < 2) {
        continue;  // one input channel or 1x1: both layouts have the same strides
      }
      EXPECT_TRUE(wa.is_contiguous()) << p.name;
      EXPECT_FALSE(p.value.is_contiguous()) << p.name;
      EXPECT_TRUE(p.value.is_contiguous(torch::MemoryFormat::ChannelsLast)) << p.name;
      ++layouts_checked;
    }
    EXPECT_GT(layouts_checked, 0);
    b.eval();
    torch::jit::Module plain_layout = b.clone();
    torch::NoGradGuard no_grad;
    for (const auto& p : plain_layout.named_parameters()) p.value.set_data(p.value.contiguous());
    int still_channels_last = 0;  // the clone's weights are its own
    for (const auto& p : b.named_parameters()) still_channels_last += !p.value.is_contiguous();
    EXPECT_EQ(still_channels_last, layouts_checked);
    const torch::Tensor x = torch::rand({4, 1, 28, 28});
    const torch::Tensor expected = plain_layout.forward({x}).toTensor();
    const torch::Tensor got = b.forward({x}).toTensor();
    EXPECT_LT((got - expected).abs().max().item<double>(),
              1e-4 * (1 + expected.abs().max().item<double>()));
    EXPECT_TRUE(torch::equal(got.argmax(1), expected.argmax(1)));
  }
}

TEST(TrainerStreamingTest, ASeparateValidationFileAndATeacherStreamToo) {
  test_util::TempDir dir;
  const datasets::DecodedDataset train = fixtures::SyntheticDataset(3, 16, 28, 1, 8);
  const datasets::DecodedDataset val = fixtures::SyntheticDataset(3, 5, 28, 1, 9);
  TrainingData files;
  files.train_file = RawRecords(dir, "train.krf", train);
  files.validation_file = RawRecords(dir, "val.krf", val);
  auto hp = fixtures::FastHyperparameters(2, 8);
  const fixtures::BaseModel student = Builtin("cnn-small");
  TrainerOptions options = Options(kaizen::v1::STRATEGY_DISTILL, student, hp);
  TrainerOptions::Distillation d;
  const fixtures::BaseModel teacher = Builtin("cnn-small", 3, 28, 1, 11);
  d.teacher = teacher.module;
  d.teacher_metadata = teacher.metadata;
  d.teacher_metadata.clear_class_names();
  for (const std::string& name : train.class_names) d.teacher_metadata.add_class_names(name);
  options.distillation = d;

  const Outcome decoded = TrainOnce(options, {&train, &val});
  options.max_image_memory_bytes = 0;
  const Outcome streamed = TrainOnce(options, files);
  ExpectSameTraining(decoded, streamed);
  ASSERT_TRUE(decoded.result.ok() && streamed.result.ok());
  EXPECT_TRUE(Streamed(*streamed.result));
  EXPECT_EQ(streamed.result->validation_examples, 15);
  EXPECT_EQ(streamed.result->teacher_val_accuracy, decoded.result->teacher_val_accuracy);
  // Without augmentation the teacher's logits are cached: one pass over the
  // training images, not one per epoch.
  EXPECT_EQ(streamed.result->teacher_forward_batches, decoded.result->teacher_forward_batches);
}

TEST(TrainerStreamingTest, ADamagedRecordFailsTheJobWithDataLossNamingIt) {
  test_util::TempDir dir;
  const datasets::DecodedDataset data = fixtures::SyntheticDataset(2, 12);
  const std::string path = dir.File("train.krf");
  ASSERT_TRUE(datasets::WriteRawRecordFile(path, data).ok());
  const auto intact = OpenFile(path);
  ASSERT_NE(intact, nullptr);
  const datasets::RecordInfo victim = intact->info(5);
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(victim.offset + 3));
    const char flipped = static_cast<char>(0x5a);
    f.write(&flipped, 1);
  }
  TrainingData files;
  files.train_file = OpenFile(path);
  ASSERT_NE(files.train_file, nullptr);
  TrainerOptions options =
      Options(kaizen::v1::STRATEGY_FULL, Builtin("cnn-small"), fixtures::FastHyperparameters(1, 8));
  options.max_image_memory_bytes = 0;
  const Outcome streamed = TrainOnce(options, files);
  ASSERT_FALSE(streamed.result.ok());
  EXPECT_EQ(streamed.result.status().code(), absl::StatusCode::kDataLoss)
      << streamed.result.status();
  EXPECT_THAT(streamed.result.status().message(), HasSubstr("record 5"));
  EXPECT_THAT(streamed.result.status().message(), HasSubstr("epoch 1"));
  // Converted into memory, the same record stops the job before training.
  options.max_image_memory_bytes = int64_t{1} << 30;
  const Outcome loaded = TrainOnce(options, files);
  ASSERT_FALSE(loaded.result.ok());
  EXPECT_EQ(loaded.result.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(loaded.step_losses.empty());
}

TEST(TrainerStreamingTest, IncrementalBeyondTheBudgetIsRefused) {
  test_util::TempDir dir;
  const datasets::DecodedDataset data = fixtures::SyntheticDataset(3, 6);
  TrainingData files;
  files.train_file = RawRecords(dir, "train.krf", data);
  const fixtures::BaseModel previous = Builtin("cnn-small", 2);
  TrainerOptions options =
      Options(kaizen::v1::STRATEGY_INCREMENTAL, previous, fixtures::FastHyperparameters(1, 8));
  TrainerOptions::Incremental inc;
  inc.previous = previous.module;
  inc.previous_metadata = previous.metadata;
  inc.previous_metadata.clear_class_names();
  inc.previous_metadata.add_class_names("class0");
  inc.previous_metadata.add_class_names("class1");
  inc.options.set_disable_rehearsal(true);
  options.incremental = inc;
  options.max_image_memory_bytes = 1000;
  const Outcome run = TrainOnce(options, files);
  ASSERT_FALSE(run.result.ok());
  EXPECT_EQ(run.result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(run.result.status().message(), HasSubstr("--max_job_image_memory_mb"));
}

// The resident anonymous memory (the process's own allocations, not the
// page cache behind the memory map), in bytes.
int64_t RssAnonBytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("RssAnon:", 0) == 0) return std::stoll(line.substr(8)) * 1024;
  }
  return -1;
}

// A JPEG record file of `images` 32x32 RGB images, two classes.
std::shared_ptr<const datasets::RecordFile> JpegRecords(const test_util::TempDir& dir,
                                                        const std::string& name, int images) {
  constexpr int kSize = 32;
  auto writer = datasets::RecordFileWriter::Create(dir.File(name));
  EXPECT_TRUE(writer.ok()) << writer.status();
  if (!writer.ok()) return nullptr;
  std::vector<std::string> jpegs;  // a few distinct ones: encoding takes time
  for (uint32_t seed = 0; seed < 16; ++seed)
    jpegs.push_back(test_util::EncodeJpeg(kSize, kSize, 3, seed, 80));
  for (int i = 0; i < images; ++i) {
    const std::string& jpeg = jpegs[i % jpegs.size()];
    EXPECT_TRUE((*writer)
                    ->Append(i % 2, kSize, kSize, 3, datasets::RecordEncoding::kJpeg,
                             absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(jpeg.data()),
                                                 jpeg.size()))
                    .ok());
  }
  EXPECT_TRUE((*writer)->Finish({"even", "odd"}).ok());
  return OpenFile(dir.File(name));
}

// Peak resident anonymous memory during a FINE_TUNE epoch on `file` with an
// image budget of `budget` bytes, above what the process held before it;
// `max_steps` > 0 stops the epoch after that many steps.
int64_t PeakGrowth(std::shared_ptr<const datasets::RecordFile> file, int64_t budget, bool* streamed,
                   int64_t max_steps = 0) {
  const fixtures::BaseModel base = Builtin("cnn-small", 2, 32, 3);
  TrainerOptions options =
      Options(kaizen::v1::STRATEGY_FINE_TUNE, base, fixtures::FastHyperparameters(1, 64));
  options.max_image_memory_bytes = budget;
  // The frozen-prefix cache holds a few KiB per image by design (bounded by
  // its own budget); this test is about the images.
  options.max_prefix_cache_bytes = 0;
  TrainingData data;
  data.train_file = std::move(file);
  const int64_t before = RssAnonBytes();
  int64_t peak = before;
  Callbacks cb;
  int64_t steps = 0;
  cb.on_step = [&](const kaizen::v1::StepProgress&) {
    peak = std::max(peak, RssAnonBytes());
    ++steps;
  };
  cb.should_stop = [&] { return max_steps > 0 && steps >= max_steps; };
  absl::StatusOr<TrainResult> r = Train(options, data, cb);
  EXPECT_TRUE(r.ok()) << r.status();
  *streamed = r.ok() && Streamed(*r);
  return peak - before;
}

// A streamed job's peak memory stays flat as its dataset grows 10x (600 to
// 6,000 images, 18 MiB converted), within a few MiB; the same job
// converting the larger dataset into memory grows by about all of it by its
// second step (the conversion comes first, so it stops there), which shows
// that the measurement can fail.
TEST(TrainerStreamingTest, AStreamedJobsMemoryStaysFlatAsItsDatasetGrows) {
  // Blocks from 64 KiB up come from mmap and go back to the system when freed, so
  // that one run's freed memory does not hide the next one's. This holds for
  // the rest of the process, so CTest runs this test in a process of its own
  // (KAIZEN_OWN_PROCESS_TESTS in tests/CMakeLists.txt).
  mallopt(M_MMAP_THRESHOLD, 64 << 10);
  mallopt(M_TRIM_THRESHOLD, 128 << 10);
  test_util::TempDir dir;
  const auto small = JpegRecords(dir, "small.krf", 600);
  const auto large = JpegRecords(dir, "large.krf", 6000);
  ASSERT_TRUE(small != nullptr && large != nullptr);
  const int64_t converted = int64_t{6000} * 3 * 32 * 32;
  bool streamed = false;
  // A first run allocates what a process keeps (thread pools, kernels).
  PeakGrowth(small, 0, &streamed);
  const int64_t small_growth = PeakGrowth(small, 0, &streamed);
  EXPECT_TRUE(streamed);
  const int64_t large_growth = PeakGrowth(large, int64_t{4} << 20, &streamed);
  EXPECT_TRUE(streamed);
  const int64_t loaded_growth = PeakGrowth(large, int64_t{1} << 30, &streamed, 2);
  EXPECT_FALSE(streamed);
  std::cout << "peak RssAnon growth: " << (small_growth >> 10) << " KiB streaming 600 images, "
            << (large_growth >> 10) << " KiB streaming 6,000 (" << (converted >> 10)
            << " KiB converted), " << (loaded_growth >> 10) << " KiB converting them into memory\n";
  EXPECT_LT(large_growth - small_growth, int64_t{6} << 20);
  EXPECT_GT(loaded_growth - large_growth, converted * 8 / 10);
}

}  // namespace
}  // namespace kaizen::training
