#include "server/store/job_store.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "server/store/metadata_store.h"
#include "tests/test_util/postgres.h"
#include "tests/test_util/temp_dir.h"

namespace kaizen::store {
namespace {

using ::testing::HasSubstr;

kaizen::v1::Job MakeJob(const std::string& id, int priority, const std::string& request_id = "") {
  kaizen::v1::Job j;
  j.set_id(id);
  j.set_state(kaizen::v1::JOB_STATE_QUEUED);
  j.mutable_request()->set_priority(priority);
  j.mutable_request()->set_request_id(request_id);
  return j;
}

// The same suite on both engines.
class JobStoreTest : public ::testing::TestWithParam<test_util::Engine> {
 protected:
  void SetUp() override {
    absl::StatusOr<std::string> target = test_util::CatalogueFor(GetParam(), dir_.File("k.db"));
    ASSERT_TRUE(target.ok()) << target.status();
    target_ = *target;
    meta_ = *MetadataStore::Open(target_);
    jobs_ = *JobStore::Open(meta_->db());
  }
  test_util::TempDir dir_;
  std::string target_;
  std::unique_ptr<MetadataStore> meta_;
  std::unique_ptr<JobStore> jobs_;
};

TEST_P(JobStoreTest, QueueOrdersByPriorityThenAge) {
  ASSERT_TRUE(jobs_->Insert(MakeJob("a", 0)).ok());
  ASSERT_TRUE(jobs_->Insert(MakeJob("b", 5)).ok());
  ASSERT_TRUE(jobs_->Insert(MakeJob("c", 5)).ok());
  ASSERT_TRUE(jobs_->Insert(MakeJob("d", -1)).ok());
  std::vector<std::string> order;
  while (true) {
    auto next = jobs_->NextQueued();
    ASSERT_TRUE(next.ok());
    if (!*next) break;
    order.push_back((*next)->id());
    (*next)->set_state(kaizen::v1::JOB_STATE_RUNNING);
    ASSERT_TRUE(jobs_->Update(**next).ok());
  }
  EXPECT_EQ(order, (std::vector<std::string>{"b", "c", "a", "d"}));
}

TEST_P(JobStoreTest, QueueSurvivesReopen) {
  ASSERT_TRUE(jobs_->Insert(MakeJob("a", 1)).ok());
  jobs_.reset();
  meta_.reset();
  meta_ = *MetadataStore::Open(target_);
  jobs_ = *JobStore::Open(meta_->db());
  auto next = jobs_->NextQueued();
  ASSERT_TRUE(next.ok() && *next);
  EXPECT_EQ((*next)->id(), "a");
}

TEST_P(JobStoreTest, RequestIdIsUniqueAndFindable) {
  ASSERT_TRUE(jobs_->Insert(MakeJob("a", 0, "req-1")).ok());
  EXPECT_EQ(jobs_->Insert(MakeJob("b", 0, "req-1")).code(), absl::StatusCode::kAlreadyExists);
  ASSERT_TRUE(jobs_->Insert(MakeJob("c", 0)).ok());
  ASSERT_TRUE(jobs_->Insert(MakeJob("d", 0)).ok());  // empty ids do not collide
  auto found = jobs_->FindByRequestId("req-1");
  ASSERT_TRUE(found.ok() && *found);
  EXPECT_EQ((*found)->id(), "a");
  EXPECT_FALSE(*jobs_->FindByRequestId("req-2"));
}

TEST_P(JobStoreTest, ListsNewestFirstWithStateFilterAndCursor) {
  for (const char* id : {"a", "b", "c"}) ASSERT_TRUE(jobs_->Insert(MakeJob(id, 0)).ok());
  auto b = *jobs_->Get("b");
  b.set_state(kaizen::v1::JOB_STATE_SUCCEEDED);
  ASSERT_TRUE(jobs_->Update(b).ok());
  auto all = *jobs_->List({}, 0, 10);
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].second.id(), "c");
  auto after = *jobs_->List({}, all[0].first, 10);
  ASSERT_EQ(after.size(), 2u);
  EXPECT_EQ(after[0].second.id(), "b");
  auto queued = *jobs_->List({kaizen::v1::JOB_STATE_QUEUED}, 0, 10);
  ASSERT_EQ(queued.size(), 2u);
  EXPECT_EQ(queued[1].second.id(), "a");
}

