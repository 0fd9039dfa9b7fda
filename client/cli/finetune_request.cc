#include "client/cli/finetune_request.h"

#include <cmath>
#include <functional>
#include <limits>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "client/cli/usage.h"
#include "server/common/status_macros.h"

namespace kaizen::cli {
namespace {

using kaizen::v1::Hyperparameters;
using kaizen::v1::JobState;
using kaizen::v1::StartFineTuneRequest;

template <typename T>
using Choices = std::vector<std::pair<absl::string_view, T>>;

// Lower case, '-' read as '_': "Fine-Tune" matches "fine_tune".
std::string Normalize(absl::string_view text) {
  return absl::StrReplaceAll(absl::AsciiStrToLower(text), {{"-", "_"}});
}

template <typename T>
absl::Status ParseChoice(absl::string_view flag, const std::string& text, const Choices<T>& choices,
                         T* out) {
  const std::string key = Normalize(text);
  for (const auto& [name, value] : choices) {
    if (key == name) {
      *out = value;
      return absl::OkStatus();
    }
  }
  return UsageError(absl::StrCat(
      "--", flag, "=", text, ": expected one of ",
      absl::StrJoin(choices, "|",
                    [](std::string* s, const auto& choice) { absl::StrAppend(s, choice.first); })));
}

// An integer >= min; `what` completes "expected ..." in the error.
template <typename T>
absl::Status ParseInt(absl::string_view flag, const std::string& text, T min,
                      absl::string_view what, T* out) {
  T value = 0;
  if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(text), &value) || value < min) {
    return UsageError(absl::StrCat("--", flag, "=", text, ": expected ", what));
  }
  *out = value;
  return absl::OkStatus();
}

absl::Status ParseDouble(absl::string_view flag, const std::string& text,
                         const std::function<bool(double)>& in_range, absl::string_view what,
                         double* out) {
  double value = 0;
  if (!absl::SimpleAtod(absl::StripAsciiWhitespace(text), &value) || !std::isfinite(value) ||
      !in_range(value)) {
    return UsageError(absl::StrCat("--", flag, "=", text, ": expected ", what));
  }
  *out = value;
  return absl::OkStatus();
}

bool Positive(double v) { return v > 0; }
bool NonNegative(double v) { return v >= 0; }
bool BelowOne(double v) { return v >= 0 && v < 1; }
bool OpenUnit(double v) { return v > 0 && v < 1; }

absl::Status Require(absl::string_view flag, const std::string& value, absl::string_view example) {
  if (!value.empty()) return absl::OkStatus();
  return UsageError(
      absl::StrCat("finetune start needs --", flag, " (e.g. --", flag, "=", example, ")"));
}

const Choices<kaizen::v1::Strategy>& StrategyChoices() {
  static const auto* choices = new Choices<kaizen::v1::Strategy>{
      {"feature_extraction", kaizen::v1::STRATEGY_FEATURE_EXTRACTION},
      {"fine_tune", kaizen::v1::STRATEGY_FINE_TUNE},
      {"full", kaizen::v1::STRATEGY_FULL},
      {"scratch", kaizen::v1::STRATEGY_SCRATCH},
      {"incremental", kaizen::v1::STRATEGY_INCREMENTAL},
      {"distill", kaizen::v1::STRATEGY_DISTILL},
      {"masked_lm", kaizen::v1::STRATEGY_MASKED_LM},
  };
  return *choices;
}

