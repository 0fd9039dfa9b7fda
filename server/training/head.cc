#include "server/training/head.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <cmath>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "server/common/status_macros.h"
#include "server/models/torch_errors.h"

namespace kaizen::training {
namespace {

torch::jit::Module NewModule(const std::shared_ptr<torch::jit::CompilationUnit>& cu,
                             const std::string& class_name) {
  torch::jit::Module m(c10::QualifiedName(absl::StrCat("__torch__.kaizen.training.", class_name)),
                       cu, /*shouldMangle=*/true);
  m.register_attribute("training", c10::BoolType::get(), true);
  return m;
}

void SetParameter(torch::jit::Module& m, const std::string& name, const torch::Tensor& value) {
  m.register_parameter(name, value, /*is_buffer=*/false);
}

// torch.nn.Linear's default initialisation.
torch::jit::Module LinearModule(const std::shared_ptr<torch::jit::CompilationUnit>& cu, int64_t in,
                                int64_t out, at::Generator& gen) {
  torch::jit::Module m = NewModule(cu, "Linear");
  const double bound = 1.0 / std::sqrt(static_cast<double>(in));
  SetParameter(m, "weight",
               torch::empty({out, in}).uniform_(-bound, bound, gen).set_requires_grad(true));
  SetParameter(m, "bias", torch::empty({out}).uniform_(-bound, bound, gen).set_requires_grad(true));
  m.define(R"(
def forward(self, x):
    return torch.linear(x, self.weight, self.bias)
)");
  return m;
}

struct LinearParams {
  torch::Tensor weight;
  torch::Tensor bias;
};

absl::StatusOr<LinearParams> ReadLinear(const torch::jit::Module& m, const std::string& path) {
  if (!m.hasattr("weight") || !m.hasattr("bias") || !m.attr("weight").isTensor() ||
      !m.attr("bias").isTensor()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the head '", path, "' is not a Linear layer with a weight and a bias"));
  }
  LinearParams p{m.attr("weight").toTensor(), m.attr("bias").toTensor()};
  if (p.weight.dim() != 2 || p.bias.dim() != 1 || p.bias.size(0) != p.weight.size(0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("the head '", path, "' is not a Linear layer (weight [out, in], bias [out])"));
  }
  return p;
}

}  // namespace

torch::jit::Module DeepCopyModule(const torch::jit::Module& module) {
  torch::jit::Module copy = module.deepcopy();
  for (const auto& m : copy.named_modules()) {
    torch::jit::Module sub = m.value;
    for (const auto& p : sub.named_parameters(/*recurse=*/false)) {
      if (p.value.is_leaf()) continue;
      const bool requires_grad = p.value.requires_grad();
      SetParameter(sub, p.name, p.value.detach().set_requires_grad(requires_grad));
    }
  }
  return copy;
}

absl::StatusOr<torch::jit::Module> FindSubmodule(const torch::jit::Module& root,
                                                 const std::string& path) {
  torch::jit::Module m = root;
  if (path.empty()) return m;
  for (absl::string_view part : absl::StrSplit(path, '.')) {
    const std::string name(part);
    if (!m.hasattr(name) || !m.attr(name).isModule()) {
      return absl::NotFoundError(absl::StrCat("the model has no submodule '", path, "'"));
    }
    m = m.attr(name).toModule();
  }
  return m;
}

absl::StatusOr<torch::jit::Module> NewHead(const HeadSpec& spec, int64_t in_features) {
  if (in_features < 1 || spec.num_classes < 1) {
    return absl::InvalidArgumentError("a head needs at least one feature and one class");
  }
  auto cu = std::make_shared<torch::jit::CompilationUnit>();
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(spec.seed);
  if (spec.kind != kaizen::v1::HEAD_KIND_MLP) {
    return LinearModule(cu, in_features, spec.num_classes, gen);
  }
  const int64_t hidden = spec.hidden_units > 0 ? spec.hidden_units : 256;
  torch::jit::Module m = NewModule(cu, "MlpHead");
  m.register_module("fc1", LinearModule(cu, in_features, hidden, gen));
  m.register_module("fc2", LinearModule(cu, hidden, spec.num_classes, gen));
  m.register_attribute("dropout_p", c10::FloatType::get(), spec.dropout);
  m.define(R"(
def forward(self, x):
    x = torch.relu(self.fc1.forward(x))
    x = torch.dropout(x, self.dropout_p, self.training)
    return self.fc2.forward(x)
)");
  return m;
}

absl::StatusOr<SplitModel> SplitClassifier(const torch::jit::Module& model,
                                           const kaizen::v1::Model& metadata, const HeadSpec& spec,
                                           bool keep_head) {
  torch::jit::Module copy = DeepCopyModule(model);
  SplitModel split;
  split.kind = spec.kind == kaizen::v1::HEAD_KIND_MLP ? kaizen::v1::HEAD_KIND_MLP
                                                      : kaizen::v1::HEAD_KIND_LINEAR;
  split.num_classes = spec.num_classes;
  const bool wrapped = copy.hasattr(kBackboneHeadAttribute) && copy.hasattr("backbone") &&
                       copy.hasattr("head") && copy.attr("backbone").isModule();
  std::optional<torch::jit::Module> old_mlp;
  if (wrapped) {
    split.backbone = copy.attr("backbone").toModule();
    split.identity_path = copy.attr(kBackboneHeadAttribute).toStringRef();
    old_mlp = copy.attr("head").toModule();
  } else {
    split.backbone = copy;
    split.identity_path = metadata.head().module_path();
    if (split.identity_path.empty()) split.identity_path = "fc";
  }
  ASSIGN_OR_RETURN(torch::jit::Module linear, FindSubmodule(split.backbone, split.identity_path));
  ASSIGN_OR_RETURN(LinearParams old, ReadLinear(linear, split.identity_path));
  split.in_features = old.weight.size(1);
  const torch::Device device = old.weight.device();

  if (keep_head) {
    if (wrapped != (split.kind == kaizen::v1::HEAD_KIND_MLP)) {
      return absl::FailedPreconditionError(
          "the checkpoint's head kind differs from the job's head.kind");
    }
    if (wrapped) {
      split.head = *old_mlp;
      ASSIGN_OR_RETURN(torch::jit::Module fc2, FindSubmodule(split.head, "fc2"));
      ASSIGN_OR_RETURN(LinearParams last, ReadLinear(fc2, "head.fc2"));
      if (last.weight.size(0) != spec.num_classes) {
        return absl::FailedPreconditionError("the checkpoint's head has another class count");
      }
    } else {
      if (old.weight.size(0) != spec.num_classes) {
        return absl::FailedPreconditionError("the checkpoint's head has another class count");
      }
      HeadSpec linear_spec = spec;
      linear_spec.kind = kaizen::v1::HEAD_KIND_LINEAR;
      ASSIGN_OR_RETURN(split.head, NewHead(linear_spec, split.in_features));
      torch::NoGradGuard no_grad;
      split.head.attr("weight").toTensor().copy_(old.weight);
      split.head.attr("bias").toTensor().copy_(old.bias);
    }
  } else {
    ASSIGN_OR_RETURN(split.head, NewHead(spec, split.in_features));
  }
  split.head.to(device);
  for (const torch::Tensor& p : split.head.parameters()) p.set_requires_grad(true);

  // The base's head becomes an identity: backbone(x) == features.
  const auto opts = torch::TensorOptions().dtype(old.weight.scalar_type()).device(device);
  SetParameter(linear, "weight", torch::eye(split.in_features, opts));
  SetParameter(linear, "bias", torch::zeros({split.in_features}, opts));
  return split;
}

absl::Status GrowHead(const HeadSpec& spec, int64_t num_classes, SplitModel* split) {
  const bool mlp = split->kind == kaizen::v1::HEAD_KIND_MLP;
  ASSIGN_OR_RETURN(torch::jit::Module last, FindSubmodule(split->head, mlp ? "fc2" : ""));
  ASSIGN_OR_RETURN(LinearParams old, ReadLinear(last, mlp ? "head.fc2" : "head"));
  const int64_t old_classes = old.weight.size(0);
  if (num_classes < old_classes) {
    return absl::InvalidArgumentError(
        absl::StrCat("the head has ", old_classes, " classes; it cannot grow to ", num_classes));
  }
  HeadSpec fresh_spec = spec;
  fresh_spec.kind = kaizen::v1::HEAD_KIND_LINEAR;
  fresh_spec.num_classes = num_classes;
  ASSIGN_OR_RETURN(torch::jit::Module fresh, NewHead(fresh_spec, old.weight.size(1)));
  torch::NoGradGuard no_grad;
  const auto opts = old.weight.options();
  torch::Tensor weight = fresh.attr("weight").toTensor().to(opts).clone();
  torch::Tensor bias = fresh.attr("bias").toTensor().to(opts).clone();
  weight.narrow(0, 0, old_classes).copy_(old.weight);
  bias.narrow(0, 0, old_classes).copy_(old.bias);
  SetParameter(last, "weight", weight.set_requires_grad(true));
  SetParameter(last, "bias", bias.set_requires_grad(true));
  split->num_classes = num_classes;
  return absl::OkStatus();
}

std::string AssembledHeadPath(const SplitModel& split) {
  return split.kind == kaizen::v1::HEAD_KIND_MLP ? "head" : split.identity_path;
}

absl::StatusOr<torch::jit::Module> AssembleClassifier(const SplitModel& split,
                                                      const torch::Device& device) {
  torch::NoGradGuard no_grad;
  torch::jit::Module backbone = DeepCopyModule(split.backbone);
  if (split.kind == kaizen::v1::HEAD_KIND_MLP) {
    auto cu = std::make_shared<torch::jit::CompilationUnit>();
    torch::jit::Module root = NewModule(cu, "Classifier");
    root.register_module("backbone", backbone);
    root.register_module("head", DeepCopyModule(split.head));
    root.register_attribute(kBackboneHeadAttribute, c10::StringType::get(), split.identity_path);
    root.define(R"(
def forward(self, x):
    return self.head.forward(self.backbone.forward(x))
)");
    root.eval();
    root.to(device);
    return root;
  }
  ASSIGN_OR_RETURN(torch::jit::Module linear, FindSubmodule(backbone, split.identity_path));
  SetParameter(linear, "weight", split.head.attr("weight").toTensor().detach().clone());
  SetParameter(linear, "bias", split.head.attr("bias").toTensor().detach().clone());
  backbone.eval();
  backbone.to(device);
  return backbone;
}

absl::Status FoldInputStandardization(const SplitModel& split, const torch::Tensor& mean,
                                      const torch::Tensor& std, torch::jit::Module* classifier) {
  if (!mean.defined() || !std.defined() || mean.dim() != 1 || std.dim() != 1 ||
      mean.size(0) != split.in_features || std.size(0) != split.in_features) {
    return absl::InvalidArgumentError(absl::StrCat("the feature standardisation must hold ",
                                                   split.in_features,
                                                   " means and standard deviations"));
  }
  torch::NoGradGuard no_grad;
  const torch::Tensor s = std.to(torch::kCPU, torch::kDouble);
  if (!(s.min().item<double>() > 0)) {
    return absl::InvalidArgumentError("a feature's standard deviation is not positive");
  }
  const std::string path =
      split.kind == kaizen::v1::HEAD_KIND_MLP ? "head.fc1" : split.identity_path;
  ASSIGN_OR_RETURN(torch::jit::Module linear, FindSubmodule(*classifier, path));
  ASSIGN_OR_RETURN(LinearParams p, ReadLinear(linear, path));
  if (p.weight.size(1) != split.in_features) {
    return absl::InvalidArgumentError(absl::StrCat("the head '", path, "' takes ", p.weight.size(1),
                                                   " features, not ", split.in_features));
  }
  const torch::Tensor w = p.weight.to(torch::kCPU, torch::kDouble) / s.unsqueeze(0);
  const torch::Tensor b =
      p.bias.to(torch::kCPU, torch::kDouble) - w.matmul(mean.to(torch::kCPU, torch::kDouble));
  const bool requires_grad = p.weight.requires_grad();
  SetParameter(linear, "weight",
               w.to(p.weight.device(), p.weight.scalar_type()).set_requires_grad(requires_grad));
  SetParameter(linear, "bias",
               b.to(p.bias.device(), p.bias.scalar_type()).set_requires_grad(requires_grad));
  return absl::OkStatus();
}

}  // namespace kaizen::training
