#include "server/models/builtin_models.h"

#include <cmath>
#include <exception>
#include <memory>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/models/module_builder.h"

namespace kaizen::models {
namespace {

constexpr absl::string_view kResNetSmall = "resnet-small";
constexpr absl::string_view kCnnSmall = "cnn-small";

// Channel widths of resnet-small's layer1..3 and cnn-small's block1..3; both
// end in kFeatureWidth features entering the head.
constexpr int64_t kWidths[3] = {32, 64, 128};
constexpr int64_t kFeatureWidth = 128;
constexpr int kBlocksPerLayer = 2;
// Inputs larger than this get a stride-2 stem (and, for the ResNet, a
// max-pool) so that 224x224 costs about what 56x56 would.
constexpr int64_t kLargeInput = 64;

constexpr int64_t kMinInputSize = 8;
constexpr int64_t kMaxInputSize = 1024;
constexpr int64_t kMaxChannels = 64;
constexpr int64_t kMaxClasses = 100000;

absl::Status ValidateOptions(const BuiltinOptions& options) {
  if (options.in_channels < 1 || options.in_channels > kMaxChannels) {
    return absl::InvalidArgumentError(absl::StrFormat("in_channels must be in [1, %d], got %d",
                                                      kMaxChannels, options.in_channels));
  }
  if (options.input_size < kMinInputSize || options.input_size > kMaxInputSize) {
    return absl::InvalidArgumentError(absl::StrFormat("input_size must be in [%d, %d], got %d",
                                                      kMinInputSize, kMaxInputSize,
                                                      options.input_size));
  }
  if (options.num_classes < 1 || options.num_classes > kMaxClasses) {
    return absl::InvalidArgumentError(absl::StrFormat("num_classes must be in [1, %d], got %d",
                                                      kMaxClasses, options.num_classes));
  }
  return absl::OkStatus();
}

absl::Status UnknownModel(absl::string_view name) {
  return absl::NotFoundError(absl::StrCat(
      "unknown built-in model '", name, "'; built-in models are: ", kResNetSmall, ", ", kCnnSmall));
}

// Parameter counts, mirroring the builders below (a test checks they agree).
int64_t ConvBnParams(int64_t in, int64_t out, int64_t k) { return k * k * in * out + 2 * out; }

int64_t ResNetSmallParams(const BuiltinOptions& o) {
  int64_t n = ConvBnParams(o.in_channels, kWidths[0], 3);
  int64_t in = kWidths[0];
  for (int64_t width : kWidths) {
    for (int b = 0; b < kBlocksPerLayer; ++b) {
      n += ConvBnParams(in, width, 3) + ConvBnParams(width, width, 3);
      if (in != width) n += ConvBnParams(in, width, 1);
      in = width;
    }
  }
  return n + kFeatureWidth * o.num_classes + o.num_classes;
}

int64_t CnnSmallParams(const BuiltinOptions& o) {
  int64_t n = 0;
  int64_t in = o.in_channels;
  for (int64_t width : kWidths) {
    n += ConvBnParams(in, width, 3);
    in = width;
  }
  return n + kFeatureWidth * o.num_classes + o.num_classes;
}

// Builds the modules of one image model (module_builder.h has the parts
// every built-in shares).
class Builder : public ModuleBuilder {
 public:
  using ModuleBuilder::ModuleBuilder;

  torch::jit::Module Conv(int64_t in, int64_t out, int64_t kernel, int64_t stride,
                          int64_t padding) {
    torch::jit::Module m = NewModule("Conv2d");
    // Kaiming normal, fan_out, ReLU gain: torchvision's ResNet init.
    const double std = std::sqrt(2.0 / static_cast<double>(out * kernel * kernel));
    AddParameter(m, "weight", at::empty({out, in, kernel, kernel}).normal_(0.0, std, generator()));
    m.define(absl::StrFormat(R"(
def forward(self, x):
    return torch.conv2d(x, self.weight, None, [%d, %d], [%d, %d])
)",
                             stride, stride, padding, padding));
    return m;
  }