// Everything under `hyperparameters`; the message is created only when a
// flag sets one of its fields.
absl::Status SetHyperparameters(const FineTuneFlags& f, StartFineTuneRequest* request) {
  auto hp = [request]() -> Hyperparameters* { return request->mutable_hyperparameters(); };
  if (!f.epochs.empty()) {
    int32_t v = 0;
    RETURN_IF_ERROR(ParseInt<int32_t>("epochs", f.epochs, 1, "a positive integer", &v));
    hp()->set_epochs(v);
  }
  if (!f.batch_size.empty()) {
    int32_t v = 0;
    RETURN_IF_ERROR(ParseInt<int32_t>("batch_size", f.batch_size, 1, "a positive integer", &v));
    hp()->set_batch_size(v);
  }
  if (!f.lr.empty()) {
    double v = 0;
    RETURN_IF_ERROR(ParseDouble("lr", f.lr, Positive, "a number > 0, e.g. 1e-3", &v));
    hp()->set_learning_rate(v);
  }
  if (!f.backbone_lr_multiplier.empty()) {
    double v = 0;
    RETURN_IF_ERROR(ParseDouble("backbone_lr_multiplier", f.backbone_lr_multiplier, NonNegative,
                                "a number >= 0, e.g. 0.1", &v));
    hp()->set_backbone_lr_multiplier(v);
  }
  if (!f.trainable_blocks.empty()) {
    int32_t v = 0;
    RETURN_IF_ERROR(
        ParseInt<int32_t>("trainable_blocks", f.trainable_blocks, 0, "an integer >= 0", &v));
    hp()->set_trainable_blocks(v);
  }
  if (!f.optimizer.empty()) {
    kaizen::v1::OptimizerKind kind = kaizen::v1::OPTIMIZER_UNSPECIFIED;
    RETURN_IF_ERROR(ParseChoice<kaizen::v1::OptimizerKind>("optimizer", f.optimizer,
                                                           {{"sgd", kaizen::v1::OPTIMIZER_SGD},
                                                            {"adam", kaizen::v1::OPTIMIZER_ADAM},
                                                            {"adamw", kaizen::v1::OPTIMIZER_ADAMW}},
                                                           &kind));
    hp()->mutable_optimizer()->set_kind(kind);
  }
  if (!f.momentum.empty()) {
    double v = 0;
    RETURN_IF_ERROR(
        ParseDouble("momentum", f.momentum, BelowOne, "a number in [0, 1), e.g. 0.9", &v));
    hp()->mutable_optimizer()->set_momentum(v);
  }
  if (f.nesterov) hp()->mutable_optimizer()->set_nesterov(true);
  if (!f.weight_decay.empty()) {
    double v = 0;
    RETURN_IF_ERROR(
        ParseDouble("weight_decay", f.weight_decay, NonNegative, "a number >= 0, e.g. 1e-4", &v));
    hp()->mutable_optimizer()->set_weight_decay(v);
  }
  if (!f.schedule.empty()) {
    kaizen::v1::ScheduleKind kind = kaizen::v1::SCHEDULE_UNSPECIFIED;
    RETURN_IF_ERROR(
        ParseChoice<kaizen::v1::ScheduleKind>("schedule", f.schedule,
                                              {{"constant", kaizen::v1::SCHEDULE_CONSTANT},
                                               {"step", kaizen::v1::SCHEDULE_STEP},
                                               {"cosine", kaizen::v1::SCHEDULE_COSINE}},
                                              &kind));
    hp()->mutable_schedule()->set_kind(kind);
  }
  if (!f.warmup_epochs.empty()) {
    double v = 0;
    RETURN_IF_ERROR(ParseDouble("warmup_epochs", f.warmup_epochs, NonNegative,
                                "a number of epochs >= 0, e.g. 0.5", &v));
    hp()->mutable_schedule()->set_warmup_epochs(v);
  }
  if (!f.label_smoothing.empty()) {
    double v = 0;
    RETURN_IF_ERROR(ParseDouble("label_smoothing", f.label_smoothing, BelowOne,
                                "a number in [0, 1), e.g. 0.1", &v));
    hp()->set_label_smoothing(v);
  }
  if (!f.early_stopping_patience.empty()) {
    int32_t v = 0;
    RETURN_IF_ERROR(ParseInt<int32_t>("early_stopping_patience", f.early_stopping_patience, 1,
                                      "a positive number of epochs", &v));
    hp()->mutable_early_stopping()->set_enabled(true);
    hp()->mutable_early_stopping()->set_patience(v);
  }
  if (!f.clip_norm.empty()) {
    double v = 0;
    RETURN_IF_ERROR(ParseDouble("clip_norm", f.clip_norm, NonNegative,
                                "a number >= 0 (0 disables clipping)", &v));
    hp()->set_gradient_clip_norm(v);
  }
  if (!f.seed.empty()) {
    uint64_t v = 0;
    RETURN_IF_ERROR(ParseInt<uint64_t>("seed", f.seed, 0, "a non-negative integer", &v));
    hp()->set_seed(v);
  }
  if (!f.max_length.empty()) {
    int32_t v = 0;
    RETURN_IF_ERROR(ParseInt<int32_t>("max_length", f.max_length, 1, "a positive integer", &v));
    hp()->mutable_text()->set_max_length(v);
  }
  if (!f.vocab_size.empty()) {
    int32_t v = 0;
    RETURN_IF_ERROR(ParseInt<int32_t>("vocab_size", f.vocab_size, 1, "a positive integer", &v));
    hp()->mutable_text()->set_vocab_size(v);
  }
  if (!f.augment.empty()) {
    bool on = false;
    RETURN_IF_ERROR(ParseChoice<bool>("augment", f.augment, {{"on", true}, {"off", false}}, &on));
    // Setting the message (even to all zeros) is what tells the server to
    // use exactly these values instead of the strategy's default.
    kaizen::v1::Augmentation* augmentation = hp()->mutable_augmentation();
    augmentation->set_enabled(on);
    if (on) {
      augmentation->set_random_crop_padding(kAugmentCropPadding);
      augmentation->set_horizontal_flip(true);
    }
  }
  if (!f.validation_split.empty() && !f.validation_dataset.empty()) {
    return UsageError("give --validation_split or --validation_dataset, not both");
  }
  if (!f.validation_split.empty()) {
    double v = 0;
    RETURN_IF_ERROR(ParseDouble("validation_split", f.validation_split, OpenUnit,
                                "a fraction in (0, 1), e.g. 0.1", &v));
    hp()->mutable_validation()->set_split(v);
  }
  if (!f.validation_dataset.empty()) {
    hp()->mutable_validation()->set_dataset(f.validation_dataset);
  }
  if (!f.head.empty()) {
    kaizen::v1::HeadKind kind = kaizen::v1::HEAD_KIND_UNSPECIFIED;
    RETURN_IF_ERROR(ParseChoice<kaizen::v1::HeadKind>(
        "head", f.head,
        {{"linear", kaizen::v1::HEAD_KIND_LINEAR}, {"mlp", kaizen::v1::HEAD_KIND_MLP}}, &kind));
    hp()->mutable_head()->set_kind(kind);
  }
  if (!f.head_warmup_epochs.empty()) {
    int32_t v = 0;
    RETURN_IF_ERROR(
        ParseInt<int32_t>("head_warmup_epochs", f.head_warmup_epochs, 0, "an integer >= 0", &v));
    hp()->set_head_warmup_epochs(v);
  }
  if (!f.mixed_precision.empty()) {
    kaizen::v1::MixedPrecision mode = kaizen::v1::MIXED_PRECISION_UNSPECIFIED;
    RETURN_IF_ERROR(
        ParseChoice<kaizen::v1::MixedPrecision>("mixed_precision", f.mixed_precision,
                                                {{"off", kaizen::v1::MIXED_PRECISION_OFF},
                                                 {"bf16", kaizen::v1::MIXED_PRECISION_BF16},
                                                 {"fp16", kaizen::v1::MIXED_PRECISION_FP16}},
                                                &mode));
    hp()->set_mixed_precision(mode);
  }
  return absl::OkStatus();
}

