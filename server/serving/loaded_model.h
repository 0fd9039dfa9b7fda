// One model version loaded for serving: its own TorchScript module instance
// (never shared with training), in eval mode, warmed up, immutable after
// Load(). Requests hold it through a shared_ptr, so a version that has been
// swapped out stays alive until its last request ends.
#pragma once

#include <torch/script.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kaizen/v1/model_service.pb.h"
#include "server/training/text_model.h"

namespace kaizen::serving {

class LoadedModel {
 public:
  // Loads `path` onto `device`, checks that a batch of the metadata's input
  // shape (a text model: of a few padding ids, with the tokenizer it
  // carries loaded and checked) gives [N, classes] logits, and runs `warmup_batch_sizes` forward
  // passes so that the first request does not pay for graph optimisation.
  // With `optimize`, the module is frozen (weights become constants,
  // BatchNorm folded into convolutions) and, on the CPU, rewritten by
  // torch::jit::optimize_for_inference (oneDNN convolutions); a module that
  // cannot be frozen is served as it is. Text models are served as they are.
  static absl::StatusOr<std::shared_ptr<const LoadedModel>> Load(
      const std::string& path, kaizen::v1::Model metadata, const torch::Device& device,
      const std::vector<int64_t>& warmup_batch_sizes, bool optimize = true);

  // Whether Load() optimised the module for inference.
  bool optimized() const { return optimized_; }

  // Probabilities (softmax of the logits), float [N, classes] on the CPU, for
  // a float [N, C, H, W] batch already preprocessed (see preprocess.h), or,
  // for a text model, an int64 [N, T] batch of ids in which -1 marks
  // padding (EncodeText's rows joined by JoinBatches). Runs under
  // c10::InferenceMode. Safe to call from several threads at once.
  absl::StatusOr<torch::Tensor> Predict(const torch::Tensor& batch) const;

  // Whether the model reads text (its metadata has text_input).
  bool is_text() const { return text_.has_value(); }
  // A text model: `text` tokenised and framed as in training, int64
  // [1, length]. InvalidArgument for a text the tokenizer refuses (invalid
  // UTF-8, over its size limit); FailedPrecondition for an image model.
  absl::StatusOr<torch::Tensor> EncodeText(absl::string_view text) const;

  const kaizen::v1::Model& metadata() const { return metadata_; }
  const std::string& name() const { return metadata_.name(); }
  int64_t version() const { return metadata_.version(); }
  // [C, H, W].
  const std::vector<int64_t>& input_shape() const { return input_shape_; }
  int64_t num_classes() const { return num_classes_; }
  // The class name of an output index, or the index as text when the model
  // has no class names.
  std::string Label(int64_t index) const;

 private:
  LoadedModel(torch::jit::Module module, kaizen::v1::Model metadata, torch::Device device);

  mutable torch::jit::Module module_;
  kaizen::v1::Model metadata_;
  torch::Device device_;
  std::vector<int64_t> input_shape_;
  int64_t num_classes_ = 0;
  bool optimized_ = false;
  std::optional<training::TextModelInput> text_;
};

// `batches` joined along the first dimension, in order: float images as
// they are; int64 [n, T] rows of ids right-padded with -1 to the longest T,
// so that a batch is padded to its own longest text, not to max_length.
torch::Tensor JoinBatches(const std::vector<torch::Tensor>& batches);

}  // namespace kaizen::serving
