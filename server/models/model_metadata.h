// The "kaizen.json" metadata that Kaizen embeds in the TorchScript files it
// writes (input shape, normalisation, class names, head), readable without
// the caller knowing anything about torch.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kaizen/v1/model_service.pb.h"

namespace kaizen::models {

// Name of the extra file inside a TorchScript archive (Python reads it with
// torch.jit.load(f, _extra_files={"kaizen.json": ""})).
inline constexpr absl::string_view kMetadataFileName = "kaizen.json";

// Name of the extra file that carries a text model's tokenizer (a
// SentencePiece model or a WordPiece vocabulary; Model.text_input says which
// and holds its SHA-256).
inline constexpr absl::string_view kTokenizerFileName = "kaizen_tokenizer";

// Proto3 JSON of `model`.
absl::StatusOr<std::string> ModelToMetadataJson(const kaizen::v1::Model& model);

// Parses proto3 JSON; unknown fields are ignored so that newer servers'
// files stay readable.
absl::StatusOr<kaizen::v1::Model> ModelFromMetadataJson(absl::string_view json);

// Reads kaizen.json from a TorchScript file without loading the module.
// NOT_FOUND if the file or its kaizen.json is missing; INVALID_ARGUMENT if
// the file is not a TorchScript archive or the JSON does not parse.
absl::StatusOr<kaizen::v1::Model> ReadModelMetadata(const std::string& path);

// Reads the kaizen_tokenizer file of a TorchScript file without loading the
// module. NOT_FOUND if the file or its tokenizer is missing;
// RESOURCE_EXHAUSTED over `max_bytes` (checked on the archive's record size
// before anything is read); INVALID_ARGUMENT if the file is not a
// TorchScript archive.
absl::StatusOr<std::string> ReadModelTokenizer(const std::string& path, int64_t max_bytes);

}  // namespace kaizen::models
