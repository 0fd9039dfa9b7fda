#include "server/jobs/job_history.h"

namespace kaizen::jobs {

void AppendEpochToHistory(const kaizen::v1::EpochMetrics& epoch, kaizen::v1::Job* job) {
  auto* history = job->mutable_history();
  if (!history->empty()) history->rbegin()->clear_per_class_accuracy();
  *history->Add() = epoch;
}

}  // namespace kaizen::jobs