absl::Status SetTuning(const FineTuneFlags& f, StartFineTuneRequest* request) {
  kaizen::v1::TuningOptions* t = request->mutable_tuning();
  if (!f.tune_trials.empty()) {
    int32_t v = 0;
    RETURN_IF_ERROR(
        ParseInt<int32_t>("tune_trials", f.tune_trials, 1, "an integer from 1 to 64, e.g. 9", &v));
    t->set_max_trials(v);
  }
  if (!f.tune_time_budget.empty()) {
    int32_t v = 0;
    RETURN_IF_ERROR(
        ParseInt<int32_t>("tune_time_budget", f.tune_time_budget, 1, "seconds, e.g. 1800", &v));
    t->set_time_budget_seconds(v);
  }
  if (!f.tune_seed.empty()) {
    uint64_t v = 0;
    RETURN_IF_ERROR(ParseInt<uint64_t>("tune_seed", f.tune_seed, 1, "an integer >= 1", &v));
    t->set_seed(v);
  }
  if (!f.tune_reduction_factor.empty()) {
    int32_t v = 0;
    RETURN_IF_ERROR(ParseInt<int32_t>("tune_reduction_factor", f.tune_reduction_factor, 2,
                                      "an integer from 2 to 10, e.g. 3", &v));
    t->set_reduction_factor(v);
  }
  const bool other = t->time_budget_seconds() != 0 || t->seed() != 0 || t->reduction_factor() != 0;
  if (t->max_trials() == 0 && other) {
    return UsageError(
        "--tune_time_budget, --tune_seed and --tune_reduction_factor need --tune_trials");
  }
  if (t->max_trials() == 0) request->clear_tuning();
  return absl::OkStatus();
}

