#include "server/models/torchscript_inspector.h"

#include <sys/stat.h>

#include <algorithm>
#include <exception>
#include <optional>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "server/common/sha256.h"
#include "server/common/status_macros.h"
#include "server/models/model_metadata.h"
#include "server/models/operator_allowlist.h"
#include "server/models/torch_errors.h"

namespace kaizen::models {
namespace {

// Tried in this order when neither the caller nor kaizen.json gives a shape:
// ImageNet-style models first, then CIFAR- and MNIST-sized ones.
constexpr int64_t kProbeSizes[] = {224, 32, 28};
constexpr int kMaxListedModules = 20;

std::string ShapeString(at::IntArrayRef shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

// "__torch__.torchvision.models.resnet.___torch_mangle_3.ResNet" ->
// "torchvision.models.resnet.ResNet".
std::string CleanTypeName(const torch::jit::Module& module) {
  const auto& name = module.type()->name();
  if (!name.has_value()) return "torchscript";
  std::vector<absl::string_view> kept;
  for (absl::string_view part : absl::StrSplit(name->qualifiedName(), '.', absl::SkipEmpty())) {
    if (part == "__torch__" || absl::StartsWith(part, "___torch_mangle_")) {
      continue;
    }
    kept.push_back(part);
  }
  return absl::StrJoin(kept, ".");
}

// A Linear layer as the trainer can replace it: a module whose class name
// ends in "Linear" with a 2-D weight (torch.nn.Linear, the builtins' Linear).
std::optional<at::Tensor> LinearWeight(const torch::jit::Module& module) {
  const auto& name = module.type()->name();
  if (!name.has_value() || !absl::EndsWith(name->name(), "Linear")) {
    return std::nullopt;
  }
  if (!module.hasattr("weight")) return std::nullopt;
  const c10::IValue weight = module.attr("weight");
  if (!weight.isTensor() || weight.toTensor().dim() != 2) return std::nullopt;
  return weight.toTensor();
}

struct Head {
  std::string path;
  at::Tensor weight;
};

absl::StatusOr<Head> FindHead(const torch::jit::Module& module, const std::string& wanted) {
  std::vector<Head> linears;
  std::optional<torch::jit::Module> named;
  for (const auto& item : module.named_modules()) {
    if (!wanted.empty() && item.name == wanted) named = item.value;
    if (std::optional<at::Tensor> weight = LinearWeight(item.value)) {
      linears.push_back({item.name, *weight});
    }
  }
  if (wanted.empty()) {
    if (linears.empty()) {
      return absl::InvalidArgumentError(
          "no Linear layer found; name the classification head with "
          "head_module");
    }
    return linears.back();
  }
  if (!named.has_value()) {
    std::vector<std::string> paths;
    for (const Head& h : linears) {
      if (static_cast<int>(paths.size()) == kMaxListedModules) {
        paths.push_back("...");
        break;
      }
      paths.push_back(h.path);
    }
    return absl::InvalidArgumentError(
        absl::StrCat("head module '", wanted, "' not found; Linear modules are: ",
                     paths.empty() ? "(none)" : absl::StrJoin(paths, ", ")));
  }
  std::optional<at::Tensor> weight = LinearWeight(*named);
  if (!weight.has_value()) {
    return absl::InvalidArgumentError(absl::StrCat("head module '", wanted, "' is a ",
                                                   CleanTypeName(*named),
                                                   ", not a Linear layer with a 2-D weight"));
  }
  return Head{wanted, *weight};
}

// Runs the module on zeros; the error (if any) is the caller's to word.
absl::StatusOr<c10::IValue> Forward(torch::jit::Module& module, const std::vector<int64_t>& shape) {
  try {
    at::NoGradGuard no_grad;
    return module.forward({at::zeros(shape)});
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("forward on input ", ShapeString(shape), " failed: ", TorchErrorSummary(e)));
  }
}

absl::Status ValidateShape(const std::vector<int64_t>& shape, const InspectOptions& options) {
  if (shape.size() != 3 || shape[0] <= 0 || shape[1] <= 0 || shape[2] <= 0) {
    return absl::InvalidArgumentError("input_shape must be [C,H,W] with positive values");
  }
  if (shape[0] > options.max_channels) {
    return absl::InvalidArgumentError(absl::StrCat("input_shape ", ShapeString(shape), " has ",
                                                   shape[0], " channels; at most ",
                                                   options.max_channels, " are accepted"));
  }
  // H and W are each below the pixel limit, so the product cannot overflow.
  if (shape[1] > options.max_image_pixels || shape[2] > options.max_image_pixels ||
      shape[1] * shape[2] > options.max_image_pixels) {
    return absl::InvalidArgumentError(absl::StrCat(
        "input_shape ", ShapeString(shape),
        " is larger than --max_image_pixels=", options.max_image_pixels, " (height * width)"));
  }
  return absl::OkStatus();
}

// Serving batches inputs: the model must give one row per input.
absl::Status CheckBatch(torch::jit::Module& module, const std::vector<int64_t>& input_shape,
                        int64_t batch, int64_t classes) {
  ASSIGN_OR_RETURN(c10::IValue output,
                   Forward(module, {batch, input_shape[0], input_shape[1], input_shape[2]}));
  if (!output.isTensor() || output.toTensor().dim() != 2 || output.toTensor().size(0) != batch ||
      output.toTensor().size(1) != classes) {
    return absl::InvalidArgumentError(
        absl::StrCat("at batch size ", batch, " (serving's largest batch) the model returns ",
                     output.isTensor() ? ShapeString(output.toTensor().sizes()) : output.tagKind(),
                     "; expected [", batch, ",", classes, "]"));
  }
  return absl::OkStatus();
}

// Channels of the first convolution, the best guess for an unknown input.
int64_t GuessChannels(const torch::jit::Module& module) {
  for (const at::Tensor& p : module.parameters()) {
    if (p.dim() == 4) return p.size(1);
  }
  return 3;
}

absl::Status FillNormalization(const InspectOptions& options, const kaizen::v1::Model* embedded,
                               int64_t channels, kaizen::v1::Model* model) {
  std::vector<float> mean = options.mean;
  std::vector<float> std = options.std;
  if (mean.empty() && std.empty() && embedded != nullptr &&
      embedded->normalization().mean_size() == channels &&
      embedded->normalization().std_size() == channels) {
    mean.assign(embedded->normalization().mean().begin(), embedded->normalization().mean().end());
    std.assign(embedded->normalization().std().begin(), embedded->normalization().std().end());
  }
  if (mean.empty()) {
    mean = channels == 3 ? std::vector<float>{0.485f, 0.456f, 0.406f}
                         : std::vector<float>(channels, 0.5f);
  }
  if (std.empty()) {
    std = channels == 3 ? std::vector<float>{0.229f, 0.224f, 0.225f}
                        : std::vector<float>(channels, 0.5f);
  }
  // One value stands for every channel.
  if (mean.size() == 1) mean.assign(channels, mean[0]);
  if (std.size() == 1) std.assign(channels, std[0]);
  if (static_cast<int64_t>(mean.size()) != channels ||
      static_cast<int64_t>(std.size()) != channels) {
    return absl::InvalidArgumentError(absl::StrCat("normalization has ", mean.size(), " mean and ",
                                                   std.size(), " std values but the input has ",
                                                   channels, " channels"));
  }
  for (float s : std) {
    if (!(s > 0)) {
      return absl::InvalidArgumentError("normalization std must be positive");
    }
  }
  model->mutable_normalization()->mutable_mean()->Assign(mean.begin(), mean.end());
  model->mutable_normalization()->mutable_std()->Assign(std.begin(), std.end());
  return absl::OkStatus();
}

// The module at `path` on the CPU, and the metadata Kaizen embedded in it
// (when there is any) in `embedded`.
absl::StatusOr<torch::jit::Module> LoadForInspection(const std::string& path,
                                                     std::optional<kaizen::v1::Model>* embedded) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat("no such model file: ", path));
  }
  torch::jit::ExtraFilesMap extra_files{{std::string(kMetadataFileName), ""}};
  torch::jit::Module module;
  try {
    // Inspection runs on the CPU whatever device the file was saved from.
    module = torch::jit::load(path, at::Device(at::kCPU), extra_files);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("not a loadable TorchScript file: ", TorchErrorSummary(e)));
  }
  if (const std::string& json = extra_files[std::string(kMetadataFileName)]; !json.empty()) {
    ASSIGN_OR_RETURN(*embedded, ModelFromMetadataJson(json));
  }
  return module;
}

