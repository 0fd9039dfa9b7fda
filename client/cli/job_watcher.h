// Shows a fine-tuning job's event stream to a person: a live one-line
// progress bar redrawn in place on stderr (only when it is a terminal, like
// ProgressBar), and permanent lines on the output stream for every epoch
// summary, checkpoint, state change, message and error, e.g.
//   epoch 3/30 [########------------]  57%  step 120/210  loss 0.4312
//       val acc 84.9%  lr 1.0e-03  412 img/s  ETA 0:42        (live, stderr)
//   epoch 3: train loss 0.4100 acc 86.2% | val loss 0.4500 acc 84.9% | 12.3s
//   checkpoint v3 saved (val_accuracy 84.9%, best)
// The events carry no running accuracy, so the bar shows the latest epoch's
// validation accuracy (training accuracy without validation) once there is
// one.
#pragma once

#include <cstdint>
#include <cstdio>
#include <optional>
#include <ostream>
#include <string>

#include "absl/time/time.h"
#include "kaizen/v1/finetune_service.pb.h"

namespace kaizen::cli {

class JobWatcher {
 public:
  // `out` (the permanent lines) must outlive this object. Draws the live bar
  // on `bar_out` only when `live_bar`.
  JobWatcher(std::ostream* out, bool live_bar, FILE* bar_out = stderr);
  ~JobWatcher();
  JobWatcher(const JobWatcher&) = delete;
  JobWatcher& operator=(const JobWatcher&) = delete;

  // What the events leave out (the number of epochs), from the job as it was
  // before watching.
  void SetJob(const kaizen::v1::Job& job);
  void OnEvent(const kaizen::v1::JobEvent& event);
  // Erases the live bar; called by the destructor too.
  void Finish();

 private:
  void ClearBar();
  void DrawBar();
  // Prints a permanent line, keeping the live bar below it.
  void PrintLine(const std::string& line);

  std::ostream* out_;
  bool live_bar_;
  FILE* bar_out_;
  int32_t total_epochs_ = 0;
  // The last state shown, so a replayed QUEUED after "job ... queued" from
  // `finetune start` is not said twice.
  kaizen::v1::JobState shown_state_ = kaizen::v1::JOB_STATE_UNSPECIFIED;
  std::optional<kaizen::v1::StepProgress> progress_;
  // Accuracy shown on the bar and what it is ("val acc" or "train acc").
  std::optional<double> accuracy_;
  std::string accuracy_label_;
  // Whether the last epoch was validated (checkpoint metrics mean something).
  bool validated_ = true;
  bool bar_drawn_ = false;
  bool finished_ = false;
  absl::Time last_draw_ = absl::InfinitePast();
};

// The live bar's text, without terminal control characters. `total_epochs`
// 0: unknown; `accuracy` empty: none yet.
std::string FormatTrainingProgress(const kaizen::v1::StepProgress& progress, int32_t total_epochs,
                                   std::optional<double> accuracy,
                                   const std::string& accuracy_label);
// "epoch 3: train loss 0.4100 acc 86.2% | val loss 0.4500 acc 84.9% | 12.3s"
std::string FormatEpochLine(const kaizen::v1::EpochMetrics& metrics);
// "checkpoint v3 saved (val_accuracy 84.9%, best)"; without a metric name,
// "checkpoint v3 saved (epoch 3, best)".
std::string FormatCheckpointLine(const kaizen::v1::CheckpointSaved& checkpoint);
// The end of a watch: final state, epochs and time, best version and its
// metric, the error of a failed job. Several lines.
std::string FormatJobSummary(const kaizen::v1::Job& job);

}  // namespace kaizen::cli
