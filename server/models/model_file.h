// Writes TorchScript modules with Kaizen's metadata embedded, durably: a
// reader (or a crash) sees either the previous file or the complete new one.
#pragma once

#include <torch/script.h>

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "kaizen/v1/model_service.pb.h"
#include "server/models/model_metadata.h"

namespace kaizen::models {

// Saves `module` to `path` with the proto3 JSON of `metadata` as the extra
// file "kaizen.json": written to "<path>.tmp-<random>" in the same
// directory, fsync'ed, renamed over `path`, then the directory fsync'ed.
// torch.jit.load(f, _extra_files={"kaizen.json": ""}), ReadModelMetadata and
// InspectTorchScriptFile all read the metadata back.
//
// A text model (metadata.text_input set) carries its tokenizer as the extra
// file "kaizen_tokenizer": `tokenizer` must be non-empty and its SHA-256 the
// metadata's text_input.tokenizer_sha256 (InvalidArgument otherwise); other
// models take no tokenizer.
absl::Status SaveModelFile(const torch::jit::Module& module, const kaizen::v1::Model& metadata,
                           const std::string& path, std::string_view tokenizer = {});

}  // namespace kaizen::models