absl::StatusOr<int64_t> CountParameters(const torch::jit::Module& module) {
  int64_t parameter_count = 0;
  for (const at::Tensor& p : module.parameters()) parameter_count += p.numel();
  if (parameter_count == 0) {
    return absl::InvalidArgumentError(
        "the model has no parameters (saved after torch.jit.freeze?); upload "
        "a scripted model that was not frozen so that it can be trained");
  }
  return parameter_count;
}

// The class names given, else the embedded ones; one per head output.
absl::StatusOr<std::vector<std::string>> ClassNames(const InspectOptions& options,
                                                    const kaizen::v1::Model* meta,
                                                    int64_t classes) {
  std::vector<std::string> class_names = options.class_names;
  if (class_names.empty() && meta != nullptr) {
    class_names.assign(meta->class_names().begin(), meta->class_names().end());
  }
  if (!class_names.empty() && static_cast<int64_t>(class_names.size()) != classes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "class_names has ", class_names.size(), " entries but the head has ", classes, " outputs"));
  }
  return class_names;
}

// The input shape [C, H, W]: given, embedded, or the first probed size the
// model runs on; `output` is the module's output for one such input.
absl::StatusOr<std::vector<int64_t>> FindInputShape(torch::jit::Module& module,
                                                    const InspectOptions& options,
                                                    const kaizen::v1::Model* meta,
                                                    c10::IValue* output) {
  std::vector<int64_t> input_shape = options.input_shape;
  if (input_shape.empty() && meta != nullptr) {
    input_shape.assign(meta->input_shape().begin(), meta->input_shape().end());
  }
  if (!input_shape.empty()) {
    RETURN_IF_ERROR(ValidateShape(input_shape, options));
    ASSIGN_OR_RETURN(*output, Forward(module, {1, input_shape[0], input_shape[1], input_shape[2]}));
    return input_shape;
  }
  const int64_t channels = GuessChannels(module);
  absl::Status first_error;
  for (int64_t size : kProbeSizes) {
    absl::StatusOr<c10::IValue> result = Forward(module, {1, channels, size, size});
    if (result.ok()) {
      *output = *std::move(result);
      return std::vector<int64_t>{channels, size, size};
    }
    if (first_error.ok()) first_error = result.status();
  }
  return absl::InvalidArgumentError(
      absl::StrCat("no input_shape given and none of the probed sizes (224, 32, 28 with ", channels,
                   " channels) runs; pass input_shape. First error: ", first_error.message()));
}

