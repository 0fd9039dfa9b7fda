#include "server/jobs/data_parallel.h"

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>

#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "server/common/atomic_file.h"
#include "server/common/sha256.h"
#include "server/datasets/record_file.h"
#include "server/jobs/training_worker.h"
#include "server/models/text_encoder.h"
#include "server/training/exemplar_memory.h"
#include "server/training/hyperparameters.h"
#include "server/training/text_trainer.h"
#include "tests/test_util/temp_dir.h"
#include "tests/unit/training/training_test_util.h"

namespace kaizen::jobs {
namespace {

DataParallelOptions Options(const test_util::TempDir& dir) {
  DataParallelOptions o;
  o.worker_path = std::string(KAIZEN_BINARY_DIR) + "/kaizen-worker";
  o.timeout = absl::Seconds(20);
  o.scratch_dir = dir.path();
  return o;
}

// A job on `classes` x `per_class` synthetic images in a record file in
// `dir`, from a fresh cnn-small.
struct Job {
  training::TrainingData data;
  training::TrainerOptions opts;
};

Job MakeJob(const test_util::TempDir& dir, int classes, int per_class,
            kaizen::v1::Strategy strategy, int epochs, int batch) {
  Job job;
  const datasets::DecodedDataset images = training::fixtures::SyntheticDataset(classes, per_class);
  EXPECT_TRUE(datasets::WriteRawRecordFile(dir.File("train.krec"), images).ok());
  absl::StatusOr<std::unique_ptr<datasets::RecordFile>> file =
      datasets::RecordFile::Open(dir.File("train.krec"));
  EXPECT_TRUE(file.ok()) << file.status();
  if (file.ok()) job.data.train_file = *std::move(file);
  const training::fixtures::BaseModel base = training::fixtures::Builtin("cnn-small", classes);
  job.opts.strategy = strategy;
  job.opts.hyperparameters = training::fixtures::FastHyperparameters(epochs, batch);
  job.opts.base = base.module;
  job.opts.base_metadata = base.metadata;
  return job;
}

// The SHA-256 of the parameters' bytes, as kaizen-worker --record_digests.
std::string Digest(const std::vector<torch::Tensor>& parameters) {
  common::Sha256 sha;
  for (const torch::Tensor& p : parameters) {
    const torch::Tensor host = p.detach().contiguous();
    sha.Update(host.data_ptr(), host.nbytes());
  }
  return sha.HexDigest();
}

// Rank 1's report in a group's folder (empty if it wrote none).
kaizen::internal::TrainingWorkerReport RankOneReport(const std::string& folder) {
  absl::StatusOr<kaizen::internal::TrainingWorkerReport> rank1 =
      ReadTrainingWorkerReport(WorkerReportPath(folder, 1));
  EXPECT_TRUE(rank1.ok()) << rank1.status();
  return rank1.ok() ? *std::move(rank1) : kaizen::internal::TrainingWorkerReport();
}

// `opts` on `data` as rank 0 of a group of two in this process, with a
// kaizen-worker (--record_digests) as rank 1: rank 0's result, the digest
// of its trainable parameters after every update and its epochs' losses,
// rank 1's report, and the scratch folder the group had (gone by now).
struct TwoRanks {
  absl::StatusOr<training::TrainResult> result = absl::UnknownError("not run");
  std::vector<std::string> digests;
  std::vector<double> losses;
  kaizen::internal::TrainingWorkerReport rank1;
  std::string folder;
};

TwoRanks TrainAsTwoRanks(const test_util::TempDir& dir, training::TrainerOptions opts,
                         const training::TrainingData& data) {
  TwoRanks run;
  absl::StatusOr<std::unique_ptr<LocalDataParallel>> dp =
      LocalDataParallel::Start(Options(dir), "job", 2, 1, opts, data, {"--record_digests"});
  EXPECT_TRUE(dp.ok()) << dp.status();
  if (!dp.ok()) return run;
  run.folder = (*dp)->output_dir();
  opts.group = (*dp)->group();
  training::Callbacks cb;
  cb.on_epoch = [&](const kaizen::v1::EpochMetrics& m) { run.losses.push_back(m.train_loss()); };
  cb.after_update = [&](int64_t, const std::vector<torch::Tensor>& trainable) {
    run.digests.push_back(Digest(trainable));
  };
  run.result = training::Train(opts, data, cb);
  EXPECT_TRUE(run.result.ok()) << run.result.status();
  EXPECT_TRUE((*dp)->Finish().ok());
  run.rank1 = RankOneReport(run.folder);
  return run;
}

TEST(DataParallelTest, RankZeroInThisProcessTrainsWithAWorkerProcessInLockstep) {
  test_util::TempDir dir;
  auto [data, opts] = MakeJob(dir, 4, 24, kaizen::v1::STRATEGY_FINE_TUNE, 2, 16);
  const TwoRanks run = TrainAsTwoRanks(dir, opts, data);
  ASSERT_TRUE(run.result.ok());
  EXPECT_EQ(run.rank1.epochs_completed(), 2);
  // From the frozen-prefix cache, a half of it computed by each rank.
  bool from_prefix_cache = false;
  for (const std::string& note : run.result->notes) {
    from_prefix_cache |= note.find("ran once for the 96 images") != std::string::npos;
  }
  EXPECT_TRUE(from_prefix_cache) << absl::StrJoin(run.result->notes, "\n");
  ASSERT_EQ(run.rank1.step_digests_size(), static_cast<int>(run.digests.size()));
  ASSERT_EQ(run.digests.size(), 12u);  // 96 images, global batches of 16, 2 epochs
  for (size_t s = 0; s < run.digests.size(); ++s) {
    EXPECT_EQ(run.rank1.step_digests(static_cast<int>(s)), run.digests[s])
        << "after update " << s + 1;
  }
  // The scratch folder goes with the launcher.
  EXPECT_EQ(test_util::CountFiles(run.folder), 0u);
}

TEST(DataParallelTest, AWorkerKilledMidRunFailsRankZeroPromptlyAndIsNamed) {
  test_util::TempDir dir;
  auto [data, opts] = MakeJob(dir, 4, 24, kaizen::v1::STRATEGY_FULL, 50, 16);
  absl::StatusOr<std::unique_ptr<LocalDataParallel>> dp =
      LocalDataParallel::Start(Options(dir), "job", 2, 1, opts, data);
  ASSERT_TRUE(dp.ok()) << dp.status();
  opts.group = (*dp)->group();
  training::Callbacks cb;
  absl::Time killed;
  cb.after_update = [&](int64_t step, const std::vector<torch::Tensor>&) {
    if (step != 3) return;
    ASSERT_EQ(kill((*dp)->worker_pid(1), SIGKILL), 0);
    killed = absl::Now();
  };
  absl::StatusOr<training::TrainResult> result = training::Train(opts, data, cb);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kUnavailable) << result.status();
  EXPECT_NE(result.status().message().find("rank 0 of 2"), std::string::npos) << result.status();
  EXPECT_LT(absl::Now() - killed, absl::Seconds(20));
  // As the job manager does: the worker that ended first is named.
  const absl::Status workers = (*dp)->Abort();
  EXPECT_EQ(workers.message(), "rank 1 was killed by signal 9");
}

// INCREMENTAL: a 2-class model learns 2 more classes as a group. Rank 0
// (this process) chooses the old classes' exemplars from the images the
// base was trained on and sends the images it replays to the worker, which
// holds neither memory nor those images: both ranks train on the same
// images, stay identical, and train as one process does.
TEST(DataParallelTest, AnIncrementalGroupReplaysRankZerosExemplarsOnEveryRank) {
  test_util::TempDir dir;
  const datasets::DecodedDataset all = training::fixtures::SyntheticDataset(4, 24);
  const datasets::DecodedDataset old_data = training::ShrinkMemory(all, {"class0", "class1"}, 1000);
  datasets::DecodedDataset new_data = training::ShrinkMemory(all, {"class2", "class3"}, 1000);
  new_data = training::ShrinkMemory(
      new_data, training::MergeClassNames({"class0", "class1"}, new_data.class_names), 1000);
  training::fixtures::BaseModel previous = training::fixtures::Builtin("cnn-small", 2);
  previous.metadata.add_class_names("class0");
  previous.metadata.add_class_names("class1");

  training::TrainerOptions opts;
  opts.strategy = kaizen::v1::STRATEGY_INCREMENTAL;
  opts.hyperparameters = training::fixtures::FastHyperparameters(2, 16);
  opts.hyperparameters.set_drop_last_fraction(0);
  opts.base = previous.module;
  opts.base_metadata = previous.metadata;
  training::TrainerOptions::Incremental inc;
  inc.previous = previous.module;
  inc.previous_metadata = previous.metadata;
  absl::StatusOr<kaizen::v1::IncrementalOptions> resolved =
      training::ResolveIncremental(kaizen::v1::STRATEGY_INCREMENTAL, {}, 5);
  ASSERT_TRUE(resolved.ok()) << resolved.status();
  inc.options = *resolved;
  inc.options.set_exemplars_per_class(6);
  inc.memory_source = &old_data;
  opts.incremental = inc;
  opts.digest_training_set = true;
  // A validation dataset of its own (written for the worker too).
  const datasets::DecodedDataset validation = training::ShrinkMemory(
      training::ShrinkMemory(training::fixtures::SyntheticDataset(4, 6, 28, 1, /*seed=*/2),
                             {"class2", "class3"}, 1000),
      new_data.class_names, 1000);
  training::TrainingData data;
  data.train = &new_data;
  data.validation = &validation;

  std::vector<double> alone_losses;
  training::Callbacks alone_cb;
  alone_cb.on_epoch = [&](const kaizen::v1::EpochMetrics& m) {
    alone_losses.push_back(m.train_loss());
  };
  absl::StatusOr<training::TrainResult> alone = training::Train(opts, data, alone_cb);
  ASSERT_TRUE(alone.ok()) << alone.status();

  const TwoRanks run = TrainAsTwoRanks(dir, opts, data);
  ASSERT_TRUE(run.result.ok());
  const training::TrainResult& result = *run.result;
  const kaizen::internal::TrainingWorkerReport& rank1 = run.rank1;

  // Exemplars were replayed: the worker trained on the very images (and
  // labels) rank 0 did, and one process does.
  EXPECT_GT(result.incremental.replayed, 0);
  EXPECT_EQ(rank1.replayed(), result.incremental.replayed);
  ASSERT_FALSE(result.training_set_sha256.empty());
  EXPECT_EQ(rank1.training_set_sha256(), result.training_set_sha256);
  EXPECT_EQ(alone->training_set_sha256, result.training_set_sha256);
  // Validation images were scored on every epoch.
  EXPECT_GT(result.last.val_accuracy() + result.last.val_loss(), 0);
  // The images written for the worker went with the group's folder.
  EXPECT_EQ(test_util::CountFiles(run.folder), 0u);
  // Rank 0 alone has the next memory (stored with its checkpoints).
  ASSERT_NE(result.incremental.memory, nullptr);
  EXPECT_EQ(training::MemoryClassCounts(*result.incremental.memory),
            (std::vector<int64_t>{6, 6, 6, 6}));
  ASSERT_EQ(rank1.step_digests_size(), static_cast<int>(run.digests.size()));
  ASSERT_FALSE(run.digests.empty());
  for (size_t s = 0; s < run.digests.size(); ++s) {
    EXPECT_EQ(rank1.step_digests(static_cast<int>(s)), run.digests[s]) << "after update " << s + 1;
  }
  // The teacher (the previous version, on the old classes) ran on the
  // worker too.
  EXPECT_GT(rank1.teacher_forward_batches(), 0);
  // As for FULL: BatchNorm normalises each rank's half batch on its own.
  ASSERT_EQ(run.losses.size(), 2u);
  ASSERT_EQ(alone_losses.size(), 2u);
  for (size_t e = 0; e < run.losses.size(); ++e) {
    std::cout << "INCREMENTAL epoch " << e + 1 << " train loss: W=2 " << run.losses[e]
              << ", one process " << alone_losses[e] << "\n";
    EXPECT_NEAR(run.losses[e], alone_losses[e], 0.1 * alone_losses[e]) << "epoch " << e + 1;
  }
}

// A text job of three classes (class k holds token 10 + k among random
// tokens 20..49), on a small transformer-small.
training::TextExamples SyntheticText(int64_t n, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const auto draw = [&](int64_t lo, int64_t hi) {
    return at::randint(lo, hi, {1}, gen, torch::TensorOptions(torch::kLong)).item<int64_t>();
  };
  training::TextExamples e;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t label = i % 3;
    const int64_t len = draw(4, 13);
    std::vector<int32_t> s = {1};
    for (int64_t k = 0; k < len; ++k) s.push_back(static_cast<int32_t>(draw(20, 50)));
    s[static_cast<size_t>(1 + i % len)] = static_cast<int32_t>(10 + label);
    s.push_back(2);
    e.sequences.push_back(s);
    e.labels.push_back(label);
  }
  return e;
}

