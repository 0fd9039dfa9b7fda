#include "server/training/evaluator.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/common/status_macros.h"
#include "server/imaging/normalizer.h"
#include "server/models/torch_errors.h"
#include "server/training/image_set.h"

namespace kaizen::training {
namespace {

// "a, b, c" with at most `limit` names, then "and N more".
std::string JoinSome(const std::vector<std::string>& names, size_t limit = 20) {
  if (names.size() <= limit) return absl::StrJoin(names, ", ");
  return absl::StrCat(absl::StrJoin(names.begin(), names.begin() + limit, ", "), " and ",
                      names.size() - limit, " more");
}

}  // namespace

absl::StatusOr<ClassMapping> MapClasses(const std::vector<std::string>& dataset_classes,
                                        const std::vector<std::string>& model_classes,
                                        int64_t num_model_outputs) {
  const auto n = static_cast<int64_t>(dataset_classes.size());
  ClassMapping mapping;
  if (model_classes.empty()) {
    if (num_model_outputs != n) {
      return absl::InvalidArgumentError(
          absl::StrCat("the model has no class names and ", num_model_outputs,
                       " outputs; the dataset has ", n, " classes, so they cannot be matched"));
    }
    for (int64_t i = 0; i < n; ++i) mapping.model_index.push_back(i);
    mapping.description = "by index: the model has no class names";
    return mapping;
  }
  if (num_model_outputs > 0 && static_cast<int64_t>(model_classes.size()) != num_model_outputs) {
    return absl::InvalidArgumentError(absl::StrCat("the model names ", model_classes.size(),
                                                   " classes but has ", num_model_outputs,
                                                   " outputs, so its answers cannot be named"));
  }
  if (dataset_classes == model_classes) {
    for (int64_t i = 0; i < n; ++i) mapping.model_index.push_back(i);
    mapping.description = "identical";
    return mapping;
  }
  absl::flat_hash_map<std::string, int64_t> index;
  for (size_t i = 0; i < model_classes.size(); ++i) {
    if (!index.emplace(model_classes[i], i).second) {
      return absl::InvalidArgumentError(absl::StrCat("the model names class \"", model_classes[i],
                                                     "\" twice, so names cannot be matched"));
    }
  }
  std::vector<std::string> unknown;
  std::vector<bool> used(model_classes.size(), false);
  for (const std::string& name : dataset_classes) {
    auto it = index.find(name);
    if (it == index.end()) {
      unknown.push_back(absl::StrCat("\"", name, "\""));
      continue;
    }
    mapping.model_index.push_back(it->second);
    used[it->second] = true;
  }
  if (!unknown.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the dataset's class", unknown.size() == 1 ? " " : "es ", JoinSome(unknown),
                     unknown.size() == 1 ? " is" : " are", " not among the model's classes (",
                     JoinSome(model_classes), ")"));
  }
  std::vector<std::string> absent;
  for (size_t i = 0; i < model_classes.size(); ++i) {
    if (!used[i]) absent.push_back(model_classes[i]);
  }
  mapping.description = "matched by name";
  if (!absent.empty()) {
    absl::StrAppend(&mapping.description, "; the dataset has no examples of the model's class",
                    absent.size() == 1 ? " " : "es ", JoinSome(absent));
  }
  return mapping;
}

EvaluationAccumulator::EvaluationAccumulator(std::vector<std::string> dataset_classes,
                                             std::vector<std::string> model_classes,
                                             ClassMapping mapping, int32_t top_k)
    : dataset_classes_(std::move(dataset_classes)),
      model_classes_(std::move(model_classes)),
      mapping_(std::move(mapping)),
      top_k_(std::clamp<int32_t>(top_k, 1, std::max<int32_t>(1, model_classes_.size()))),
      confusion_(dataset_classes_.size() * model_classes_.size(), 0) {}

absl::Status EvaluationAccumulator::Add(const torch::Tensor& logits, const torch::Tensor& labels) {
  const auto classes = static_cast<int64_t>(model_classes_.size());
  if (logits.dim() != 2 || logits.size(1) != classes || labels.dim() != 1 ||
      labels.size(0) != logits.size(0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("the model answered logits of shape ", c10::str(logits.sizes()), " for ",
                     labels.size(0), " images; expected [", labels.size(0), ", ", classes, "]"));
  }
  const int64_t n = logits.size(0);
  if (n == 0) return absl::OkStatus();
  const torch::Tensor cpu_logits = logits.detach().to(torch::kCPU, torch::kFloat);
  const torch::Tensor dataset_labels = labels.to(torch::kCPU, torch::kLong).contiguous();
  std::vector<int64_t> targets(n);
  const int64_t* l = dataset_labels.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    if (l[i] < 0 || l[i] >= static_cast<int64_t>(dataset_classes_.size())) {
      return absl::InvalidArgumentError(absl::StrCat("label ", l[i], " is out of range"));
    }
    targets[i] = mapping_.model_index[l[i]];
  }
  const torch::Tensor target = torch::tensor(targets, torch::kLong);
  loss_sum_ += torch::nn::functional::cross_entropy(
                   cpu_logits, target,
                   torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                   .item<double>();
  const torch::Tensor top = std::get<1>(cpu_logits.topk(top_k_, 1)).contiguous();
  const int64_t* t = top.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t* row = t + i * top_k_;
    const int64_t predicted = row[0];
    ++confusion_[l[i] * classes + predicted];
    if (predicted == targets[i]) ++correct_;
    if (std::find(row, row + top_k_, targets[i]) != row + top_k_) ++top_k_correct_;
  }
  examples_ += n;
  return absl::OkStatus();
}

