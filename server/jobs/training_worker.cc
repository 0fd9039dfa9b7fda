#include "server/jobs/training_worker.h"

#include <ATen/Parallel.h>
#include <google/protobuf/util/json_util.h>
#include <torch/script.h>
#include <torch/serialize.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <memory>
#include <sstream>
#include <tuple>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "server/common/atomic_file.h"
#include "server/common/sha256.h"
#include "server/common/status_macros.h"
#include "server/datasets/record_file.h"
#include "server/models/model_file.h"
#include "server/models/model_metadata.h"
#include "server/models/torch_errors.h"
#include "server/training/hyperparameters.h"
#include "server/training/trainer.h"

namespace kaizen::jobs {
namespace {

using kaizen::internal::TrainingWorkerReport;
using kaizen::internal::TrainingWorkerSpec;

// Specs are small; anything larger is not one.
constexpr int64_t kMaxJsonBytes = int64_t{1} << 20;

template <typename Message>
absl::StatusOr<Message> ReadJson(const std::string& path, const char* what) {
  std::string json;
  RETURN_IF_ERROR(common::ReadFile(path, &json));
  if (static_cast<int64_t>(json.size()) > kMaxJsonBytes) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s %s is %d bytes; at most %d", what, path, json.size(), kMaxJsonBytes));
  }
  Message message;
  const auto st = google::protobuf::util::JsonStringToMessage(json, &message);
  if (!st.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " ", path, " is not valid: ", st.message().as_string()));
  }
  return message;
}

template <typename Message>
absl::Status WriteJson(const Message& message, const std::string& path) {
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  const auto st = google::protobuf::util::MessageToJsonString(message, &json, options);
  if (!st.ok()) return absl::InternalError(st.message().as_string());
  return common::WriteFileAtomically(path, json);
}

std::string Resolve(const std::string& dir, const std::string& path) {
  if (path.empty() || absl::StartsWith(path, "/") || dir.empty()) return path;
  return absl::StrCat(dir, "/", path);
}

std::string Digest(const std::vector<torch::Tensor>& parameters) {
  common::Sha256 sha;
  for (const torch::Tensor& p : parameters) {
    const torch::Tensor host = p.detach().to(torch::kCPU).contiguous();
    sha.Update(host.data_ptr(), host.nbytes());
  }
  return sha.HexDigest();
}

// A Kaizen model file: its TorchScript module on the CPU and its metadata.
absl::Status LoadModelFile(const std::string& path, torch::jit::Module* module,
                           kaizen::v1::Model* metadata) {
  ASSIGN_OR_RETURN(*metadata, models::ReadModelMetadata(path));
  try {
    *module = torch::jit::load(path, torch::kCPU);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot load ", path, ": ", models::TorchErrorSummary(e)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckTeacherClasses(const kaizen::v1::Model& teacher,
                                 const std::vector<std::string>& classes) {
  if (teacher.has_text_input()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the teacher ", teacher.name(), ":", teacher.version(),
                     " is a text model; it cannot teach from images"));
  }
  const std::vector<std::string> predicted(teacher.class_names().begin(),
                                           teacher.class_names().end());
  if (predicted != classes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the teacher ", teacher.name(), ":", teacher.version(), " predicts the classes [",
        absl::StrJoin(predicted, ", "), "] but the training records have [",
        absl::StrJoin(classes, ", "), "]; a teacher needs their class names in the same order"));
  }
  return absl::OkStatus();
}

absl::Status CheckWorkerRank(const TrainingWorkerSpec& spec, int rank) {
  if (!spec.text_examples().empty() && rank == 0) {
    return absl::FailedPreconditionError(
        "a text job's rank 0 is the server that launched the group (it writes the versions, "
        "tokenizer included); kaizen-worker runs its other ranks only");
  }
  if (spec.strategy() == kaizen::v1::STRATEGY_INCREMENTAL && rank == 0) {
    return absl::FailedPreconditionError(
        "an INCREMENTAL job's rank 0 is the server that launched the group (it chooses the "
        "exemplars to replay from the previous version's memory); kaizen-worker runs its other "
        "ranks only");
  }
  return absl::OkStatus();
}