training::TextTrainerOptions TextJob(kaizen::v1::Strategy strategy) {
  models::TextEncoderOptions shape;
  shape.vocab_size = 50;
  shape.max_length = 16;
  shape.hidden_size = 16;
  shape.num_layers = 2;
  shape.num_heads = 2;
  shape.intermediate_size = 32;
  shape.num_classes = 7;
  shape.seed = 3;
  absl::StatusOr<torch::jit::Module> base = models::CreateTextEncoder(shape);
  EXPECT_TRUE(base.ok()) << base.status();
  training::TextTrainerOptions o;
  o.strategy = strategy;
  o.hyperparameters = training::DefaultTextHyperparameters(strategy, 3, 16);
  o.hyperparameters.set_seed(5);
  if (base.ok()) o.base = *base;
  o.base_metadata.set_architecture(std::string(models::kTransformerSmall));
  o.base_metadata.mutable_head()->set_module_path("fc");
  o.num_classes = 3;
  return o;
}

// `o` as rank 0 of a group of two in this process, with a kaizen-worker
// (--record_digests) as rank 1, as TrainAsTwoRanks.
struct TextRanks {
  absl::StatusOr<training::TextTrainResult> result = absl::UnknownError("not run");
  std::vector<std::string> digests;
  kaizen::internal::TrainingWorkerReport rank1;
};

