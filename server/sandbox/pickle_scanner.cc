#include "server/sandbox/pickle_scanner.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace kaizen::sandbox {
namespace {

constexpr size_t kMaxLineBytes = 4096;

// One value on the unpickler's stack. Containers (lists, dicts, sets, tuples,
// objects) have an id into the scanner's table; scalars do not.
struct Item {
  int64_t id = -1;
  int depth = 0;
};

struct Container {
  int depth = 1;
  bool mutable_ = true;  // false for tuples
  bool sealed = false;   // nested into another value: no more changes
};

class Scanner {
 public:
  Scanner(absl::string_view bytes, const PickleLimits& limits) : in_(bytes), limits_(limits) {}

  absl::Status Run() {
    while (true) {
      if (pos_ >= in_.size()) return Error("the pickle ends without STOP");
      op_offset_ = pos_;
      op_ = static_cast<uint8_t>(in_[pos_++]);
      if (op_ == '.')
        return stack_.size() == 1 ? absl::OkStatus() : Error("STOP leaves no single value");
      if (absl::Status st = Step(); !st.ok()) return st;
    }
  }

 private:
  absl::Status Error(absl::string_view why) const {
    return absl::InvalidArgumentError(
        absl::StrFormat("pickle opcode 0x%02x at offset %d: %s", op_, op_offset_, why));
  }

  absl::Status Skip(uint64_t n) {
    if (n > in_.size() - pos_) return Error("argument runs past the end");
    pos_ += n;
    return absl::OkStatus();
  }
  absl::Status ReadUint(int bytes, uint64_t* value) {
    if (static_cast<size_t>(bytes) > in_.size() - pos_) return Error("argument runs past the end");
    *value = 0;
    for (int i = 0; i < bytes; ++i) {
      *value |= static_cast<uint64_t>(static_cast<uint8_t>(in_[pos_ + i])) << (8 * i);
    }
    pos_ += bytes;
    return absl::OkStatus();
  }
  // A length-prefixed argument: a `bytes`-byte little-endian length, then data.
  absl::Status SkipCounted(int bytes) {
    uint64_t n = 0;
    if (absl::Status st = ReadUint(bytes, &n); !st.ok()) return st;
    return Skip(n);
  }
  absl::Status SkipLine() {
    const size_t end = in_.find('\n', pos_);
    if (end == absl::string_view::npos || end - pos_ > kMaxLineBytes) {
      return Error("text argument without a newline within 4096 bytes");
    }
    pos_ = end + 1;
    return absl::OkStatus();
  }

  int DepthOf(const Item& item) const {
    return item.id >= 0 ? containers_[item.id].depth : item.depth;
  }

