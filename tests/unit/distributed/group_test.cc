#include "server/distributed/group.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "tests/test_util/temp_dir.h"
#include "tests/test_util/two_ranks.h"

namespace kaizen::distributed {
namespace {

using test_util::RunTwoRanks;

TEST(GroupTest, ReducedGradientsAreTheGlobalBatchMeanOnEveryRankBitForBit) {
  // Rank r holds gradient (r + 1) * g and trains on 3 - r of 5 examples:
  // weights 3/5 and 2/5 give 3/5 g + 2/5 (2 g) = 7/5 g.
  torch::manual_seed(1);
  const torch::Tensor g = torch::randn({1000, 37});
  const torch::Tensor h = torch::randn({5});
  std::map<int, std::vector<torch::Tensor>> reduced;
  std::mutex mu;
  RunTwoRanks(absl::Seconds(30), [&](Group& group) {
    torch::Tensor a = torch::zeros({1000, 37}, torch::requires_grad());
    torch::Tensor b = torch::zeros({5}, torch::requires_grad());
    torch::Tensor c = torch::zeros({3}, torch::requires_grad());  // no gradient: zeros
    a.mutable_grad() = g * (group.rank() + 1);
    b.mutable_grad() = h * (group.rank() + 1);
    const double weight = (3.0 - group.rank()) / 5.0;
    // A bucket smaller than `a` alone: three buckets, one per tensor.
    ASSERT_TRUE(group.ReduceGradients({a, b, c}, weight, 1024).ok());
    std::lock_guard<std::mutex> lock(mu);
    reduced[group.rank()] = {a.grad(), b.grad(), c.grad()};
  });
  ASSERT_EQ(reduced.size(), 2u);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(torch::equal(reduced[0][i], reduced[1][i])) << i;
  EXPECT_TRUE(torch::allclose(reduced[0][0], g * 1.4, 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(reduced[0][1], h * 1.4, 1e-5, 1e-6));
  EXPECT_TRUE(torch::equal(reduced[0][2], torch::zeros({3})));
}

TEST(GroupTest, BroadcastSumAndAnyAgreeOnEveryRank) {
  std::map<int, std::vector<double>> seen;
  std::mutex mu;
  RunTwoRanks(absl::Seconds(30), [&](Group& group) {
    torch::Tensor weights = torch::full({4}, group.rank() == 0 ? 2.5 : -1.0);
    ASSERT_TRUE(group.Broadcast({weights}).ok());
    torch::Tensor counts = torch::full({2}, group.rank() + 1.0, torch::kDouble);
    ASSERT_TRUE(group.Sum({counts}).ok());
    absl::StatusOr<bool> any = group.Any(group.rank() == 1);
    absl::StatusOr<bool> none = group.Any(false);
    ASSERT_TRUE(any.ok() && none.ok());
    std::lock_guard<std::mutex> lock(mu);
    seen[group.rank()] = {weights[3].item<double>(), counts[1].item<double>(), *any ? 1.0 : 0.0,
                          *none ? 1.0 : 0.0};
    EXPECT_EQ(group.collectives(), 4);
  });
  for (int rank : {0, 1}) EXPECT_EQ(seen[rank], (std::vector<double>{2.5, 3.0, 1.0, 0.0})) << rank;
}

// A broadcast may let the other ranks wait for the root longer than the
// group's timeout (an INCREMENTAL group's rank 0 choosing exemplars), and
// only that broadcast.
TEST(GroupTest, ABroadcastWaitsForItsRootUpToItsOwnTimeout) {
  test_util::TempDir dir;
  for (const std::string& store_file : {std::string(), dir.File("store")}) {
    SCOPED_TRACE(store_file.empty() ? "TCPStore" : "FileStore");
    std::map<int, std::vector<absl::Status>> status;
    std::map<int, double> value;
    std::mutex mu;
    RunTwoRanks(
        absl::Milliseconds(1500),
        [&](Group& group) {
          torch::Tensor t = torch::full({3}, group.rank() == 0 ? 7.0 : 0.0);
          if (group.rank() == 0) absl::SleepFor(absl::Seconds(3));
          const absl::Status waited = group.Broadcast({t}, 0, absl::Seconds(30));
          // With the group's timeout the same wait fails.
          if (group.rank() == 0) absl::SleepFor(absl::Seconds(3));
          const absl::Status timed_out = group.Broadcast({t}, 0);
          std::lock_guard<std::mutex> lock(mu);
          status[group.rank()] = {waited, timed_out};
          value[group.rank()] = t[2].item<double>();
        },
        store_file);
    ASSERT_EQ(status[1].size(), 2u);
    EXPECT_TRUE(status[1][0].ok()) << status[1][0];
    EXPECT_EQ(value[1], 7.0);
    EXPECT_EQ(status[1][1].code(), absl::StatusCode::kUnavailable) << status[1][1];
  }
}

TEST(GroupTest, ARankThatLeavesFailsTheOthersCollectivePromptly) {
  std::map<int, absl::Status> status;
  std::map<int, absl::Duration> took;
  std::mutex mu;
  RunTwoRanks(absl::Seconds(20), [&](Group& group) {
    // Rank 1 leaves the group (its destructor closes its connections);
    // rank 0's next collective fails and names itself.
    if (group.rank() == 1) return;
    const absl::Time start = absl::Now();
    torch::Tensor t = torch::ones({8});
    absl::Status s = absl::OkStatus();
    for (int i = 0; i < 50 && s.ok(); ++i) s = group.Sum({t});
    std::lock_guard<std::mutex> lock(mu);
    status[0] = s;
    took[0] = absl::Now() - start;
  });
  EXPECT_EQ(status[0].code(), absl::StatusCode::kUnavailable) << status[0];
  EXPECT_NE(status[0].message().find("rank 0 of 2: all-reduce failed"), std::string::npos)
      << status[0];
  EXPECT_LT(took[0], absl::Seconds(20));
}

TEST(GroupTest, AGroupThatNeverFormsTimesOut) {
  Rendezvous r;
  r.world_size = 2;
  r.timeout = absl::Seconds(2);
  const absl::Time start = absl::Now();
  absl::StatusOr<std::unique_ptr<Group>> g = Group::Join(r);
  EXPECT_EQ(g.status().code(), absl::StatusCode::kDeadlineExceeded) << g.status();
  EXPECT_LT(absl::Now() - start, absl::Seconds(30));
}

TEST(GroupTest, TheEnvironmentContractIsAllOrNothingAndChecked) {
  std::map<std::string, std::string> env;
  auto getenv = [&](const char* name) -> const char* {
    auto it = env.find(name);
    return it == env.end() ? nullptr : it->second.c_str();
  };
  absl::StatusOr<Rendezvous> none = RendezvousFromEnvironment(getenv, absl::Seconds(5));
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->world_size, 1);

  env = {{"MASTER_ADDR", "kaizen-job-master-0"},
         {"MASTER_PORT", "23456"},
         {"WORLD_SIZE", "4"},
         {"RANK", "3"}};
  absl::StatusOr<Rendezvous> r = RendezvousFromEnvironment(getenv, absl::Seconds(5));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->master_addr, "kaizen-job-master-0");
  EXPECT_EQ(r->master_port, 23456);
  EXPECT_EQ(r->world_size, 4);
  EXPECT_EQ(r->rank, 3);

