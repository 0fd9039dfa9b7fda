// The classification head of a model being trained, kept apart from its
// backbone: the base's Linear head becomes an identity (weight = eye, bias =
// 0, frozen) so that backbone(x) yields features, and a separate TorchScript
// head (a Linear, or Linear -> ReLU -> Dropout -> Linear) maps them to the new
// classes. AssembleClassifier turns the pair back into one self-contained
// TorchScript classifier for a checkpoint.
#pragma once

#include <torch/script.h>

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "kaizen/v1/finetune_service.pb.h"
#include "kaizen/v1/model_service.pb.h"

namespace kaizen::training {

// Name of the string attribute that an MLP-headed classifier carries: the
// dotted path of the identity Linear inside its `backbone`.
inline constexpr char kBackboneHeadAttribute[] = "kaizen_backbone_head";

struct HeadSpec {
  kaizen::v1::HeadKind kind = kaizen::v1::HEAD_KIND_LINEAR;
  int64_t num_classes = 2;
  int64_t hidden_units = 256;  // MLP only
  double dropout = 0.0;        // MLP only
  uint64_t seed = 0;           // initial weights
};

struct SplitModel {
  torch::jit::Module backbone;  // forward(x) -> features [N, in_features]
  std::string identity_path;    // the identity Linear inside `backbone`
  torch::jit::Module head;      // forward(features) -> logits [N, num_classes]
  kaizen::v1::HeadKind kind = kaizen::v1::HEAD_KIND_LINEAR;
  int64_t in_features = 0;
  int64_t num_classes = 0;
};

// A fresh head module (PyTorch's default Linear initialisation, seeded).
absl::StatusOr<torch::jit::Module> NewHead(const HeadSpec& spec, int64_t in_features);

// Splits a deep copy of `model` (never modified). The head sits at
// metadata.head().module_path, or the model is an MLP-headed classifier
// written by AssembleClassifier. With `keep_head` (resuming a job) the
// model's trained head is kept and must match `spec`; otherwise a new head is
// built from `spec`. InvalidArgument when the head is not a Linear with
// weight [out, in] and bias [out].
absl::StatusOr<SplitModel> SplitClassifier(const torch::jit::Module& model,
                                           const kaizen::v1::Model& metadata, const HeadSpec& spec,
                                           bool keep_head);

// INCREMENTAL: grows the last Linear of `split`'s head (the head itself, or
// an MLP's fc2) to `num_classes` outputs: the old rows of the weight and the
// old biases are copied bit for bit, the new ones are those a fresh head of
// `spec` (its seed) would get. InvalidArgument when num_classes is smaller
// than the head's.
absl::Status GrowHead(const HeadSpec& spec, int64_t num_classes, SplitModel* split);

// A self-contained classifier from deep copies of `split`, in eval mode, on
// `device`: for a LINEAR head the backbone with the identity Linear's weight
// and bias re-registered as the head's (head path = identity_path); for an
// MLP a wrapper module {backbone, head} (head path "head").
absl::StatusOr<torch::jit::Module> AssembleClassifier(const SplitModel& split,
                                                      const torch::Device& device);

// Where AssembleClassifier puts the head.
std::string AssembledHeadPath(const SplitModel& split);

// Folds the standardisation that a head was trained behind, (features -
// mean) / std, into the first Linear of the head of `classifier` (assembled
// from `split`): W' = W / std, b' = b - W' mean, computed in float64. The
// classifier then takes the backbone's raw features and needs nothing extra.
// `mean` and `std` are [in_features], std > 0. InvalidArgument otherwise.
absl::Status FoldInputStandardization(const SplitModel& split, const torch::Tensor& mean,
                                      const torch::Tensor& std, torch::jit::Module* classifier);

// Module::deepcopy() clones parameters through autograd (the copies are not
// leaves, so an optimiser refuses them); this copy re-registers every
// parameter as a detached leaf with the original's requires_grad.
torch::jit::Module DeepCopyModule(const torch::jit::Module& module);

// The submodule at dotted `path` ("" is `root`); NotFound if absent.
absl::StatusOr<torch::jit::Module> FindSubmodule(const torch::jit::Module& root,
                                                 const std::string& path);

}  // namespace kaizen::training