namespace {

// A strategy's own fields, set for that strategy alone: "" when they are.
std::string StrategyFieldsProblem(const TrainingWorkerSpec& spec) {
  const bool text = !spec.text_examples().empty();
  const bool distill = spec.strategy() == kaizen::v1::STRATEGY_DISTILL;
  const bool incremental = spec.strategy() == kaizen::v1::STRATEGY_INCREMENTAL;
  const std::string strategy = kaizen::v1::Strategy_Name(spec.strategy());
  const bool distillation_set =
      spec.distillation_temperature() != 0 || spec.distillation_alpha() != 0;
  const double t = spec.text_incremental_temperature(), w = spec.text_incremental_weight();
  if (text &&
      (!spec.train_records().empty() || !spec.validation_records().empty() ||
       !spec.teacher_model().empty() || !spec.previous_model().empty() || spec.has_incremental())) {
    return "a text spec (text_examples) takes no train_records, validation_records, "
           "teacher_model, previous_model or incremental: its examples and logits are in "
           "text_examples";
  }
  if (!text && (t != 0 || w != 0 || spec.text_pad_id() != 0)) {
    return "text_incremental_temperature, text_incremental_weight or text_pad_id is set "
           "without text_examples (they are a text job's)";
  }
  if (text &&
      (spec.max_image_memory_bytes() != 0 || spec.loader_threads() != 0 ||
       spec.prefetch_batches() != 0 || spec.has_max_prefix_cache_bytes() || spec.channels_last())) {
    return "max_image_memory_bytes, loader_threads, prefetch_batches, max_prefix_cache_bytes or "
           "channels_last is set with text_examples (they are an image job's)";
  }
  if (!distill && (!spec.teacher_model().empty() || distillation_set)) {
    return absl::StrCat(
        "teacher_model, distillation_temperature or distillation_alpha is set but strategy is ",
        strategy, " (they are STRATEGY_DISTILL's)");
  }
  if (!incremental &&
      (!spec.previous_model().empty() || spec.has_incremental() || t != 0 || w != 0)) {
    return absl::StrCat("previous_model, incremental or text_incremental_* is set but strategy is ",
                        strategy, " (they are STRATEGY_INCREMENTAL's)");
  }
  if (distill && !text && spec.teacher_model().empty()) {
    return "STRATEGY_DISTILL needs teacher_model";
  }
  // The ranges ResolveDistillation allows (`!(a <= x)` also refuses NaN).
  if (distill &&
      (!(spec.distillation_temperature() >= 1) || !(spec.distillation_temperature() <= 100) ||
       !(spec.distillation_alpha() > 0) || !(spec.distillation_alpha() <= 1))) {
    return absl::StrFormat(
        "distillation_temperature is %g (1 to 100) and distillation_alpha %g (above 0, at most 1)",
        spec.distillation_temperature(), spec.distillation_alpha());
  }
  if (incremental && text && (!(t >= 1) || !(t <= 100) || !(w >= 0) || !std::isfinite(w))) {
    return absl::StrFormat(
        "text_incremental_temperature is %g (1 to 100) and text_incremental_weight %g (finite, "
        "at least 0)",
        t, w);
  }
  if (incremental && !text) {
    if (spec.previous_model().empty()) return "STRATEGY_INCREMENTAL needs previous_model";
    const absl::Status resolved = training::ResolveIncremental(spec.strategy(), spec.incremental(),
                                                               spec.hyperparameters().seed())
                                      .status();
    if (!resolved.ok()) return std::string(resolved.message());
  }
  return "";
}

}  // namespace

