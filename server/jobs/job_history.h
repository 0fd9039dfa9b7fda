// The per-epoch history a Job record carries. GetJob and ListJobs send the
// whole record, so it must stay small however many epochs and classes a job
// has: per-class accuracies (one entry per class, up to 5,000) are kept on
// the newest epoch only. Every epoch's own are in its WatchJob epoch_summary
// event.
#pragma once

#include "kaizen/v1/finetune_service.pb.h"

namespace kaizen::jobs {

// Appends `epoch` to job->history and drops per_class_accuracy from the
// entry before it.
void AppendEpochToHistory(const kaizen::v1::EpochMetrics& epoch, kaizen::v1::Job* job);

}  // namespace kaizen::jobs