TextRanks TrainTextAsTwoRanks(const test_util::TempDir& dir, training::TextTrainerOptions o,
                              const training::TextExamples& train,
                              const training::TextExamples* validation) {
  TextRanks run;
  absl::StatusOr<std::unique_ptr<LocalDataParallel>> dp = LocalDataParallel::StartText(
      Options(dir), "text", 2, 1, o, train, validation, {"--record_digests"});
  EXPECT_TRUE(dp.ok()) << dp.status();
  if (!dp.ok()) return run;
  const std::string folder = (*dp)->output_dir();
  o.group = (*dp)->group();
  o.after_update = [&](int64_t, const std::vector<torch::Tensor>& trainable) {
    run.digests.push_back(Digest(trainable));
  };
  run.result = training::TrainTextClassifier(o, train, validation);
  EXPECT_TRUE(run.result.ok()) << run.result.status();
  EXPECT_TRUE((*dp)->Finish().ok());
  run.rank1 = RankOneReport(folder);
  return run;
}

// Text jobs: two ranks stay bit-identical after every update. With a frozen
// encoder (FEATURE_EXTRACTION: its features computed a share per rank, no
// dropout in the head) the group's losses are one process's; DISTILL
// trains every parameter on the teacher's logits sent in the workers' file,
// with each rank's own dropout draws.
TEST(DataParallelTest, ATextGroupTrainsAsOneProcessDoes) {
  test_util::TempDir dir;
  // 97 examples in global batches of 16: the last batch has one, and rank
  // 1 no share of it.
  const training::TextExamples train = SyntheticText(97, 7);
  const training::TextExamples validation = SyntheticText(24, 8);
  for (const kaizen::v1::Strategy strategy :
       {kaizen::v1::STRATEGY_FEATURE_EXTRACTION, kaizen::v1::STRATEGY_DISTILL}) {
    SCOPED_TRACE(kaizen::v1::Strategy_Name(strategy));
    training::TextTrainerOptions o = TextJob(strategy);
    if (strategy == kaizen::v1::STRATEGY_DISTILL) {
      // A teacher that knows the answers, softly.
      training::TextDistillation d;
      d.teacher_logits = torch::one_hot(torch::tensor(train.labels), 3).to(torch::kFloat) * 4;
      d.temperature = 2;
      d.alpha = 0.7;
      o.distillation = d;
    }
    const absl::StatusOr<training::TextTrainResult> alone =
        training::TrainTextClassifier(o, train, &validation);
    ASSERT_TRUE(alone.ok()) << alone.status();
    const TextRanks run = TrainTextAsTwoRanks(dir, o, train, &validation);
    ASSERT_TRUE(run.result.ok());
    ASSERT_EQ(run.digests.size(), 21u);  // 7 updates per epoch
    ASSERT_EQ(run.rank1.step_digests_size(), 21);
    for (size_t s = 0; s < run.digests.size(); ++s) {
      EXPECT_EQ(run.rank1.step_digests(static_cast<int>(s)), run.digests[s])
          << "after update " << s + 1;
    }
    EXPECT_EQ(run.rank1.epochs_completed(), 3);
    ASSERT_EQ(run.result->epochs.size(), 3u);
    ASSERT_EQ(run.rank1.epochs_size(), 3);
    ASSERT_EQ(alone->epochs.size(), 3u);
    const bool frozen = strategy == kaizen::v1::STRATEGY_FEATURE_EXTRACTION;
    const double tolerance = frozen ? 1e-4 : 0.1;
    for (size_t e = 0; e < 3; ++e) {
      const kaizen::v1::EpochMetrics& group = run.result->epochs[e];
      const kaizen::v1::EpochMetrics& one = alone->epochs[e];
      std::cout << kaizen::v1::Strategy_Name(strategy) << " text epoch " << e + 1
                << " train loss: W=2 " << group.train_loss() << ", one process " << one.train_loss()
                << "; validation loss: W=2 " << group.val_loss() << ", one process "
                << one.val_loss() << "\n";
      EXPECT_NEAR(group.train_loss(), one.train_loss(), tolerance * one.train_loss())
          << "epoch " << e + 1;
      EXPECT_NEAR(group.val_loss(), one.val_loss(), tolerance * one.val_loss())
          << "epoch " << e + 1;
      // The validation set is scored a share per rank and summed: both
      // ranks report the same figures.
      const kaizen::v1::EpochMetrics& other = run.rank1.epochs(static_cast<int>(e));
      EXPECT_EQ(other.val_loss(), group.val_loss()) << "epoch " << e + 1;
      EXPECT_EQ(other.val_accuracy(), group.val_accuracy()) << "epoch " << e + 1;
    }
    EXPECT_LT(run.result->epochs[2].train_loss(), run.result->epochs[0].train_loss());
    // The encoder's batches outside training, in chunks of at most 64 and
    // at most N / 2 examples dealt in turn: the frozen features of the 97
    // training examples once (one process: 64 + 33; the group: 48 and 1 on
    // rank 0, 48 on rank 1) and of the 24 validation examples (one process:
    // one batch; the group: 12 on each rank), scored once with frozen
    // features, every epoch otherwise.
    const int64_t validations = frozen ? 1 : 3;
    EXPECT_EQ(alone->backbone_forward_batches, (frozen ? 2 : 0) + validations);
    EXPECT_EQ(run.result->backbone_forward_batches, (frozen ? 2 : 0) + validations);
    EXPECT_EQ(run.rank1.backbone_forward_batches(), (frozen ? 1 : 0) + validations);
  }
}