absl::StatusOr<TrainingWorkerSpec> ReadTrainingWorkerSpec(const std::string& path) {
  ASSIGN_OR_RETURN(TrainingWorkerSpec spec, ReadJson<TrainingWorkerSpec>(path, "worker spec"));
  if (spec.base_model().empty() || (spec.train_records().empty() && spec.text_examples().empty()) ||
      spec.output_dir().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "worker spec ", path,
        " needs base_model, train_records (an image job) or text_examples (a text job), and "
        "output_dir"));
  }
  if (const std::string problem = StrategyFieldsProblem(spec); !problem.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("worker spec ", path, ": ", problem));
  }
  if (spec.timeout_seconds() < 0 || spec.threads() < 0 || spec.loader_threads() < 0 ||
      spec.max_image_memory_bytes() < 0) {
    return absl::InvalidArgumentError(absl::StrCat("worker spec ", path,
                                                   ": timeout_seconds, threads, loader_threads and "
                                                   "max_image_memory_bytes must not be negative"));
  }
  return spec;
}

absl::Status WriteTrainingWorkerSpec(const TrainingWorkerSpec& spec, const std::string& path) {
  return WriteJson(spec, path);
}

absl::StatusOr<TrainingWorkerReport> ReadTrainingWorkerReport(const std::string& path) {
  return ReadJson<TrainingWorkerReport>(path, "worker report");
}

std::string CheckpointModelPath(const std::string& output_dir, int epoch) {
  return absl::StrFormat("%s/epoch-%d.pt", output_dir, epoch);
}
std::string CheckpointResumePath(const std::string& output_dir, int epoch) {
  return absl::StrFormat("%s/epoch-%d.resume", output_dir, epoch);
}
std::string WorkerReportPath(const std::string& output_dir, int rank) {
  return absl::StrFormat("%s/rank-%d.json", output_dir, rank);
}

TrainingWorkerSpec SpecOfTrainerSettings(const training::TrainerOptions& opts) {
  TrainingWorkerSpec spec;
  spec.set_strategy(opts.strategy);
  *spec.mutable_hyperparameters() = opts.hyperparameters;
  spec.set_max_image_memory_bytes(opts.max_image_memory_bytes);
  spec.set_loader_threads(opts.loader_threads);
  spec.set_prefetch_batches(opts.prefetch_batches);
  spec.set_max_prefix_cache_bytes(opts.max_prefix_cache_bytes);
  spec.set_channels_last(opts.channels_last);
  if (opts.distillation) {
    spec.set_distillation_temperature(opts.distillation->temperature);
    spec.set_distillation_alpha(opts.distillation->alpha);
  }
  if (opts.incremental) *spec.mutable_incremental() = opts.incremental->options;
  return spec;
}

void ApplySpecTrainerSettings(const TrainingWorkerSpec& spec, training::TrainerOptions* opts) {
  opts->strategy = spec.strategy();
  opts->hyperparameters = spec.hyperparameters();
  if (spec.max_image_memory_bytes() > 0) {
    opts->max_image_memory_bytes = spec.max_image_memory_bytes();
  }
  if (spec.loader_threads() > 0) opts->loader_threads = spec.loader_threads();
  if (spec.prefetch_batches() > 0) opts->prefetch_batches = spec.prefetch_batches();
  if (spec.has_max_prefix_cache_bytes()) {
    opts->max_prefix_cache_bytes = spec.max_prefix_cache_bytes();
  }
  opts->channels_last = spec.channels_last();
}

