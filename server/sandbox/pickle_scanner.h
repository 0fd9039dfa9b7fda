// Walks a Python pickle (the data.pkl and constants.pkl of a TorchScript
// archive) without building anything, to refuse the shapes that crash
// LibTorch's unpickler or the code after it: nesting deep enough to overflow
// the stack (a 2 MB data.pkl of nested lists is enough), self-referencing
// containers, and opcodes that no TorchScript writer emits. Torch-free, so it
// can be fuzzed alone.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace kaizen::sandbox {

struct PickleLimits {
  // Deepest nesting of containers (lists, tuples, dicts, objects).
  int max_depth = 200;
  // Most entries in the memo (PUT/MEMOIZE slots).
  int64_t max_memo_entries = 1 << 22;
  // Most containers in one pickle (bounds the scanner's own memory).
  int64_t max_containers = 1 << 22;
};

// OK when `bytes` is one well-formed pickle (protocol 0-5 opcodes, ending in
// STOP) within `limits`; otherwise INVALID_ARGUMENT naming the opcode, its
// offset and the rule it breaks. Refused on purpose: INST, OBJ, EXT1/2/4 and
// the text-mode PERSID (unused by TorchScript), mutating a container after it
// was nested in another, and pushing a container that is already on the stack
// (the only ways to build a cycle).
absl::Status ScanPickle(absl::string_view bytes, const PickleLimits& limits);

}  // namespace kaizen::sandbox