TEST_P(JobStoreTest, EventsAreOrderedAndSequencesUnique) {
  ASSERT_TRUE(jobs_->Insert(MakeJob("a", 0)).ok());
  for (int i = 1; i <= 5; ++i) {
    kaizen::v1::JobEvent e;
    e.set_job_id("a");
    e.set_sequence(i);
    e.set_message(std::to_string(i));
    ASSERT_TRUE(jobs_->AppendEvent(e).ok());
  }
  kaizen::v1::JobEvent dup;
  dup.set_job_id("a");
  dup.set_sequence(3);
  EXPECT_EQ(jobs_->AppendEvent(dup).code(), absl::StatusCode::kAlreadyExists);
  auto tail = *jobs_->Events("a", 2);
  ASSERT_EQ(tail.size(), 3u);
  EXPECT_EQ(tail[0].sequence(), 3);
  EXPECT_EQ(*jobs_->LastSequence("a"), 5);
  EXPECT_EQ(*jobs_->LastSequence("zzz"), 0);
}

TEST_P(JobStoreTest, SummarisesStatesAndTheOldestQueuedJob) {
  auto first = MakeJob("a", 0);
  first.mutable_create_time()->set_seconds(100);
  ASSERT_TRUE(jobs_->Insert(first).ok());
  auto second = MakeJob("b", 0);
  second.mutable_create_time()->set_seconds(200);
  ASSERT_TRUE(jobs_->Insert(second).ok());
  first.set_state(kaizen::v1::JOB_STATE_RUNNING);
  ASSERT_TRUE(jobs_->Update(first).ok());
  auto summary = *jobs_->SummarizeStates();
  EXPECT_EQ(summary.jobs_by_state[kaizen::v1::JOB_STATE_RUNNING], 1);
  EXPECT_EQ(summary.jobs_by_state[kaizen::v1::JOB_STATE_QUEUED], 1);
  ASSERT_TRUE(summary.oldest_queued_create_time.has_value());
  EXPECT_EQ(summary.oldest_queued_create_time->seconds(), 200);
  auto running = *jobs_->InStates({kaizen::v1::JOB_STATE_RUNNING});
  ASSERT_EQ(running.size(), 1u);
  EXPECT_EQ(running[0].id(), "a");
}

// Two replicas submitting at once: every job gets its own creation sequence
// (the page cursor), so none is lost or listed twice.
TEST_P(JobStoreTest, ConcurrentSubmissionsFromTwoConnectionsGetDistinctSequences) {
  if (GetParam() == test_util::Engine::kSqlite) GTEST_SKIP() << "one SQLite file, one server";
  auto other_meta = *MetadataStore::Open(target_);
  auto other_jobs = *JobStore::Open(other_meta->db());
  constexpr int kEach = 30;
  auto submit = [](JobStore* store, const std::string& prefix, std::vector<absl::Status>* out) {
    for (int i = 0; i < kEach; ++i)
      out->push_back(store->Insert(MakeJob(prefix + std::to_string(i), 0)));
  };
  std::vector<absl::Status> a, b;
  std::thread ta(submit, jobs_.get(), "a", &a);
  std::thread tb(submit, other_jobs.get(), "b", &b);
  ta.join();
  tb.join();
  for (const auto& s : a) EXPECT_TRUE(s.ok()) << s;
  for (const auto& s : b) EXPECT_TRUE(s.ok()) << s;
  auto all = *jobs_->List({}, 0, 1000);
  ASSERT_EQ(all.size(), 2u * kEach);
  std::set<int64_t> seqs;
  for (const auto& [seq, job] : all) seqs.insert(seq);
  EXPECT_EQ(seqs.size(), 2u * kEach);
}

// Replicas reserve output names in memory; the catalogue refuses a second
// active job writing the same model whichever replica submits it.
TEST_P(JobStoreTest, AnActiveJobsOutputModelIsItsAlone) {
  auto first = MakeJob("a", 0);
  first.mutable_request()->set_output_model("out");
  ASSERT_TRUE(jobs_->Insert(first).ok());
  auto second = MakeJob("b", 0);
  second.mutable_request()->set_output_model("out");
  absl::Status refused = jobs_->Insert(second);
  EXPECT_EQ(refused.code(), absl::StatusCode::kAlreadyExists) << refused;
  EXPECT_NE(refused.message().find("being written by job a"), absl::string_view::npos) << refused;
  first.set_state(kaizen::v1::JOB_STATE_SUCCEEDED);
  ASSERT_TRUE(jobs_->Update(first).ok());
  EXPECT_TRUE(jobs_->Insert(second).ok());
}

