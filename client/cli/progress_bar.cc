#include "client/cli/progress_bar.h"

#include <unistd.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace kaizen::cli {
namespace {

constexpr int kBarWidth = 20;
constexpr absl::Duration kRedrawInterval = absl::Milliseconds(100);

struct Unit {
  double divisor;
  const char* name;
};

Unit UnitFor(int64_t bytes) {
  if (bytes >= (int64_t{1} << 30)) return {1024.0 * 1024.0 * 1024.0, "GiB"};
  if (bytes >= (int64_t{1} << 20)) return {1024.0 * 1024.0, "MiB"};
  return {1024.0, "KiB"};
}

}  // namespace

std::string FormatProgressLine(const std::string& label, int64_t done, int64_t total,
                               absl::Duration elapsed) {
  const double fraction =
      total > 0 ? std::clamp(static_cast<double>(done) / total, 0.0, 1.0) : (done > 0 ? 1.0 : 0.0);
  const int filled = static_cast<int>(fraction * kBarWidth);
  const Unit unit = UnitFor(std::max(total, done));
  const double seconds = absl::ToDoubleSeconds(elapsed);
  const double rate = seconds > 0 ? done / seconds / (1024.0 * 1024.0) : 0.0;
  return absl::StrFormat("%s  [%s%s]  %3d%%  %.1f/%.1f %s  %.1f MiB/s", label,
                         std::string(filled, '#'), std::string(kBarWidth - filled, '-'),
                         static_cast<int>(fraction * 100), done / unit.divisor,
                         total / unit.divisor, unit.name, rate);
}

ProgressBar::ProgressBar(std::string label, bool enabled, FILE* out)
    : label_(std::move(label)),
      enabled_(enabled),
      out_(out),
      start_(absl::Now()),
      last_progress_(start_) {}

ProgressBar::~ProgressBar() { Finish(); }

bool ProgressBar::StderrIsTerminal() { return ::isatty(STDERR_FILENO) == 1; }

void ProgressBar::Update(int64_t done, int64_t total) {
  const absl::Time now = absl::Now();
  if (done != done_) last_progress_ = now;
  done_ = done;
  total_ = total;
  if (!enabled_ || finished_) return;
  if (now - last_draw_ < kRedrawInterval && done < total) return;
  last_draw_ = now;
  Draw();
}

void ProgressBar::Finish() {
  if (!enabled_ || finished_) return;
  finished_ = true;
  if (!drawn_) return;  // nothing moved: leave the terminal alone
  Draw();
  std::fputc('\n', out_);
  std::fflush(out_);
}

void ProgressBar::Draw() {
  const std::string line = FormatProgressLine(label_, done_, total_, last_progress_ - start_);
  // \r returns to the start of the line, ESC[K clears what a longer earlier
  // line left behind.
  std::fprintf(out_, "\r%s\033[K", line.c_str());
  std::fflush(out_);
  drawn_ = true;
}

}  // namespace kaizen::cli
