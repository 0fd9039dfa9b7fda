// Builds TorchScript modules in C++ (no Python): the common parts of the
// built-in architectures (builtin_models.cc for images, text_encoder.cc for
// text). Every module gets its own class type in one CompilationUnit (names
// are mangled on collision), so each can bake its hyper-parameters into its
// TorchScript source, and every initial weight is drawn from one seeded
// generator: the same seed gives the same weights, and the global torch RNG
// is neither used nor changed.
#pragma once

#include <ATen/CPUGeneratorImpl.h>
#include <torch/script.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace kaizen::models {

class ModuleBuilder {
 public:
  explicit ModuleBuilder(uint64_t seed)
      : cu_(std::make_shared<torch::jit::CompilationUnit>()),
        generator_(at::make_generator<at::CPUGeneratorImpl>(seed)) {}

  // An empty module of class __torch__.kaizen.models.<class_name>, in
  // training mode.
  torch::jit::Module NewModule(absl::string_view class_name) {
    torch::jit::Module m(c10::QualifiedName(absl::StrCat("__torch__.kaizen.models.", class_name)),
                         cu_, /*shouldMangle=*/true);
    // Module::train()/eval() set this attribute on every submodule.
    m.register_attribute("training", c10::BoolType::get(), true);
    return m;
  }

  // Parameters registered from C++ start with requires_grad=false.
  static void AddParameter(torch::jit::Module& m, const std::string& name, at::Tensor value) {
    m.register_parameter(name, value.set_requires_grad(true), /*is_buffer=*/false);
  }

  // torch.nn.Linear with its default init: kaiming_uniform(a=sqrt(5)) for the
  // weight, which is U(-1/sqrt(in), 1/sqrt(in)), and the same range for the
  // bias. The class name ends in "Linear" so that head detection finds it.
  torch::jit::Module Linear(int64_t in, int64_t out) {
    torch::jit::Module m = NewModule("Linear");
    const double bound = 1.0 / std::sqrt(static_cast<double>(in));
    AddParameter(m, "weight", at::empty({out, in}).uniform_(-bound, bound, generator_));
    AddParameter(m, "bias", at::empty({out}).uniform_(-bound, bound, generator_));
    m.define(R"(
def forward(self, x):
    return torch.linear(x, self.weight, self.bias)
)");
    return m;
  }

  at::Generator& generator() { return generator_; }

 private:
  std::shared_ptr<torch::jit::CompilationUnit> cu_;
  at::Generator generator_;
};

}  // namespace kaizen::models