// Two replicas claiming from one queue at once: every job is claimed once.
TEST_P(JobStoreTest, ConcurrentClaimsTakeEachJobExactlyOnce) {
  if (GetParam() == test_util::Engine::kSqlite) GTEST_SKIP() << "one SQLite file, one server";
  constexpr int kJobs = 40;
  for (int i = 0; i < kJobs; ++i) ASSERT_TRUE(jobs_->Insert(MakeJob(std::to_string(i), 0)).ok());
  auto other_meta = *MetadataStore::Open(target_);
  auto other_jobs = *JobStore::Open(other_meta->db());
  auto claim_all = [](JobStore* store, const std::string& owner, std::vector<std::string>* got) {
    while (true) {
      auto next = store->ClaimNext(owner, 1000, 30000);
      ASSERT_TRUE(next.ok()) << next.status();
      if (!*next) return;
      got->push_back((*next)->id());
    }
  };
  std::vector<std::string> a, b;
  std::thread ta(claim_all, jobs_.get(), "replica-a", &a);
  std::thread tb(claim_all, other_jobs.get(), "replica-b", &b);
  ta.join();
  tb.join();
  std::set<std::string> all(a.begin(), a.end());
  all.insert(b.begin(), b.end());
  EXPECT_EQ(a.size() + b.size(), static_cast<size_t>(kJobs));
  EXPECT_EQ(all.size(), static_cast<size_t>(kJobs));
  EXPECT_TRUE(jobs_->InStates({kaizen::v1::JOB_STATE_QUEUED})->empty());
}

TEST_P(JobStoreTest, AnExpiredLeaseIsTakenOverAndTheOldHolderLearnsItLostIt) {
  ASSERT_TRUE(jobs_->Insert(MakeJob("a", 0)).ok());
  ASSERT_TRUE(jobs_->ClaimNext("replica-a", 1000, 5000)->has_value());
  std::string previous;
  // Live until 6000: nobody takes it.
  EXPECT_FALSE(jobs_->ClaimExpired("replica-b", 5999, 5000, {}, &previous)->has_value());
  auto renewed = *jobs_->RenewLeases("replica-a", {"a"}, 5000, 5000);  // until 10000
  EXPECT_TRUE(renewed["a"].held);
  EXPECT_FALSE(jobs_->ClaimExpired("replica-b", 9000, 5000, {}, &previous)->has_value());
  auto taken = jobs_->ClaimExpired("replica-b", 10001, 5000, {}, &previous);
  ASSERT_TRUE(taken.ok() && taken->has_value()) << taken.status();
  EXPECT_EQ((*taken)->id(), "a");
  EXPECT_EQ(previous, "replica-a");
  EXPECT_FALSE((*jobs_->RenewLeases("replica-a", {"a"}, 10002, 5000))["a"].held);
  EXPECT_TRUE((*jobs_->RenewLeases("replica-b", {"a"}, 10002, 5000))["a"].held);
}

TEST_P(JobStoreTest, ARequestReachesTheLiveLeaseHolderOnly) {
  ASSERT_TRUE(jobs_->Insert(MakeJob("a", 0)).ok());
  EXPECT_FALSE(jobs_->RequestOfLeaseHolder("a", "cancel", 0)->has_value());  // queued
  ASSERT_TRUE(jobs_->ClaimNext("replica-a", 1000, 5000)->has_value());
  auto holder = jobs_->RequestOfLeaseHolder("a", "cancel", 2000);
  ASSERT_TRUE(holder.ok() && holder->has_value());
  EXPECT_EQ(**holder, "replica-a");
  EXPECT_EQ((*jobs_->RenewLeases("replica-a", {"a"}, 3000, 5000))["a"].request, "cancel");
  // The holder asking: its own lease is named, and gets nothing.
  holder = jobs_->RequestOfLeaseHolder("a", "pause", 3500, "replica-a");
  ASSERT_TRUE(holder.ok() && holder->has_value());
  EXPECT_EQ(**holder, "replica-a");
  EXPECT_EQ((*jobs_->RenewLeases("replica-a", {"a"}, 3600, 5000))["a"].request, "");
  // Another replica excepted: the request is left as usual.
  ASSERT_TRUE(jobs_->RequestOfLeaseHolder("a", "pause", 3700, "replica-b")->has_value());
  EXPECT_EQ((*jobs_->RenewLeases("replica-a", {"a"}, 3800, 5000))["a"].request, "pause");
  EXPECT_FALSE(jobs_->RequestOfLeaseHolder("a", "pause", 9000)->has_value());  // expired
  ASSERT_TRUE(jobs_->ReleaseLease("a", "replica-a").ok());
  EXPECT_FALSE((*jobs_->RenewLeases("replica-a", {"a"}, 3000, 5000))["a"].held);
}

