// Builds the torch::optim optimiser of a job: the new head in one parameter
// group at the base learning rate, the trainable pretrained parameters in a
// second at learning_rate * backbone_lr_multiplier (1 for SCRATCH, where
// nothing is pretrained).
#pragma once

#include <torch/torch.h>

#include <memory>
#include <vector>

#include "kaizen/v1/finetune_service.pb.h"

namespace kaizen::training {

struct ParamGroup {
  std::vector<torch::Tensor> params;
  double lr = 0;  // at schedule factor 1
};

// [head] or [head, backbone] when `backbone` is not empty.
std::vector<ParamGroup> MakeParamGroups(kaizen::v1::Strategy strategy,
                                        const kaizen::v1::Hyperparameters& hp,
                                        std::vector<torch::Tensor> head,
                                        std::vector<torch::Tensor> backbone);

// SGD (momentum, nesterov, weight decay), Adam or AdamW (betas, weight decay)
// over `groups`, each with its own learning rate.
std::unique_ptr<torch::optim::Optimizer> MakeOptimizer(const kaizen::v1::OptimizerOptions& options,
                                                       const std::vector<ParamGroup>& groups);

}  // namespace kaizen::training