kaizen::v1::Evaluation EvaluationAccumulator::Finish() const {
  kaizen::v1::Evaluation e;
  const auto rows = static_cast<int64_t>(dataset_classes_.size());
  const auto cols = static_cast<int64_t>(model_classes_.size());
  const double total = static_cast<double>(std::max<int64_t>(examples_, 1));
  e.set_examples(examples_);
  e.set_accuracy(static_cast<double>(correct_) / total);
  e.set_top_k(top_k_);
  e.set_top_k_accuracy(static_cast<double>(top_k_correct_) / total);
  e.set_mean_loss(loss_sum_ / total);
  e.set_class_mapping(mapping_.description);
  if (rows * cols <= kMaxConfusionCells) {
    for (const std::string& name : model_classes_) e.add_predicted_classes(name);
    for (int64_t v : confusion_) e.add_confusion(v);
  }
  // Precision of dataset class i: of every example predicted as its model
  // class, the share of class i.
  std::vector<int64_t> predicted_as(cols, 0);
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < cols; ++j) predicted_as[j] += confusion_[i * cols + j];
  }
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t j = mapping_.model_index[i];
    int64_t support = 0;
    for (int64_t k = 0; k < cols; ++k) support += confusion_[i * cols + k];
    const int64_t hits = confusion_[i * cols + j];
    kaizen::v1::ClassEvaluation* c = e.add_classes();
    c->set_name(dataset_classes_[i]);
    c->set_support(support);
    const double precision =
        predicted_as[j] > 0 ? static_cast<double>(hits) / static_cast<double>(predicted_as[j]) : 0;
    const double recall =
        support > 0 ? static_cast<double>(hits) / static_cast<double>(support) : 0;
    c->set_precision(precision);
    c->set_recall(recall);
    c->set_f1(precision + recall > 0 ? 2 * precision * recall / (precision + recall) : 0);
  }
  return e;
}

namespace {

absl::StatusOr<kaizen::v1::Evaluation> Run(const torch::jit::Module& module,
                                           const kaizen::v1::Model& model,
                                           const datasets::DecodedDataset& data,
                                           const EvaluateOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  if (data.records.empty()) return absl::InvalidArgumentError("the dataset has no examples");
  if (model.input_shape_size() != 3) {
    return absl::InvalidArgumentError("the model's metadata has no [C, H, W] input shape");
  }
  const std::vector<int64_t> shape(model.input_shape().begin(), model.input_shape().end());

  std::vector<std::string> model_classes(model.class_names().begin(), model.class_names().end());
  const int64_t outputs = model.head().out_features();
  ASSIGN_OR_RETURN(ClassMapping mapping, MapClasses(data.class_names, model_classes, outputs));
  if (model_classes.empty()) {
    // Columns named by index when the model has no names.
    for (int64_t i = 0; i < outputs; ++i) model_classes.push_back(absl::StrCat(i));
  }
  EvaluationAccumulator acc(data.class_names, model_classes, std::move(mapping), options.top_k);

  torch::NoGradGuard no_grad;
  torch::jit::Module m = module.clone();
  m.to(options.device);
  m.eval();
  const imaging::Normalizer normalizer(model.normalization(), shape[0], options.device);
  const int64_t batch = std::max<int64_t>(1, options.batch_size);
  const auto total = static_cast<int64_t>(data.records.size());
  // One batch converted at a time: memory stays one batch of the model's
  // input whatever the dataset's size.
  for (int64_t begin = 0; begin < total; begin += batch) {
    if (options.should_stop && options.should_stop()) {
      return absl::CancelledError(
          absl::StrCat("evaluation stopped after ", begin, " of ", total, " examples"));
    }
    const int64_t n = std::min(batch, total - begin);
    ASSIGN_OR_RETURN(const ImageSet set, ConvertRecords(data, begin, n, shape));
    const torch::Tensor x =
        normalizer.Normalize(imaging::Normalizer::ToUnit(set.images.to(options.device)));
    const torch::jit::IValue out = m.forward({x});
    if (!out.isTensor()) {
      return absl::InvalidArgumentError("the model's forward did not return a tensor of logits");
    }
    RETURN_IF_ERROR(acc.Add(out.toTensor(), set.labels));
  }
  kaizen::v1::Evaluation e = acc.Finish();
  e.set_model(model.name());
  e.set_version(model.version());
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  e.set_seconds(seconds);
  e.set_examples_per_second(seconds > 0 ? static_cast<double>(e.examples()) / seconds : 0);
  return e;
}

}  // namespace

absl::StatusOr<kaizen::v1::Evaluation> EvaluateClassifier(const torch::jit::Module& module,
                                                          const kaizen::v1::Model& model,
                                                          const datasets::DecodedDataset& data,
                                                          const EvaluateOptions& options) {
  try {
    return Run(module, model, data, options);
  } catch (const std::exception& e) {
    const std::string summary = models::TorchErrorSummary(e);
    if (absl::StrContains(summary, "out of memory")) {
      return absl::ResourceExhaustedError(absl::StrCat("evaluation: ", summary));
    }
    return absl::InternalError(absl::StrCat("evaluation: ", summary));
  }
}

}  // namespace kaizen::training
