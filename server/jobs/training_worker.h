// One rank of a data-parallel training job (distributed::Group): what
// kaizen-worker runs, from a TrainingWorkerSpec that names a model file and
// record files (or a text job's tokenised examples). Every rank trains the same options on its
// share of each batch; rank 0 writes a model file and the resume state per checkpoint into the
// spec's output_dir; every rank writes its report there (rank-<RANK>.json).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kaizen/internal/training_worker.pb.h"
#include "server/distributed/group.h"
#include "server/training/text_trainer.h"
#include "server/training/trainer.h"

namespace kaizen::jobs {

// Specs and reports are proto3 JSON (a PyTorchJob's pods read the spec from
// a shared volume). Precise errors name the file and what is wrong.
absl::StatusOr<kaizen::internal::TrainingWorkerSpec> ReadTrainingWorkerSpec(
    const std::string& path);
absl::Status WriteTrainingWorkerSpec(const kaizen::internal::TrainingWorkerSpec& spec,
                                     const std::string& path);
absl::StatusOr<kaizen::internal::TrainingWorkerReport> ReadTrainingWorkerReport(
    const std::string& path);

// The files rank 0 writes for the checkpoint after `epoch` epochs.
std::string CheckpointModelPath(const std::string& output_dir, int epoch);
std::string CheckpointResumePath(const std::string& output_dir, int epoch);
std::string WorkerReportPath(const std::string& output_dir, int rank);

// The trainer's settings a spec carries (strategy, resolved
// hyperparameters, image budget and loader, prefix cache, memory format), in
// both directions: what the server writes for its workers is what a worker
// trains with. Paths, threads and the timeout are the caller's.
kaizen::internal::TrainingWorkerSpec SpecOfTrainerSettings(const training::TrainerOptions& opts);
void ApplySpecTrainerSettings(const kaizen::internal::TrainingWorkerSpec& spec,
                              training::TrainerOptions* opts);

// DISTILL: InvalidArgument unless `teacher` is an image model that predicts
// `classes` (the training records'), in order. Checked against the dataset
// at submission; a worker and an export check again, since the records a
// spec names may be another upload's by then.
absl::Status CheckTeacherClasses(const kaizen::v1::Model& teacher,
                                 const std::vector<std::string>& classes);

// FailedPrecondition for a rank a kaizen-worker cannot run: rank 0 of an
// INCREMENTAL image job (the server that launched the group is its rank 0:
// it chooses the exemplars to replay from the previous version's memory) or
// of a text job (the server writes its versions, tokenizer included).
absl::Status CheckWorkerRank(const kaizen::internal::TrainingWorkerSpec& spec, int rank);

// A text job's examples for its workers (TrainingWorkerSpec::text_examples):
// the training and validation sequences with their labels, the number of
// classes, and the per-example logits of DISTILL's teacher or INCREMENTAL's
// previous classifier (undefined for the other strategies).
struct TextWorkerData {
  training::TextExamples train;
  std::optional<training::TextExamples> validation;
  int64_t num_classes = 0;
  torch::Tensor teacher_logits;
  torch::Tensor previous_logits;
};
// Written atomically (LibTorch's tensor archive: flat tokens and offsets per
// set). Reading checks the layout (offsets within the tokens, one label per
// sequence, logits with one row per training example) and answers
// InvalidArgument naming what is wrong; the trainer checks the rest.
absl::Status WriteTextWorkerData(const std::string& path, const training::TextExamples& train,
                                 const training::TextExamples* validation, int64_t num_classes,
                                 const torch::Tensor& teacher_logits,
                                 const torch::Tensor& previous_logits);
absl::StatusOr<TextWorkerData> ReadTextWorkerData(const std::string& path);

struct TrainingWorkerOptions {
  // Fill TrainingWorkerReport::step_digests (hashes every update) and
  // training_set_sha256.
  bool record_digests = false;
  // Checked by rank 0 before every step (the group agrees to stop there).
  std::function<bool()> should_stop;
};

// Trains rank `group->rank()` (null group: one process) of the job that
// `spec` describes; relative paths in it are taken from `spec_dir`. The
// report is also written to WorkerReportPath when training succeeds.
absl::StatusOr<kaizen::internal::TrainingWorkerReport> RunTrainingWorker(
    const kaizen::internal::TrainingWorkerSpec& spec, const std::string& spec_dir,
    distributed::Group* group, const TrainingWorkerOptions& options);

}  // namespace kaizen::jobs