// The output of one input must be [1, classes] logits, `classes` being the
// head's outputs.
absl::Status CheckLogits(const c10::IValue& output, const Head& head, int64_t classes) {
  if (!output.isTensor()) {
    return absl::InvalidArgumentError(
        absl::StrCat("model output is a ", output.tagKind(),
                     "; a classifier must return a tensor [batch, classes]"));
  }
  const at::Tensor logits = output.toTensor();
  if (logits.dim() != 2 || logits.size(0) != 1) {
    return absl::InvalidArgumentError(absl::StrCat("model output has shape ",
                                                   ShapeString(logits.sizes()),
                                                   "; a classifier must return [batch, classes]"));
  }
  if (logits.size(1) != classes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model output has ", logits.size(1), " classes but head '", head.path, "' has ", classes,
        " outputs; name the layer that produces the "
        "logits with head_module"));
  }
  return absl::OkStatus();
}

// The classifier's head and class names (one per output) into `model`.
void FillHead(const Head& head, std::vector<std::string> class_names, kaizen::v1::Model* model) {
  for (std::string& name : class_names) model->add_class_names(std::move(name));
  kaizen::v1::ModelHead* model_head = model->mutable_head();
  model_head->set_module_path(head.path);
  model_head->set_kind(kaizen::v1::HEAD_KIND_LINEAR);
  model_head->set_in_features(head.weight.size(1));
  model_head->set_out_features(head.weight.size(0));
}

// The largest tokenizer file a text model may carry.
constexpr int64_t kMaxTokenizerBytes = int64_t{16} << 20;
// Tokens per row of the batched probe (the first probe is one text of
// max_length tokens).
constexpr int64_t kTextProbeLength = 16;

