#include "server/jobs/model_evaluator.h"

#include <algorithm>
#include <exception>
#include <memory>
#include <string>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/util/time_util.h"
#include "server/common/status_macros.h"
#include "server/jobs/text_job.h"
#include "server/models/builtin_models.h"
#include "server/models/torch_errors.h"
#include "server/training/evaluator.h"

namespace kaizen::jobs {

namespace {
constexpr int32_t kMaxTopK = 1000;
}

ModelEvaluator::ModelEvaluator(Options options, store::ModelStore* models,
                               store::DatasetStore* datasets)
    : options_(std::move(options)), models_(models), datasets_(datasets) {}

int ModelEvaluator::running() const {
  absl::MutexLock lock(&mu_);
  return running_;
}

bool ModelEvaluator::TakeTurn(bool wait, const std::function<bool()>& should_stop, bool* stopped) {
  absl::MutexLock lock(&mu_);
  const int limit = std::max(1, options_.max_concurrent);
  if (!wait && running_ >= limit) return false;
  const auto has_room = [this, limit]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return running_ < limit; };
  // A waiting job still answers cancel, pause and shutdown.
  while (!mu_.AwaitWithTimeout(absl::Condition(&has_room), absl::Milliseconds(100))) {
    if (should_stop && should_stop()) {
      *stopped = true;
      return false;
    }
  }
  ++running_;
  return true;
}

absl::Status ModelEvaluator::CheckSize(const std::string& dataset, int64_t examples) const {
  if (examples <= options_.max_examples) return absl::OkStatus();
  return absl::ResourceExhaustedError(absl::StrCat(
      "dataset \"", dataset, "\" has ", examples, " examples; an evaluation reads at most ",
      options_.max_examples, " (--max_evaluation_examples)"));
}

void ModelEvaluator::EndTurn() {
  absl::MutexLock lock(&mu_);
  --running_;
}

absl::StatusOr<kaizen::v1::Evaluation> ModelEvaluator::Evaluate(
    const kaizen::v1::EvaluateModelRequest& request, const std::function<bool()>& should_stop,
    bool wait_for_turn, std::optional<torch::Device> device) {
  if (request.name().empty()) return absl::InvalidArgumentError("name is empty");
  if (request.dataset().empty()) return absl::InvalidArgumentError("dataset is empty");
  if (request.version() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("version is ", request.version(), "; it must be >= 0 (0: the newest)"));
  }
  if (request.top_k() < 0 || request.top_k() > kMaxTopK) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_k is ", request.top_k(), "; it must be in [0, ", kMaxTopK, "]"));
  }
  if (models::IsBuiltinModel(request.name())) {
    return absl::FailedPreconditionError(
        absl::StrCat("\"", request.name(),
                     "\" is a built-in architecture with random weights; evaluate a model a job "
                     "trained from it"));
  }
  absl::StatusOr<kaizen::v1::Model> model = models_->Get(request.name(), request.version());
  if (!model.ok()) {
    return absl::Status(model.status().code(), absl::StrCat("name: ", model.status().message()));
  }
  if (!model->quarantine_reason().empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("model \"", model->name(), "\" version ", model->version(),
                     " is quarantined (", model->quarantine_reason(), "); it is not run again"));
  }
  absl::StatusOr<kaizen::v1::Dataset> info = datasets_->Get(request.dataset());
  if (!info.ok()) {
    return absl::Status(info.status().code(), absl::StrCat("dataset: ", info.status().message()));
  }
  const bool text = model->has_text_input();
  if (text != store::IsTextDataset(*info)) {
    return absl::InvalidArgumentError(
        absl::StrCat("model \"", model->name(), "\" is ", text ? "a text model" : "an image model",
                     " and dataset \"", request.dataset(), "\" holds ", text ? "images" : "text"));
  }
  RETURN_IF_ERROR(CheckSize(request.dataset(), info->num_examples()));
  bool stopped = false;
  if (!TakeTurn(wait_for_turn, should_stop, &stopped)) {
    if (stopped) return absl::CancelledError("stopped while waiting for a turn to evaluate");
    const int n = std::max(1, options_.max_concurrent);
    return absl::ResourceExhaustedError(
        absl::StrCat(n, n == 1 ? " evaluation is" : " evaluations are",
                     " running already (--max_concurrent_evaluations); retry when one ends"));
  }
  absl::Cleanup end_turn = [this] { EndTurn(); };
  ASSIGN_OR_RETURN(torch::jit::Module module, models_->LoadModule(model->name(), model->version()));
  const int32_t top_k = request.top_k() == 0 ? 5 : request.top_k();
  const torch::Device on = device.value_or(options_.device);
  kaizen::v1::Evaluation e;
  if (text) {
    ASSIGN_OR_RETURN(const std::string tokenizer,
                     models_->ReadTokenizer(model->name(), model->version()));
    ASSIGN_OR_RETURN(std::shared_ptr<const datasets::RecordFile> file,
                     datasets_->OpenTextRecordFile(request.dataset()));
    ASSIGN_OR_RETURN(const LabelledTexts texts, ReadTextRecords(*file));
    try {
      module.to(on);
    } catch (const std::exception& err) {
      return absl::ResourceExhaustedError(
          absl::StrCat("moving model \"", model->name(), "\" to ", on.str(),
                       " failed: ", models::TorchErrorSummary(err)));
    }
    ASSIGN_OR_RETURN(e, EvaluateTextClassifier(module, *model, tokenizer, texts,
                                               options_.batch_size, should_stop, top_k));
  } else {
    ASSIGN_OR_RETURN(datasets::DecodedDataset data, datasets_->Load(request.dataset()));
    training::EvaluateOptions eo;
    eo.top_k = top_k;
    eo.batch_size = options_.batch_size;
    eo.device = on;
    eo.should_stop = should_stop;
    ASSIGN_OR_RETURN(e, training::EvaluateClassifier(module, *model, data, eo));
  }
  e.set_dataset(request.dataset());
  *e.mutable_create_time() = google::protobuf::util::TimeUtil::GetCurrentTime();
  return e;
}

}  // namespace kaizen::jobs