  torch::jit::Module BatchNorm(int64_t channels) {
    torch::jit::Module m = NewModule("BatchNorm2d");
    AddParameter(m, "weight", at::ones({channels}));
    AddParameter(m, "bias", at::zeros({channels}));
    m.register_buffer("running_mean", at::zeros({channels}));
    m.register_buffer("running_var", at::ones({channels}));
    m.register_buffer("num_batches_tracked", at::zeros({}, at::kLong));
    // Same momentum and eps as torch.nn.BatchNorm2d.
    m.define(R"(
def forward(self, x):
    if self.training:
        self.num_batches_tracked.add_(1)
    return torch.batch_norm(x, self.weight, self.bias, self.running_mean,
                            self.running_var, self.training, 0.1, 1e-5, True)
)");
    return m;
  }

  torch::jit::Module BasicBlock(int64_t in, int64_t out, int64_t stride) {
    torch::jit::Module m = NewModule("BasicBlock");
    m.register_module("conv1", Conv(in, out, 3, stride, 1));
    m.register_module("bn1", BatchNorm(out));
    m.register_module("conv2", Conv(out, out, 3, 1, 1));
    m.register_module("bn2", BatchNorm(out));
    const bool project = stride != 1 || in != out;
    if (project) {
      torch::jit::Module shortcut = NewModule("Downsample");
      shortcut.register_module("0", Conv(in, out, 1, stride, 0));
      shortcut.register_module("1", BatchNorm(out));
      shortcut.define(R"(
def forward(self, x):
    return getattr(self, "1").forward(getattr(self, "0").forward(x))
)");
      m.register_module("downsample", shortcut);
    }
    m.define(
        absl::StrCat(R"(
def forward(self, x):
    out = torch.relu(self.bn1.forward(self.conv1.forward(x)))
    out = self.bn2.forward(self.conv2.forward(out))
)",
                     project ? "    identity = self.downsample.forward(x)\n" : "    identity = x\n",
                     "    return torch.relu(out + identity)\n"));
    return m;
  }

  torch::jit::Module ResNetSmall(const BuiltinOptions& o) {
    const bool large = o.input_size > kLargeInput;
    torch::jit::Module stem = NewModule("Stem");
    stem.register_module("conv1", Conv(o.in_channels, kWidths[0], 3, large ? 2 : 1, 1));
    stem.register_module("bn1", BatchNorm(kWidths[0]));
    stem.define(absl::StrCat(R"(
def forward(self, x):
    x = torch.relu(self.bn1.forward(self.conv1.forward(x)))
)",
                             large ? "    x = torch.max_pool2d(x, [3, 3], [2, 2], [1, 1])\n" : "",
                             "    return x\n"));