namespace {

// A set's sequences as flat int32 tokens and int64 offsets (N + 1).
std::pair<torch::Tensor, torch::Tensor> Flatten(const std::vector<std::vector<int32_t>>& rows) {
  torch::Tensor offsets = torch::empty({static_cast<int64_t>(rows.size()) + 1}, torch::kLong);
  int64_t* o = offsets.data_ptr<int64_t>();
  o[0] = 0;
  for (size_t i = 0; i < rows.size(); ++i) o[i + 1] = o[i] + static_cast<int64_t>(rows[i].size());
  torch::Tensor tokens = torch::empty({o[rows.size()]}, torch::kInt);
  int32_t* t = tokens.data_ptr<int32_t>();
  for (const std::vector<int32_t>& row : rows) t = std::copy(row.begin(), row.end(), t);
  return {tokens, offsets};
}

absl::StatusOr<training::TextExamples> Unflatten(const torch::Tensor& tokens,
                                                 const torch::Tensor& offsets,
                                                 const torch::Tensor& labels,
                                                 const std::string& what) {
  if (tokens.scalar_type() != torch::kInt || tokens.dim() != 1 ||
      offsets.scalar_type() != torch::kLong || offsets.dim() != 1 || offsets.size(0) < 1 ||
      labels.scalar_type() != torch::kLong || labels.dim() != 1 ||
      labels.size(0) != offsets.size(0) - 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(what,
                     ": tokens (int32), offsets (int64, one more than the sequences) or "
                     "labels (int64, one per sequence) have another type or shape"));
  }
  const torch::Tensor o = offsets.contiguous(), t = tokens.contiguous(), l = labels.contiguous();
  const int64_t* off = o.data_ptr<int64_t>();
  const int32_t* tok = t.data_ptr<int32_t>();
  const int64_t n = labels.size(0);
  if (off[0] != 0 || off[n] != tokens.size(0)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": the offsets do not span the ", tokens.size(0), " tokens"));
  }
  training::TextExamples examples;
  examples.labels.assign(l.data_ptr<int64_t>(), l.data_ptr<int64_t>() + n);
  examples.sequences.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    if (off[i + 1] < off[i] || off[i + 1] > tokens.size(0)) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": the offsets of sequence ", i, " run backwards or past the end"));
    }
    examples.sequences[static_cast<size_t>(i)].assign(tok + off[i], tok + off[i + 1]);
  }
  return examples;
}

// The logits a file holds: none (no elements), or float32 [rows, K].
absl::StatusOr<torch::Tensor> LogitsOf(const torch::Tensor& t, int64_t rows,
                                       const std::string& what) {
  if (t.numel() == 0) return torch::Tensor();
  if (t.scalar_type() != torch::kFloat || t.dim() != 2 || t.size(0) != rows) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " must be float32 with one row per training example (", rows, ")"));
  }
  if (!torch::isfinite(t).all().item<bool>()) {
    return absl::InvalidArgumentError(absl::StrCat(what, " hold a value that is not finite"));
  }
  return t;
}

// The examples and logits in a text examples file's tensors (each checked
// to lie within the file's bytes), as ReadTextWorkerData answers.
absl::StatusOr<TextWorkerData> TextWorkerDataOf(const std::vector<torch::Tensor>& t,
                                                const std::string& what);

// Kinds of tensor in a text examples file, in order.
enum TextTensor {
  kTrainTokens,
  kTrainOffsets,
  kTrainLabels,
  kValidationTokens,
  kValidationOffsets,  // none: no validation examples
  kValidationLabels,
  kTeacherLogits,   // none: not DISTILL
  kPreviousLogits,  // none: not INCREMENTAL
  kNumClasses,      // int64 [1]
  kTextTensors
};

}  // namespace

absl::Status WriteTextWorkerData(const std::string& path, const training::TextExamples& train,
                                 const training::TextExamples* validation, int64_t num_classes,
                                 const torch::Tensor& teacher_logits,
                                 const torch::Tensor& previous_logits) {
  std::vector<torch::Tensor> t(kTextTensors, torch::empty({0}));
  std::tie(t[kTrainTokens], t[kTrainOffsets]) = Flatten(train.sequences);
  t[kTrainLabels] = torch::tensor(train.labels, torch::kLong);
  if (validation != nullptr) {
    std::tie(t[kValidationTokens], t[kValidationOffsets]) = Flatten(validation->sequences);
    t[kValidationLabels] = torch::tensor(validation->labels, torch::kLong);
  }
  if (teacher_logits.defined()) {
    t[kTeacherLogits] = teacher_logits.to(torch::kCPU, torch::kFloat).contiguous();
  }
  if (previous_logits.defined()) {
    t[kPreviousLogits] = previous_logits.to(torch::kCPU, torch::kFloat).contiguous();
  }
  t[kNumClasses] = torch::tensor({num_classes}, torch::kLong);
  std::ostringstream out;
  try {
    torch::save(t, out);
  } catch (const std::exception& e) {
    return absl::InternalError(
        absl::StrCat("cannot serialise the text examples: ", models::TorchErrorSummary(e)));
  }
  return common::WriteFileAtomically(path, out.str());
}

