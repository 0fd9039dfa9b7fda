// Unit tests of the dynamic batcher: merging, lone callers, versions kept
// apart, queue limit, deadlines and cancellation, on a fake clock.
#include "server/serving/model_batcher.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <atomic>
#include <limits>
#include <thread>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "server/metrics/metrics.h"
#include "server/serving/loaded_model.h"
#include "tests/test_util/fake_clock.h"
#include "tests/test_util/temp_dir.h"
#include "tests/unit/serving/serving_test_util.h"

namespace kaizen::serving {
namespace {

using fixtures::TinyModel;

// Count and sum of kaizen_inference_batch_size for "tiny".
std::pair<uint64_t, double> BatchStats(metrics::Metrics& m) {
  for (const auto& family : m.registry().Collect()) {
    if (family.name != "kaizen_inference_batch_size") continue;
    for (const auto& metric : family.metric) {
      return {metric.histogram.sample_count, metric.histogram.sample_sum};
    }
  }
  return {0, 0};
}

// Advances `clock` by an hour every 10 s of real time until destroyed, so
// that a batcher waiting for time a test never gives it fails the test's
// assertions instead of hanging it. Declared after the batcher it watches.
class Watchdog {
 public:
  explicit Watchdog(test_util::FakeClock* clock)
      : thread_([this, clock] {
          while (!done_.WaitForNotificationWithTimeout(absl::Seconds(10))) {
            clock->Advance(absl::Hours(1));
          }
        }) {}
  ~Watchdog() {
    done_.Notify();
    thread_.join();
  }