// A data-parallel run's folder, and an export's, link the record files
// (the same inode, no bytes copied) where they can, and copy them where no
// link can be made (another file system: EXDEV), with the same bytes.
TEST(DataParallelTest, RecordFilesAreLinkedWhereTheyCanBeAndCopiedAcrossFileSystems) {
  test_util::TempDir source;
  test_util::TempDir beside;  // the same file system
  const std::string file = source.File("records.krec");
  ASSERT_TRUE(common::WriteFileAtomically(file, "the records' bytes").ok());
  struct stat original {};
  ASSERT_EQ(stat(file.c_str(), &original), 0);

  absl::StatusOr<std::string> linked = LinkIntoFolder(beside.path(), file, "train");
  ASSERT_TRUE(linked.ok()) << linked.status();
  EXPECT_EQ(*linked, "train.krec");
  struct stat link {};
  ASSERT_EQ(stat(beside.File("train.krec").c_str(), &link), 0);
  EXPECT_EQ(link.st_ino, original.st_ino);

  char other[] = "/dev/shm/kaizen-test-XXXXXX";
  if (mkdtemp(other) == nullptr) GTEST_SKIP() << "no /dev/shm to copy across to";
  const absl::Cleanup remove = [&] { std::filesystem::remove_all(other); };
  struct stat folder {};
  ASSERT_EQ(stat(other, &folder), 0);
  if (folder.st_dev == original.st_dev) {
    GTEST_SKIP() << "/dev/shm is on the file system of " << source.path()
                 << ": a link would not fail";
  }
  absl::StatusOr<std::string> copied = LinkIntoFolder(other, file, "validation");
  ASSERT_TRUE(copied.ok()) << copied.status();
  EXPECT_EQ(*copied, "validation.krec");
  const std::string path = std::string(other) + "/validation.krec";
  struct stat copy {};
  ASSERT_EQ(stat(path.c_str(), &copy), 0);
  EXPECT_NE(copy.st_dev, original.st_dev);
  std::string bytes;
  ASSERT_TRUE(common::ReadFile(path, &bytes).ok());
  EXPECT_EQ(bytes, "the records' bytes");
}

