#include "server/api/oip_codec.h"

#include <algorithm>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "server/common/input_shape.h"
#include "server/common/oip_tensor.h"
#include "server/common/status_macros.h"

namespace kaizen::api {
namespace {

using inference::ModelInferRequest;
using inference::ModelInferResponse;

// How messages name the request's input: input "NAME".
std::string InputWhat(const ModelInferRequest::InferInputTensor& input) {
  return absl::StrCat("input \"", absl::CHexEscape(input.name()), "\"");
}

// Checks the one input's contents and datatype.
absl::Status CheckInputForm(const ModelInferRequest& request) {
  const ModelInferRequest::InferInputTensor& input = request.inputs(0);
  const std::string what = InputWhat(input);
  if (request.raw_input_contents_size() > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("raw_input_contents has ", request.raw_input_contents_size(),
                     " entries for 1 input tensor; expected one entry per input"));
  }
  if (request.raw_input_contents_size() == 1 && input.has_contents()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what,
                     " sets contents while the request also has raw_input_contents; the "
                     "protocol allows one or the other"));
  }
  if (input.datatype() != kOipFp32 && input.datatype() != kOipBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " has datatype \"", absl::CHexEscape(input.datatype()), "\"; expected ",
                     kOipFp32, " (preprocessed inputs, shape [N, C, H, W] or [C, H, W]) or ",
                     kOipBytes, " (encoded JPEG or PNG images, shape [N])"));
  }
  return absl::OkStatus();
}

// FP32 [N, C, H, W] or [C, H, W] -> one tensor input over `out->values`.
absl::Status DecodeFp32(const ModelInferRequest& request, const std::vector<int64_t>& chw,
                        int max_inputs, OipInputs* out) {
  const ModelInferRequest::InferInputTensor& input = request.inputs(0);
  serving::ModelInput in;
  in.kind = serving::ModelInput::Kind::kTensor;
  in.what = InputWhat(input);
  in.shape.assign(input.shape().begin(), input.shape().end());
  const auto& contents = input.contents().fp32_contents();
  ASSIGN_OR_RETURN(
      common::Fp32Batch batch,
      common::DecodeOipFp32(
          in.shape, chw, max_inputs,
          request.raw_input_contents_size() == 1 ? &request.raw_input_contents(0) : nullptr,
          absl::MakeConstSpan(contents.data(), contents.size()), in.what));
  out->values = std::move(batch.values);
  in.values = absl::MakeConstSpan(out->values);
  out->inputs.push_back(std::move(in));
  return absl::OkStatus();
}

// BYTES [N] -> the N elements, from raw_input_contents or contents.
absl::StatusOr<std::vector<absl::string_view>> BytesElements(const ModelInferRequest& request,
                                                             int max_inputs) {
  const ModelInferRequest::InferInputTensor& input = request.inputs(0);
  const std::string what = InputWhat(input);
  const std::string given = common::ShapeText(input.shape());
  if (input.shape_size() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " has shape ", given, "; expected [N] (", kOipBytes,
                     ", N encoded JPEG or PNG images, or N UTF-8 texts for a text model)"));
  }
  const int64_t n = input.shape(0);
  RETURN_IF_ERROR(common::CheckOipBatchSize(n, max_inputs, what, given));
  std::vector<absl::string_view> elements;
  if (request.raw_input_contents_size() == 1) {
    ASSIGN_OR_RETURN(elements, common::SplitOipRawBytes(request.raw_input_contents(0), what));
    if (static_cast<int64_t>(elements.size()) != n) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": raw_input_contents[0] holds ",
                                                     elements.size(), " elements; shape ", given,
                                                     " needs ", n));
    }
    return elements;
  }
  const auto& contents = input.contents().bytes_contents();
  if (contents.size() != n) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": contents.bytes_contents holds ",
                                                   contents.size(), " elements; shape ", given,
                                                   " needs ", n));
  }
  elements.assign(contents.begin(), contents.end());
  return elements;
}

// BYTES [N] of encoded images (or texts, for a text model) -> N inputs, "input \"x\"[i]".
absl::Status DecodeBytes(const ModelInferRequest& request, int max_inputs, OipInputs* out) {
  ASSIGN_OR_RETURN(std::vector<absl::string_view> elements, BytesElements(request, max_inputs));
  const std::string what = InputWhat(request.inputs(0));
  out->inputs.reserve(elements.size());
  for (size_t i = 0; i < elements.size(); ++i) {
    serving::ModelInput in;
    in.kind = serving::ModelInput::Kind::kEncodedImage;
    in.bytes_element = true;
    in.what = absl::StrCat(what, "[", i, "]");
    in.encoded_image = elements[i];
    out->inputs.push_back(std::move(in));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<int64_t> ParseOipVersion(absl::string_view field, absl::string_view text) {
  if (text.empty()) return 0;
  int64_t version = 0;
  const bool digits =
      std::all_of(text.begin(), text.end(), [](char c) { return absl::ascii_isdigit(c); });
  if (!digits || !absl::SimpleAtoi(text, &version) || version < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, " \"", absl::CHexEscape(text),
                     "\" is not a model version; expected \"\" (the version the model's policy "
                     "picks) or a number >= 1"));
  }
  return version;
}

absl::Status CheckOipRequestForm(const ModelInferRequest& request) {
  if (request.model_name().empty()) return absl::InvalidArgumentError("model_name is empty");
  if (request.inputs_size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat("the request has ", request.inputs_size(),
                                                   " input tensors; expected exactly one (\"",
                                                   kOipInputName, "\")"));
  }
  RETURN_IF_ERROR(CheckInputForm(request));
  for (const auto& output : request.outputs()) {
    if (output.name() != kOipOutputName) {
      return absl::InvalidArgumentError(
          absl::StrCat("requested output \"", absl::CHexEscape(output.name()),
                       "\" does not exist; the model has one output, \"", kOipOutputName, "\""));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<OipInputs> DecodeOipInputs(const ModelInferRequest& request,
                                          const std::vector<int64_t>& chw, int max_inputs) {
  OipInputs out;
  if (request.inputs(0).datatype() == kOipFp32) {
    RETURN_IF_ERROR(DecodeFp32(request, chw, max_inputs, &out));
  } else {
    RETURN_IF_ERROR(DecodeBytes(request, max_inputs, &out));
  }
  return out;
}

absl::Status EncodeOipOutput(const ModelInferRequest& request, int64_t version,
                             torch::Tensor probabilities, ModelInferResponse* response) {
  try {
    probabilities = probabilities.to(torch::kCPU, torch::kFloat).contiguous();
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat("cannot read the model's output: ", e.what_without_backtrace()));
  }
  if (probabilities.dim() != 2) {
    return absl::InternalError(absl::StrCat("the model answered a tensor of shape ",
                                            common::ShapeText(probabilities.sizes()),
                                            "; expected [N, classes]"));
  }
  response->set_model_name(request.model_name());
  response->set_model_version(absl::StrCat(version));
  response->set_id(request.id());
  ModelInferResponse::InferOutputTensor* output = response->add_outputs();
  output->set_name(kOipOutputName);
  output->set_datatype(kOipFp32);
  output->add_shape(probabilities.size(0));
  output->add_shape(probabilities.size(1));
  response->add_raw_output_contents(reinterpret_cast<const char*>(probabilities.data_ptr<float>()),
                                    static_cast<size_t>(probabilities.numel()) * sizeof(float));
  return absl::OkStatus();
}

}  // namespace kaizen::api
