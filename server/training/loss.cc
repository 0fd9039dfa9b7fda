#include "server/training/loss.h"

namespace kaizen::training {

torch::Tensor SmoothedCrossEntropy(const torch::Tensor& logits, const torch::Tensor& targets,
                                   double label_smoothing) {
  const torch::Tensor log_probs = torch::log_softmax(logits.to(torch::kFloat), /*dim=*/1);
  const torch::Tensor nll = -log_probs.gather(1, targets.unsqueeze(1)).squeeze(1);
  if (label_smoothing <= 0) return nll.mean();
  const torch::Tensor uniform = -log_probs.mean(/*dim=*/1);
  return ((1.0 - label_smoothing) * nll + label_smoothing * uniform).mean();
}

}  // namespace kaizen::training
