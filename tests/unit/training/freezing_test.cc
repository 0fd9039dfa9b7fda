#include "server/training/freezing.h"

#include <torch/torch.h>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "server/models/text_encoder.h"
#include "server/training/head.h"
#include "server/training/trainer.h"
#include "tests/unit/training/training_test_util.h"

namespace kaizen::training {
namespace {

using fixtures::Builtin;
using fixtures::Snapshot;

bool StartsWithAny(const std::string& name, std::initializer_list<const char*> prefixes) {
  for (const char* p : prefixes) {
    if (absl::StartsWith(name, p)) return true;
  }
  return false;
}

TEST(FreezingTest, AModuleThatNamesItsBlocksHasThose) {
  // As WrapTextEncoder leaves them on an uploaded text encoder.
  torch::jit::Module m(c10::QualifiedName("__torch__.test.Named"),
                       std::make_shared<torch::jit::CompilationUnit>());
  m.register_attribute("training", c10::BoolType::get(), true);
  for (const char* name : {"a", "b", "fc"}) {
    torch::jit::Module child(c10::QualifiedName(std::string("__torch__.test.C") + name),
                             std::make_shared<torch::jit::CompilationUnit>());
    child.register_attribute("training", c10::BoolType::get(), true);
    child.register_parameter("w", torch::ones({2}), false);
    m.register_module(name, child);
  }
  EXPECT_EQ(ListBlocks(m, "fc"), (std::vector<std::string>{"a", "b"}));
  m.register_attribute(std::string(models::kBlocksAttribute), c10::ListType::ofStrings(),
                       c10::List<std::string>({"b", "zz", "a", "fc"}));
  // Its order, bottom to top; the head and names of no submodule are no blocks.
  EXPECT_EQ(ListBlocks(m, "fc"), (std::vector<std::string>{"b", "a"}));
  const auto names = TrainableBackboneParameters(m, "fc", kaizen::v1::STRATEGY_FINE_TUNE, 1);
  EXPECT_EQ(names, (std::vector<std::string>{"a.w"}));
}

TEST(FreezingTest, ListsTopLevelBlocks) {
  EXPECT_EQ(ListBlocks(Builtin("resnet-small").module, "fc"),
            (std::vector<std::string>{"stem", "layer1", "layer2", "layer3"}));
  EXPECT_EQ(ListBlocks(Builtin("cnn-small").module, "fc"),
            (std::vector<std::string>{"features.block1", "features.block2", "features.block3"}));
  const auto names = TrainableBackboneParameters(Builtin("resnet-small").module, "fc",
                                                 kaizen::v1::STRATEGY_FINE_TUNE, 1);
  ASSERT_FALSE(names.empty());
  for (const auto& n : names) EXPECT_TRUE(absl::StartsWith(n, "layer3.")) << n;
  EXPECT_TRUE(TrainableBackboneParameters(Builtin("resnet-small").module, "fc",
                                          kaizen::v1::STRATEGY_FEATURE_EXTRACTION, 1)
                  .empty());
}

TEST(FreezingTest, FeatureExtractionFreezesBackboneAndBatchNorm) {
  fixtures::BaseModel base = Builtin("resnet-small");
  HeadSpec spec;
  spec.num_classes = 2;
  auto split = SplitClassifier(base.module, base.metadata, spec, false);
  ASSERT_TRUE(split.ok());
  ApplyRequiresGrad(split->backbone, {});
  SetTrainingMode(split->backbone);
  split->head.train();
  const auto before = Snapshot(split->backbone);
  const auto head_before = Snapshot(split->head);
  std::vector<torch::Tensor> head_params;
  for (const torch::Tensor& p : split->head.parameters()) head_params.push_back(p);
  torch::optim::SGD sgd(head_params, torch::optim::SGDOptions(0.1));
  for (int step = 0; step < 3; ++step) {
    const torch::Tensor x = torch::randn({8, 1, 28, 28});
    const torch::Tensor y = torch::randint(0, 2, {8}, torch::kLong);
    sgd.zero_grad();
    const torch::Tensor logits =
        split->head.forward({split->backbone.forward({x}).toTensor()}).toTensor();
    torch::nn::functional::cross_entropy(logits, y).backward();
    sgd.step();
  }
  for (const auto& p : split->backbone.named_parameters(true)) {
    EXPECT_FALSE(p.value.grad().defined()) << p.name;
    EXPECT_FALSE(p.value.requires_grad()) << p.name;
  }
  const auto after = Snapshot(split->backbone);
  ASSERT_EQ(before.size(), after.size());
  for (size_t i = 0; i < before.size(); ++i) {
    EXPECT_TRUE(torch::equal(before[i].second, after[i].second)) << before[i].first;
  }
  EXPECT_FALSE(torch::equal(head_before[0].second, split->head.attr("weight").toTensor()));

  // Through Train(), with augmentation on so that the backbone runs every step.
  datasets::DecodedDataset data = fixtures::SyntheticDataset(2, 16);
  TrainerOptions options;
  options.strategy = kaizen::v1::STRATEGY_FEATURE_EXTRACTION;
  options.hyperparameters = fixtures::FastHyperparameters(1);
  options.hyperparameters.mutable_augmentation()->set_enabled(true);
  options.hyperparameters.mutable_augmentation()->set_horizontal_flip(true);
  options.base = base.module;
  options.base_metadata = base.metadata;
  std::optional<Checkpoint> last;
  Callbacks callbacks;
  callbacks.on_checkpoint = [&](const Checkpoint& cp) {
    last = cp;
    return absl::OkStatus();
  };
  const auto base_state = Snapshot(base.module);
  auto result = Train(options, {&data, nullptr}, callbacks);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_TRUE(last.has_value());
  const auto trained = Snapshot(last->module);
  ASSERT_EQ(trained.size(), base_state.size());
  for (size_t i = 0; i < trained.size(); ++i) {
    if (absl::StartsWith(trained[i].first, "fc.")) continue;
    EXPECT_TRUE(torch::equal(trained[i].second, base_state[i].second)) << trained[i].first;
  }
}

TEST(FreezingTest, FineTuneTrainsOnlyTopBlocks) {
  fixtures::BaseModel base = Builtin("resnet-small");
  datasets::DecodedDataset data = fixtures::SyntheticDataset(2, 16);
  TrainerOptions options;
  options.strategy = kaizen::v1::STRATEGY_FINE_TUNE;
  options.hyperparameters = fixtures::FastHyperparameters(2);
  options.hyperparameters.set_trainable_blocks(1);
  // Epoch 1 trains the head alone, epoch 2 unfreezes layer3.
  options.hyperparameters.set_head_warmup_epochs(1);
  options.base = base.module;
  options.base_metadata = base.metadata;
  std::vector<Checkpoint> checkpoints;
  Callbacks callbacks;
  callbacks.on_checkpoint = [&](const Checkpoint& cp) {
    checkpoints.push_back(cp);
    return absl::OkStatus();
  };
  const auto base_state = Snapshot(base.module);
  auto result = Train(options, {&data, nullptr}, callbacks);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(checkpoints.size(), 2u);
  const auto warm = Snapshot(checkpoints[0].module);
  const auto tuned = Snapshot(checkpoints[1].module);
  ASSERT_EQ(tuned.size(), base_state.size());
  int changed_top = 0;
  for (size_t i = 0; i < tuned.size(); ++i) {
    const std::string& name = tuned[i].first;
    if (absl::StartsWith(name, "fc.")) continue;
    EXPECT_TRUE(torch::equal(warm[i].second, base_state[i].second)) << "warm-up moved " << name;
    if (StartsWithAny(name, {"stem.", "layer1.", "layer2."})) {
      EXPECT_TRUE(torch::equal(tuned[i].second, base_state[i].second)) << name;
    } else if (!torch::equal(tuned[i].second, base_state[i].second)) {
      ++changed_top;
    }
  }
  EXPECT_GT(changed_top, 10);  // layer3's weights and BatchNorm statistics moved
}

}  // namespace
}  // namespace kaizen::training
