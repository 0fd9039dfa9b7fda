// Inspects an uploaded TorchScript file in kaizen-model-inspector, a
// short-lived child process (posix_spawn) confined by rlimits and a seccomp
// filter (server/sandbox/child_limits.h) and killed at a wall-clock deadline:
// the archive pre-check, torch::jit::load, the operator allow-list and the
// forward passes all run there, so that a model that crashes the loader,
// loops forever, allocates without bound or calls file operations harms only
// that process.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "kaizen/internal/model_inspection.pb.h"
#include "kaizen/v1/model_service.pb.h"
#include "server/models/text_encoder.h"

namespace kaizen::models {

struct SandboxOptions {
  // The inspector binary; empty: kaizen-model-inspector beside the running
  // executable.
  std::string inspector_path;
  // The child's address-space limit (RLIMIT_AS).
  int64_t memory_bytes = int64_t{4} << 30;
  // The child's CPU-time limit (RLIMIT_CPU).
  int64_t cpu_seconds = 120;
  // Killed when still running after this.
  absl::Duration timeout = absl::Seconds(180);
  // The second forward pass's batch size (serving's largest batch).
  int64_t serving_batch_size = 32;
  // Largest input height * width accepted.
  int64_t max_image_pixels = 25'000'000;
  // Operators accepted beyond the built-in allow-list.
  std::vector<std::string> extra_operators;
  // Archive pre-check limits (server/sandbox/torchscript_precheck.h).
  int64_t max_members = 100'000;
  int64_t max_unpacked_bytes = int64_t{8} << 30;
  int64_t max_pickle_bytes = int64_t{64} << 20;
  int32_t max_pickle_depth = 200;
};

// The model as InspectTorchScriptFile describes it, with `header`'s
// input_shape, normalization, class_names and head_module applied. A model
// that is refused, crashes the inspector, hits a limit or the deadline is
// INVALID_ARGUMENT with the reason; a missing inspector binary is INTERNAL.
// A text encoder without a head comes back with `encoder` (when not null)
// saying how its output reads (torchscript_inspector.h).
absl::StatusOr<kaizen::v1::Model> InspectInSandbox(
    const std::string& path, const kaizen::v1::UploadModelHeader& header,
    const SandboxOptions& options, std::optional<UploadedEncoder>* encoder = nullptr);

// Between models::UploadedEncoder and the inspector's answer.
kaizen::internal::TextEncoderOutput EncoderOutputToProto(const UploadedEncoder& encoder);
// std::nullopt for a kind that is unset or unknown, or a hidden size outside
// [1, kMaxUploadedHiddenSize].
std::optional<UploadedEncoder> EncoderOutputFromProto(
    const kaizen::internal::TextEncoderOutput& proto);

// kaizen-model-inspector beside /proc/self/exe.
std::string DefaultInspectorPath();

}  // namespace kaizen::models
