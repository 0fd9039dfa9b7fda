// What end-to-end tests of fine-tuning jobs share: a request, the whole of a
// job's WatchJob stream, the comparison of a resumed run with an
// uninterrupted one, and a test fixture with a server, its clients and the
// calls every job test makes.
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "kaizen/v1/finetune_service.grpc.pb.h"
#include "server/api/server.h"
#include "tests/test_util/server/loopback_server.h"
#include "tests/test_util/temp_dir.h"

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

// `count` class names over 100 characters long ("class 0 aaa…"), which make
// every epoch summary event over a kilobyte.
std::vector<std::string> LongClassNames(int count);

// The states among `events`, in order.
std::vector<v1::JobState> StatesOf(const std::vector<v1::JobEvent>& events);

// A test failure unless both jobs have the same per-epoch history: losses
// within 1e-6, accuracies equal.
void ExpectSameHistory(const v1::Job& uninterrupted, const v1::Job& resumed);

// A fixture for tests of jobs: a data folder, a folder for files to upload,
// and a server (in-process on loopback, or a process the test starts) with a
// KaizenClient and a FineTuneService stub on the same channel.
class JobServerTest : public ::testing::Test {
 protected:
  // Starts an in-process server on loopback over data_, without a metrics
  // port, with its options changed by `adjust`.
  void StartServer(const std::function<void(api::KaizenServer::Options&)>& adjust = nullptr);

  // Connects to a server process (not one of this process's own) on
  // 127.0.0.1:`port`; true once it answers.
  bool Connect(int port);

  // Uploads Fashion-MNIST `classes` (`per_class` images of each after
  // `skip`, from the `which` split) as dataset `name`, with class names
  // "class<C>" or `class_names`.
  void UploadSubset(const std::string& name, const std::vector<int>& classes, int per_class,
                    int skip = 0, const std::string& which = "train",
                    std::vector<std::string> class_names = {});

  static v1::StartFineTuneRequest Request(const std::string& base, const std::string& dataset,
                                          const std::string& output, v1::Strategy strategy,
                                          int epochs) {
    return FineTuneRequest(base, dataset, output, strategy, epochs);
  }

  // StartFineTune's answer.
  absl::StatusOr<v1::Job> TryStart(const v1::StartFineTuneRequest& r);
  // The started job; a test failure (and an empty job) when it is refused.
  v1::Job Start(const v1::StartFineTuneRequest& r);
  // The job now; a test failure when GetJob fails.
  v1::Job GetJob(const std::string& id);

  // The job once it is in one of `states`; a test failure (and the job as it
  // is) when it ends otherwise or takes longer than `timeout`.
  v1::Job WaitForState(const std::string& id, const std::vector<v1::JobState>& states,
                       absl::Duration timeout = absl::Minutes(4));
  // The job once it has SUCCEEDED; a test failure otherwise.
  v1::Job WaitForSuccess(const std::string& id);

  // Every event of the job's WatchJob stream after `after`, until it ends.
  std::vector<v1::JobEvent> Watch(const std::string& id, int64_t after = 0,
                                  grpc::Status* status = nullptr) {
    return WatchAll(*jobs_, id, after, status);
  }

  // The text of every message event among `events`, in order.
  static std::vector<std::string> Messages(const std::vector<v1::JobEvent>& events);

  // How many of `lines` contain `part`.
  static int Count(const std::vector<std::string>& lines, const std::string& part);

  TempDir data_;
  TempDir files_;
  LoopbackServer s_;
  std::unique_ptr<v1::FineTuneService::Stub> jobs_;
};

}  // namespace kaizen::test_util
