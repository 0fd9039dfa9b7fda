// The classification loss: cross-entropy with label smoothing, written out so
// that it behaves the same on every LibTorch version and device.
#pragma once

#include <torch/script.h>

namespace kaizen::training {

// Mean over the batch of (1 - eps) * NLL(target) + eps * mean_k(-log p_k),
// computed in float32 (logits may be reduced precision under autocast).
// logits [N, K], targets int64 [N].
torch::Tensor SmoothedCrossEntropy(const torch::Tensor& logits, const torch::Tensor& targets,
                                   double label_smoothing);

}  // namespace kaizen::training