TEST_P(JobStoreTest, OnlyADeadReplicasRunningJobIsLeasedToEndIt) {
  ASSERT_TRUE(jobs_->Insert(MakeJob("a", 0)).ok());
  EXPECT_FALSE(*jobs_->TakeLeaseOfDeadJob("a", "replica-b", 1000, 5000)) << "queued";
  ASSERT_TRUE(jobs_->ClaimNext("replica-a", 1000, 5000)->has_value());  // until 6000
  EXPECT_FALSE(*jobs_->TakeLeaseOfDeadJob("a", "replica-b", 5999, 5000)) << "live";
  ASSERT_TRUE(*jobs_->TakeLeaseOfDeadJob("a", "replica-b", 6001, 5000));  // until 11001
  // Neither a takeover nor another replica's cancel follows.
  EXPECT_FALSE(jobs_->ClaimExpired("replica-c", 6002, 5000, {}, nullptr)->has_value());
  EXPECT_FALSE(*jobs_->TakeLeaseOfDeadJob("a", "replica-c", 6002, 5000));
  EXPECT_FALSE((*jobs_->RenewLeases("replica-a", {"a"}, 6003, 5000))["a"].held);
  EXPECT_TRUE((*jobs_->RenewLeases("replica-b", {"a"}, 6003, 5000))["a"].held);
}

// A job inserted held is nobody's to claim until its first Update (its
// QUEUED event): another replica cannot claim it in between and be
// overwritten by that event.
TEST_P(JobStoreTest, AHeldJobIsClaimableOnlyOnceItsStateIsWritten) {
  ASSERT_TRUE(jobs_->Insert(MakeJob("a", 0), /*held=*/true).ok());
  EXPECT_FALSE(jobs_->ClaimNext("replica-b", 1000, 5000)->has_value());
  EXPECT_EQ(jobs_->Get("a")->state(), kaizen::v1::JOB_STATE_QUEUED);  // the proto as submitted
  ASSERT_TRUE(jobs_->Update(*jobs_->Get("a")).ok());
  EXPECT_TRUE(jobs_->ClaimNext("replica-b", 1000, 5000)->has_value());
}

TEST_P(JobStoreTest, ATakeoverSkipsJobsTheReplicaStillRunsAndKeepsPendingRequests) {
  for (const char* id : {"a", "b"}) ASSERT_TRUE(jobs_->Insert(MakeJob(id, 0)).ok());
  ASSERT_TRUE(jobs_->ClaimNext("replica-a", 1000, 1000)->has_value());  // a, until 2000
  ASSERT_TRUE(jobs_->ClaimNext("replica-a", 1000, 1000)->has_value());  // b
  ASSERT_TRUE(jobs_->RequestOfLeaseHolder("b", "cancel", 1500)->has_value());
  // Expired: not renewed, so replica-a learns it lost them.
  EXPECT_FALSE((*jobs_->RenewLeases("replica-a", {"a", "b"}, 2500, 1000))["a"].held);
  std::string previous;
  // replica-a itself still runs "a": it may only take "b".
  auto taken = jobs_->ClaimExpired("replica-a", 2500, 1000, {"a"}, &previous);
  ASSERT_TRUE(taken.ok() && taken->has_value()) << taken.status();
  EXPECT_EQ((*taken)->id(), "b");
  auto other = jobs_->ClaimExpired("replica-b", 2500, 1000, {}, &previous);
  ASSERT_TRUE(other.ok() && other->has_value());
  EXPECT_EQ((*other)->id(), "a");
  // The cancel left for b's old holder reaches its new one.
  EXPECT_EQ((*jobs_->RenewLeases("replica-a", {"b"}, 2600, 1000))["b"].request, "cancel");
}