 private:
  absl::Notification done_;
  std::thread thread_;
};

class BatcherTest : public ::testing::Test {
 protected:
  std::unique_ptr<ModelBatcher> Batcher(int max_batch, absl::Duration delay, int max_queue = 64,
                                        common::Clock* clock = common::Clock::Real(),
                                        int instances = 1,
                                        std::function<void()> before_forward = nullptr) {
    ModelBatcher::Options o;
    o.instances = instances;
    o.before_forward = std::move(before_forward);
    o.model_name = "tiny";
    o.max_batch_size = max_batch;
    o.max_queue_delay = delay;
    o.max_queue_size = max_queue;
    o.clock = clock;
    return std::make_unique<ModelBatcher>(o, metrics_.get());
  }
  test_util::TempDir dir_;
  std::unique_ptr<metrics::Metrics> metrics_ = *metrics::Metrics::Create("127.0.0.1", -1);
  // Time for the tests that depend on it: moves only when a test says so.
  test_util::FakeClock clock_;
};

TEST_F(BatcherTest, MergesConcurrentRequestsIntoOneForwardPassAndSplitsTheResults) {
  auto model = TinyModel(dir_, 1, 1.0, {1, 4});
  // The batch delay never passes: the batch goes when the 16th input comes.
  auto batcher = Batcher(16, absl::Seconds(2), 64, &clock_);
  Watchdog watchdog(&clock_);
  std::vector<std::thread> threads;
  std::atomic<int> right{0};
  for (int i = 0; i < 16; ++i) {
    threads.emplace_back([&, i] {
      // Input i has its largest logit at class i % 3.
      torch::Tensor x = torch::zeros({1, 1, 2, 2});
      x.view({-1})[i % 3] = 5.0f + static_cast<float>(i);
      auto probs = batcher->Run(model, x, InferOptions{});
      ASSERT_TRUE(probs.ok()) << probs.status();
      ASSERT_EQ(probs->sizes(), (std::vector<int64_t>{1, 3}));
      if (probs->argmax(1).item<int64_t>() == i % 3) ++right;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(right.load(), 16);
  const auto [batches, inputs] = BatchStats(*metrics_);
  EXPECT_EQ(inputs, 16);
  EXPECT_EQ(batches, 1u) << "16 concurrent requests should fill one batch of 16";
}

TEST_F(BatcherTest, ALoneCallerDoesNotWaitForABatchToFill) {
  auto model = TinyModel(dir_, 1, 1.0, {1, 4});
  auto batcher = Batcher(16, absl::Milliseconds(300), 64, &clock_);
  Watchdog watchdog(&clock_);
  const torch::Tensor x = torch::rand({1, 1, 2, 2});
  // The first request may wait: no history yet. It waits out the delay.
  std::thread first([&] { ASSERT_TRUE(batcher->Run(model, x, InferOptions{}).ok()); });
  clock_.BlockUntilWaiters(2);  // the caller and the executor
  clock_.Advance(absl::Milliseconds(300));
  first.join();
  // Time stands still from here: a batch that waited would end only when the
  // watchdog moves the clock an hour.
  const absl::Time start = clock_.Now();
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(batcher->Run(model, x, InferOptions{}).ok());
  EXPECT_LT(clock_.Now() - start, absl::Milliseconds(300));
}

TEST_F(BatcherTest, InstancesRunBatchesAtTheSameTimeFromOneQueue) {
  auto model = TinyModel(dir_, 1, 1.0, {1, 4});
  // The forward passes go in groups of `instances`: each waits until its
  // whole group has started, which only happens if that many run at once.
  for (const int instances : {1, 2, 3}) {
    SCOPED_TRACE(absl::StrCat(instances, " instance(s)"));
    absl::Mutex mu;
    int started = 0;
    int timed_out = 0;
    auto batcher = Batcher(1, absl::ZeroDuration(), 64, common::Clock::Real(), instances, [&] {
      absl::MutexLock lock(&mu);
      const int group_end = (started / instances + 1) * instances;
      ++started;
      auto group_started = [&] { return started >= group_end; };
      if (!mu.AwaitWithTimeout(absl::Condition(&group_started), absl::Seconds(20))) ++timed_out;
    });
    std::vector<std::thread> callers;
    std::atomic<int> ok{0};
    for (int i = 0; i < 3 * instances; ++i) {
      callers.emplace_back([&] {
        const auto r = batcher->Run(model, torch::rand({1, 1, 2, 2}), InferOptions{});
        if (r.ok() && r->size(0) == 1) ++ok;
      });
    }
    for (auto& t : callers) t.join();
    EXPECT_EQ(ok.load(), 3 * instances);
    absl::MutexLock lock(&mu);
    EXPECT_EQ(started, 3 * instances);
    EXPECT_EQ(timed_out, 0);
    batcher->Stop();
  }
}

TEST_F(BatcherTest, EachExecutorRunsOnItsOwnThreadCountAndLeavesTheProcessDefault) {
  auto model = TinyModel(dir_, 1, 1.0, {1, 4});
  auto on_new_thread = [] {
    int n = 0;
    std::thread([&] { n = at::get_num_threads(); }).join();
    return n;
  };
  const int before = at::get_num_threads();
  // Restored however the test ends: the next tests in this process (a CTest
  // shard) start from the default.
  absl::Cleanup restore = [before] { at::set_num_threads(before); };
  at::set_num_threads(3);
  ASSERT_EQ(on_new_thread(), 3);
  for (const int threads : {1, 2}) {
    SCOPED_TRACE(absl::StrCat(threads, " thread(s)"));
    absl::Mutex mu;
    std::vector<int> seen;
    ModelBatcher::Options o;
    o.model_name = "tiny";
    o.max_batch_size = 1;
    o.instances = 2;
    o.threads = threads;
    o.before_forward = [&] {
      absl::MutexLock lock(&mu);
      seen.push_back(at::get_num_threads());
    };
    ModelBatcher batcher(o, metrics_.get());
    std::vector<std::thread> callers;
    for (int i = 0; i < 8; ++i) {
      callers.emplace_back([&] {
        EXPECT_TRUE(batcher.Run(model, torch::rand({1, 1, 2, 2}), InferOptions{}).ok());
      });
    }
    for (auto& t : callers) t.join();
    batcher.Stop();
    absl::MutexLock lock(&mu);
    EXPECT_EQ(seen, std::vector<int>(8, threads));
    // Threads started later still take the process default.
    EXPECT_EQ(on_new_thread(), 3);
  }
}

TEST_F(BatcherTest, RequestsForDifferentVersionsAreNeverMerged) {
  auto v1 = TinyModel(dir_, 1, 1.0, {1, 4}), v2 = TinyModel(dir_, 2, -1.0, {1, 4});
  auto batcher = Batcher(16, absl::Milliseconds(200), 64, &clock_);
  Watchdog watchdog(&clock_);
  torch::Tensor x = torch::zeros({1, 1, 2, 2});
  x.view({-1})[0] = 4.0f;
  std::vector<std::thread> threads;
  std::atomic<int> wrong{0};
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      const auto& model = i % 2 ? v2 : v1;
      auto probs = batcher->Run(model, x, InferOptions{});
      ASSERT_TRUE(probs.ok());
      // v1 favours class 0, v2 (negated logits) disfavours it.
      const bool favours0 = probs->argmax(1).item<int64_t>() == 0;
      if (favours0 != (model == v1)) ++wrong;
    });
  }
  // All eight queued (and the executor waiting for the batch to fill), then
  // the batch delay passes.
  clock_.BlockUntilWaiters(9);
  clock_.Advance(absl::Milliseconds(200));
  for (auto& t : threads) t.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_GE(BatchStats(*metrics_).first, 2u);
}

TEST_F(BatcherTest, ExpiredCancelledAndStoppedRequestsAreNotComputed) {
  auto model = TinyModel(dir_, 1, 1.0, {1, 4});
  auto batcher = Batcher(1, absl::ZeroDuration());
  // Expired before it is queued: dropped without compute.
  InferOptions late;
  late.deadline = absl::Now() - absl::Milliseconds(1);
  EXPECT_EQ(batcher->Run(model, torch::rand({1, 1, 2, 2}), late).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  InferOptions cancelled;
  cancelled.cancelled = [] { return true; };
  EXPECT_EQ(batcher->Run(model, torch::rand({1, 1, 2, 2}), cancelled).status().code(),
            absl::StatusCode::kCancelled);
  EXPECT_EQ(BatchStats(*metrics_).first, 0u);
  batcher->Stop();
  EXPECT_EQ(batcher->Run(model, torch::rand({1, 1, 2, 2}), InferOptions{}).status().code(),
            absl::StatusCode::kUnavailable);
}

TEST_F(BatcherTest, ABatchWaitsExactlyTheQueueDelayForMoreInputs) {
  auto model = TinyModel(dir_, 1, 1.0, {1, 4});
  auto batcher = Batcher(16, absl::Milliseconds(300), 64, &clock_);
  Watchdog watchdog(&clock_);
  std::atomic<bool> done{false};
  std::thread caller([&] {
    EXPECT_TRUE(batcher->Run(model, torch::rand({1, 1, 2, 2}), InferOptions{}).ok());
    done = true;
  });
  clock_.BlockUntilWaiters(2);  // the caller and the executor
  clock_.Advance(absl::Milliseconds(299));
  EXPECT_FALSE(done.load());
  EXPECT_EQ(BatchStats(*metrics_).first, 0u);
  clock_.Advance(absl::Milliseconds(1));
  caller.join();
  EXPECT_EQ(BatchStats(*metrics_).first, 1u);
}

TEST_F(BatcherTest, ARequestWhoseDeadlinePassesInTheQueueLeavesItUncomputed) {
  auto model = TinyModel(dir_, 1, 1.0, {1, 4});
  auto batcher = Batcher(16, absl::Seconds(10), 64, &clock_);
  Watchdog watchdog(&clock_);
  InferOptions options;
  options.deadline = clock_.Now() + absl::Milliseconds(100);
  absl::StatusCode code = absl::StatusCode::kOk;
  std::thread caller([&] {
    code = batcher->Run(model, torch::rand({1, 1, 2, 2}), options).status().code();
  });
  clock_.BlockUntilWaiters(2);
  clock_.Advance(absl::Milliseconds(100));
  caller.join();
  EXPECT_EQ(code, absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(BatchStats(*metrics_).first, 0u);
}

TEST_F(BatcherTest, ARequestCancelledInTheQueueLeavesItAtTheNextPoll) {
  auto model = TinyModel(dir_, 1, 1.0, {1, 4});
  auto batcher = Batcher(16, absl::Seconds(10), 64, &clock_);
  Watchdog watchdog(&clock_);
  std::atomic<bool> cancelled{false};
  InferOptions options;
  options.cancelled = [&cancelled] { return cancelled.load(); };
  absl::StatusCode code = absl::StatusCode::kOk;
  std::thread caller([&] {
    code = batcher->Run(model, torch::rand({1, 1, 2, 2}), options).status().code();
  });
  clock_.BlockUntilWaiters(2);
  cancelled = true;
  clock_.Advance(absl::Milliseconds(50));
  caller.join();
  EXPECT_EQ(code, absl::StatusCode::kCancelled);
  EXPECT_EQ(BatchStats(*metrics_).first, 0u);
}

}  // namespace
}  // namespace kaizen::serving