// Probe ids [rows, length]: row r holds length - r % length ids (framed by
// first_id and last_id when the model has them), the rest padding, so that
// a batch has rows of several lengths as serving's do. Row 0 holds the
// vocabulary's last id and mask_id too, so an encoder with fewer embedding
// rows than text_input says fails here rather than in a job.
struct TextProbe {
  at::Tensor ids;
  at::Tensor mask;
};
TextProbe MakeTextProbe(const kaizen::v1::TextInput& in, int64_t rows, int64_t length) {
  TextProbe p{at::full({rows, length}, static_cast<int64_t>(in.pad_id()), at::kLong),
              at::zeros({rows, length}, at::kLong)};
  auto ids = p.ids.accessor<int64_t, 2>();
  auto mask = p.mask.accessor<int64_t, 2>();
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t used = std::max<int64_t>(1, length - r % length);
    for (int64_t t = 0; t < used; ++t) {
      int64_t id = (r * 31 + t * 7919) % in.vocab_size();
      if (r == 0 && t == 1) id = in.vocab_size() - 1;
      if (r == 0 && t == 2 && in.mask_id() >= 0) id = in.mask_id();
      if (t == 0 && in.first_id() >= 0) id = in.first_id();
      if (t == used - 1 && used > 1 && in.last_id() >= 0) id = in.last_id();
      ids[r][t] = id;
      mask[r][t] = 1;
    }
  }
  return p;
}

std::string Describe(const c10::IValue& v) {
  if (v.isTensor()) return absl::StrCat("a tensor ", ShapeString(v.toTensor().sizes()));
  if (v.isTuple()) {
    std::vector<std::string> parts;
    for (const c10::IValue& e : v.toTupleRef().elements()) parts.push_back(Describe(e));
    return absl::StrCat("a tuple (", absl::StrJoin(parts, ", "), ")");
  }
  return absl::StrCat("a ", v.tagKind());
}

absl::StatusOr<c10::IValue> ForwardText(torch::jit::Module& module, const TextProbe& probe) {
  try {
    at::NoGradGuard no_grad;
    return module.forward({probe.ids, probe.mask});
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("forward(input_ids, attention_mask) on ids ",
                                                   ShapeString(probe.ids.sizes()),
                                                   " (int64) failed: ", TorchErrorSummary(e)));
  }
}

// What a bare encoder's output is, from its answer to `rows` probe rows of
// `length` tokens.
absl::StatusOr<UploadedEncoder> ReadEncoderOutput(const c10::IValue& out, int64_t rows,
                                                  int64_t length) {
  const auto hidden = [&](const c10::IValue& v) {
    return v.isTensor() && v.toTensor().dim() == 3 && v.toTensor().size(0) == rows &&
           v.toTensor().size(1) == length && v.toTensor().size(2) > 0 &&
           v.toTensor().is_floating_point();
  };
  if (hidden(out)) return UploadedEncoder{EncoderOutput::kHiddenStates, out.toTensor().size(2)};
  if (out.isTuple() && !out.toTupleRef().elements().empty() &&
      hidden(out.toTupleRef().elements()[0])) {
    return UploadedEncoder{EncoderOutput::kTupleHiddenStates,
                           out.toTupleRef().elements()[0].toTensor().size(2)};
  }
  if (out.isTensor() && out.toTensor().dim() == 2 && out.toTensor().size(0) == rows &&
      out.toTensor().size(1) > 0 && out.toTensor().is_floating_point()) {
    return UploadedEncoder{EncoderOutput::kPooled, out.toTensor().size(1)};
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "for input_ids [", rows, ",", length, "] the text encoder returns ", Describe(out),
      "; it must return hidden states [", rows, ",", length,
      ",hidden], a tuple whose first "
      "element they are (as a traced Hugging Face BERT does), or one vector per text [",
      rows, ",hidden]; a text classifier names its head (head_module or kaizen.json)"));
}