absl::StatusOr<TextWorkerData> ReadTextWorkerData(const std::string& path) {
  std::string bytes;
  RETURN_IF_ERROR(common::ReadFile(path, &bytes));
  std::vector<torch::Tensor> t;
  try {
    std::istringstream in(bytes);
    torch::load(t, in);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("text examples ", path, " do not load: ", models::TorchErrorSummary(e)));
  }
  const std::string what = absl::StrCat("text examples ", path);
  if (t.size() != static_cast<size_t>(kTextTensors)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " hold ", t.size(), " tensors, not ", int{kTextTensors}));
  }
  // Each tensor lies in the bytes the file holds: contiguous (an archive may
  // declare any strides, a zero stride a tensor of any size over a few
  // bytes) and within its storage.
  for (size_t i = 0; i < t.size(); ++i) {
    int64_t end = 0;
    if (!t[i].is_contiguous() ||
        __builtin_add_overflow(t[i].storage_offset(), t[i].numel(), &end) ||
        __builtin_mul_overflow(end, static_cast<int64_t>(t[i].element_size()), &end) ||
        end > static_cast<int64_t>(t[i].storage().nbytes())) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": tensor ", i, " is not laid out contiguously within the bytes it has"));
    }
  }
  try {
    return TextWorkerDataOf(t, what);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " do not read: ", models::TorchErrorSummary(e)));
  }
}

namespace {

absl::StatusOr<TextWorkerData> TextWorkerDataOf(const std::vector<torch::Tensor>& t,
                                                const std::string& what) {
  TextWorkerData data;
  ASSIGN_OR_RETURN(data.train, Unflatten(t[kTrainTokens], t[kTrainOffsets], t[kTrainLabels],
                                         absl::StrCat(what, ", training set")));
  if (t[kValidationOffsets].numel() > 0) {
    ASSIGN_OR_RETURN(data.validation,
                     Unflatten(t[kValidationTokens], t[kValidationOffsets], t[kValidationLabels],
                               absl::StrCat(what, ", validation set")));
  }
  const int64_t rows = static_cast<int64_t>(data.train.sequences.size());
  ASSIGN_OR_RETURN(data.teacher_logits,
                   LogitsOf(t[kTeacherLogits], rows, absl::StrCat(what, ": teacher logits")));
  ASSIGN_OR_RETURN(data.previous_logits,
                   LogitsOf(t[kPreviousLogits], rows, absl::StrCat(what, ": previous logits")));
  const torch::Tensor& classes = t[kNumClasses];
  if (classes.scalar_type() != torch::kLong || classes.numel() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": no class count"));
  }
  data.num_classes = classes.item<int64_t>();
  // As many as a dataset may have (datasets::RecordFileLimits).
  const int64_t most = datasets::RecordFileLimits().max_classes;
  if (data.num_classes < 2 || data.num_classes > most) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": ", data.num_classes, " classes; a classifier has 2 to ", most));
  }
  return data;
}