  absl::Status Push(Item item) {
    if (item.id >= 0) {
      if (on_stack_[item.id]++ > 0 && containers_[item.id].mutable_) {
        return Error("a container is pushed while already on the stack (a cycle)");
      }
    }
    stack_.push_back(item);
    return absl::OkStatus();
  }
  absl::Status Pop(Item* item) {
    const size_t floor = marks_.empty() ? 0 : marks_.back();
    if (stack_.size() <= floor) return Error("stack underflow");
    *item = stack_.back();
    stack_.pop_back();
    if (item->id >= 0) --on_stack_[item->id];
    return absl::OkStatus();
  }
  // Pops everything above the newest mark; `depth` is their deepest value.
  absl::Status PopToMark(int* depth) {
    if (marks_.empty()) return Error("no MARK to pop to");
    *depth = 0;
    while (stack_.size() > marks_.back()) {
      Item item = stack_.back();
      stack_.pop_back();
      if (item.id >= 0) --on_stack_[item.id];
      *depth = std::max(*depth, DepthOf(item));
      Seal(item);
    }
    marks_.pop_back();
    return absl::OkStatus();
  }
  void Seal(const Item& item) {
    if (item.id >= 0) containers_[item.id].sealed = true;
  }
  absl::Status NewContainer(int child_depth, bool is_mutable) {
    if (child_depth + 1 > limits_.max_depth) return DepthError();
    if (static_cast<int64_t>(containers_.size()) >= limits_.max_containers) {
      return Error(absl::StrCat("more than ", limits_.max_containers, " containers"));
    }
    containers_.push_back({child_depth + 1, is_mutable, false});
    on_stack_.push_back(0);
    return Push({static_cast<int64_t>(containers_.size()) - 1, 0});
  }
  absl::Status DepthError() const {
    return Error(absl::StrCat("containers nest deeper than ", limits_.max_depth));
  }
  // The value on top of the stack receives values of `child_depth`.
  absl::Status Mutate(int child_depth) {
    const size_t floor = marks_.empty() ? 0 : marks_.back();
    if (stack_.size() <= floor) return Error("nothing to add to");
    const Item& target = stack_.back();
    if (target.id < 0 || !containers_[target.id].mutable_) return Error("target is not mutable");
    Container& c = containers_[target.id];
    if (c.sealed) return Error("a container is changed after it was nested in another");
    c.depth = std::max(c.depth, child_depth + 1);
    if (c.depth > limits_.max_depth) return DepthError();
    return absl::OkStatus();
  }
  // Pops `n` values, seals them, and returns their deepest depth.
  absl::Status PopValues(int n, int* depth) {
    *depth = 0;
    for (int i = 0; i < n; ++i) {
      Item item;
      if (absl::Status st = Pop(&item); !st.ok()) return st;
      *depth = std::max(*depth, DepthOf(item));
      Seal(item);
    }
    return absl::OkStatus();
  }
  absl::Status Put(uint64_t index) {
    if (stack_.empty()) return Error("nothing to memoize");
    if (!memo_.contains(index) && static_cast<int64_t>(memo_.size()) >= limits_.max_memo_entries) {
      return Error(absl::StrCat("more than ", limits_.max_memo_entries, " memo entries"));
    }
    memo_[index] = stack_.back();
    return absl::OkStatus();
  }
  absl::Status Get(uint64_t index) {
    auto it = memo_.find(index);
    if (it == memo_.end()) return Error(absl::StrCat("memo entry ", index, " was never stored"));
    return Push(it->second);
  }

  absl::Status Step();
  absl::Status StepWithArgument(bool* handled);

