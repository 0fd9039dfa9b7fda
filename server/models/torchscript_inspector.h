// Reads what the service needs to know about an uploaded TorchScript
// classifier (input shape, normalisation, head, class count) and proves it
// runs, so that a bad upload is rejected with a precise message instead of
// failing later inside a training job.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kaizen/v1/model_service.pb.h"
#include "server/models/text_encoder.h"

namespace kaizen::models {

struct InspectOptions {
  // [C, H, W]; empty -> the file's kaizen.json, else probed (224, 32, 28).
  std::vector<int64_t> input_shape;
  // Per-channel (or one value for all channels); empty -> kaizen.json, else
  // ImageNet statistics for 3 channels and 0.5/0.5 otherwise.
  std::vector<float> mean;
  std::vector<float> std;
  // Empty -> kaizen.json's, else none.
  std::vector<std::string> class_names;
  // Dotted path of the classification head; empty -> kaizen.json's, else the
  // last Linear module in named_modules() order.
  std::string head_module;
  // A second forward pass runs at this batch size (serving's largest batch)
  // and must give [batch_size, K]; <= 1 skips it.
  int64_t batch_size = 1;
  // Largest H * W of the input shape (given, from kaizen.json or probed).
  int64_t max_image_pixels = 25'000'000;
  // Largest channel count of the input shape.
  int64_t max_channels = 16;
  // Checked against the operator allow-list (operator_allowlist.h) before
  // anything runs; `extra_operators` are accepted too.
  bool check_operators = true;
  std::vector<std::string> extra_operators;
};

// Loads the file and fills architecture, input_shape, normalization,
// class_names, head (LINEAR) and parameter_count; architecture is
// kaizen.json's when the file has one (so a fine-tuned builtin stays
// "resnet-small"), else the root module's type name, and description comes
// from kaizen.json. The caller sets name, source, version, size and hashes.
// Verifies with a forward pass in eval mode on zeros [1, C, H, W] that the
// output is [1, K] with K == head.out_features and that class_names, if any,
// has K entries, and at options.batch_size that the output is [batch, K].
// Every failure is INVALID_ARGUMENT with the reason, except a missing file
// (NOT_FOUND). It runs the file's code: uploads go through
// InspectInSandbox (sandboxed_inspection.h), never through this directly.
//
// A text model (kaizen.json has text_input, and the file carries the
// tokenizer it names as the extra file kaizen_tokenizer with that SHA-256)
// is run on int64 input_ids and an attention_mask, one text and then
// options.batch_size texts of several lengths. With a head (options.head_module
// or kaizen.json's) it must give [N, K] logits like an image classifier, and
// the model gets text_input, head and class_names. Without one it is an
// encoder: `encoder` (when not null) says how its output reads, and the
// model has text_input but no head; the server puts one on
// (WrapTextEncoder). input_shape and normalization are refused for text.
absl::StatusOr<kaizen::v1::Model> InspectTorchScriptFile(
    const std::string& path, const InspectOptions& options,
    std::optional<UploadedEncoder>* encoder = nullptr);

}  // namespace kaizen::models
