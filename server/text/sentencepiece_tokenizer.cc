#include "server/text/sentencepiece_tokenizer.h"

#include <dlfcn.h>
#include <limits.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "kaizen/internal/sentencepiece_model.pb.h"
#include "server/common/status_macros.h"
#include "server/common/utf8.h"
#include "server/text/sentencepiece_shim/sentencepiece_shim.h"

namespace kaizen::text {
namespace {

constexpr size_t kErrorBytes = 512;

// The library's entry points.
struct Shim {
  decltype(&kaizen_spm_load) load = nullptr;
  decltype(&kaizen_spm_free) free = nullptr;
  decltype(&kaizen_spm_encode) encode = nullptr;
  decltype(&kaizen_spm_describe) describe = nullptr;
  decltype(&kaizen_spm_piece) piece = nullptr;
  decltype(&kaizen_spm_train) train = nullptr;
  decltype(&kaizen_spm_train_lines) train_lines = nullptr;
  decltype(&kaizen_spm_reference_model) reference_model = nullptr;
};

std::vector<std::string> Candidates() {
  std::vector<std::string> paths;
  if (const char* env = std::getenv("KAIZEN_SENTENCEPIECE_LIBRARY"); env != nullptr && *env) {
    paths.emplace_back(env);
  }
  char exe[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n > 0) {
    std::string dir(exe, static_cast<size_t>(n));
    dir.resize(dir.rfind('/') + 1);
    paths.push_back(dir + "libkaizen_sentencepiece.so");
  }
#ifdef KAIZEN_SENTENCEPIECE_BUILD_PATH
  paths.emplace_back(KAIZEN_SENTENCEPIECE_BUILD_PATH);
#endif
  return paths;
}

absl::StatusOr<Shim> OpenShim() {
  // A link-map namespace of its own (dlmopen LM_ID_NEWLM): the library, its
  // protobuf copy and its C++ runtime resolve only among themselves, and
  // nothing of ours resolves to them. Only plain C values cross (the sinks
  // copy what comes back, so no memory is freed in the other namespace).
  std::vector<std::string> tried;
  void* handle = nullptr;
  for (const std::string& path : Candidates()) {
    handle = dlmopen(LM_ID_NEWLM, path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle != nullptr) break;
    const char* why = dlerror();
    tried.push_back(why != nullptr ? why : path);
  }
  if (handle == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot load libkaizen_sentencepiece.so (SentencePiece): ", absl::StrJoin(tried, "; ")));
  }
  Shim shim;
  const auto bind = [&](auto* field, const char* name) {
    *field = reinterpret_cast<std::remove_reference_t<decltype(*field)>>(dlsym(handle, name));
    return *field != nullptr;
  };
  if (!bind(&shim.load, "kaizen_spm_load") || !bind(&shim.free, "kaizen_spm_free") ||
      !bind(&shim.encode, "kaizen_spm_encode") || !bind(&shim.describe, "kaizen_spm_describe") ||
      !bind(&shim.piece, "kaizen_spm_piece") || !bind(&shim.train, "kaizen_spm_train") ||
      !bind(&shim.train_lines, "kaizen_spm_train_lines") ||
      !bind(&shim.reference_model, "kaizen_spm_reference_model")) {
    return absl::FailedPreconditionError(
        "libkaizen_sentencepiece.so lacks an entry point: it is not this build's");
  }
  return shim;
}

// Loaded once per process, on first use.
const absl::StatusOr<Shim>& TheShim() {
  static const absl::StatusOr<Shim> shim = OpenShim();
  return shim;
}

// One call at a time into the other namespace: its C library never saw our
// threads start, so it cannot be trusted to lock its own heap for them.
absl::Mutex& ShimMutex() {
  static absl::Mutex* mu = new absl::Mutex();
  return *mu;
}

// The normalization rules SentencePiece builds in; a model's character map
// must be one of theirs (or none).
constexpr const char* kRules[] = {"nmt_nfkc", "nfkc", "nmt_nfkc_cf", "nfkc_cf", "identity"};

// The character maps SentencePiece builds for kRules, each read from a small
// model it trains in memory; computed once. Caller holds ShimMutex().
absl::StatusOr<std::vector<std::string>> ReferenceCharsmaps(const Shim& shim) {
  static auto* maps =
      new absl::StatusOr<std::vector<std::string>>(absl::UnknownError("not computed"));
  static bool computed = false;
  if (computed) return *maps;
  computed = true;
  std::vector<std::string> out;
  for (const char* rule : kRules) {
    std::string model;
    char error[kErrorBytes] = {};
    const auto sink = [](void* context, const char* bytes, size_t n) {
      static_cast<std::string*>(context)->assign(bytes, n);
    };
    kaizen::internal::SentencePieceModelNormalizers parsed;
    if (shim.reference_model(rule, sink, &model, error, sizeof(error)) != 0 ||
        !parsed.ParseFromString(model)) {
      *maps = absl::InternalError(
          absl::StrCat("SentencePiece's own normalizer for '", rule, "': ", error));
      return *maps;
    }
    out.push_back(parsed.normalizer_spec().precompiled_charsmap());
  }
  *maps = std::move(out);
  return *maps;
}

// InvalidArgument unless every character map in `model` is empty or one
// SentencePiece builds itself: the library reads the map without checking
// it (a mutated map made its normalizer read out of bounds).
absl::Status CheckNormalizers(const Shim& shim, std::string_view model) {
  kaizen::internal::SentencePieceModelNormalizers parsed;
  if (!parsed.ParseFromArray(model.data(), static_cast<int>(model.size()))) {
    return absl::InvalidArgumentError(
        "not a SentencePiece model: the bytes are not a serialized ModelProto");
  }
  ASSIGN_OR_RETURN(const std::vector<std::string>& known, ReferenceCharsmaps(shim));
  for (const auto& [which, spec] :
       {std::pair<const char*, const kaizen::internal::SentencePieceNormalizer*>{
            "normalizer", &parsed.normalizer_spec()},
        {"denormalizer", &parsed.denormalizer_spec()}}) {
    const std::string& map = spec->precompiled_charsmap();
    if (map.empty() || std::find(known.begin(), known.end(), map) != known.end()) continue;
    return absl::InvalidArgumentError(absl::StrCat(
        "the SentencePiece model's ", which, " (rule '", common::SanitizeUtf8(spec->name()),
        "') carries a character map of ", map.size(),
        " bytes that SentencePiece does not build for any of its rules (nmt_nfkc, nfkc, "
        "nmt_nfkc_cf, nfkc_cf, identity); custom maps are refused"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<SentencePieceTokenizer>> SentencePieceTokenizer::Load(
    std::string_view model_bytes, const TokenizerLimits& limits) {
  if (static_cast<int64_t>(model_bytes.size()) > limits.max_model_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("the SentencePiece model has ",
                                                   model_bytes.size(), " bytes, over the limit of ",
                                                   limits.max_model_bytes));
  }
  if (model_bytes.empty()) {
    return absl::InvalidArgumentError("the SentencePiece model is empty");
  }
  const absl::StatusOr<Shim>& shim = TheShim();
  if (!shim.ok()) return shim.status();
  char error[kErrorBytes] = {};
  void* processor = nullptr;
  {
    absl::MutexLock lock(&ShimMutex());
    RETURN_IF_ERROR(CheckNormalizers(*shim, model_bytes));
    processor = shim->load(model_bytes.data(), model_bytes.size(), error, sizeof(error));
  }
  if (processor == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("not a SentencePiece model SentencePiece can run: ", error));
  }
  std::unique_ptr<SentencePieceTokenizer> tokenizer(new SentencePieceTokenizer(processor, limits));
  if (tokenizer->vocab_size() <= 0) {
    return absl::InvalidArgumentError("the SentencePiece model has no pieces");
  }
  return tokenizer;
}

SentencePieceTokenizer::SentencePieceTokenizer(void* processor, TokenizerLimits limits)
    : processor_(processor), limits_(limits) {
  int info[5] = {};
  absl::MutexLock lock(&ShimMutex());
  TheShim()->describe(processor_, info);
  for (int i = 0; i < 5; ++i) info_[i] = info[i];
}

SentencePieceTokenizer::~SentencePieceTokenizer() {
  absl::MutexLock lock(&ShimMutex());
  TheShim()->free(processor_);
}

absl::StatusOr<std::vector<int32_t>> SentencePieceTokenizer::Encode(std::string_view text) const {
  if (static_cast<int64_t>(text.size()) > limits_.max_text_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the text has ", text.size(), " bytes, over the limit of ", limits_.max_text_bytes));
  }
  if (const int64_t bad = common::FirstInvalidUtf8Byte(absl::string_view(text.data(), text.size()));
      bad >= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("the text is not valid UTF-8 at byte ", bad, " (of ", text.size(), ")"));
  }
  std::vector<int32_t> ids;
  char error[kErrorBytes] = {};
  const auto sink = [](void* context, const int* values, size_t n) {
    static_cast<std::vector<int32_t>*>(context)->assign(values, values + n);
  };
  absl::MutexLock lock(&ShimMutex());
  if (TheShim()->encode(processor_, text.data(), text.size(), sink, &ids, error, sizeof(error)) !=
      0) {
    return absl::InvalidArgumentError(absl::StrCat("SentencePiece: ", error));
  }
  return ids;
}

std::string SentencePieceTokenizer::Piece(int32_t id) const {
  std::string piece;
  const auto sink = [](void* context, const char* bytes, size_t n) {
    static_cast<std::string*>(context)->assign(bytes, n);
  };
  absl::MutexLock lock(&ShimMutex());
  TheShim()->piece(processor_, id, sink, &piece);
  return piece;
}

int32_t SentencePieceTokenizer::vocab_size() const { return info_[0]; }
int32_t SentencePieceTokenizer::unk_id() const { return info_[1]; }
int32_t SentencePieceTokenizer::bos_id() const { return info_[2]; }
int32_t SentencePieceTokenizer::eos_id() const { return info_[3]; }
int32_t SentencePieceTokenizer::pad_id() const { return info_[4]; }

absl::Status TrainSentencePieceModel(const std::string& flags) {
  const absl::StatusOr<Shim>& shim = TheShim();
  if (!shim.ok()) return shim.status();
  char error[kErrorBytes] = {};
  absl::MutexLock lock(&ShimMutex());
  if (shim->train(flags.c_str(), error, sizeof(error)) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("SentencePiece training: ", error));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> TrainSentencePieceModelOnLines(const std::string& flags,
                                                           absl::string_view corpus) {
  const absl::StatusOr<Shim>& shim = TheShim();
  if (!shim.ok()) return shim.status();
  char error[kErrorBytes] = {};
  std::string model;
  const auto sink = [](void* context, const char* bytes, size_t n) {
    static_cast<std::string*>(context)->assign(bytes, n);
  };
  absl::MutexLock lock(&ShimMutex());
  if (shim->train_lines(flags.c_str(), corpus.data(), corpus.size(), sink, &model, error,
                        sizeof(error)) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("SentencePiece training: ", error));
  }
  return model;
}

absl::Status LoadSentencePieceLibrary() { return TheShim().status(); }

}  // namespace kaizen::text
