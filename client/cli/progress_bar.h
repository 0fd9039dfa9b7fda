// A one-line transfer progress bar on stderr, e.g.
//   uploading fashion-train  [#########-----------]  45%  12.3/26.4 MiB  38.1
//   MiB/s
// It draws only when stderr is a terminal, so logs and pipes stay clean.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace kaizen::cli {

class ProgressBar {
 public:
  // `label` e.g. "uploading fashion-train". Draws nothing when !enabled.
  ProgressBar(std::string label, bool enabled, FILE* out = stderr);
  ~ProgressBar();
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  // Redraws at most ten times a second, and always on completion.
  void Update(int64_t done, int64_t total);
  // Draws the last state and ends the line; called by the destructor too.
  void Finish();

  // Whether stderr is a terminal, i.e. whether a bar would be seen.
  static bool StderrIsTerminal();

 private:
  void Draw();

  std::string label_;
  bool enabled_;
  FILE* out_;
  absl::Time start_;
  absl::Time last_draw_ = absl::InfinitePast();
  // When `done_` last grew: the rate stays honest while the server works on
  // the last byte (e.g. decodes an upload) and nothing moves.
  absl::Time last_progress_;
  int64_t done_ = 0;
  int64_t total_ = 0;
  bool drawn_ = false;
  bool finished_ = false;
};

// The line the bar draws, without terminal control characters; exposed for
// tests.
std::string FormatProgressLine(const std::string& label, int64_t done, int64_t total,
                               absl::Duration elapsed);

}  // namespace kaizen::cli
