// Which backbone parameters a strategy trains, and keeping the frozen rest
// truly frozen: requires_grad off (so their grads stay undefined) and their
// BatchNorm in eval mode, because Module::train() recurses into them.
#pragma once

#include <torch/script.h>

#include <set>
#include <string>
#include <vector>

#include "kaizen/v1/finetune_service.pb.h"

namespace kaizen::training {

// The blocks of a backbone, bottom to top: its top-level children that hold
// parameters outside `head_path` (for torchvision's resnet18: conv1, bn1,
// layer1..layer4; for resnet-small: stem, layer1..layer3). A lone container
// (cnn-small's `features`) is replaced by its own children. A module that
// names its blocks in models::kBlocksAttribute (an uploaded text encoder's
// wrapper) has those.
std::vector<std::string> ListBlocks(const torch::jit::Module& backbone,
                                    const std::string& head_path);

// Names, in named_parameters() order, of the backbone parameters that
// `strategy` trains: none for FEATURE_EXTRACTION, those of the top
// `trainable_blocks` blocks for FINE_TUNE, every one outside `head_path`
// otherwise.
std::vector<std::string> TrainableBackboneParameters(const torch::jit::Module& backbone,
                                                     const std::string& head_path,
                                                     kaizen::v1::Strategy strategy,
                                                     int32_t trainable_blocks);

// Sets requires_grad on every backbone parameter: true exactly for `trainable`.
// A parameter turned frozen loses its gradient.
void ApplyRequiresGrad(const torch::jit::Module& backbone, const std::set<std::string>& trainable);

// Puts the backbone in training mode except its frozen parts: a submodule
// whose parameters are all frozen goes to eval() (BatchNorm keeps its running
// statistics). Everything frozen -> the whole backbone in eval().
void SetTrainingMode(torch::jit::Module& backbone);

}  // namespace kaizen::training
