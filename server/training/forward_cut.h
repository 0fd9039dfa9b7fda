// A TorchScript module's forward cut in two at the call of one of its
// submodules (a top-level child, or one inside a container that forward
// calls, such as cnn-small's `features.block3`): the prefix runs everything before that child and
// returns the child's input, the suffix runs the rest from that input. The
// FINE_TUNE frozen-prefix cache (issue 18) computes the prefix of every
// training image once and runs only the suffix at each step.
//
// The cut is made on copies of forward's graph: the prefix keeps what the
// child's input depends on, the suffix takes that input as a new argument in
// place of the image, and dead code is dropped from both. It is refused when
// the child is not called exactly once from forward itself, or when the part
// from the child on still reads the image or anything else computed before
// the cut (a connection that skips over it).
#pragma once

#include <torch/script.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace torch::jit {
struct GraphFunction;
}  // namespace torch::jit

namespace kaizen::training {

class ForwardCut {
 public:
  // Cuts `module`'s forward(x) before the submodule at dotted path `child`.
  // Methods of `module` that forward calls, and the forward of each module
  // on the path to `child`, are inlined first. The cut
  // shares `module`'s parameters and modes (a Module is a handle): training
  // through Suffix() trains the module. InvalidArgument, saying why, when it
  // cannot be cut there.
  static absl::StatusOr<ForwardCut> Before(const torch::jit::Module& module,
                                           const std::string& child);

  // forward's layers before `child`: the child's input for images `x`.
  torch::Tensor Prefix(const torch::Tensor& x) const;
  // forward's layers from `child` on, given what Prefix() returned: forward's
  // output (a tensor).
  torch::Tensor Suffix(const torch::Tensor& h) const;
  // The submodules whose forward the prefix calls, and any module whose
  // `training` flag it reads directly ("" for the module itself): dotted
  // paths, in graph order. Their modes decide whether the prefix is the same
  // at every step.
  const std::vector<std::string>& prefix_modules() const { return prefix_modules_; }

 private:
  ForwardCut() = default;

  torch::jit::Module module_;
  std::shared_ptr<torch::jit::GraphFunction> prefix_;
  std::shared_ptr<torch::jit::GraphFunction> suffix_;
  std::vector<std::string> prefix_modules_;
};

// Whether `module` computes what it computes in eval mode: no module in it
// (itself included) that is in training mode reads its own `training` flag
// in any of its methods (BatchNorm and Dropout do; ReLU and pooling do not).
bool BehavesAsInEval(const torch::jit::Module& module);

}  // namespace kaizen::training