absl::Status SetDistillation(const FineTuneFlags& f, StartFineTuneRequest* request) {
  kaizen::v1::DistillationOptions d;
  d.set_teacher_model(f.teacher);
  if (!f.temperature.empty()) {
    double v = 0;
    RETURN_IF_ERROR(ParseDouble(
        "temperature", f.temperature, [](double x) { return x >= 1 && x <= 100; },
        "a number from 1 to 100, e.g. 4", &v));
    d.set_temperature(v);
  }
  if (!f.distill_alpha.empty()) {
    double v = 0;
    RETURN_IF_ERROR(ParseDouble(
        "distill_alpha", f.distill_alpha, [](double x) { return x > 0 && x <= 1; },
        "a number in (0, 1], e.g. 0.7", &v));
    d.set_alpha(v);
  }
  if (d.ByteSizeLong() == 0) return absl::OkStatus();
  if (request->strategy() == kaizen::v1::STRATEGY_INCREMENTAL && f.teacher.empty() &&
      f.distill_alpha.empty()) {
    // --temperature is INCREMENTAL's too (SetIncremental).
    return absl::OkStatus();
  }
  if (request->strategy() != kaizen::v1::STRATEGY_DISTILL) {
    return UsageError("--teacher, --temperature and --distill_alpha need --strategy=distill");
  }
  *request->mutable_distillation() = std::move(d);
  return absl::OkStatus();
}

