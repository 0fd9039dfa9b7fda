// kaizen-tokenizer-trainer: trains a job's SentencePiece tokenizer in a
// process of its own (the server's half is server/jobs/text_job.cc's
// TrainTextTokenizer). Loads SentencePiece, confines itself (rlimits,
// seccomp: no writes, no network, no exec), reads the corpus on stdin (one
// text per line), trains with --spm_flags in memory and writes the
// serialized model on stdout. A failure exits nonzero with the reason on
// stderr. SentencePiece serialises every call in a process while it trains,
// and its memory grows with the corpus: here neither touches the server.
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <iostream>
#include <new>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/sandbox/child_limits.h"
#include "server/text/sentencepiece_tokenizer.h"

ABSL_FLAG(std::string, spm_flags, "",
          "spm_train's flags, without --input or --model_prefix (e.g. --vocab_size=4000).");
ABSL_FLAG(int64_t, memory_bytes, int64_t{4} << 30, "Address-space limit (RLIMIT_AS).");
ABSL_FLAG(int64_t, cpu_seconds, 600, "CPU-time limit (RLIMIT_CPU).");

namespace {

// Exit codes the server tells apart (TrainTextTokenizer).
constexpr int kTrainingFailed = 1;
constexpr int kSetupFailed = 2;
constexpr int kOutOfMemory = 3;

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  // The library is loaded (files opened, mapped) before the filter forbids
  // anything but reading.
  if (absl::Status loaded = kaizen::text::LoadSentencePieceLibrary(); !loaded.ok()) {
    std::cerr << loaded.message();
    return kSetupFailed;
  }
  kaizen::sandbox::ChildLimits limits;
  limits.memory_bytes = absl::GetFlag(FLAGS_memory_bytes);
  limits.cpu_seconds = absl::GetFlag(FLAGS_cpu_seconds);
  if (absl::Status confined = kaizen::sandbox::ConfineCurrentProcess(limits); !confined.ok()) {
    // Fail closed: nothing runs unconfined.
    std::cerr << "the tokenizer sandbox could not be set up: " << confined.message();
    return kSetupFailed;
  }
  try {
    std::string corpus;
    char buf[64 << 10];
    for (;;) {
      const ssize_t n = ::read(0, buf, sizeof(buf));
      if (n == 0) break;
      if (n < 0) {
        if (errno == EINTR) continue;
        std::cerr << "cannot read the corpus: " << std::strerror(errno);
        return kSetupFailed;
      }
      corpus.append(buf, static_cast<size_t>(n));
    }
    absl::StatusOr<std::string> model =
        kaizen::text::TrainSentencePieceModelOnLines(absl::GetFlag(FLAGS_spm_flags), corpus);
    if (!model.ok()) {
      std::cerr << model.status().message();
      return kTrainingFailed;
    }
    return kaizen::sandbox::WriteAll(1, *model) ? 0 : kSetupFailed;
  } catch (const std::bad_alloc&) {
    std::cerr << "out of memory";
    return kOutOfMemory;
  }
}