// A job whose holder recorded it PAUSED but died before releasing its lease
// (before requeueing it, for a preempted one): it is taken over, still
// PAUSED, with what was asked through other replicas; one whose holder
// released the lease is not.
TEST_P(JobStoreTest, APausedJobLeftUnderAnExpiredLeaseIsTakenOver) {
  for (const char* id : {"preempted", "user", "released"}) {
    ASSERT_TRUE(jobs_->Insert(MakeJob(id, 0)).ok());
    ASSERT_TRUE(jobs_->ClaimNext("replica-a", 1000, 1000)->has_value());  // until 2000
    kaizen::v1::Job job = *jobs_->Get(id);
    job.set_state(kaizen::v1::JOB_STATE_PAUSED);
    if (std::string(id) != "user") job.set_preempted_by("urgent");
    ASSERT_TRUE(jobs_->Update(job).ok());
  }
  ASSERT_TRUE(jobs_->RequestOfLeaseHolder("user", "cancel", 1500)->has_value());
  ASSERT_TRUE(jobs_->ReleaseLease("released", "replica-a").ok());
  std::string previous;
  EXPECT_FALSE(jobs_->ClaimExpired("replica-b", 1999, 1000, {}, &previous)->has_value());
  std::vector<std::string> taken;
  while (true) {
    auto next = jobs_->ClaimExpired("replica-b", 2500, 1000, {}, &previous);
    ASSERT_TRUE(next.ok()) << next.status();
    if (!next->has_value()) break;
    EXPECT_EQ((*next)->state(), kaizen::v1::JOB_STATE_PAUSED);
    EXPECT_EQ(previous, "replica-a");
    taken.push_back((*next)->id());
  }
  EXPECT_EQ(taken, (std::vector<std::string>{"preempted", "user"}));
  EXPECT_TRUE((*jobs_->RenewLeases("replica-b", {"preempted"}, 2600, 1000))["preempted"].held);
  EXPECT_EQ(*jobs_->ReleaseLease("user", "replica-b"), "cancel");
}

// A conditional update writes the whole row only from the state expected.
TEST_P(JobStoreTest, AConditionalUpdateWritesOnlyFromTheStateExpected) {
  ASSERT_TRUE(jobs_->Insert(MakeJob("a", 0)).ok());
  kaizen::v1::Job job = *jobs_->Get("a");
  job.set_state(kaizen::v1::JOB_STATE_PAUSED);
  job.set_preempted_by("urgent");
  EXPECT_FALSE(*jobs_->UpdateIf(job, kaizen::v1::JOB_STATE_RUNNING));
  EXPECT_EQ(jobs_->Get("a")->state(), kaizen::v1::JOB_STATE_QUEUED);
  EXPECT_TRUE(*jobs_->UpdateIf(job, kaizen::v1::JOB_STATE_QUEUED));
  EXPECT_EQ(jobs_->Get("a")->preempted_by(), "urgent");
  // The state column moved with the proto: a claim no longer finds it.
  EXPECT_FALSE(jobs_->ClaimNext("replica-a", 1000, 1000)->has_value());
  EXPECT_FALSE(*jobs_->UpdateIf(job, kaizen::v1::JOB_STATE_QUEUED));
}

// A replica writes the row of a job it runs only while its lease is live:
// once the lease ran out, and after another replica took the job over, its
// writes are refused and the taker's row stays.
TEST_P(JobStoreTest, ALeasedUpdateWritesOnlyWhileTheLeaseIsHeld) {
  ASSERT_TRUE(jobs_->Insert(MakeJob("a", 0)).ok());
  kaizen::v1::Job job = *jobs_->Get("a");
  job.set_state(kaizen::v1::JOB_STATE_RUNNING);
  job.set_step(1);
  EXPECT_FALSE(*jobs_->UpdateIfLeased(job, "replica-a", 1000));         // queued: nobody's
  ASSERT_TRUE(jobs_->ClaimNext("replica-a", 1000, 5000)->has_value());  // until 6000
  EXPECT_TRUE(*jobs_->UpdateIfLeased(job, "replica-a", 6000));
  EXPECT_EQ(jobs_->Get("a")->step(), 1);
  job.set_step(2);
  EXPECT_FALSE(*jobs_->UpdateIfLeased(job, "replica-b", 2000));  // not b's
  EXPECT_FALSE(*jobs_->UpdateIfLeased(job, "replica-a", 6001));  // expired
  std::string previous;
  ASSERT_TRUE(jobs_->ClaimExpired("replica-b", 6001, 5000, {}, &previous)->has_value());
  kaizen::v1::Job taker = *jobs_->Get("a");
  taker.set_step(7);
  EXPECT_TRUE(*jobs_->UpdateIfLeased(taker, "replica-b", 7000));
  // The old holder, whatever its clock says, writes nothing now.
  EXPECT_FALSE(*jobs_->UpdateIfLeased(job, "replica-a", 2000));
  EXPECT_EQ(jobs_->Get("a")->step(), 7);
}

