#include "server/training/optimizer_factory.h"

#include <utility>

namespace kaizen::training {
namespace {

std::unique_ptr<torch::optim::OptimizerOptions> GroupOptions(const kaizen::v1::OptimizerOptions& o,
                                                             double lr) {
  const double beta1 = o.beta1() > 0 ? o.beta1() : 0.9;
  const double beta2 = o.beta2() > 0 ? o.beta2() : 0.999;
  switch (o.kind()) {
    case kaizen::v1::OPTIMIZER_SGD:
      return std::make_unique<torch::optim::SGDOptions>(torch::optim::SGDOptions(lr)
                                                            .momentum(o.momentum())
                                                            .nesterov(o.nesterov())
                                                            .weight_decay(o.weight_decay()));
    case kaizen::v1::OPTIMIZER_ADAM:
      return std::make_unique<torch::optim::AdamOptions>(
          torch::optim::AdamOptions(lr).betas({beta1, beta2}).weight_decay(o.weight_decay()));
    case kaizen::v1::OPTIMIZER_ADAMW:
    default:
      return std::make_unique<torch::optim::AdamWOptions>(
          torch::optim::AdamWOptions(lr).betas({beta1, beta2}).weight_decay(o.weight_decay()));
  }
}

}  // namespace

std::vector<ParamGroup> MakeParamGroups(kaizen::v1::Strategy strategy,
                                        const kaizen::v1::Hyperparameters& hp,
                                        std::vector<torch::Tensor> head,
                                        std::vector<torch::Tensor> backbone) {
  const double multiplier =
      strategy == kaizen::v1::STRATEGY_SCRATCH || hp.backbone_lr_multiplier() <= 0
          ? 1.0
          : hp.backbone_lr_multiplier();
  std::vector<ParamGroup> groups;
  groups.push_back({std::move(head), hp.learning_rate()});
  if (!backbone.empty()) groups.push_back({std::move(backbone), hp.learning_rate() * multiplier});
  return groups;
}

std::unique_ptr<torch::optim::Optimizer> MakeOptimizer(const kaizen::v1::OptimizerOptions& options,
                                                       const std::vector<ParamGroup>& groups) {
  std::vector<torch::optim::OptimizerParamGroup> torch_groups;
  for (const ParamGroup& g : groups)
    torch_groups.emplace_back(g.params, GroupOptions(options, g.lr));
  const double lr = groups.empty() ? 1e-3 : groups[0].lr;
  auto defaults = GroupOptions(options, lr);
  switch (options.kind()) {
    case kaizen::v1::OPTIMIZER_SGD:
      return std::make_unique<torch::optim::SGD>(torch_groups,
                                                 static_cast<torch::optim::SGDOptions&>(*defaults));
    case kaizen::v1::OPTIMIZER_ADAM:
      return std::make_unique<torch::optim::Adam>(
          torch_groups, static_cast<torch::optim::AdamOptions&>(*defaults));
    case kaizen::v1::OPTIMIZER_ADAMW:
    default:
      return std::make_unique<torch::optim::AdamW>(
          torch_groups, static_cast<torch::optim::AdamWOptions&>(*defaults));
  }
}

}  // namespace kaizen::training