// Completes `report` with the run's wall time since `start` and the group's
// collectives, and writes it where rank `rank` reports.
absl::StatusOr<TrainingWorkerReport> FinishReport(TrainingWorkerReport report,
                                                  std::chrono::steady_clock::time_point start,
                                                  const distributed::Group* group,
                                                  const std::string& output_dir, int rank) {
  report.set_seconds(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  if (group != nullptr) {
    report.set_collective_seconds(group->collective_seconds());
    report.set_collectives(group->collectives());
  }
  RETURN_IF_ERROR(WriteJson(report, WorkerReportPath(output_dir, rank)));
  return report;
}

// RunTrainingWorker for a text spec (text_examples): ranks 1 and up of a
// group whose rank 0 is the server.
absl::StatusOr<TrainingWorkerReport> RunTextWorker(const TrainingWorkerSpec& spec,
                                                   const std::string& spec_dir,
                                                   distributed::Group* group,
                                                   const TrainingWorkerOptions& options,
                                                   std::chrono::steady_clock::time_point start) {
  const int rank = group != nullptr ? group->rank() : 0;
  const std::string output_dir = Resolve(spec_dir, spec.output_dir());
  training::TextTrainerOptions o;
  o.strategy = spec.strategy();
  o.hyperparameters = spec.hyperparameters();
  RETURN_IF_ERROR(LoadModelFile(Resolve(spec_dir, spec.base_model()), &o.base, &o.base_metadata));
  o.pad_id = spec.text_pad_id();
  ASSIGN_OR_RETURN(TextWorkerData data,
                   ReadTextWorkerData(Resolve(spec_dir, spec.text_examples())));
  o.num_classes = data.num_classes;
  // Logits the strategy does not train on mean the file is another job's.
  const bool distill = spec.strategy() == kaizen::v1::STRATEGY_DISTILL;
  const bool incremental = spec.strategy() == kaizen::v1::STRATEGY_INCREMENTAL;
  if ((data.teacher_logits.defined() && !distill) ||
      (data.previous_logits.defined() && !incremental)) {
    return absl::InvalidArgumentError(absl::StrCat(
        spec.text_examples(), " holds ", data.teacher_logits.defined() ? "teacher" : "previous",
        " logits, which a ", kaizen::v1::Strategy_Name(spec.strategy()), " job does not use"));
  }
  if (distill) {
    o.distillation = training::TextDistillation{
        data.teacher_logits, spec.distillation_temperature(), spec.distillation_alpha()};
  }
  if (incremental) {
    o.incremental = training::TextIncremental{
        data.previous_logits, spec.text_incremental_temperature(), spec.text_incremental_weight()};
  }
  if (!spec.resume_state().empty()) {
    RETURN_IF_ERROR(common::ReadFile(Resolve(spec_dir, spec.resume_state()), &o.resume_state));
  }
  o.group = group;
  o.should_stop = options.should_stop;
  TrainingWorkerReport report;
  report.set_rank(rank);
  report.set_world_size(group != nullptr ? group->world_size() : 1);
  o.on_epoch = [&](const kaizen::v1::EpochMetrics& m) { *report.add_epochs() = m; };
  o.after_update = [&](int64_t step, const std::vector<torch::Tensor>& trainable) {
    report.set_steps(step);
    if (options.record_digests) report.add_step_digests(Digest(trainable));
  };
  ASSIGN_OR_RETURN(
      const training::TextTrainResult result,
      training::TrainTextClassifier(o, data.train, data.validation ? &*data.validation : nullptr));
  report.set_epochs_completed(static_cast<int32_t>(result.epochs.size()));
  report.set_backbone_forward_batches(result.backbone_forward_batches);
  return FinishReport(std::move(report), start, group, output_dir, rank);
}

}  // namespace