    torch::jit::Module root = NewModule("ResNetSmall");
    root.register_module("stem", stem);
    int64_t in = kWidths[0];
    for (int layer = 0; layer < 3; ++layer) {
      torch::jit::Module seq = NewModule("Layer");
      std::string body = "def forward(self, x):\n";
      for (int b = 0; b < kBlocksPerLayer; ++b) {
        const int64_t stride = (layer > 0 && b == 0) ? 2 : 1;
        seq.register_module(std::to_string(b), BasicBlock(in, kWidths[layer], stride));
        in = kWidths[layer];
        absl::StrAppend(&body, "    x = getattr(self, \"", b, "\").forward(x)\n");
      }
      absl::StrAppend(&body, "    return x\n");
      seq.define(body);
      root.register_module(absl::StrCat("layer", layer + 1), seq);
    }
    root.register_module("fc", Linear(kFeatureWidth, o.num_classes));
    root.define(R"(
def forward_features(self, x):
    x = self.stem.forward(x)
    x = self.layer1.forward(x)
    x = self.layer2.forward(x)
    x = self.layer3.forward(x)
    return torch.flatten(torch.adaptive_avg_pool2d(x, [1, 1]), 1)

def forward(self, x):
    return self.fc.forward(self.forward_features(x))
)");
    return root;
  }

  torch::jit::Module CnnSmall(const BuiltinOptions& o) {
    const bool large = o.input_size > kLargeInput;
    torch::jit::Module features = NewModule("Features");
    int64_t in = o.in_channels;
    for (int i = 0; i < 3; ++i) {
      torch::jit::Module block = NewModule("ConvBlock");
      block.register_module("conv", Conv(in, kWidths[i], 3, (large && i == 0) ? 2 : 1, 1));
      block.register_module("bn", BatchNorm(kWidths[i]));
      // ceil_mode keeps odd sizes (7x7 after two pools of 28) from shrinking
      // to nothing.
      block.define(R"(
def forward(self, x):
    x = torch.relu(self.bn.forward(self.conv.forward(x)))
    return torch.max_pool2d(x, [2, 2], [2, 2], [0, 0], [1, 1], True)
)");
      features.register_module(absl::StrCat("block", i + 1), block);
      in = kWidths[i];
    }
    features.define(R"(
def forward(self, x):
    x = self.block1.forward(x)
    x = self.block2.forward(x)
    return self.block3.forward(x)
)");
    torch::jit::Module root = NewModule("CnnSmall");
    root.register_module("features", features);
    root.register_module("fc", Linear(kFeatureWidth, o.num_classes));
    root.define(R"(
def forward_features(self, x):
    x = self.features.forward(x)
    return torch.flatten(torch.adaptive_avg_pool2d(x, [1, 1]), 1)

def forward(self, x):
    return self.fc.forward(self.forward_features(x))
)");
    return root;
  }
};

}  // namespace

std::vector<std::string> BuiltinModelNames() {
  return {std::string(kResNetSmall), std::string(kCnnSmall)};
}

bool IsBuiltinModel(absl::string_view name) { return name == kResNetSmall || name == kCnnSmall; }

absl::StatusOr<kaizen::v1::Model> DescribeBuiltinModel(absl::string_view name,
                                                       const BuiltinOptions& options) {
  if (!IsBuiltinModel(name)) return UnknownModel(name);
  if (absl::Status s = ValidateOptions(options); !s.ok()) return s;
  kaizen::v1::Model model;
  model.set_version(1);
  model.set_source(kaizen::v1::MODEL_SOURCE_BUILTIN);
  model.set_architecture(std::string(name));
  model.add_input_shape(options.in_channels);
  model.add_input_shape(options.input_size);
  model.add_input_shape(options.input_size);
  for (int64_t c = 0; c < options.in_channels; ++c) {
    model.mutable_normalization()->add_mean(0.5f);
    model.mutable_normalization()->add_std(0.5f);
  }
  kaizen::v1::ModelHead* head = model.mutable_head();
  head->set_module_path("fc");
  head->set_kind(kaizen::v1::HEAD_KIND_LINEAR);
  head->set_in_features(kFeatureWidth);
  head->set_out_features(options.num_classes);
  if (name == kResNetSmall) {
    model.set_parameter_count(ResNetSmallParams(options));
    model.set_description(
        "ResNet-style CNN: conv stem, three stages of two residual "
        "BasicBlocks (32/64/128 channels), global average pool, linear head");
  } else {
    model.set_parameter_count(CnnSmallParams(options));
    model.set_description(
        "Plain CNN: three conv+BatchNorm+ReLU+max-pool blocks (32/64/128 "
        "channels), global average pool, linear head; a distillation student");
  }
  return model;
}

absl::StatusOr<torch::jit::Module> CreateBuiltinModel(absl::string_view name,
                                                      const BuiltinOptions& options) {
  if (!IsBuiltinModel(name)) return UnknownModel(name);
  if (absl::Status s = ValidateOptions(options); !s.ok()) return s;
  try {
    Builder builder(options.seed);
    torch::jit::Module module =
        name == kResNetSmall ? builder.ResNetSmall(options) : builder.CnnSmall(options);
    module.train();
    return module;
  } catch (const std::exception& e) {
    // Only a bug in the TorchScript sources above can get here.
    return absl::InternalError(
        absl::StrCat("building built-in model '", name, "' failed: ", e.what()));
  }
}

}  // namespace kaizen::models
