// The training losses: cross-entropy with label smoothing, and the
// distillation loss that mixes it with a teacher's softened outputs. Written
// out so that they behave the same on every LibTorch version and device.
#pragma once

#include <torch/script.h>

namespace kaizen::training {

// Mean over the batch of (1 - eps) * NLL(target) + eps * mean_k(-log p_k),
// computed in float32 (logits may be reduced precision under autocast).
// logits [N, K], targets int64 [N].
torch::Tensor SmoothedCrossEntropy(const torch::Tensor& logits, const torch::Tensor& targets,
                                   double label_smoothing);

// T^2 * KL(softmax(teacher / T) || softmax(student / T)), the KL divergence
// summed over classes and averaged over the batch; teacher_logits are
// detached. The soft-target term of both losses below.
torch::Tensor SoftTargetLoss(const torch::Tensor& student_logits,
                             const torch::Tensor& teacher_logits, double temperature);

// Knowledge distillation (Hinton et al., 2015):
//   alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))
//   + (1 - alpha) * SmoothedCrossEntropy(student, targets, label_smoothing),
// the KL divergence summed over classes and averaged over the batch. T^2
// keeps the soft term's gradients at the scale of the label term's whatever
// the temperature. `teacher_logits` [N, K] carry no gradient (detached here);
// everything is computed in float32.
torch::Tensor DistillationLoss(const torch::Tensor& student_logits,
                               const torch::Tensor& teacher_logits, const torch::Tensor& targets,
                               double temperature, double alpha, double label_smoothing);

// Learning without forgetting (Li & Hoiem, 2016), the INCREMENTAL loss:
//   SmoothedCrossEntropy(student, targets over all classes)
//   + weight * SoftTargetLoss(student[:, :K_old], previous, temperature),
// where `previous_logits` [N, K_old] are the previous model's outputs on the
// same batch (its classes are the first K_old of the student's). Undefined
// previous_logits or weight 0: the cross-entropy alone.
torch::Tensor IncrementalLoss(const torch::Tensor& student_logits,
                              const torch::Tensor& previous_logits, const torch::Tensor& targets,
                              double temperature, double weight, double label_smoothing);

}  // namespace kaizen::training
