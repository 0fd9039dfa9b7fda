// Bounds on the text and list sizes that the catalogue stores and answers
// with. A stored record is sent back by Get and List to every caller, so one
// bad or huge value (invalid UTF-8, which protobuf refuses to parse; a
// megabyte of class names) would break or bloat those answers for everyone.
// Everything a client (or an uploaded file) supplies is checked here before it
// is stored; the messages name the field and the limit.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/message.h"
#include "server/common/utf8.h"  // IsValidUtf8 and friends, for the callers of these checks

namespace kaizen::common {

// Longest class name, in bytes of UTF-8.
inline constexpr size_t kMaxClassNameBytes = 128;
// Most classes a dataset or model may have.
inline constexpr int kMaxClasses = 5000;
// Longest description, in bytes of UTF-8.
inline constexpr size_t kMaxDescriptionBytes = 4096;
// Longest free-form identifier or label in a request (request_id, a metric
// name), in bytes.
inline constexpr size_t kMaxTokenBytes = 256;
// Largest catalogue record (a Dataset or Model, serialized). With it and
// kMaxPageBytes no List answer nears gRPC's message limit.
inline constexpr size_t kMaxRecordBytes = 1 << 20;
// A List page stops adding records once it holds this many bytes.
inline constexpr size_t kMaxPageBytes = 4 << 20;

// A class name: 1..kMaxClassNameBytes bytes of valid UTF-8 with no control
// characters (C0, DEL, C1, line or paragraph separators). INVALID_ARGUMENT
// naming `field` otherwise.
absl::Status ValidateClassName(absl::string_view field, absl::string_view name);

// At most kMaxClasses names, each valid as above, none given twice.
// `field` names the list ("header.class_names"); elements are reported as
// field[i].
absl::Status ValidateClassNames(absl::string_view field, const std::vector<std::string>& names);

// At most kMaxDescriptionBytes of valid UTF-8; tabs and newlines are the
// only control characters allowed.
absl::Status ValidateDescription(absl::string_view field, absl::string_view text);

// At most `max_bytes` of valid UTF-8 without control characters.
absl::Status ValidateToken(absl::string_view field, absl::string_view text, size_t max_bytes);

// INVALID_ARGUMENT when a repeated field has more than `max` elements.
absl::Status ValidateCount(absl::string_view field, int count, int max);

// The last line of defence before a record is stored: every string field
// (at any depth) must be valid UTF-8 and the whole record at most
// kMaxRecordBytes. `what` names the record in messages ("dataset \"x\"").
absl::Status ValidateRecord(absl::string_view what, const google::protobuf::Message& record);

}  // namespace kaizen::common