  env["RANK"] = "4";
  EXPECT_NE(RendezvousFromEnvironment(getenv, absl::Seconds(5)).status().message().find("RANK=4"),
            std::string::npos);
  env["RANK"] = "0";
  env["MASTER_PORT"] = "70000";
  EXPECT_EQ(RendezvousFromEnvironment(getenv, absl::Seconds(5)).status().code(),
            absl::StatusCode::kInvalidArgument);
  env.erase("MASTER_PORT");
  EXPECT_NE(RendezvousFromEnvironment(getenv, absl::Seconds(5))
                .status()
                .message()
                .find("missing MASTER_PORT"),
            std::string::npos);
}

TEST(GroupTest, ShardsCoverEveryExampleOnce) {
  const std::vector<int64_t> batch = {9, 4, 7, 1, 3};
  EXPECT_EQ(ShardOfBatch(batch, 0, 2), (std::vector<int64_t>{9, 7, 3}));
  EXPECT_EQ(ShardOfBatch(batch, 1, 2), (std::vector<int64_t>{4, 1}));
  EXPECT_EQ(ShardOfBatch(batch, 0, 1), batch);
  EXPECT_TRUE(ShardOfBatch({5}, 1, 2).empty());
}

// Work that fails on one rank fails on every rank at once, not at the next
// collective's timeout: the failing rank gets its own exception back; the
// others PeerFailure naming it where a caller may recover (a std::exception
// that `recoverable` accepts), Aborted where it ends the job; work that goes
// well everywhere is OK.
TEST(GroupTest, WorkThatFailsOnOneRankEndsOnEveryRankTogether) {
  struct NotAStdException {};
  enum class Failure { kRecoverable, kRefused, kNotStd };
  const auto recoverable = [](const std::exception& e) {
    return std::string(e.what()).find("disk") == std::string::npos;
  };
  for (const Failure failure : {Failure::kRecoverable, Failure::kRefused, Failure::kNotStd}) {
    std::mutex mu;
    std::map<int, std::string> outcome;
    std::map<int, absl::Duration> took;
    RunTwoRanks(absl::Seconds(30), [&](Group& group) {
      const absl::Time start = absl::Now();
      std::string what;
      try {
        const absl::Status st = RunOnAllRanks(
            group,
            [&] {
              if (group.rank() != 1) return;
              if (failure == Failure::kRecoverable) throw std::runtime_error("out of memory");
              if (failure == Failure::kRefused) throw std::runtime_error("disk on fire");
              throw NotAStdException{};
            },
            recoverable);
        what =
            st.ok() ? "ok" : absl::StrCat(absl::StatusCodeToString(st.code()), ": ", st.message());
      } catch (const PeerFailure& e) {
        what = absl::StrCat("peer: ", e.what());
      } catch (const std::runtime_error& e) {
        what = absl::StrCat("own: ", e.what());
      } catch (const NotAStdException&) {
        what = "own: not a std::exception";
      }
      // Both ranks go on to the next collective together.
      EXPECT_TRUE(group.Any(false).ok());
      std::lock_guard<std::mutex> lock(mu);
      outcome[group.rank()] = what;
      took[group.rank()] = absl::Now() - start;
    });
    switch (failure) {
      case Failure::kRecoverable:
        EXPECT_EQ(outcome[0], "peer: rank 1 of 2 failed in the work that every rank shares");
        EXPECT_EQ(outcome[1], "own: out of memory");
        break;
      case Failure::kRefused:
        EXPECT_EQ(outcome[0],
                  "ABORTED: rank 1 of 2 failed in the work that every rank shares, with an error "
                  "that ends the job");
        EXPECT_EQ(outcome[1], "own: disk on fire");
        break;
      case Failure::kNotStd:
        EXPECT_EQ(outcome[0],
                  "ABORTED: rank 1 of 2 failed in the work that every rank shares, with an error "
                  "that ends the job");
        EXPECT_EQ(outcome[1], "own: not a std::exception");
        break;
    }
    EXPECT_LT(took[0], absl::Seconds(10));
  }
  RunTwoRanks(absl::Seconds(30), [&](Group& group) {
    int ran = 0;
    EXPECT_TRUE(RunOnAllRanks(group, [&] { ++ran; }).ok());
    EXPECT_EQ(ran, 1);
  });
}

// A group that breaks during the agreement (a rank gone) fails every rank
// that is left, its own work's failure or not: a broken group recovers
// nothing.
TEST(GroupTest, ABrokenAgreementIsTheGroupsStatusEvenForTheRankThatFailed) {
  RunTwoRanks(absl::Seconds(2), [&](Group& group) {
    if (group.rank() == 1) return;  // never agrees
    absl::Status st;
    EXPECT_NO_THROW(st = RunOnAllRanks(group, [] { throw std::runtime_error("out of memory"); }));
    EXPECT_FALSE(st.ok());
    EXPECT_NE(st.message().find("this rank's own share had failed: out of memory"),
              std::string::npos)
        << st;
  });
}

TEST(GroupTest, APassesChunksCoverEveryRowOnceAndReachEveryRank) {
  using Chunks = std::vector<std::vector<int64_t>>;
  // At most the batch: 10 rows in chunks of 3, dealt in turn.
  EXPECT_EQ(ChunksOfRank(10, 3, 0, 2), (Chunks{{0, 1, 2}, {6, 7, 8}}));
  EXPECT_EQ(ChunksOfRank(10, 3, 1, 2), (Chunks{{3, 4, 5}, {9}}));
  // At most rows / world_size: three rows and three ranks, one each.
  for (int rank = 0; rank < 3; ++rank) {
    EXPECT_EQ(ChunksOfRank(3, 64, rank, 3), (Chunks{{rank}}));
  }
  // 97 rows, batches of 64, two ranks: 48 + 1 and 48.
  EXPECT_EQ(ChunksOfRank(97, 64, 0, 2).size(), 2u);
  EXPECT_EQ(ChunksOfRank(97, 64, 1, 2).size(), 1u);
  for (const int world : {1, 2, 3, 5}) {
    std::vector<int> seen(101, 0);
    for (int rank = 0; rank < world; ++rank) {
      const Chunks mine = ChunksOfRank(101, 16, rank, world);
      EXPECT_FALSE(mine.empty()) << "rank " << rank << " of " << world;
      for (const std::vector<int64_t>& chunk : mine) {
        EXPECT_LE(chunk.size(), 16u);
        for (const int64_t row : chunk) ++seen[static_cast<size_t>(row)];
      }
    }
    EXPECT_EQ(std::count(seen.begin(), seen.end(), 1), 101) << "world size " << world;
  }
  EXPECT_TRUE(ChunksOfRank(0, 16, 0, 2).empty());
}

// A pass is shared by a group of at most as many ranks as rows; otherwise
// (no group, more ranks than rows) each computes every chunk alone.
TEST(GroupTest, APassIsSharedOnlyWhenEveryRankHasAChunk) {
  const PassShare alone = ShareOfPass(10, 3, nullptr);
  EXPECT_FALSE(alone.shared);
  EXPECT_EQ(alone.chunks, ChunksOfRank(10, 3, 0, 1));
  std::mutex mu;
  std::map<int, std::pair<PassShare, PassShare>> seen;
  RunTwoRanks(absl::Seconds(30), [&](Group& group) {
    const PassShare ten = ShareOfPass(10, 3, &group);
    const PassShare one = ShareOfPass(1, 3, &group);
    std::lock_guard<std::mutex> lock(mu);
    seen[group.rank()] = {ten, one};
  });
  for (int rank = 0; rank < 2; ++rank) {
    EXPECT_TRUE(seen[rank].first.shared);
    EXPECT_EQ(seen[rank].first.chunks, ChunksOfRank(10, 3, rank, 2));
    EXPECT_FALSE(seen[rank].second.shared);
    EXPECT_EQ(seen[rank].second.chunks, (std::vector<std::vector<int64_t>>{{0}}));
  }
}

}  // namespace
}  // namespace kaizen::distributed