// A text model: kaizen.json has text_input and the file carries the
// tokenizer it names. With a head (named by the uploader or kaizen.json) it
// is a classifier whose forward(input_ids, attention_mask) gives [N, K];
// without one, an encoder, whose output `encoder` describes for the server
// to put a head on (text_encoder.h).
absl::StatusOr<kaizen::v1::Model> InspectText(const std::string& path, torch::jit::Module& module,
                                              const kaizen::v1::Model& meta,
                                              const InspectOptions& options,
                                              std::optional<UploadedEncoder>* encoder) {
  const kaizen::v1::TextInput& in = meta.text_input();
  if (in.vocab_size() < 2 || in.vocab_size() > 1'000'000) {
    return absl::InvalidArgumentError(absl::StrCat(
        "kaizen.json text_input.vocab_size is ", in.vocab_size(), "; it must be in [2, 1000000]"));
  }
  if (in.max_length() < 2 || in.max_length() > 4096) {
    return absl::InvalidArgumentError(absl::StrCat("kaizen.json text_input.max_length is ",
                                                   in.max_length(), "; it must be in [2, 4096]"));
  }
  struct Id {
    const char* field;
    int32_t id;
    int32_t lowest;  // -1: "none" is allowed
  };
  for (const Id& f : {Id{"pad_id", in.pad_id(), 0}, Id{"first_id", in.first_id(), -1},
                      Id{"last_id", in.last_id(), -1}, Id{"mask_id", in.mask_id(), -1}}) {
    if (f.id < f.lowest || f.id >= in.vocab_size()) {
      return absl::InvalidArgumentError(absl::StrCat("kaizen.json text_input.", f.field, " is ",
                                                     f.id, "; it must be in [", f.lowest, ", ",
                                                     in.vocab_size(), ")"));
    }
  }
  if (in.tokenizer() != kaizen::v1::TOKENIZER_KIND_SENTENCEPIECE &&
      in.tokenizer() != kaizen::v1::TOKENIZER_KIND_WORDPIECE) {
    return absl::InvalidArgumentError(
        "kaizen.json text_input.tokenizer must be TOKENIZER_KIND_SENTENCEPIECE or "
        "TOKENIZER_KIND_WORDPIECE");
  }
  if (in.pooling() != kaizen::v1::TEXT_POOLING_UNSPECIFIED &&
      in.pooling() != kaizen::v1::TEXT_POOLING_FIRST_TOKEN &&
      in.pooling() != kaizen::v1::TEXT_POOLING_MASKED_MEAN) {
    return absl::InvalidArgumentError(
        "kaizen.json text_input.pooling must be TEXT_POOLING_FIRST_TOKEN or "
        "TEXT_POOLING_MASKED_MEAN (or unset: the first token)");
  }
  absl::StatusOr<std::string> tokenizer = ReadModelTokenizer(path, kMaxTokenizerBytes);
  if (!tokenizer.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "kaizen.json has text_input, so the file must carry its tokenizer as the extra file ",
        kTokenizerFileName, ": ", tokenizer.status().message()));
  }
  if (const std::string digest = common::Sha256Hex(*tokenizer); digest != in.tokenizer_sha256()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the ", kTokenizerFileName, " file's SHA-256 is ", digest,
                     " but kaizen.json text_input.tokenizer_sha256 says '",
                     absl::CHexEscape(in.tokenizer_sha256()), "'"));
  }
  kaizen::v1::Model model;
  model.set_architecture(!meta.architecture().empty() ? meta.architecture()
                                                      : CleanTypeName(module));
  model.set_description(meta.description());
  *model.mutable_text_input() = in;
  if (in.pooling() == kaizen::v1::TEXT_POOLING_UNSPECIFIED) {
    model.mutable_text_input()->set_pooling(kaizen::v1::TEXT_POOLING_FIRST_TOKEN);
  }
  ASSIGN_OR_RETURN(const int64_t parameter_count, CountParameters(module));
  model.set_parameter_count(parameter_count);
  module.eval();
  // One text as long as text_input allows, then a batch of shorter texts of
  // several lengths: a length of their own, so that [N, T] per-token
  // outputs are not mistaken for one vector per text.
  const TextProbe one = MakeTextProbe(in, 1, in.max_length());
  ASSIGN_OR_RETURN(c10::IValue output, ForwardText(module, one));
  const int64_t batch = std::max<int64_t>(2, options.batch_size);
  const TextProbe many =
      MakeTextProbe(in, batch, std::min<int64_t>(kTextProbeLength, in.max_length() - 1));
  std::string head_path = options.head_module;
  if (head_path.empty()) head_path = meta.head().module_path();
  if (head_path.empty()) {
    if (!options.class_names.empty() || meta.class_names_size() > 0) {
      return absl::InvalidArgumentError(
          "class_names are given but the text model names no head (head_module or kaizen.json "
          "head.module_path): an encoder gets a new head, and its classes come from the dataset "
          "of the job that fine-tunes it");
    }
    ASSIGN_OR_RETURN(const UploadedEncoder shape, ReadEncoderOutput(output, 1, one.ids.size(1)));
    ASSIGN_OR_RETURN(c10::IValue batched, ForwardText(module, many));
    ASSIGN_OR_RETURN(const UploadedEncoder again,
                     ReadEncoderOutput(batched, batch, many.ids.size(1)));
    if (again.output != shape.output || again.hidden_size != shape.hidden_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("the text encoder answers one text with ", Describe(output), " but ", batch,
                       " (serving's largest batch) with ", Describe(batched)));
    }
    // The head the server will put on, and the blocks a FINE_TUNE job
    // counts: found here, where the encoder's backward pass may run.
    UploadedEncoder described = shape;
    ASSIGN_OR_RETURN(torch::jit::Module wrapped,
                     WrapTextEncoder(module, shape,
                                     in.pooling() == kaizen::v1::TEXT_POOLING_MASKED_MEAN
                                         ? TextPooling::kMaskedMean
                                         : TextPooling::kFirstToken,
                                     2, /*seed=*/0));
    ASSIGN_OR_RETURN(described.blocks,
                     FindEncoderBlocks(wrapped, shape.hidden_size, many.ids, many.mask));
    if (encoder != nullptr) *encoder = std::move(described);
    return model;
  }
  ASSIGN_OR_RETURN(Head head, FindHead(module, head_path));
  const int64_t classes = head.weight.size(0);
  ASSIGN_OR_RETURN(std::vector<std::string> class_names, ClassNames(options, &meta, classes));
  RETURN_IF_ERROR(CheckLogits(output, head, classes));
  ASSIGN_OR_RETURN(c10::IValue batched, ForwardText(module, many));
  if (!batched.isTensor() || batched.toTensor().dim() != 2 || batched.toTensor().size(0) != batch ||
      batched.toTensor().size(1) != classes) {
    return absl::InvalidArgumentError(
        absl::StrCat("at batch size ", batch, " (serving's largest batch) the model returns ",
                     Describe(batched), "; expected [", batch, ",", classes, "]"));
  }
  FillHead(head, std::move(class_names), &model);
  return model;
}

