#include "server/training/optimizer_factory.h"

#include "gtest/gtest.h"

namespace kaizen::training {
namespace {

TEST(OptimizerFactoryTest, ParamGroupsUseBackboneMultiplier) {
  kaizen::v1::Hyperparameters hp;
  hp.set_learning_rate(0.01);
  hp.set_backbone_lr_multiplier(0.1);
  const torch::Tensor head = torch::zeros({2}, torch::requires_grad());
  const torch::Tensor body = torch::zeros({3}, torch::requires_grad());
  for (auto kind :
       {kaizen::v1::OPTIMIZER_SGD, kaizen::v1::OPTIMIZER_ADAM, kaizen::v1::OPTIMIZER_ADAMW}) {
    hp.mutable_optimizer()->set_kind(kind);
    hp.mutable_optimizer()->set_momentum(kind == kaizen::v1::OPTIMIZER_SGD ? 0.9 : 0);
    auto groups = MakeParamGroups(kaizen::v1::STRATEGY_FINE_TUNE, hp, {head}, {body});
    auto opt = MakeOptimizer(hp.optimizer(), groups);
    ASSERT_EQ(opt->param_groups().size(), 2u);
    EXPECT_DOUBLE_EQ(opt->param_groups()[0].options().get_lr(), 0.01);
    EXPECT_DOUBLE_EQ(opt->param_groups()[1].options().get_lr(), 0.001);
    EXPECT_TRUE(opt->param_groups()[1].params()[0].is_same(body));
  }
  // SCRATCH: nothing is pretrained, one learning rate.
  auto scratch = MakeParamGroups(kaizen::v1::STRATEGY_SCRATCH, hp, {head}, {body});
  EXPECT_DOUBLE_EQ(scratch[1].lr, 0.01);
  // FEATURE_EXTRACTION: the head alone.
  EXPECT_EQ(MakeParamGroups(kaizen::v1::STRATEGY_FEATURE_EXTRACTION, hp, {head}, {}).size(), 1u);
}

}  // namespace
}  // namespace kaizen::training
