#include "server/store/job_store.h"

#include <gtest/gtest.h>

#include "server/store/metadata_store.h"
#include "tests/test_util/temp_dir.h"

namespace kaizen::store {
namespace {

kaizen::v1::Job MakeJob(const std::string& id, int priority, const std::string& request_id = "") {
  kaizen::v1::Job j;
  j.set_id(id);
  j.set_state(kaizen::v1::JOB_STATE_QUEUED);
  j.mutable_request()->set_priority(priority);
  j.mutable_request()->set_request_id(request_id);
  return j;
}

class JobStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    meta_ = *MetadataStore::Open(dir_.File("k.db"));
    jobs_ = *JobStore::Open(meta_->db());
  }
  test_util::TempDir dir_;
  std::unique_ptr<MetadataStore> meta_;
  std::unique_ptr<JobStore> jobs_;
};

TEST_F(JobStoreTest, QueueOrdersByPriorityThenAge) {
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

TEST_F(JobStoreTest, QueueSurvivesReopen) {
  ASSERT_TRUE(jobs_->Insert(MakeJob("a", 1)).ok());
  jobs_.reset();
  meta_.reset();
  meta_ = *MetadataStore::Open(dir_.File("k.db"));
  jobs_ = *JobStore::Open(meta_->db());
  auto next = jobs_->NextQueued();
  ASSERT_TRUE(next.ok() && *next);
  EXPECT_EQ((*next)->id(), "a");
}

TEST_F(JobStoreTest, RequestIdIsUniqueAndFindable) {
  ASSERT_TRUE(jobs_->Insert(MakeJob("a", 0, "req-1")).ok());
  EXPECT_EQ(jobs_->Insert(MakeJob("b", 0, "req-1")).code(), absl::StatusCode::kAlreadyExists);
  ASSERT_TRUE(jobs_->Insert(MakeJob("c", 0)).ok());
  ASSERT_TRUE(jobs_->Insert(MakeJob("d", 0)).ok());  // empty ids do not collide
  auto found = jobs_->FindByRequestId("req-1");
  ASSERT_TRUE(found.ok() && *found);
  EXPECT_EQ((*found)->id(), "a");
  EXPECT_FALSE(*jobs_->FindByRequestId("req-2"));
}

TEST_F(JobStoreTest, ListsNewestFirstWithStateFilterAndCursor) {
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

TEST_F(JobStoreTest, EventsAreOrderedAndSequencesUnique) {
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

}  // namespace
}  // namespace kaizen::store
