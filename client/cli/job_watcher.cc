#include "client/cli/job_watcher.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/cli/output.h"
#include "server/common/job_state.h"

namespace kaizen::cli {
namespace {

constexpr int kBarWidth = 20;
constexpr absl::Duration kRedrawInterval = absl::Milliseconds(100);

// Seconds between two timestamps; negative when either is unset.
double SecondsBetween(const google::protobuf::Timestamp& from,
                      const google::protobuf::Timestamp& to) {
  if (from.seconds() == 0 || to.seconds() == 0) return -1;
  return (to.seconds() - from.seconds()) + (to.nanos() - from.nanos()) / 1e9;
}

}  // namespace

std::string FormatTrainingProgress(const kaizen::v1::StepProgress& p, int32_t total_epochs,
                                   std::optional<double> accuracy,
                                   const std::string& accuracy_label) {
  const double fraction =
      p.total_steps() > 0 ? std::clamp(static_cast<double>(p.step()) / p.total_steps(), 0.0, 1.0)
                          : 0.0;
  const int filled = static_cast<int>(fraction * kBarWidth);
  std::string line = absl::StrCat("epoch ", p.epoch());
  if (total_epochs > 0) absl::StrAppend(&line, "/", total_epochs);
  absl::StrAppendFormat(&line, " [%s%s] %3d%%", std::string(filled, '#'),
                        std::string(kBarWidth - filled, '-'), static_cast<int>(fraction * 100));
  if (p.total_steps() > 0) {
    absl::StrAppend(&line, "  step ", p.step(), "/", p.total_steps());
  }
  absl::StrAppendFormat(&line, "  loss %.4f", p.loss());
  if (accuracy.has_value()) {
    absl::StrAppend(&line, "  ", accuracy_label, " ", FormatPercent(*accuracy));
  }
  if (p.learning_rate() > 0) {
    absl::StrAppendFormat(&line, "  lr %.1e", p.learning_rate());
  }
  if (p.samples_per_second() > 0) {
    absl::StrAppendFormat(&line, "  %.0f img/s", p.samples_per_second());
  }
  if (p.eta_seconds() > 0) {
    absl::StrAppend(&line, "  ETA ", FormatClock(p.eta_seconds()));
  }
  return line;
}

std::string FormatEpochLine(const kaizen::v1::EpochMetrics& m) {
  std::string line = absl::StrFormat("epoch %d: train loss %.4f acc %s", m.epoch(), m.train_loss(),
                                     FormatPercent(m.train_accuracy()));
  if (EpochIsValidated(m)) {
    absl::StrAppendFormat(&line, " | val loss %.4f acc %s", m.val_loss(),
                          FormatPercent(m.val_accuracy()));
    // INCREMENTAL: the base's classes and the added ones apart.
    if (m.old_class_examples() > 0) {
      absl::StrAppend(&line, " (old classes ", FormatPercent(m.old_class_accuracy()), ")");
    }
    if (m.new_class_examples() > 0) {
      absl::StrAppend(&line, " (new classes ", FormatPercent(m.new_class_accuracy()), ")");
    }
  }
  absl::StrAppendFormat(&line, " | %.1fs", m.seconds());
  return line;
}

std::string FormatCheckpointLine(const kaizen::v1::CheckpointSaved& c) {
  std::string line = absl::StrCat("checkpoint v", c.version(), " saved");
  std::string detail;
  if (!c.metric_name().empty()) {
    detail = absl::StrCat(c.metric_name(), " ", FormatMetric(c.metric_name(), c.metric()));
  } else {
    detail = absl::StrCat("epoch ", c.epoch());
  }
  if (c.is_best()) absl::StrAppend(&detail, ", best");
  absl::StrAppend(&line, " (", detail, ")");
  return line;
}

std::string FormatJobSummary(const kaizen::v1::Job& job) {
  std::string out = absl::StrCat("job ", job.id(), " ", JobStateName(job.state()));
  if (job.total_epochs() > 0) {
    // Completed epochs: a cancelled job's `epoch` is the one it stopped in.
    absl::StrAppend(&out, ": ", job.history_size(), "/", job.total_epochs(), " epochs");
  }
  const double took = SecondsBetween(job.start_time(), job.end_time());
  if (took >= 0) absl::StrAppend(&out, " in ", FormatClock(took));
  absl::StrAppend(&out, "\n");
  const std::string& model = job.request().output_model();
  if (job.best_version() > 0) {
    absl::StrAppend(&out, "  best:   ", model, ":", job.best_version());
    if (JobHasValidation(job)) {
      absl::StrAppend(&out, " (val accuracy ", FormatPercent(job.best_metric()), ")");
    }
    absl::StrAppend(&out, "\n");
  }
  if (job.latest_version() > 0 && job.latest_version() != job.best_version()) {
    absl::StrAppend(&out, "  latest: ", model, ":", job.latest_version(), "\n");
  }
  if (job.latest_version() == 0 && common::IsTerminal(job.state())) {
    absl::StrAppend(&out, "  no model version was written\n");
  }
  if (!job.error().empty()) absl::StrAppend(&out, "  error:  ", job.error(), "\n");
  return out;
}

JobWatcher::JobWatcher(std::ostream* out, bool live_bar, FILE* bar_out)
    : out_(out), live_bar_(live_bar), bar_out_(bar_out) {}

JobWatcher::~JobWatcher() { Finish(); }

void JobWatcher::SetJob(const kaizen::v1::Job& job) {
  shown_state_ = job.state();
  total_epochs_ =
      job.total_epochs() > 0 ? job.total_epochs() : job.resolved_hyperparameters().epochs();
  if (job.history_size() > 0) {
    const kaizen::v1::EpochMetrics& last = job.history(job.history_size() - 1);
    validated_ = EpochIsValidated(last);
    accuracy_ = validated_ ? last.val_accuracy() : last.train_accuracy();
    accuracy_label_ = validated_ ? "val acc" : "train acc";
  }
}

void JobWatcher::OnEvent(const kaizen::v1::JobEvent& event) {
  if (finished_) return;
  switch (event.event_case()) {
    case kaizen::v1::JobEvent::kState:
      if (common::IsTerminal(event.state())) {
        // The summary says how it ended; no bar after the end.
        progress_.reset();
        ClearBar();
      } else if (event.state() != shown_state_) {
        PrintLine(absl::StrCat("job ", event.job_id(), " ", JobStateName(event.state())));
      }
      shown_state_ = event.state();
      break;
    case kaizen::v1::JobEvent::kProgress: {
      progress_ = event.progress();
      const absl::Time now = absl::Now();
      if (now - last_draw_ < kRedrawInterval &&
          event.progress().step() < event.progress().total_steps()) {
        break;
      }
      last_draw_ = now;
      DrawBar();
      break;
    }
    case kaizen::v1::JobEvent::kEpochSummary: {
      const kaizen::v1::EpochMetrics& m = event.epoch_summary();
      validated_ = EpochIsValidated(m);
      accuracy_ = validated_ ? m.val_accuracy() : m.train_accuracy();
      accuracy_label_ = validated_ ? "val acc" : "train acc";
      PrintLine(FormatEpochLine(m));
      break;
    }
    case kaizen::v1::JobEvent::kCheckpoint: {
      kaizen::v1::CheckpointSaved checkpoint = event.checkpoint();
      // A validation metric of an epoch that was not validated is a
      // placeholder, not a result.
      if (!validated_ && absl::StartsWith(checkpoint.metric_name(), "val_")) {
        checkpoint.clear_metric_name();
      }
      PrintLine(FormatCheckpointLine(checkpoint));
      break;
    }
    case kaizen::v1::JobEvent::kError:
      PrintLine(absl::StrCat("error: ", event.error()));
      break;
    case kaizen::v1::JobEvent::kMessage:
      PrintLine(event.message());
      break;
    default:
      break;  // an event kind newer than this client
  }
}

void JobWatcher::Finish() {
  if (finished_) return;
  finished_ = true;
  ClearBar();
}

void JobWatcher::ClearBar() {
  if (!bar_drawn_) return;
  // \r returns to the start of the line, ESC[K erases it.
  std::fputs("\r\033[K", bar_out_);
  std::fflush(bar_out_);
  bar_drawn_ = false;
}

void JobWatcher::DrawBar() {
  if (!live_bar_ || finished_ || !progress_.has_value()) return;
  const std::string line =
      FormatTrainingProgress(*progress_, total_epochs_, accuracy_, accuracy_label_);
  std::fprintf(bar_out_, "\r%s\033[K", line.c_str());
  std::fflush(bar_out_);
  bar_drawn_ = true;
}

void JobWatcher::PrintLine(const std::string& line) {
  ClearBar();
  *out_ << line << "\n";
  out_->flush();
  DrawBar();
}

}  // namespace kaizen::cli
