#include "server/training/resume_state.h"

#include <cstring>
#include <type_traits>

#include "absl/status/status.h"

namespace kaizen::training {
namespace {

constexpr char kMagic[4] = {'K', 'Z', 'R', 'S'};
// 1: epoch boundaries only. 2: adds good_steps and the position within an
// epoch. 3: adds feature_standardization.
constexpr uint32_t kVersion = 4;
constexpr uint32_t kFirstVersion = 1;

class Writer {
 public:
  template <typename T>
  void Put(T v) {
    static_assert(std::is_trivially_copyable_v<T>);
    char buf[sizeof(T)];
    std::memcpy(buf, &v, sizeof(T));  // the servers we build for are little-endian
    out_.append(buf, sizeof(T));
  }
  void PutBytes(absl::string_view s) {
    Put<uint64_t>(s.size());
    out_.append(s.data(), s.size());
  }
  std::string Take() { return std::move(out_); }

 private:
  std::string out_;
};

class Reader {
 public:
  explicit Reader(absl::string_view in) : in_(in) {}
  template <typename T>
  bool Get(T* v) {
    if (in_.size() < sizeof(T)) return false;
    std::memcpy(v, in_.data(), sizeof(T));
    in_.remove_prefix(sizeof(T));
    return true;
  }
  bool GetBytes(std::string* s) {
    uint64_t n = 0;
    if (!Get(&n) || in_.size() < n) return false;
    s->assign(in_.data(), n);
    in_.remove_prefix(n);
    return true;
  }
  bool done() const { return in_.empty(); }

 private:
  absl::string_view in_;
};

}  // namespace

std::string EncodeResumeState(const ResumeState& s) {
  Writer w;
  for (char c : kMagic) w.Put(c);
  // Without a masked-language-model head, version 3: replicas of the
  // previous release still read the states of every other job during a
  // rolling upgrade.
  const uint32_t version = s.masked_lm_head.empty() ? 3 : kVersion;
  w.Put(version);
  w.Put(s.epochs_completed);
  w.Put(s.global_step);
  w.Put(s.seed);
  w.Put<uint8_t>(s.has_best ? 1 : 0);
  w.Put(s.best_metric);
  w.Put(s.best_epoch);
  w.Put(s.patience_reference);
  w.Put(s.epochs_without_improvement);
  w.Put(s.loss_scale);
  w.Put<uint64_t>(s.history.size());
  for (const auto& m : s.history) w.PutBytes(m.SerializeAsString());
  w.PutBytes(s.optimizer);
  w.Put(s.good_steps);
  const EpochPosition& p = s.position;
  w.Put(p.step);
  w.Put(p.loss_sum);
  w.Put(p.correct);
  w.Put(p.seen);
  w.Put(p.learning_rate);
  w.Put(p.seconds);
  w.PutBytes(p.torch_rng);
  w.PutBytes(p.cuda_rng);
  w.PutBytes(p.augment_rng);
  w.PutBytes(s.feature_standardization);
  if (version >= 4) w.PutBytes(s.masked_lm_head);
  return w.Take();
}

absl::StatusOr<ResumeState> DecodeResumeState(absl::string_view bytes) {
  const absl::Status bad = absl::InvalidArgumentError("the resume state is damaged or truncated");
  Reader r(bytes);
  char magic[4];
  for (char& c : magic) {
    if (!r.Get(&c)) return bad;
  }
  uint32_t version = 0;
  if (std::memcmp(magic, kMagic, 4) != 0 || !r.Get(&version)) return bad;
  if (version < kFirstVersion || version > kVersion) {
    return absl::InvalidArgumentError("the resume state was written by another Kaizen version");
  }
  ResumeState s;
  uint8_t has_best = 0;
  uint64_t history = 0;
  if (!r.Get(&s.epochs_completed) || !r.Get(&s.global_step) || !r.Get(&s.seed) ||
      !r.Get(&has_best) || !r.Get(&s.best_metric) || !r.Get(&s.best_epoch) ||
      !r.Get(&s.patience_reference) || !r.Get(&s.epochs_without_improvement) ||
      !r.Get(&s.loss_scale) || !r.Get(&history) || history > 1000000) {
    return bad;
  }
  s.has_best = has_best != 0;
  for (uint64_t i = 0; i < history; ++i) {
    std::string m;
    if (!r.GetBytes(&m) || !s.history.emplace_back().ParseFromString(m)) return bad;
  }
  if (!r.GetBytes(&s.optimizer)) return bad;
  if (version >= 2) {
    EpochPosition& p = s.position;
    if (!r.Get(&s.good_steps) || !r.Get(&p.step) || !r.Get(&p.loss_sum) || !r.Get(&p.correct) ||
        !r.Get(&p.seen) || !r.Get(&p.learning_rate) || !r.Get(&p.seconds) ||
        !r.GetBytes(&p.torch_rng) || !r.GetBytes(&p.cuda_rng) || !r.GetBytes(&p.augment_rng) ||
        p.step < 0) {
      return bad;
    }
  }
  if (version >= 3 && !r.GetBytes(&s.feature_standardization)) return bad;
  if (version >= 4 && !r.GetBytes(&s.masked_lm_head)) return bad;
  if (!r.done()) return bad;
  return s;
}

}  // namespace kaizen::training
