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

torch::Tensor SoftTargetLoss(const torch::Tensor& student_logits,
                             const torch::Tensor& teacher_logits, double temperature) {
  const torch::Tensor student_log_p =
      torch::log_softmax(student_logits.to(torch::kFloat) / temperature, /*dim=*/1);
  const torch::Tensor teacher_log_p =
      torch::log_softmax(teacher_logits.detach().to(torch::kFloat) / temperature, /*dim=*/1);
  // sum_k p_t (log p_t - log p_s); exp(log p) keeps p_t = 0 terms at 0.
  const torch::Tensor kl =
      (teacher_log_p.exp() * (teacher_log_p - student_log_p)).sum(/*dim=*/1).mean();
  return kl * (temperature * temperature);
}

torch::Tensor DistillationLoss(const torch::Tensor& student_logits,
                               const torch::Tensor& teacher_logits, const torch::Tensor& targets,
                               double temperature, double alpha, double label_smoothing) {
  const torch::Tensor soft = SoftTargetLoss(student_logits, teacher_logits, temperature);
  if (alpha >= 1) return soft;
  return alpha * soft +
         (1.0 - alpha) * SmoothedCrossEntropy(student_logits, targets, label_smoothing);
}

torch::Tensor IncrementalLoss(const torch::Tensor& student_logits,
                              const torch::Tensor& previous_logits, const torch::Tensor& targets,
                              double temperature, double weight, double label_smoothing) {
  const torch::Tensor ce = SmoothedCrossEntropy(student_logits, targets, label_smoothing);
  if (!previous_logits.defined() || weight <= 0) return ce;
  const int64_t old_classes = previous_logits.size(1);
  return ce + weight * SoftTargetLoss(student_logits.narrow(1, 0, old_classes), previous_logits,
                                      temperature);
}

}  // namespace kaizen::training
