// What end-to-end tests of fine-tuning jobs share: a request, the whole of a
// job's WatchJob stream, and the comparison of a resumed run with an
// uninterrupted one.
#pragma once

#include <string>
#include <vector>

#include "grpcpp/grpcpp.h"
#include "kaizen/v1/finetune_service.grpc.pb.h"

namespace kaizen::test_util {

// `strategy` from `base` on `dataset` into `output` for `epochs` epochs, with
// seed 7 and a validation split of 0.2.
v1::StartFineTuneRequest FineTuneRequest(const std::string& base, const std::string& dataset,
                                         const std::string& output, v1::Strategy strategy,
                                         int epochs);

// Every event of job `id`'s WatchJob stream after `after`, until it ends
// (five minutes at most); its final status in `*status` when given.
std::vector<v1::JobEvent> WatchAll(v1::FineTuneService::Stub& stub, const std::string& id,
                                   int64_t after = 0, grpc::Status* status = nullptr);

// The states among `events`, in order.
std::vector<v1::JobState> StatesOf(const std::vector<v1::JobEvent>& events);

// A test failure unless both jobs have the same per-epoch history: losses
// within 1e-6, accuracies equal.
void ExpectSameHistory(const v1::Job& uninterrupted, const v1::Job& resumed);

}  // namespace kaizen::test_util
