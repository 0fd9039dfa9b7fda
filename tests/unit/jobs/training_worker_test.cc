#include "server/jobs/training_worker.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <torch/serialize.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/common/atomic_file.h"
#include "server/datasets/record_file.h"
#include "server/models/model_file.h"
#include "server/sandbox/subprocess.h"
#include "tests/test_util/server_process.h"
#include "tests/test_util/temp_dir.h"
#include "tests/unit/training/training_test_util.h"

extern char** environ;

namespace kaizen::jobs {
namespace {

using kaizen::internal::TrainingWorkerReport;
using kaizen::internal::TrainingWorkerSpec;

// A job on a synthetic 4-class dataset with the built-in cnn-small (BatchNorm
// included), everything in `dir`.
TrainingWorkerSpec WriteJob(const test_util::TempDir& dir, int epochs, int per_class) {
  const datasets::DecodedDataset data = training::fixtures::SyntheticDataset(4, per_class);
  EXPECT_TRUE(datasets::WriteRawRecordFile(dir.File("train.krec"), data).ok());
  const training::fixtures::BaseModel base = training::fixtures::Builtin("cnn-small", 4);
  EXPECT_TRUE(models::SaveModelFile(base.module, base.metadata, dir.File("base.pt")).ok());
  TrainingWorkerSpec spec;
  spec.set_strategy(kaizen::v1::STRATEGY_FULL);
  *spec.mutable_hyperparameters() = training::fixtures::FastHyperparameters(epochs, 32);
  spec.mutable_hyperparameters()->set_drop_last_fraction(0);
  spec.set_base_model("base.pt");  // relative to the spec's folder
  spec.set_train_records("train.krec");
  spec.set_timeout_seconds(10);
  spec.set_threads(1);
  return spec;
}

// Writes `spec` with its own output folder `name` and returns the spec path.
std::string WriteSpec(const test_util::TempDir& dir, TrainingWorkerSpec spec,
                      const std::string& name) {
  spec.set_output_dir(name);
  EXPECT_EQ(mkdir(dir.File(name).c_str(), 0755), 0);
  const std::string path = dir.File(name + ".json");
  EXPECT_TRUE(WriteTrainingWorkerSpec(spec, path).ok());
  return path;
}

// kaizen-worker as rank `rank` of `world` (no group when world is 0), its
// stderr into `log`.
pid_t StartWorker(const std::string& spec, int world, int rank, int port, const std::string& log) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) env.emplace_back(*e);
  if (world > 0) {
    env.push_back("MASTER_ADDR=127.0.0.1");
    env.push_back(absl::StrCat("MASTER_PORT=", port));
    env.push_back(absl::StrCat("WORLD_SIZE=", world));
    env.push_back(absl::StrCat("RANK=", rank));
  }
  absl::StatusOr<pid_t> pid =
      sandbox::StartProcess(std::string(KAIZEN_BINARY_DIR) + "/kaizen-worker",
                            {"--spec=" + spec, "--record_digests"}, env, log);
  EXPECT_TRUE(pid.ok()) << pid.status();
  return pid.ok() ? *pid : -1;
}

