// The limits of a text job's tokenizer training (text_job.h's
// TrainTextTokenizer), apart so that the job manager's options can name
// them without text_job.h's LibTorch.
#pragma once

#include <cstdint>
#include <string>

#include "absl/time/time.h"

namespace kaizen::jobs {

// Where and within what a job's tokenizer is trained: kaizen-tokenizer-
// trainer (server/text/tokenizer_trainer_main.cc), a child process confined
// by rlimits and a seccomp filter and killed at the deadline.
struct TokenizerSandbox {
  // The binary; empty: kaizen-tokenizer-trainer beside the running
  // executable.
  std::string trainer_path;
  int64_t memory_bytes = int64_t{4} << 30;  // RLIMIT_AS
  int64_t cpu_seconds = 600;                // RLIMIT_CPU
  absl::Duration timeout = absl::Seconds(900);
};

}  // namespace kaizen::jobs