absl::StatusOr<TrainingWorkerReport> RunTrainingWorker(const TrainingWorkerSpec& spec,
                                                       const std::string& spec_dir,
                                                       distributed::Group* group,
                                                       const TrainingWorkerOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  const int rank = group != nullptr ? group->rank() : 0;
  const std::string output_dir = Resolve(spec_dir, spec.output_dir());
  if (spec.threads() > 0) at::set_num_threads(spec.threads());
  if (!spec.text_examples().empty()) {
    RETURN_IF_ERROR(CheckWorkerRank(spec, rank));
    return RunTextWorker(spec, spec_dir, group, options, start);
  }

  training::TrainerOptions opts;
  ApplySpecTrainerSettings(spec, &opts);
  opts.group = group;
  opts.digest_training_set = options.record_digests;
  // The records were checked when they were stored (as JobManager::Execute).
  opts.decode_limits.max_pixels = std::numeric_limits<int64_t>::max();
  opts.decode_limits.max_jpeg_scans = std::numeric_limits<int>::max();
  RETURN_IF_ERROR(
      LoadModelFile(Resolve(spec_dir, spec.base_model()), &opts.base, &opts.base_metadata));
  if (spec.strategy() == kaizen::v1::STRATEGY_DISTILL) {
    training::TrainerOptions::Distillation distillation;
    RETURN_IF_ERROR(LoadModelFile(Resolve(spec_dir, spec.teacher_model()), &distillation.teacher,
                                  &distillation.teacher_metadata));
    distillation.temperature = spec.distillation_temperature();
    distillation.alpha = spec.distillation_alpha();
    opts.distillation = std::move(distillation);
  }
  RETURN_IF_ERROR(CheckWorkerRank(spec, rank));
  const bool incremental = spec.strategy() == kaizen::v1::STRATEGY_INCREMENTAL;
  if (incremental) {
    training::TrainerOptions::Incremental inc;
    RETURN_IF_ERROR(LoadModelFile(Resolve(spec_dir, spec.previous_model()), &inc.previous,
                                  &inc.previous_metadata));
    ASSIGN_OR_RETURN(inc.options, training::ResolveIncremental(spec.strategy(), spec.incremental(),
                                                               spec.hyperparameters().seed()));
    opts.incremental = std::move(inc);
  }
  if (!spec.resume_state().empty()) {
    RETURN_IF_ERROR(common::ReadFile(Resolve(spec_dir, spec.resume_state()), &opts.resume_state));
  }
  training::TrainingData data;
  ASSIGN_OR_RETURN(data.train_file,
                   datasets::RecordFile::Open(Resolve(spec_dir, spec.train_records())));
  if (!spec.validation_records().empty()) {
    ASSIGN_OR_RETURN(data.validation_file,
                     datasets::RecordFile::Open(Resolve(spec_dir, spec.validation_records())));
  }
  // The teacher predicts the records' classes, in order (checked at
  // submission against the dataset then; the records may be another's now).
  if (opts.distillation) {
    RETURN_IF_ERROR(
        CheckTeacherClasses(opts.distillation->teacher_metadata, data.train_file->class_names()));
  }
  // INCREMENTAL holds its images in memory, as rank 0 does.
  // (The server held them in memory within its own budget.)
  constexpr uint64_t kNoCap = std::numeric_limits<uint64_t>::max();
  datasets::DecodedDataset train, validation;
  if (incremental) {
    ASSIGN_OR_RETURN(train, data.train_file->ReadAll(opts.decode_limits, kNoCap));
    data.train = &train;
    data.train_file = nullptr;
    if (data.validation_file != nullptr) {
      ASSIGN_OR_RETURN(validation, data.validation_file->ReadAll(opts.decode_limits, kNoCap));
      data.validation = &validation;
      data.validation_file = nullptr;
    }
  }

  TrainingWorkerReport report;
  report.set_rank(rank);
  report.set_world_size(group != nullptr ? group->world_size() : 1);
  training::Callbacks cb;
  cb.should_stop = options.should_stop;
  cb.on_epoch = [&](const kaizen::v1::EpochMetrics& m) { *report.add_epochs() = m; };
  cb.after_update = [&](int64_t step, const std::vector<torch::Tensor>& trainable) {
    report.set_steps(step);
    if (options.record_digests) report.add_step_digests(Digest(trainable));
  };
  if (rank == 0) {
    cb.on_checkpoint = [&](const training::Checkpoint& cp) -> absl::Status {
      RETURN_IF_ERROR(
          models::SaveModelFile(cp.module, cp.metadata, CheckpointModelPath(output_dir, cp.epoch)));
      return common::WriteFileAtomically(CheckpointResumePath(output_dir, cp.epoch),
                                         cp.resume_state);
    };
  }
  ASSIGN_OR_RETURN(const training::TrainResult result, training::Train(opts, data, cb));
  report.set_epochs_completed(result.epochs_completed);
  report.set_stopped_early(result.stopped_early);
  report.set_teacher_forward_batches(result.teacher_forward_batches);
  report.set_backbone_forward_batches(result.backbone_forward_batches);
  report.set_replayed(result.incremental.replayed);
  report.set_training_set_sha256(result.training_set_sha256);
  return FinishReport(std::move(report), start, group, output_dir, rank);
}

}  // namespace kaizen::jobs