int ExitCode(pid_t pid) {
  int status = 0;
  EXPECT_EQ(waitpid(pid, &status, 0), pid);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::string Log(const std::string& path) {
  std::string text;
  (void)common::ReadFile(path, &text);
  return text;
}

struct SideBySide {
  TrainingWorkerReport rank0, rank1, alone;
};

// The job with W=2 Gloo ranks, then in one process, side by side.
SideBySide RunTwoRanksAndOne(const test_util::TempDir& dir, const TrainingWorkerSpec& spec) {
  const std::string one = WriteSpec(dir, spec, "one");
  const std::string two = WriteSpec(dir, spec, "two");
  const int port = test_util::FreeLoopbackPort();
  const pid_t r0 = StartWorker(two, 2, 0, port, dir.File("r0.log"));
  const pid_t r1 = StartWorker(two, 2, 1, port, dir.File("r1.log"));
  EXPECT_EQ(ExitCode(r0), 0) << Log(dir.File("r0.log"));
  EXPECT_EQ(ExitCode(r1), 0) << Log(dir.File("r1.log"));
  EXPECT_EQ(ExitCode(StartWorker(one, 0, 0, 0, dir.File("one.log"))), 0)
      << Log(dir.File("one.log"));
  SideBySide reports;
  for (auto [report, path] : {std::pair{&reports.rank0, WorkerReportPath(dir.File("two"), 0)},
                              std::pair{&reports.rank1, WorkerReportPath(dir.File("two"), 1)},
                              std::pair{&reports.alone, WorkerReportPath(dir.File("one"), 0)}}) {
    absl::StatusOr<TrainingWorkerReport> read = ReadTrainingWorkerReport(path);
    EXPECT_TRUE(read.ok()) << read.status();
    if (read.ok()) *report = *read;
  }
  return reports;
}

TEST(TrainingWorkerTest, TwoGlooRanksStayIdenticalAndTrainAsOneProcessWithTheSameGlobalBatch) {
  test_util::TempDir dir;
  const SideBySide r = RunTwoRanksAndOne(dir, WriteJob(dir, /*epochs=*/3, /*per_class=*/40));
  // 160 images in global batches of 32: 5 steps per epoch on every rank.
  ASSERT_EQ(r.rank0.steps(), 15);
  ASSERT_EQ(r.rank1.steps(), 15);
  ASSERT_EQ(r.rank0.step_digests_size(), 15);
  for (int s = 0; s < 15; ++s) {
    EXPECT_EQ(r.rank0.step_digests(s), r.rank1.step_digests(s)) << "after update " << s + 1;
  }
  // The same global batches and updates, but BatchNorm normalises each
  // rank's half batch with its own statistics (measured: within 4%).
  ASSERT_EQ(r.rank0.epochs_size(), 3);
  ASSERT_EQ(r.alone.epochs_size(), 3);
  for (int e = 0; e < 3; ++e) {
    std::cout << "FULL epoch " << e + 1 << " train loss: W=2 " << r.rank0.epochs(e).train_loss()
              << ", one process " << r.alone.epochs(e).train_loss() << "\n";
    EXPECT_NEAR(r.rank0.epochs(e).train_loss(), r.alone.epochs(e).train_loss(),
                0.1 * r.alone.epochs(e).train_loss())
        << "epoch " << e + 1;
    EXPECT_DOUBLE_EQ(r.rank0.epochs(e).train_loss(), r.rank1.epochs(e).train_loss());
  }
  EXPECT_LT(r.rank0.epochs(2).train_loss(), r.rank0.epochs(0).train_loss());
  // Three collectives per step (stop, loss, one gradient bucket) and more.
  EXPECT_GE(r.rank0.collectives(), 45);
  EXPECT_GT(r.rank0.collective_seconds(), 0);

  // Rank 0 alone wrote checkpoints; rank 1 only its report.
  std::string bytes;
  EXPECT_TRUE(common::ReadFile(CheckpointModelPath(dir.File("two"), 3), &bytes).ok());
  EXPECT_TRUE(common::ReadFile(CheckpointResumePath(dir.File("two"), 3), &bytes).ok());
  EXPECT_EQ(test_util::CountFiles(dir.File("two")), 2u * 3 + 2);
}

TEST(TrainingWorkerTest, WithoutBatchStatisticsTwoRanksMatchOneProcessToRounding) {
  // FEATURE_EXTRACTION: the backbone (BatchNorm too) is frozen, so the only
  // difference left is the order in which the gradient sums are added.
  test_util::TempDir dir;
  // 640 images, a fifth held out: 512 to train on, 128 to validate with.
  TrainingWorkerSpec spec = WriteJob(dir, /*epochs=*/3, /*per_class=*/160);
  spec.set_strategy(kaizen::v1::STRATEGY_FEATURE_EXTRACTION);
  spec.mutable_hyperparameters()->mutable_validation()->set_split(0.2);
  const SideBySide r = RunTwoRanksAndOne(dir, spec);
  // The feature cache: one process runs the backbone on two batches of 256
  // training images and one of 128 validation images, each rank on its half
  // of each set alone.
  EXPECT_EQ(r.alone.backbone_forward_batches(), 3);
  EXPECT_EQ(r.rank0.backbone_forward_batches(), 2);
  EXPECT_EQ(r.rank1.backbone_forward_batches(), 2);
  ASSERT_EQ(r.rank0.epochs_size(), 3);
  ASSERT_EQ(r.alone.epochs_size(), 3);
  ASSERT_EQ(r.rank1.epochs_size(), 3);
  for (int e = 0; e < 3; ++e) {
    std::cout << "FEATURE_EXTRACTION epoch " << e + 1 << " train loss: W=2 "
              << r.rank0.epochs(e).train_loss() << ", one process "
              << r.alone.epochs(e).train_loss() << "; validation loss: W=2 "
              << r.rank0.epochs(e).val_loss() << ", one process " << r.alone.epochs(e).val_loss()
              << "\n";
    EXPECT_NEAR(r.rank0.epochs(e).train_loss(), r.alone.epochs(e).train_loss(),
                1e-4 * r.alone.epochs(e).train_loss())
        << "epoch " << e + 1;
    EXPECT_EQ(r.rank0.epochs(e).train_accuracy(), r.alone.epochs(e).train_accuracy());
    // Validation, scored half by each rank and summed: one process's
    // figures, the same on both ranks.
    EXPECT_NEAR(r.rank0.epochs(e).val_loss(), r.alone.epochs(e).val_loss(),
                1e-4 * r.alone.epochs(e).val_loss())
        << "epoch " << e + 1;
    EXPECT_EQ(r.rank0.epochs(e).val_accuracy(), r.alone.epochs(e).val_accuracy());
    EXPECT_EQ(r.rank1.epochs(e).val_loss(), r.rank0.epochs(e).val_loss());
    EXPECT_EQ(r.rank1.epochs(e).val_accuracy(), r.rank0.epochs(e).val_accuracy());
  }
  for (int s = 0; s < r.rank0.step_digests_size(); ++s) {
    EXPECT_EQ(r.rank0.step_digests(s), r.rank1.step_digests(s)) << "after update " << s + 1;
  }
}

// A teacher for WriteJob's images: cnn-small trained on them here for 3
// epochs (another seed than the student), as a model file
// with their class names at `path`. Its soft targets differ from a random
// teacher's, so a rank that looked up another image's would show.
bool WriteTrainedTeacher(const std::string& path) {
  const datasets::DecodedDataset images = training::fixtures::SyntheticDataset(4, 40);
  const training::fixtures::BaseModel base =
      training::fixtures::Builtin("cnn-small", 4, 28, 1, /*seed=*/11);
  training::TrainerOptions opts;
  opts.strategy = kaizen::v1::STRATEGY_FULL;
  opts.hyperparameters = training::fixtures::FastHyperparameters(3, 32);
  opts.base = base.module;
  opts.base_metadata = base.metadata;
  std::optional<training::Checkpoint> last;
  training::Callbacks cb;
  cb.on_checkpoint = [&](const training::Checkpoint& cp) {
    last = cp;
    return absl::OkStatus();
  };
  const absl::StatusOr<training::TrainResult> trained =
      training::Train(opts, {&images, nullptr}, cb);
  EXPECT_TRUE(trained.ok()) << trained.status();
  return trained.ok() && last && models::SaveModelFile(last->module, last->metadata, path).ok();
}

TEST(TrainingWorkerTest, TwoRanksDistilFromTheTeacherInTheirSpecAsOneProcessDoes) {
  test_util::TempDir dir;
  // 320 images: more than one inference batch (256); global batches of 64,
  // so that each rank's BatchNorm sees 32.
  TrainingWorkerSpec spec = WriteJob(dir, /*epochs=*/2, /*per_class=*/80);
  spec.mutable_hyperparameters()->set_batch_size(64);
  ASSERT_TRUE(WriteTrainedTeacher(dir.File("teacher.pt")));
  spec.set_strategy(kaizen::v1::STRATEGY_DISTILL);
  spec.set_teacher_model("teacher.pt");
  spec.set_distillation_temperature(4);
  spec.set_distillation_alpha(0.7);
  const SideBySide r = RunTwoRanksAndOne(dir, spec);
  // The logit cache (augmentation is off): one process runs the teacher on
  // batches of 256 and 64, each rank on its half of the images alone.
  EXPECT_EQ(r.alone.teacher_forward_batches(), 2);
  EXPECT_EQ(r.rank0.teacher_forward_batches(), 1);
  EXPECT_EQ(r.rank1.teacher_forward_batches(), 1);
  ASSERT_EQ(r.rank0.steps(), 10);
  ASSERT_EQ(r.rank0.step_digests_size(), r.rank1.step_digests_size());
  for (int s = 0; s < r.rank0.step_digests_size(); ++s) {
    EXPECT_EQ(r.rank0.step_digests(s), r.rank1.step_digests(s)) << "after update " << s + 1;
  }
  // As for FULL, BatchNorm normalises each rank's half batch on its own.
  ASSERT_EQ(r.rank0.epochs_size(), 2);
  ASSERT_EQ(r.alone.epochs_size(), 2);
  for (int e = 0; e < 2; ++e) {
    std::cout << "DISTILL epoch " << e + 1 << " train loss: W=2 " << r.rank0.epochs(e).train_loss()
              << ", one process " << r.alone.epochs(e).train_loss() << "\n";
    EXPECT_NEAR(r.rank0.epochs(e).train_loss(), r.alone.epochs(e).train_loss(),
                0.1 * r.alone.epochs(e).train_loss())
        << "epoch " << e + 1;
  }
  EXPECT_LT(r.rank0.epochs(1).train_loss(), r.rank0.epochs(0).train_loss());
}

TEST(TrainingWorkerTest, KillingOneRankFailsTheOtherWithinTheTimeout) {
  test_util::TempDir dir;
  const TrainingWorkerSpec spec = WriteJob(dir, /*epochs=*/200, /*per_class=*/40);
  const std::string path = WriteSpec(dir, spec, "out");
  const int port = test_util::FreeLoopbackPort();
  const pid_t r0 = StartWorker(path, 2, 0, port, dir.File("r0.log"));
  const pid_t r1 = StartWorker(path, 2, 1, port, dir.File("r1.log"));
  // Until rank 0 has written a checkpoint: the group trains.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  std::string model;
  while (!common::ReadFile(CheckpointResumePath(dir.File("out"), 20), &model).ok() &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_EQ(kill(r1, SIGKILL), 0);
  const auto killed = std::chrono::steady_clock::now();
  EXPECT_EQ(ExitCode(r1), 128 + SIGKILL);
  EXPECT_EQ(ExitCode(r0), 1);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - killed).count();
  EXPECT_LT(seconds, spec.timeout_seconds() + 5.0);
  const std::string log = Log(dir.File("r0.log"));
  EXPECT_NE(log.find("kaizen-worker rank 0: UNAVAILABLE: rank 0 of 2"), std::string::npos) << log;
}

TEST(TrainingWorkerTest, TheTrainerSettingsASpecCarriesComeBackAsTheyWent) {
  training::TrainerOptions sent;
  sent.strategy = kaizen::v1::STRATEGY_DISTILL;
  sent.hyperparameters = training::fixtures::FastHyperparameters(7, 24);
  sent.max_image_memory_bytes = 123 << 20;
  sent.loader_threads = 3;
  sent.prefetch_batches = 9;
  sent.max_prefix_cache_bytes = 0;  // no cache: not the default
  sent.channels_last = true;
  training::TrainerOptions::Distillation distillation;
  distillation.temperature = 3.5;
  distillation.alpha = 0.25;
  sent.distillation = std::move(distillation);
  // Through the JSON a worker reads.
  test_util::TempDir dir;
  TrainingWorkerSpec spec = SpecOfTrainerSettings(sent);
  spec.set_base_model("base.pt");
  spec.set_teacher_model("teacher.pt");
  spec.set_train_records("train.krf");
  spec.set_output_dir("out");
  ASSERT_TRUE(WriteTrainingWorkerSpec(spec, dir.File("spec.json")).ok());
  absl::StatusOr<TrainingWorkerSpec> read = ReadTrainingWorkerSpec(dir.File("spec.json"));
  ASSERT_TRUE(read.ok()) << read.status();
  training::TrainerOptions got;
  ApplySpecTrainerSettings(*read, &got);
  EXPECT_EQ(got.strategy, sent.strategy);
  EXPECT_EQ(got.hyperparameters.SerializeAsString(), sent.hyperparameters.SerializeAsString());
  EXPECT_EQ(got.max_image_memory_bytes, sent.max_image_memory_bytes);
  EXPECT_EQ(got.loader_threads, 3);
  EXPECT_EQ(got.prefetch_batches, 9);
  EXPECT_EQ(got.max_prefix_cache_bytes, 0);
  EXPECT_TRUE(got.channels_last);
  // The teacher itself travels as a file (WriteTrainingFolder), its
  // settings in the spec.
  EXPECT_EQ(read->distillation_temperature(), 3.5);
  EXPECT_EQ(read->distillation_alpha(), 0.25);
}

TEST(TrainingWorkerTest, TextExamplesComeBackAsTheyWentAndDamageIsNamed) {
  test_util::TempDir dir;
  training::TextExamples train;
  train.sequences = {{1, 5, 2}, {1, 6, 7, 2}};
  train.labels = {0, 1};
  training::TextExamples validation;
  validation.sequences = {{1, 9, 2}};
  validation.labels = {1};
  const torch::Tensor teacher = torch::tensor({0.5f, -1.f, 2.f, 3.f}).view({2, 2});
  ASSERT_TRUE(
      WriteTextWorkerData(dir.File("t.pt"), train, &validation, 2, teacher, torch::Tensor()).ok());
  absl::StatusOr<TextWorkerData> read = ReadTextWorkerData(dir.File("t.pt"));
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->train.sequences, train.sequences);
  EXPECT_EQ(read->train.labels, train.labels);
  ASSERT_TRUE(read->validation.has_value());
  EXPECT_EQ(read->validation->sequences, validation.sequences);
  EXPECT_EQ(read->validation->labels, validation.labels);
  EXPECT_EQ(read->num_classes, 2);
  EXPECT_TRUE(torch::equal(read->teacher_logits, teacher));
  EXPECT_FALSE(read->previous_logits.defined());
  // Without validation examples; previous logits instead of a teacher's.
  ASSERT_TRUE(
      WriteTextWorkerData(dir.File("t.pt"), train, nullptr, 3, torch::Tensor(), teacher).ok());
  read = ReadTextWorkerData(dir.File("t.pt"));
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_FALSE(read->validation.has_value());
  EXPECT_FALSE(read->teacher_logits.defined());
  EXPECT_TRUE(torch::equal(read->previous_logits, teacher));

  const auto refusal = [&](const std::string& file) {
    const absl::Status st = ReadTextWorkerData(dir.File(file)).status();
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
    return std::string(st.message());
  };
  // Logits need a row per training example.
  ASSERT_TRUE(WriteTextWorkerData(dir.File("rows.pt"), train, nullptr, 2, torch::zeros({1, 2}),
                                  torch::Tensor())
                  .ok());
  EXPECT_NE(refusal("rows.pt").find("teacher logits must be float32 with one row per training "
                                    "example (2)"),
            std::string::npos);
  // A truncated file does not load.
  std::string bytes;
  ASSERT_TRUE(common::ReadFile(dir.File("t.pt"), &bytes).ok());
  ASSERT_TRUE(
      common::WriteFileAtomically(dir.File("cut.pt"), bytes.substr(0, bytes.size() / 2)).ok());
  EXPECT_NE(refusal("cut.pt").find("do not load"), std::string::npos);
  // Offsets past the tokens, a label short, a tensor missing.
  const auto save = [&](const std::string& file, const std::vector<torch::Tensor>& t) {
    std::ostringstream out;
    torch::save(t, out);
    ASSERT_TRUE(common::WriteFileAtomically(dir.File(file), out.str()).ok());
  };
  const torch::Tensor none = torch::empty({0});
  const torch::Tensor tokens = torch::tensor({1, 5, 2}, torch::kInt);
  const torch::Tensor classes = torch::tensor({int64_t{2}});
  save("past.pt", {tokens, torch::tensor({int64_t{0}, int64_t{5}}), torch::tensor({int64_t{0}}),
                   none, none, none, none, none, classes});
  EXPECT_NE(refusal("past.pt").find("the offsets do not span the 3 tokens"), std::string::npos);
  save("labels.pt", {tokens, torch::tensor({int64_t{0}, int64_t{3}}),
                     torch::empty({0}, torch::kLong), none, none, none, none, none, classes});
  EXPECT_NE(refusal("labels.pt").find("labels (int64, one per sequence)"), std::string::npos);
  save("short.pt", {tokens});
  EXPECT_NE(refusal("short.pt").find("hold 1 tensors, not 9"), std::string::npos);
  // A zero stride would make a few bytes a tensor of any size (here 2^40
  // labels: 8 TiB were it read).
  save("stride.pt", {tokens, torch::tensor({int64_t{0}, int64_t{3}}),
                     torch::tensor({int64_t{0}}).expand({int64_t{1} << 40}), none, none, none, none,
                     none, classes});
  EXPECT_NE(refusal("stride.pt").find("tensor 2 is not laid out contiguously"), std::string::npos);
  // Logits that are not finite; a class count no dataset has.
  ASSERT_TRUE(WriteTextWorkerData(dir.File("nan.pt"), train, nullptr, 2,
                                  torch::full({2, 2}, std::nanf("")), torch::Tensor())
                  .ok());
  EXPECT_NE(refusal("nan.pt").find("teacher logits hold a value that is not finite"),
            std::string::npos);
  ASSERT_TRUE(WriteTextWorkerData(dir.File("classes.pt"), train, nullptr, int64_t{1} << 40,
                                  torch::Tensor(), torch::Tensor())
                  .ok());
  EXPECT_NE(refusal("classes.pt").find("1099511627776 classes; a classifier has 2 to 100000"),
            std::string::npos);
}