absl::Status SetIncremental(const FineTuneFlags& f, StartFineTuneRequest* request) {
  kaizen::v1::IncrementalOptions o;
  if (!f.exemplars_per_class.empty()) {
    int32_t v = 0;
    RETURN_IF_ERROR(ParseInt<int32_t>("exemplars_per_class", f.exemplars_per_class, 1,
                                      "a positive integer, e.g. 50", &v));
    o.set_exemplars_per_class(v);
  }
  if (!f.max_exemplars.empty()) {
    int32_t v = 0;
    RETURN_IF_ERROR(ParseInt<int32_t>("max_exemplars", f.max_exemplars, 1,
                                      "a positive integer, e.g. 2000", &v));
    o.set_max_exemplars(v);
  }
  if (!f.exemplar_selection.empty()) {
    static const Choices<kaizen::v1::ExemplarSelection> kSelections = {
        {"herding", kaizen::v1::EXEMPLAR_SELECTION_HERDING},
        {"random", kaizen::v1::EXEMPLAR_SELECTION_RANDOM}};
    kaizen::v1::ExemplarSelection v = kaizen::v1::EXEMPLAR_SELECTION_UNSPECIFIED;
    RETURN_IF_ERROR(ParseChoice("exemplar_selection", f.exemplar_selection, kSelections, &v));
    o.set_selection(v);
  }
  for (absl::string_view name : absl::StrSplit(f.previous_datasets, ',', absl::SkipWhitespace())) {
    o.add_previous_datasets(std::string(absl::StripAsciiWhitespace(name)));
  }
  if (!f.distill_weight.empty()) {
    double v = 0;
    RETURN_IF_ERROR(ParseDouble(
        "distill_weight", f.distill_weight, [](double x) { return x > 0; },
        "a number > 0, e.g. 1 (--no_distillation turns it off)", &v));
    o.set_distillation_weight(v);
  }
  o.set_disable_rehearsal(f.no_rehearsal);
  o.set_disable_distillation(f.no_distillation);
  const bool incremental = request->strategy() == kaizen::v1::STRATEGY_INCREMENTAL;
  if (incremental && !f.temperature.empty()) {
    double v = 0;
    RETURN_IF_ERROR(ParseDouble(
        "temperature", f.temperature, [](double x) { return x >= 1 && x <= 100; },
        "a number from 1 to 100, e.g. 2", &v));
    o.set_temperature(v);
  }
  if (o.ByteSizeLong() == 0) return absl::OkStatus();
  if (!incremental) {
    return UsageError(
        "--exemplars_per_class, --max_exemplars, --exemplar_selection, --previous_datasets, "
        "--distill_weight, --no_rehearsal and --no_distillation need --strategy=incremental");
  }
  *request->mutable_incremental() = std::move(o);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<StartFineTuneRequest> BuildStartFineTuneRequest(const FineTuneFlags& f) {
  RETURN_IF_ERROR(Require("base", f.base, "cnn-small"));
  RETURN_IF_ERROR(Require("dataset", f.dataset, "photos"));
  if (!f.dry_run) RETURN_IF_ERROR(Require("output_model", f.output_model, "photos-cnn"));
  RETURN_IF_ERROR(Require("strategy", f.strategy, "fine_tune"));

  StartFineTuneRequest request;
  request.set_base_model(f.base);
  request.set_dataset(f.dataset);
  request.set_output_model(f.output_model);
  request.set_test_dataset(f.test_dataset);
  request.set_validate_only(f.dry_run);
  kaizen::v1::Strategy strategy = kaizen::v1::STRATEGY_UNSPECIFIED;
  RETURN_IF_ERROR(ParseChoice("strategy", f.strategy, StrategyChoices(), &strategy));
  request.set_strategy(strategy);
  RETURN_IF_ERROR(SetHyperparameters(f, &request));

  RETURN_IF_ERROR(SetTuning(f, &request));
  RETURN_IF_ERROR(SetDistillation(f, &request));
  RETURN_IF_ERROR(SetIncremental(f, &request));
  if (!f.priority.empty()) {
    int32_t v = 0;
    RETURN_IF_ERROR(ParseInt<int32_t>("priority", f.priority, std::numeric_limits<int32_t>::min(),
                                      "an integer", &v));
    request.set_priority(v);
  }
  request.set_request_id(f.request_id);
  if (!f.keep_checkpoints.empty()) {
    int32_t v = 0;
    RETURN_IF_ERROR(
        ParseInt<int32_t>("keep_checkpoints", f.keep_checkpoints, 1, "a positive integer", &v));
    request.set_keep_checkpoints(v);
  }
  if (!f.world_size.empty()) {
    int32_t v = 0;
    RETURN_IF_ERROR(ParseInt<int32_t>("world_size", f.world_size, 1, "a positive integer", &v));
    request.set_world_size(v);
  }
  return request;
}

absl::StatusOr<std::vector<JobState>> ParseJobStates(const std::string& text) {
  static const auto* choices = new Choices<JobState>{
      {"queued", kaizen::v1::JOB_STATE_QUEUED},       {"running", kaizen::v1::JOB_STATE_RUNNING},
      {"succeeded", kaizen::v1::JOB_STATE_SUCCEEDED}, {"failed", kaizen::v1::JOB_STATE_FAILED},
      {"cancelled", kaizen::v1::JOB_STATE_CANCELLED}, {"paused", kaizen::v1::JOB_STATE_PAUSED},
  };
  std::vector<JobState> states;
  for (absl::string_view item : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    std::string name = Normalize(absl::StripAsciiWhitespace(item));
    if (absl::StartsWith(name, "job_state_")) name.erase(0, 10);
    if (name == "canceled") name = "cancelled";
    JobState state = kaizen::v1::JOB_STATE_UNSPECIFIED;
    RETURN_IF_ERROR(ParseChoice("state", name, *choices, &state));
    states.push_back(state);
  }
  return states;
}

}  // namespace kaizen::cli