  absl::string_view in_;
  const PickleLimits& limits_;
  size_t pos_ = 0;
  size_t op_offset_ = 0;
  uint8_t op_ = 0;
  std::vector<Item> stack_;
  std::vector<size_t> marks_;
  std::vector<Container> containers_;
  std::vector<int32_t> on_stack_;
  absl::flat_hash_map<uint64_t, Item> memo_;
};

// Opcodes that only read an argument and push a scalar, or touch the memo.
absl::Status Scanner::StepWithArgument(bool* handled) {
  *handled = true;
  uint64_t v = 0;
  absl::Status st;
  switch (op_) {
    case 'K':
    case 'q':
    case 'h':
    case 0x80:  // 1-byte argument
      st = ReadUint(1, &v);
      if (st.ok() && op_ == 0x80 && v > 5) return Error(absl::StrCat("protocol ", v));
      if (st.ok() && op_ == 'q') return Put(v);
      if (st.ok() && op_ == 'h') return Get(v);
      if (op_ == 0x80 || !st.ok()) return st;
      return Push({});
    case 'M':
      st = ReadUint(2, &v);
      break;
    case 'J':
      st = ReadUint(4, &v);
      break;
    case 'G':
      st = Skip(8);
      break;
    case 'r':
    case 'j':
      st = ReadUint(4, &v);
      if (!st.ok()) return st;
      return op_ == 'r' ? Put(v) : Get(v);
    case 0x94:
      return Put(memo_.size());  // MEMOIZE
    case 0x95:
      return Skip(8);  // FRAME: its opcodes follow inline
    case 'U':
    case 'C':
    case 0x8c:
    case 0x8a:
      st = SkipCounted(1);
      break;
    case 'T':
    case 'X':
    case 'B':
    case 0x8b:
      st = SkipCounted(4);
      break;
    case 0x8d:
    case 0x8e:
    case 0x96:
      st = SkipCounted(8);
      break;
    case 'I':
    case 'L':
    case 'F':
    case 'S':
    case 'V':
      st = SkipLine();
      break;
    case 'N':
    case 0x88:
    case 0x89:
      break;   // None, True, False
    case 'c':  // GLOBAL module\nname\n
      st = SkipLine();
      if (st.ok()) st = SkipLine();
      break;
    default:
      *handled = false;
      return absl::OkStatus();
  }
  if (!st.ok()) return st;
  return Push({});
}

absl::Status Scanner::Step() {
  bool handled = false;
  if (absl::Status st = StepWithArgument(&handled); !st.ok() || handled) return st;
  int depth = 0;
  Item item;
  absl::Status st;
  switch (op_) {
    case '(':  // MARK
      marks_.push_back(stack_.size());
      return absl::OkStatus();
    case '0':
      return Pop(&item);
    case '1':
      return PopToMark(&depth);
    case '2':  // DUP
      if (stack_.empty()) return Error("stack underflow");
      return Push(stack_.back());
    case ']':
    case '}':
    case 0x8f:
      return NewContainer(0, true);
    case ')':
      return NewContainer(0, false);
    case 't':
    case 0x91:  // TUPLE, FROZENSET
      if (absl::Status s = PopToMark(&depth); !s.ok()) return s;
      return NewContainer(depth, false);
    case 'l':
    case 'd':  // LIST, DICT
      if (absl::Status s = PopToMark(&depth); !s.ok()) return s;
      return NewContainer(depth, true);
    case 0x85:
    case 0x86:
    case 0x87:  // TUPLE1..3
      if (absl::Status s = PopValues(op_ - 0x84, &depth); !s.ok()) return s;
      return NewContainer(depth, false);
    case 'a':  // APPEND
      if (absl::Status s = PopValues(1, &depth); !s.ok()) return s;
      return Mutate(depth);
    case 's':  // SETITEM
      if (absl::Status s = PopValues(2, &depth); !s.ok()) return s;
      return Mutate(depth);
    case 'b':  // BUILD
      if (absl::Status s = PopValues(1, &depth); !s.ok()) return s;
      return Mutate(depth);
    case 'e':
    case 'u':
    case 0x90:  // APPENDS, SETITEMS, ADDITEMS
      if (absl::Status s = PopToMark(&depth); !s.ok()) return s;
      return Mutate(depth);
    case 'R':
    case 0x81:  // REDUCE, NEWOBJ: callable/class and arguments
      if (absl::Status s = PopValues(2, &depth); !s.ok()) return s;
      return NewContainer(depth, true);
    case 0x92:  // NEWOBJ_EX
      if (absl::Status s = PopValues(3, &depth); !s.ok()) return s;
      return NewContainer(depth, true);
    case 0x93:  // STACK_GLOBAL
      if (absl::Status s = PopValues(2, &depth); !s.ok()) return s;
      return Push({});
    case 'Q':  // BINPERSID: a tensor's storage
      if (absl::Status s = PopValues(1, &depth); !s.ok()) return s;
      if (depth + 1 > limits_.max_depth) return DepthError();
      return Push({-1, depth + 1});
    case 0x97:
    case 0x98:  // NEXT_BUFFER, READONLY_BUFFER
      return Error("out-of-band buffers are not used by TorchScript");
    default:
      return Error("opcode not accepted in a TorchScript archive");
  }
}

}  // namespace

absl::Status ScanPickle(absl::string_view bytes, const PickleLimits& limits) {
  Scanner scanner(bytes, limits);
  return scanner.Run();
}

}  // namespace kaizen::sandbox
