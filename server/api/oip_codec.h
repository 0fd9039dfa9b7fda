// The Open Inference Protocol (KServe v2) tensor codec: checks the form of a
// ModelInferRequest, turns its one input tensor (FP32 [N, C, H, W] /
// [C, H, W], or BYTES [N] of encoded images, from raw_input_contents or
// contents) into the Predictor's protocol-neutral ModelInputs, and writes the
// model's probabilities back as Triton answers them. The byte-level parsing
// of untrusted contents is common/oip_tensor.h (torch-free, fuzzed).
#pragma once

#include <torch/script.h>

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "inference/grpc_service.pb.h"
#include "server/serving/predictor.h"

namespace kaizen::api {

// The tensor names and datatypes Kaizen's models show over OIP.
inline constexpr char kOipInputName[] = "input";
inline constexpr char kOipOutputName[] = "probabilities";
inline constexpr char kOipFp32[] = "FP32";
inline constexpr char kOipBytes[] = "BYTES";

// "" -> 0, the version the model's policy picks; decimal digits -> that
// version (>= 1). InvalidArgument naming `field` otherwise.
absl::StatusOr<int64_t> ParseOipVersion(absl::string_view field, absl::string_view text);

// Checks what needs no model: a model name, one input of a supported
// datatype, its values in one place, and only outputs the model has.
// InvalidArgument saying which.
absl::Status CheckOipRequestForm(const inference::ModelInferRequest& request);

// The request's input as ModelInputs, checked against the model's `chw` and
// at most `max_inputs` inputs: one tensor for FP32, one image per element for
// BYTES. Views into the request (and into `values`, the FP32 values copied
// out of raw bytes that need not be float-aligned); move-only, so that the
// views stay valid. Call CheckOipRequestForm first.
struct OipInputs {
  OipInputs() = default;
  OipInputs(OipInputs&&) = default;
  OipInputs& operator=(OipInputs&&) = default;
  OipInputs(const OipInputs&) = delete;
  OipInputs& operator=(const OipInputs&) = delete;

  std::vector<float> values;
  std::vector<serving::ModelInput> inputs;
};
absl::StatusOr<OipInputs> DecodeOipInputs(const inference::ModelInferRequest& request,
                                          const std::vector<int64_t>& chw, int max_inputs);

// Writes `probabilities` [N, classes] as the FP32 output "probabilities" in
// raw_output_contents, with the request's model name and id and `version`.
// Internal when the model answered another shape.
absl::Status EncodeOipOutput(const inference::ModelInferRequest& request, int64_t version,
                             torch::Tensor probabilities, inference::ModelInferResponse* response);

}  // namespace kaizen::api