absl::StatusOr<kaizen::v1::Model> Inspect(const std::string& path, const InspectOptions& options,
                                          std::optional<UploadedEncoder>* encoder) {
  if (!options.input_shape.empty()) {
    RETURN_IF_ERROR(ValidateShape(options.input_shape, options));
  }
  std::optional<kaizen::v1::Model> embedded;
  ASSIGN_OR_RETURN(torch::jit::Module module, LoadForInspection(path, &embedded));
  const kaizen::v1::Model* meta = embedded.has_value() ? &*embedded : nullptr;
  // Before any of the file's code runs.
  if (options.check_operators) {
    RETURN_IF_ERROR(CheckOperators(module, options.extra_operators));
  }
  if (meta != nullptr && meta->has_text_input()) {
    if (!options.input_shape.empty() || !options.mean.empty() || !options.std.empty()) {
      return absl::InvalidArgumentError(
          "input_shape and normalization describe images; this is a text model (kaizen.json has "
          "text_input)");
    }
    return InspectText(path, module, *meta, options, encoder);
  }

  kaizen::v1::Model model;
  model.set_architecture(meta != nullptr && !meta->architecture().empty() ? meta->architecture()
                                                                          : CleanTypeName(module));
  if (meta != nullptr) model.set_description(meta->description());
  ASSIGN_OR_RETURN(const int64_t parameter_count, CountParameters(module));
  model.set_parameter_count(parameter_count);

  std::string head_path = options.head_module;
  if (head_path.empty() && meta != nullptr) head_path = meta->head().module_path();
  ASSIGN_OR_RETURN(Head head, FindHead(module, head_path));
  const int64_t classes = head.weight.size(0);
  ASSIGN_OR_RETURN(std::vector<std::string> class_names, ClassNames(options, meta, classes));

  // Forward passes see eval-mode BatchNorm/Dropout, as serving will.
  module.eval();
  c10::IValue output;
  ASSIGN_OR_RETURN(std::vector<int64_t> input_shape,
                   FindInputShape(module, options, meta, &output));
  RETURN_IF_ERROR(CheckLogits(output, head, classes));
  if (options.batch_size > 1) {
    RETURN_IF_ERROR(CheckBatch(module, input_shape, options.batch_size, classes));
  }
  model.mutable_input_shape()->Assign(input_shape.begin(), input_shape.end());
  RETURN_IF_ERROR(FillNormalization(options, meta, input_shape[0], &model));
  FillHead(head, std::move(class_names), &model);
  return model;
}

}  // namespace

absl::StatusOr<kaizen::v1::Model> InspectTorchScriptFile(const std::string& path,
                                                         const InspectOptions& options,
                                                         std::optional<UploadedEncoder>* encoder) {
  if (encoder != nullptr) encoder->reset();
  // Torch calls are wrapped where they happen; this is the last line of
  // defence so that no exception crosses into the API layer.
  try {
    return Inspect(path, options, encoder);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("inspecting TorchScript file failed: ", TorchErrorSummary(e)));
  }
}

}  // namespace kaizen::models
