#include "server/jobs/job_event_hub.h"

#include <gtest/gtest.h>

#include <thread>

#include "server/store/metadata_store.h"
#include "tests/test_util/temp_dir.h"

namespace kaizen::jobs {
namespace {

class CollectingSink : public EventSink {
 public:
  void OnEvent(const kaizen::v1::JobEvent& e) override {
    absl::MutexLock lock(&mu);
    sequences.push_back(e.sequence());
  }
  void OnEnd() override {
    absl::MutexLock lock(&mu);
    ++ends;
  }
  absl::Mutex mu;
  std::vector<int64_t> sequences;
  int ends = 0;
};

kaizen::v1::JobEvent Message(const std::string& text) {
  kaizen::v1::JobEvent e;
  e.set_message(text);
  return e;
}

kaizen::v1::JobEvent State(kaizen::v1::JobState s) {
  kaizen::v1::JobEvent e;
  e.set_state(s);
  return e;
}

class JobEventHubTest : public ::testing::Test {
 protected:
  void SetUp() override {
    meta_ = *store::MetadataStore::Open(dir_.File("k.db"));
    jobs_ = *store::JobStore::Open(meta_->db());
    hub_ = std::make_unique<JobEventHub>(jobs_.get());
  }
  test_util::TempDir dir_;
  std::unique_ptr<store::MetadataStore> meta_;
  std::unique_ptr<store::JobStore> jobs_;
  std::unique_ptr<JobEventHub> hub_;
};

TEST_F(JobEventHubTest, SequencesIncreaseByOnePerJob) {
  EXPECT_EQ(hub_->Publish("a", Message("x"))->sequence(), 1);
  EXPECT_EQ(hub_->Publish("a", Message("y"))->sequence(), 2);
  EXPECT_EQ(hub_->Publish("b", Message("z"))->sequence(), 1);
  // A new hub (a restarted server) continues from the stored log.
  JobEventHub again(jobs_.get());
  EXPECT_EQ(again.Publish("a", Message("w"))->sequence(), 3);
}

TEST_F(JobEventHubTest, SubscriberGetsReplayThenLiveAndEndsAtTerminalState) {
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(hub_->Publish("a", Message("old")).ok());
  auto sink = std::make_shared<CollectingSink>();
  ASSERT_TRUE(hub_->Subscribe("a", 1, false, sink).ok());
  ASSERT_TRUE(hub_->Publish("a", Message("new")).ok());
  ASSERT_TRUE(hub_->Publish("a", State(kaizen::v1::JOB_STATE_SUCCEEDED)).ok());
  ASSERT_TRUE(hub_->Publish("a", Message("after the end")).ok());
  EXPECT_EQ(sink->sequences, (std::vector<int64_t>{2, 3, 4, 5}));
  EXPECT_EQ(sink->ends, 1);
  EXPECT_EQ(hub_->subscriber_count("a"), 0u);
}

// WatchJob bounds how far a watcher falls behind live events only, so the hub
// says which events are the replay.
TEST_F(JobEventHubTest, ReplayedEventsComeThroughOnReplayAndLiveOnesThroughOnEvent) {
  struct SplittingSink : CollectingSink {
    void OnReplay(const kaizen::v1::JobEvent& e) override {
      absl::MutexLock lock(&mu);
      replayed.push_back(e.sequence());
    }
    std::vector<int64_t> replayed;
  };
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(hub_->Publish("a", Message("old")).ok());
  auto sink = std::make_shared<SplittingSink>();
  ASSERT_TRUE(hub_->Subscribe("a", 1, false, sink).ok());
  ASSERT_TRUE(hub_->Publish("a", Message("new")).ok());
  EXPECT_EQ(sink->replayed, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(sink->sequences, (std::vector<int64_t>{4}));
}

// JobManager records a job's new state in after_store: stored event first,
// then the row, then the watchers.
TEST_F(JobEventHubTest, AfterStoreRunsOnceTheEventIsStoredAndBeforeSinksAreTold) {
  auto sink = std::make_shared<CollectingSink>();
  ASSERT_TRUE(hub_->Subscribe("a", 0, false, sink).ok());
  size_t told_before = 99;
  int64_t stored_before = 0;
  auto published = hub_->Publish("a", State(kaizen::v1::JOB_STATE_SUCCEEDED),
                                 [&](const kaizen::v1::JobEvent& e) {
                                   EXPECT_EQ(e.sequence(), 1);
                                   told_before = sink->sequences.size();
                                   stored_before = *jobs_->LastSequence("a");
                                   return absl::OkStatus();
                                 });
  ASSERT_TRUE(published.ok()) << published.status();
  EXPECT_EQ(told_before, 0u);
  EXPECT_EQ(stored_before, 1);
  EXPECT_EQ(sink->sequences, (std::vector<int64_t>{1}));
  EXPECT_EQ(sink->ends, 1);
  // Its error is returned; the event is stored and dispatched all the same.
  auto again = std::make_shared<CollectingSink>();
  ASSERT_TRUE(hub_->Subscribe("b", 0, false, again).ok());
  auto failed = hub_->Publish("b", Message("x"), [](const kaizen::v1::JobEvent&) {
    return absl::InternalError("row not written");
  });
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kInternal);
  EXPECT_EQ(again->sequences, (std::vector<int64_t>{1}));
  EXPECT_EQ(*jobs_->LastSequence("b"), 1);
}

// An event stored with a conditional write (PublishIf + AppendEventIf): a
// row that is no longer in the state expected gets neither the event nor
// the write, no watcher hears of it and its sequence is not used up.
TEST_F(JobEventHubTest, AConditionalEventIsStoredAndToldOnlyWithItsWrite) {
  kaizen::v1::Job job;
  job.set_id("a");
  job.set_state(kaizen::v1::JOB_STATE_PAUSED);
  ASSERT_TRUE(jobs_->Insert(job).ok());
  auto sink = std::make_shared<CollectingSink>();
  ASSERT_TRUE(hub_->Subscribe("a", 0, false, sink).ok());
  ASSERT_EQ(hub_->Publish("a", Message("paused"))->sequence(), 1);
  kaizen::v1::Job queued = job;
  queued.set_state(kaizen::v1::JOB_STATE_QUEUED);
  auto requeue = [&](kaizen::v1::JobState from) {
    return hub_->PublishIf("a", State(kaizen::v1::JOB_STATE_QUEUED),
                           [&](const kaizen::v1::JobEvent& e) -> absl::StatusOr<bool> {
                             queued.set_last_sequence(e.sequence());
                             return jobs_->AppendEventIf(e, queued, from);
                           });
  };
  auto declined = requeue(kaizen::v1::JOB_STATE_RUNNING);
  ASSERT_TRUE(declined.ok()) << declined.status();
  EXPECT_FALSE(declined->has_value());
  EXPECT_EQ(*jobs_->LastSequence("a"), 1);
  EXPECT_EQ(jobs_->Get("a")->state(), kaizen::v1::JOB_STATE_PAUSED);
  EXPECT_EQ(sink->sequences, (std::vector<int64_t>{1}));

  auto moved = requeue(kaizen::v1::JOB_STATE_PAUSED);
  ASSERT_TRUE(moved.ok() && moved->has_value()) << moved.status();
  EXPECT_EQ((*moved)->sequence(), 2);
  EXPECT_EQ(jobs_->Get("a")->state(), kaizen::v1::JOB_STATE_QUEUED);
  EXPECT_EQ(jobs_->Get("a")->last_sequence(), 2);
  EXPECT_EQ(sink->sequences, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(hub_->Publish("a", Message("next"))->sequence(), 3);
}

TEST_F(JobEventHubTest, SubscribingToAFinishedJobReplaysAndEnds) {
  ASSERT_TRUE(hub_->Publish("a", Message("x")).ok());
  ASSERT_TRUE(hub_->Publish("a", State(kaizen::v1::JOB_STATE_FAILED)).ok());
  auto sink = std::make_shared<CollectingSink>();
  ASSERT_TRUE(hub_->Subscribe("a", 0, true, sink).ok());
  EXPECT_EQ(sink->sequences, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(sink->ends, 1);
}

// Subscriptions racing with publication neither miss nor repeat an event.
TEST_F(JobEventHubTest, ConcurrentSubscribersSeeEveryEventExactlyOnce) {
  constexpr int kEvents = 300;
  std::thread publisher([&] {
    for (int i = 0; i < kEvents; ++i) ASSERT_TRUE(hub_->Publish("a", Message("m")).ok());
    ASSERT_TRUE(hub_->Publish("a", State(kaizen::v1::JOB_STATE_SUCCEEDED)).ok());
  });
  std::vector<std::shared_ptr<CollectingSink>> sinks;
  for (int i = 0; i < 50; ++i) {
    sinks.push_back(std::make_shared<CollectingSink>());
    ASSERT_TRUE(hub_->Subscribe("a", 0, false, sinks.back()).ok());
  }
  publisher.join();
  for (const auto& s : sinks) {
    ASSERT_EQ(s->sequences.size(), static_cast<size_t>(kEvents + 1));
    for (size_t k = 0; k < s->sequences.size(); ++k)
      ASSERT_EQ(s->sequences[k], static_cast<int64_t>(k + 1));
    EXPECT_EQ(s->ends, 1);
  }
}

TEST_F(JobEventHubTest, UnsubscribedSinksReceiveNothing) {
  auto sink = std::make_shared<CollectingSink>();
  ASSERT_TRUE(hub_->Subscribe("a", 0, false, sink).ok());
  hub_->Unsubscribe("a", sink.get());
  ASSERT_TRUE(hub_->Publish("a", Message("x")).ok());
  EXPECT_TRUE(sink->sequences.empty());
}

// Two replicas on one database: each has its own hub over the same tables.
// Events the other replica writes reach this one's watchers through
// PollStore, once each and in order, interleaved with this replica's own.
TEST_F(JobEventHubTest, AnotherReplicasEventsReachWatchersOnceAndInOrder) {
  JobEventHub other(jobs_.get());
  ASSERT_TRUE(hub_->Publish("a", Message("here")).ok());  // 1
  auto sink = std::make_shared<CollectingSink>();
  ASSERT_TRUE(hub_->Subscribe("a", 0, false, sink).ok());
  ASSERT_TRUE(other.Publish("a", Message("there")).ok());  // 2, written elsewhere
  ASSERT_TRUE(other.Publish("a", Message("there")).ok());  // 3
  // This hub's cached sequence is stale: it numbers after the stored events,
  // and hands its watcher 2 and 3 before its own 4.
  EXPECT_EQ(hub_->Publish("a", Message("here again"))->sequence(), 4);
  EXPECT_EQ(sink->sequences, (std::vector<int64_t>{1, 2, 3, 4}));
  ASSERT_TRUE(hub_->PollStore().ok());  // nothing new: nothing twice
  EXPECT_EQ(sink->sequences, (std::vector<int64_t>{1, 2, 3, 4}));
  ASSERT_TRUE(other.Publish("a", State(kaizen::v1::JOB_STATE_SUCCEEDED)).ok());  // 5
  EXPECT_EQ(sink->ends, 0);
  ASSERT_TRUE(hub_->PollStore().ok());
  EXPECT_EQ(sink->sequences, (std::vector<int64_t>{1, 2, 3, 4, 5}));
  EXPECT_EQ(sink->ends, 1);
  EXPECT_EQ(hub_->subscriber_count("a"), 0u);
}

}  // namespace
}  // namespace kaizen::jobs