TEST(DataParallelTest, WorldSizesAreResolvedAndRefusedPrecisely) {
  DataParallelOptions o;
  o.max_world_size = 4;
  o.default_world_size = 2;
  kaizen::v1::StartFineTuneRequest r;
  r.set_strategy(kaizen::v1::STRATEGY_FINE_TUNE);
  EXPECT_EQ(*ResolveWorldSize(r, false, o), 2);  // the default
  r.set_world_size(3);
  EXPECT_EQ(*ResolveWorldSize(r, false, o), 3);
  r.set_world_size(5);
  EXPECT_NE(ResolveWorldSize(r, false, o).status().message().find("1 to 4 processes"),
            std::string::npos);
  r.set_world_size(2);
  EXPECT_EQ(*ResolveWorldSize(r, true, o), 2);  // text too
  r.set_strategy(kaizen::v1::STRATEGY_MASKED_LM);
  EXPECT_NE(ResolveWorldSize(r, true, o)
                .status()
                .message()
                .find("STRATEGY_MASKED_LM trains in one process (FEATURE_EXTRACTION, FINE_TUNE, "
                      "FULL, SCRATCH, DISTILL and INCREMENTAL run data parallel, on text as on "
                      "images)"),
            std::string::npos)
      << ResolveWorldSize(r, true, o).status();
  r.set_strategy(kaizen::v1::STRATEGY_DISTILL);
  EXPECT_EQ(*ResolveWorldSize(r, false, o), 2);
  r.set_strategy(kaizen::v1::STRATEGY_INCREMENTAL);
  EXPECT_EQ(*ResolveWorldSize(r, false, o), 2);
  r.set_world_size(0);
  EXPECT_EQ(*ResolveWorldSize(r, false, o), 2);  // the default
  EXPECT_EQ(*ResolveWorldSize(r, true, o), 2);   // on text too
  r.set_strategy(kaizen::v1::STRATEGY_MASKED_LM);
  EXPECT_EQ(*ResolveWorldSize(r, true, o), 1);  // but not to MASKED_LM
  r.set_strategy(kaizen::v1::STRATEGY_FULL);
  r.mutable_tuning()->set_max_trials(4);
  EXPECT_EQ(*ResolveWorldSize(r, false, o), 1);
  r.set_world_size(2);
  EXPECT_NE(ResolveWorldSize(r, false, o).status().message().find("tuning"), std::string::npos);
}