// An event and a row written together only from the state expected; a
// sequence already taken fails the pair (ALREADY_EXISTS) and writes neither.
TEST_P(JobStoreTest, AConditionalEventIsWrittenWithItsRowOrNotAtAll) {
  ASSERT_TRUE(jobs_->Insert(MakeJob("a", 0)).ok());
  kaizen::v1::Job job = *jobs_->Get("a");
  job.set_state(kaizen::v1::JOB_STATE_PAUSED);
  kaizen::v1::JobEvent e;
  e.set_job_id("a");
  e.set_sequence(1);
  e.set_state(kaizen::v1::JOB_STATE_PAUSED);
  EXPECT_FALSE(*jobs_->AppendEventIf(e, job, kaizen::v1::JOB_STATE_RUNNING));
  EXPECT_EQ(*jobs_->LastSequence("a"), 0);
  EXPECT_EQ(jobs_->Get("a")->state(), kaizen::v1::JOB_STATE_QUEUED);
  EXPECT_TRUE(*jobs_->AppendEventIf(e, job, kaizen::v1::JOB_STATE_QUEUED));
  EXPECT_EQ(*jobs_->LastSequence("a"), 1);
  EXPECT_EQ(jobs_->Get("a")->state(), kaizen::v1::JOB_STATE_PAUSED);
  kaizen::v1::Job again = job;
  again.set_pause_reason("second");
  EXPECT_EQ(jobs_->AppendEventIf(e, again, kaizen::v1::JOB_STATE_PAUSED).status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(jobs_->Get("a")->pause_reason(), "");
}

// A run's event and its row are stored only while its replica holds a live
// lease: not before the job is claimed, not by another replica, not once the
// lease ran out, and not by the old holder once another replica took the job
// over, whatever its clock says.
TEST_P(JobStoreTest, ALeasedEventIsStoredOnlyWhileTheLeaseIsHeld) {
  ASSERT_TRUE(jobs_->Insert(MakeJob("a", 0)).ok());
  kaizen::v1::Job job = *jobs_->Get("a");
  job.set_state(kaizen::v1::JOB_STATE_RUNNING);
  job.set_epoch(1);
  kaizen::v1::JobEvent e;
  e.set_job_id("a");
  e.set_sequence(1);
  e.mutable_epoch_summary()->set_epoch(1);
  EXPECT_FALSE(*jobs_->AppendEventIfLeased(e, job, "replica-a", 1000));  // queued: nobody's
  ASSERT_TRUE(jobs_->ClaimNext("replica-a", 1000, 5000)->has_value());   // until 6000
  EXPECT_FALSE(*jobs_->AppendEventIfLeased(e, job, "replica-b", 2000));  // not b's
  EXPECT_FALSE(*jobs_->AppendEventIfLeased(e, job, "replica-a", 6001));  // expired
  EXPECT_EQ(*jobs_->LastSequence("a"), 0);
  EXPECT_EQ(jobs_->Get("a")->epoch(), 0);
  EXPECT_TRUE(*jobs_->AppendEventIfLeased(e, job, "replica-a", 6000));
  EXPECT_EQ(*jobs_->LastSequence("a"), 1);
  EXPECT_EQ(jobs_->Get("a")->epoch(), 1);
  // A sequence already taken writes neither.
  job.set_epoch(5);
  EXPECT_EQ(jobs_->AppendEventIfLeased(e, job, "replica-a", 6000).status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(jobs_->Get("a")->epoch(), 1);
  std::string previous;
  ASSERT_TRUE(jobs_->ClaimExpired("replica-b", 6001, 5000, {}, &previous)->has_value());
  e.set_sequence(2);
  EXPECT_FALSE(*jobs_->AppendEventIfLeased(e, job, "replica-a", 2000));
  EXPECT_EQ(*jobs_->LastSequence("a"), 1);
  job.set_epoch(2);
  EXPECT_TRUE(*jobs_->AppendEventIfLeased(e, job, "replica-b", 7000));
  EXPECT_EQ(*jobs_->LastSequence("a"), 2);
  EXPECT_EQ(jobs_->Get("a")->epoch(), 2);
  // A message of the run: the same check, and the row stays as it was.
  kaizen::v1::JobEvent m;
  m.set_job_id("a");
  m.set_sequence(3);
  m.set_message("early stopping");
  EXPECT_FALSE(*jobs_->AppendEventWhileLeased(m, "replica-a", 7000));   // not a's now
  EXPECT_FALSE(*jobs_->AppendEventWhileLeased(m, "replica-b", 11002));  // expired
  EXPECT_EQ(*jobs_->LastSequence("a"), 2);
  EXPECT_TRUE(*jobs_->AppendEventWhileLeased(m, "replica-b", 8000));
  EXPECT_EQ(*jobs_->LastSequence("a"), 3);
  EXPECT_EQ(jobs_->Events("a", 2)->at(0).message(), "early stopping");
  EXPECT_EQ(jobs_->Get("a")->epoch(), 2);
  EXPECT_EQ(jobs_->AppendEventWhileLeased(m, "replica-b", 8000).status().code(),
            absl::StatusCode::kAlreadyExists);
}

kaizen::v1::Job JobWriting(const std::string& id, const std::string& model) {
  kaizen::v1::Job j = MakeJob(id, 0);
  j.mutable_request()->set_output_model(model);
  return j;
}

ModelRow UploadedModel(const std::string& name) {
  ModelRow row;
  row.file = absl::StrCat("models/", name, "/v1.pt");
  row.model.set_name(name);
  row.model.set_version(1);
  return row;
}

// A model name goes to one active job or to one upload: a job is refused the
// output of another active job (held ones too, while being submitted) and,
// unless its output may exist, an existing model's name; an upload is
// refused the output of an active job. Each is checked in the transaction
// that inserts the row.
TEST_P(JobStoreTest, AModelNameGoesToOneJobOrOneUpload) {
  ASSERT_TRUE(jobs_->Insert(JobWriting("a", "x"), /*held=*/true).ok());
  absl::Status second = jobs_->Insert(JobWriting("b", "x"));
  EXPECT_EQ(second.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(std::string(second.message()), HasSubstr("model \"x\" is being written by job a"));
  absl::Status upload = meta_->InsertModel(UploadedModel("x"), /*unless_a_job_writes=*/true);
  EXPECT_EQ(upload.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(std::string(upload.message()), HasSubstr("is being written by job a"));
  EXPECT_FALSE(*meta_->ModelExists("x"));

  // Once the job has ended, the upload takes the name.
  kaizen::v1::Job ended = *jobs_->Get("a");
  ended.set_state(kaizen::v1::JOB_STATE_CANCELLED);
  ASSERT_TRUE(jobs_->Update(ended).ok());
  ASSERT_TRUE(meta_->InsertModel(UploadedModel("x"), /*unless_a_job_writes=*/true).ok());
  absl::Status over = jobs_->Insert(JobWriting("c", "x"), false, /*output_may_exist=*/false);
  EXPECT_EQ(over.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(std::string(over.message()), HasSubstr("model \"x\" already exists"));
  // A job that continues the model (INCREMENTAL into its base) may write it.
  EXPECT_TRUE(jobs_->Insert(JobWriting("c", "x"), false, /*output_may_exist=*/true).ok());
}

// Two replicas, one submitting a job into a new model name and the other
// finishing an upload of the same name at the same moment: exactly one of
// the two gets it, every time.
TEST_P(JobStoreTest, AJobAndAnUploadRacingForANameThroughTwoReplicasDoNotBothWin) {
  if (GetParam() == test_util::Engine::kSqlite) GTEST_SKIP() << "one SQLite file, one server";
  auto other_meta = *MetadataStore::Open(target_);
  auto other_jobs = *JobStore::Open(other_meta->db());
  constexpr int kRounds = 40;
  for (int i = 0; i < kRounds; ++i) {
    const std::string name = absl::StrCat("m", i);
    std::atomic<int> ready{0};
    auto start_together = [&] {
      ++ready;
      while (ready < 2) std::this_thread::yield();
    };
    absl::Status job, upload;
    std::thread submit([&] {
      start_together();
      job = other_jobs->Insert(JobWriting(absl::StrCat("j", i), name), /*held=*/true,
                               /*output_may_exist=*/false);
    });
    std::thread finish([&] {
      start_together();
      upload = meta_->InsertModel(UploadedModel(name), /*unless_a_job_writes=*/true);
    });
    submit.join();
    finish.join();
    EXPECT_NE(job.ok(), upload.ok()) << "round " << i << ": job " << job << ", upload " << upload;
    EXPECT_TRUE(job.ok() || absl::IsAlreadyExists(job)) << job;
    EXPECT_TRUE(upload.ok() || absl::IsAlreadyExists(upload)) << upload;
  }
}

// A version a job's run writes is stored only while the run's replica holds
// the job's lease, checked in the insertion's transaction.
TEST_P(JobStoreTest, AJobsVersionIsStoredOnlyWhileItsRunsLeaseIsLive) {
  ASSERT_TRUE(jobs_->Insert(JobWriting("a", "out")).ok());
  ASSERT_TRUE(jobs_->ClaimNext("replica-a", 1000, 5000)->has_value());  // until 6000
  ModelRow v1 = UploadedModel("out");
  JobLease lease{"a", "replica-b", [] { return int64_t{2000}; }};
  absl::Status refused = meta_->InsertModel(v1, false, &lease);  // not b's
  EXPECT_EQ(refused.code(), absl::StatusCode::kAborted);
  EXPECT_THAT(std::string(refused.message()),
              HasSubstr("job a is no longer leased to replica-b: version 1 of \"out\" not stored"));
  lease = {"a", "replica-a", [] { return int64_t{6001}; }};  // expired
  EXPECT_EQ(meta_->InsertModel(v1, false, &lease).code(), absl::StatusCode::kAborted);
  EXPECT_FALSE(*meta_->ModelExists("out"));
  lease = {"a", "replica-a", [] { return int64_t{6000}; }};
  EXPECT_TRUE(meta_->InsertModel(v1, false, &lease).ok());
  EXPECT_TRUE(*meta_->ModelExists("out"));
}

// A request left on a lease after its holder's last renewal comes back when
// the holder releases it, so that the end of a run does not drop it.
TEST_P(JobStoreTest, ReleasingALeaseHandsBackTheRequestLeftOnIt) {
  for (const char* id : {"a", "b"}) {
    ASSERT_TRUE(jobs_->Insert(MakeJob(id, 0)).ok());
    ASSERT_TRUE(jobs_->ClaimNext("replica-a", 1000, 5000)->has_value());
  }
  ASSERT_TRUE(jobs_->RequestOfLeaseHolder("a", "cancel", 2000)->has_value());
  ASSERT_TRUE(jobs_->RequestOfLeaseHolder("b", "pause", 2000)->has_value());
  EXPECT_EQ((*jobs_->RenewLeases("replica-a", {"b"}, 2100, 5000))["b"].request, "pause");
  // Another replica's lease is not released, and hands back nothing.
  EXPECT_EQ(*jobs_->ReleaseLease("a", "replica-b"), "");
  EXPECT_EQ(*jobs_->ReleaseLease("a", "replica-a"), "cancel");
  EXPECT_EQ(*jobs_->ReleaseLease("a", "replica-a"), "");  // gone
  EXPECT_EQ(*jobs_->ReleaseLease("b", "replica-a"), "");  // taken by the renewal
}

// Replicas time leases by the database's clock. Here the database runs on
// this machine (SQLite in the process, PostgreSQL on loopback), so its clock
// is this machine's, read in milliseconds.
TEST_P(JobStoreTest, TheDatabaseTellsItsTimeInMilliseconds) {
  const int64_t before = absl::ToUnixMillis(absl::Now());
  absl::StatusOr<int64_t> database = jobs_->DatabaseMillis();
  const int64_t after = absl::ToUnixMillis(absl::Now());
  ASSERT_TRUE(database.ok()) << database.status();
  // julianday() rounding on SQLite can put it a millisecond either way.
  EXPECT_GE(*database, before - 2);
  EXPECT_LE(*database, after + 2);
  absl::SleepFor(absl::Milliseconds(20));
  EXPECT_GE(*jobs_->DatabaseMillis() - *database, 18);  // not seconds
}

TEST_P(JobStoreTest, AStateMovesOnlyFromTheStateItIsIn) {
  ASSERT_TRUE(jobs_->Insert(MakeJob("a", 0)).ok());
  ASSERT_TRUE(jobs_->ClaimNext("replica-a", 1000, 5000)->has_value());
  // Cancelling it as a QUEUED job loses to the claim.
  EXPECT_FALSE(
      *jobs_->TransitionState("a", kaizen::v1::JOB_STATE_QUEUED, kaizen::v1::JOB_STATE_CANCELLED));
  EXPECT_TRUE(
      *jobs_->TransitionState("a", kaizen::v1::JOB_STATE_RUNNING, kaizen::v1::JOB_STATE_CANCELLED));
  EXPECT_FALSE(jobs_->ClaimNext("replica-b", 1000, 5000)->has_value());
  EXPECT_FALSE(*jobs_->TransitionState("missing", kaizen::v1::JOB_STATE_QUEUED,
                                       kaizen::v1::JOB_STATE_CANCELLED));
}

INSTANTIATE_TEST_SUITE_P(Engines, JobStoreTest,
                         ::testing::Values(test_util::Engine::kSqlite,
                                           test_util::Engine::kPostgres),
                         [](const auto& info) { return test_util::EngineName(info.param); });

}  // namespace
}  // namespace kaizen::store