TEST(TrainingWorkerTest, ABadSpecOrEnvironmentIsRefusedWithTheReason) {
  test_util::TempDir dir;
  ASSERT_TRUE(
      common::WriteFileAtomically(dir.File("bad.json"), "{\"strategy\": 7, \"x\": 1}").ok());
  EXPECT_EQ(ReadTrainingWorkerSpec(dir.File("bad.json")).status().code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(common::WriteFileAtomically(dir.File("empty.json"), "{}").ok());
  EXPECT_NE(ReadTrainingWorkerSpec(dir.File("empty.json"))
                .status()
                .message()
                .find("needs base_model, train_records (an image job) or text_examples (a "
                      "text job), and output_dir"),
            std::string::npos);

  // A DISTILL spec needs its teacher and its settings in range; no other
  // strategy has a teacher.
  TrainingWorkerSpec distill;
  distill.set_strategy(kaizen::v1::STRATEGY_DISTILL);
  distill.set_base_model("base.pt");
  distill.set_train_records("train.krf");
  distill.set_output_dir("out");
  distill.set_distillation_temperature(4);
  distill.set_distillation_alpha(0.5);
  const auto refusal = [&](const TrainingWorkerSpec& s) {
    EXPECT_TRUE(WriteTrainingWorkerSpec(s, dir.File("s.json")).ok());
    const absl::Status st = ReadTrainingWorkerSpec(dir.File("s.json")).status();
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
    return std::string(st.message());
  };
  EXPECT_NE(refusal(distill).find("STRATEGY_DISTILL needs teacher_model"), std::string::npos);
  distill.set_teacher_model("teacher.pt");
  EXPECT_TRUE(WriteTrainingWorkerSpec(distill, dir.File("s.json")).ok());
  EXPECT_TRUE(ReadTrainingWorkerSpec(dir.File("s.json")).ok());
  for (const auto& [temperature, alpha] :
       {std::pair{0.5, 0.5}, std::pair{101.0, 0.5}, std::pair{4.0, 0.0}, std::pair{4.0, 1.5},
        std::pair{4.0, std::nan("")}}) {
    distill.set_distillation_temperature(temperature);
    distill.set_distillation_alpha(alpha);
    EXPECT_NE(refusal(distill).find("distillation_temperature is"), std::string::npos)
        << temperature << " " << alpha;
  }
  distill.set_strategy(kaizen::v1::STRATEGY_FULL);
  EXPECT_NE(refusal(distill).find("teacher_model, distillation_temperature or distillation_alpha "
                                  "is set but strategy is STRATEGY_FULL"),
            std::string::npos);
  distill.clear_teacher_model();
  EXPECT_NE(refusal(distill).find("is set but strategy is STRATEGY_FULL"), std::string::npos);
  // Likewise INCREMENTAL's previous version and options.
  TrainingWorkerSpec incremental = distill;
  incremental.clear_distillation_temperature();
  incremental.clear_distillation_alpha();
  incremental.set_strategy(kaizen::v1::STRATEGY_INCREMENTAL);
  EXPECT_NE(refusal(incremental).find("STRATEGY_INCREMENTAL needs previous_model"),
            std::string::npos);
  incremental.set_previous_model("previous.pt");
  incremental.mutable_incremental()->set_temperature(500);
  EXPECT_NE(refusal(incremental).find("temperature"), std::string::npos);
  incremental.set_strategy(kaizen::v1::STRATEGY_FINE_TUNE);
  EXPECT_NE(refusal(incremental)
                .find("previous_model, incremental or text_incremental_* is set but strategy is "
                      "STRATEGY_FINE_TUNE"),
            std::string::npos);
  // A text spec carries its examples and logits in one file, and its own
  // INCREMENTAL settings.
  TrainingWorkerSpec text;
  text.set_strategy(kaizen::v1::STRATEGY_INCREMENTAL);
  text.set_base_model("base.pt");
  text.set_text_examples("text.pt");
  text.set_output_dir("out");
  text.set_text_incremental_temperature(2);
  text.set_text_incremental_weight(1);
  EXPECT_TRUE(WriteTrainingWorkerSpec(text, dir.File("s.json")).ok());
  EXPECT_TRUE(ReadTrainingWorkerSpec(dir.File("s.json")).ok());
  text.set_text_incremental_temperature(0.5);
  EXPECT_NE(refusal(text).find("text_incremental_temperature is 0.5 (1 to 100)"),
            std::string::npos);
  text.set_text_incremental_temperature(2);
  text.set_previous_model("previous.pt");
  EXPECT_NE(refusal(text).find("a text spec (text_examples) takes no train_records"),
            std::string::npos);
  text.clear_previous_model();
  text.set_channels_last(true);
  EXPECT_NE(refusal(text).find("channels_last is set with text_examples (they are an image "
                               "job's)"),
            std::string::npos);
  text.clear_channels_last();
  text.set_strategy(kaizen::v1::STRATEGY_FULL);
  EXPECT_NE(refusal(text).find("text_incremental_* is set but strategy is STRATEGY_FULL"),
            std::string::npos);
  TrainingWorkerSpec image_with_text_fields = distill;
  image_with_text_fields.clear_distillation_temperature();
  image_with_text_fields.clear_distillation_alpha();
  image_with_text_fields.set_text_incremental_weight(1);
  EXPECT_NE(refusal(image_with_text_fields).find("is set without text_examples"),
            std::string::npos);

  const TrainingWorkerSpec spec = WriteJob(dir, 1, 4);
  // A teacher whose classes are not the records' (in order) teaches nothing.
  training::fixtures::BaseModel teacher = training::fixtures::Builtin("cnn-small", 4);
  for (const char* name : {"class1", "class0", "class2", "class3"}) {
    teacher.metadata.add_class_names(name);
  }
  ASSERT_TRUE(models::SaveModelFile(teacher.module, teacher.metadata, dir.File("t.pt")).ok());
  TrainingWorkerSpec wrong_teacher = spec;
  wrong_teacher.set_strategy(kaizen::v1::STRATEGY_DISTILL);
  wrong_teacher.set_teacher_model("t.pt");
  wrong_teacher.set_distillation_temperature(4);
  wrong_teacher.set_distillation_alpha(0.5);
  EXPECT_EQ(
      ExitCode(StartWorker(WriteSpec(dir, wrong_teacher, "wrong"), 0, 0, 0, dir.File("wrong.log"))),
      1);
  EXPECT_NE(Log(dir.File("wrong.log"))
                .find("predicts the classes [class1, class0, class2, class3] but the training "
                      "records have [class0, class1, class2, class3]"),
            std::string::npos)
      << Log(dir.File("wrong.log"));
  // An INCREMENTAL job's rank 0 is the server's: refused before the group
  // forms (the other rank never comes).
  TrainingWorkerSpec incremental_rank0 = spec;
  incremental_rank0.set_strategy(kaizen::v1::STRATEGY_INCREMENTAL);
  incremental_rank0.set_previous_model("base.pt");
  EXPECT_EQ(ExitCode(StartWorker(WriteSpec(dir, incremental_rank0, "inc"), 2, 0,
                                 test_util::FreeLoopbackPort(), dir.File("inc.log"))),
            2);
  EXPECT_NE(Log(dir.File("inc.log")).find("kaizen-worker runs its other ranks only"),
            std::string::npos)
      << Log(dir.File("inc.log"));
  // So is a text job's.
  TrainingWorkerSpec text_rank0 = text;
  text_rank0.clear_text_incremental_temperature();
  text_rank0.clear_text_incremental_weight();
  EXPECT_EQ(ExitCode(StartWorker(WriteSpec(dir, text_rank0, "text0"), 2, 0,
                                 test_util::FreeLoopbackPort(), dir.File("text0.log"))),
            2);
  EXPECT_NE(Log(dir.File("text0.log")).find("a text job's rank 0 is the server"), std::string::npos)
      << Log(dir.File("text0.log"));

  const std::string path = WriteSpec(dir, spec, "out");
  // WORLD_SIZE without the rest of the contract.
  setenv("WORLD_SIZE", "2", 1);
  const pid_t pid = StartWorker(path, 0, 0, 0, dir.File("w.log"));
  unsetenv("WORLD_SIZE");
  EXPECT_EQ(ExitCode(pid), 2);
  EXPECT_NE(Log(dir.File("w.log")).find("missing MASTER_ADDR, MASTER_PORT, RANK"),
            std::string::npos)
      << Log(dir.File("w.log"));
}

}  // namespace
}  // namespace kaizen::jobs