TEST(DataParallelTest, DatasetsOutsideRecordFilesAMissingWorkerAndAFullScratchDiskAreRefused) {
  test_util::TempDir dir;
  auto [data, opts] = MakeJob(dir, 2, 4, kaizen::v1::STRATEGY_FULL, 1, 8);
  const datasets::DecodedDataset images = training::fixtures::SyntheticDataset(2, 4);
  training::TrainingData in_memory;
  in_memory.train = &images;
  EXPECT_EQ(LocalDataParallel::Start(Options(dir), "job", 2, 1, opts, in_memory).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(CheckDataParallelData(opts, in_memory).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(CheckDataParallelData(opts, data).ok());

  // An INCREMENTAL job's images, prepared in memory, are written for the
  // workers only where they leave the scratch reserve free.
  training::TrainerOptions incremental = opts;
  training::TrainerOptions::Incremental previous;
  previous.previous = opts.base;
  previous.previous_metadata = opts.base_metadata;
  incremental.incremental = previous;
  EXPECT_TRUE(CheckDataParallelData(incremental, in_memory).ok());
  DataParallelOptions full = Options(dir);
  full.scratch_reserve_bytes = int64_t{1} << 60;  // more than any disk has
  absl::StatusOr<std::unique_ptr<LocalDataParallel>> refused =
      LocalDataParallel::Start(full, "job", 2, 1, incremental, in_memory);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted) << refused.status();
  EXPECT_NE(refused.status().message().find("less than the 1099511627776.0 MiB kept free "
                                            "(--scratch_reserve_mb)"),
            std::string::npos)
      << refused.status();
  // So are a text job's files.
  const training::TextExamples texts = SyntheticText(8, 1);
  refused = LocalDataParallel::StartText(full, "text", 2, 1, TextJob(kaizen::v1::STRATEGY_FULL),
                                         texts, nullptr);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted) << refused.status();

  DataParallelOptions missing = Options(dir);
  missing.worker_path = dir.File("no-such-worker");
  absl::StatusOr<std::unique_ptr<LocalDataParallel>> dp =
      LocalDataParallel::Start(missing, "job", 2, 1, opts, data);
  EXPECT_EQ(dp.status().code(), absl::StatusCode::kFailedPrecondition) << dp.status();
  EXPECT_NE(dp.status().message().find("--worker_binary"), std::string::npos);

  // A worker that fails before the group forms is named with its reason
  // once the group's timeout has passed.
  DataParallelOptions failing = Options(dir);
  failing.timeout = absl::Seconds(3);
  failing.worker_path = dir.File("failing-worker.sh");
  ASSERT_TRUE(common::WriteFileAtomically(failing.worker_path,
                                          "#!/bin/sh\necho 'kaizen-worker: no spec here' >&2\n"
                                          "exit 2\n")
                  .ok());
  ASSERT_EQ(chmod(failing.worker_path.c_str(), 0755), 0);
  dp = LocalDataParallel::Start(failing, "job2", 2, 1, opts, data);
  EXPECT_FALSE(dp.ok());
  EXPECT_NE(dp.status().message().find("rank 1 exited with status 2: kaizen-worker: no spec here"),
            std::string::npos)
      << dp.status();
}

TEST(DataParallelTest, TheScratchFolderIsPrivateAndNothingListensForTheRendezvous) {
  test_util::TempDir dir;
  auto [data, opts] = MakeJob(dir, 2, 8, kaizen::v1::STRATEGY_FULL, 1, 8);
  absl::StatusOr<std::unique_ptr<LocalDataParallel>> dp =
      LocalDataParallel::Start(Options(dir), "job", 2, 1, opts, data);
  ASSERT_TRUE(dp.ok()) << dp.status();
  struct stat st;
  ASSERT_EQ(stat((*dp)->output_dir().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  // The rendezvous is a file there, not a port.
  EXPECT_EQ(stat(((*dp)->output_dir() + "/store").c_str(), &st), 0);
  opts.group = (*dp)->group();
  ASSERT_TRUE(training::Train(opts, data, {}).ok());
  EXPECT_TRUE((*dp)->Finish().ok());
}

}  // namespace
}  // namespace kaizen::jobs
