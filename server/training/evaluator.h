// Evaluates a classifier on a labelled dataset: accuracy, top-k accuracy,
// mean loss, per-class precision/recall/F1 and the confusion matrix. Used by
// EvaluateModel and by jobs that name a test dataset. A pure library: the
// caller loads the model and the dataset and owns threads and limits.
#pragma once

#include <torch/script.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kaizen/v1/model_service.pb.h"
#include "server/datasets/dataset_file.h"

namespace kaizen::training {

// Where each of a dataset's classes is among a model's outputs.
struct ClassMapping {
  std::vector<int64_t> model_index;  // by dataset label
  std::string description;           // Evaluation.class_mapping
};

// Matches `dataset_classes` to `model_classes` by name. Every dataset class
// must be one of the model's (InvalidArgument names those that are not, and
// up to 20 of the model's); the model may have more. The model's names must
// be unique and, when `num_model_outputs` > 0, as many as its outputs. A
// model without class names (`model_classes` empty) is matched by index when
// it has exactly `num_model_outputs` == dataset class count outputs.
absl::StatusOr<ClassMapping> MapClasses(const std::vector<std::string>& dataset_classes,
                                        const std::vector<std::string>& model_classes,
                                        int64_t num_model_outputs);

// Sums what a pass over a dataset shows, batch by batch, and turns it into an
// Evaluation.
class EvaluationAccumulator {
 public:
  // `top_k` >= 1, capped at the number of model classes.
  EvaluationAccumulator(std::vector<std::string> dataset_classes,
                        std::vector<std::string> model_classes, ClassMapping mapping,
                        int32_t top_k);

  // `logits` float [n, model classes]; `labels` int64 [n] dataset labels.
  // InvalidArgument when the shapes do not match the classes or a label is
  // out of range.
  absl::Status Add(const torch::Tensor& logits, const torch::Tensor& labels);

  // Everything but model, version, dataset, timings and create_time. The
  // confusion matrix (and predicted_classes) is left out above
  // kMaxConfusionCells cells, so that the answer stays a few MiB at most.
  kaizen::v1::Evaluation Finish() const;

  static constexpr int64_t kMaxConfusionCells = 1'000'000;

 private:
  std::vector<std::string> dataset_classes_;
  std::vector<std::string> model_classes_;
  ClassMapping mapping_;
  int32_t top_k_;
  std::vector<int64_t> confusion_;  // [dataset classes x model classes]
  int64_t examples_ = 0;
  int64_t correct_ = 0;
  int64_t top_k_correct_ = 0;
  double loss_sum_ = 0;
};

struct EvaluateOptions {
  int32_t top_k = 5;  // capped at the model's class count
  int64_t batch_size = 64;
  torch::Device device = torch::kCPU;
  // Checked between batches: true stops with Cancelled.
  std::function<bool()> should_stop;
};

// Runs `module` (a self-contained classifier taking the normalised input of
// `model`: input_shape, normalization) over every example of `data`, images
// converted to the model's input as for training and serving. Fills model
// and version from `model`, the timings and examples/s; the caller sets
// dataset and create_time. InvalidArgument for classes that do not match
// (MapClasses) or images that cannot be converted; Cancelled when
// should_stop; ResourceExhausted when the device runs out of memory;
// Internal for other LibTorch failures.
absl::StatusOr<kaizen::v1::Evaluation> EvaluateClassifier(const torch::jit::Module& module,
                                                          const kaizen::v1::Model& model,
                                                          const datasets::DecodedDataset& data,
                                                          const EvaluateOptions& options);

}  // namespace kaizen::training
