#include "server/training/batchnorm_recalibration.h"

#include <torch/torch.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "server/training/head.h"
#include "tests/test_util/two_ranks.h"
#include "tests/unit/training/training_test_util.h"

namespace kaizen::training {
namespace {

using fixtures::Builtin;

torch::Tensor Buffer(const torch::jit::Module& root, const std::string& path,
                     const std::string& name) {
  absl::StatusOr<torch::jit::Module> m = FindSubmodule(root, path);
  EXPECT_TRUE(m.ok()) << path;
  return m->attr(name).toTensor();
}

// Runs `module` over `x` in batches of `batch`.
absl::StatusOr<int> RecalibrateOn(torch::jit::Module& module, const std::vector<std::string>& paths,
                                  const torch::Tensor& x, int64_t batch) {
  const int64_t n = x.size(0);
  const int64_t batches = (n + batch - 1) / batch;
  return RecalibrateBatchNorm(module, paths, batches, [&](int64_t b) {
    const int64_t begin = b * batch;
    const int64_t size = std::min(batch, n - begin);
    module.forward({x.narrow(0, begin, size)});
    return size;
  });
}

// A BatchNorm1d over `channels` features whose running statistics move by
// `momentum` ("None": a cumulative average, as torch.nn.BatchNorm1d with
// momentum=None).
torch::jit::Module BatchNorm1d(int64_t channels, const std::string& momentum) {
  static int count = 0;
  auto cu = std::make_shared<torch::jit::CompilationUnit>();
  torch::jit::Module m(c10::QualifiedName("__torch__.test.BatchNorm1d" + std::to_string(++count)),
                       cu, /*shouldMangle=*/true);
  m.register_attribute("training", c10::BoolType::get(), true);
  m.register_parameter("weight", torch::ones({channels}), false);
  m.register_parameter("bias", torch::zeros({channels}), false);
  m.register_buffer("running_mean", torch::zeros({channels}));
  m.register_buffer("running_var", torch::ones({channels}));
  m.register_buffer("num_batches_tracked", torch::zeros({}, torch::kLong));
  const std::string factor =
      momentum == "None" ? "1.0 / float(self.num_batches_tracked.item())" : momentum;
  m.define(R"(
def forward(self, x):
    factor = 0.0
    if self.training:
        self.num_batches_tracked.add_(1)
        factor = )" +
           factor + R"(
    return torch.batch_norm(x, self.weight, self.bias, self.running_mean,
                            self.running_var, self.training, factor, 1e-5, True)
)");
  return m;
}

// The first layer's input does not depend on how the data is batched, so its
// recalibrated statistics are those of the whole set: the mean and variance
// of the first convolution's output over every image.
TEST(BatchNormRecalibrationTest, FirstLayerGetsTheStatisticsOfTheWholeSet) {
  fixtures::BaseModel base = Builtin("cnn-small");
  torch::jit::Module model = base.module;
  model.train();
  const std::vector<std::string> paths = TrainingBatchNormPaths(model);
  EXPECT_EQ(paths, (std::vector<std::string>{"features.block1.bn", "features.block2.bn",
                                             "features.block3.bn"}));
  torch::manual_seed(5);
  const torch::Tensor x = torch::rand({40, 1, 28, 28}) * 3 + 1;
  absl::StatusOr<int> n = RecalibrateOn(model, paths, x, /*batch=*/8);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 3);

  torch::NoGradGuard no_grad;
  absl::StatusOr<torch::jit::Module> conv = FindSubmodule(model, "features.block1.conv");
  ASSERT_TRUE(conv.ok());
  const torch::Tensor y = conv->forward({x}).toTensor().transpose(0, 1).flatten(1);
  const torch::Tensor mean = Buffer(model, "features.block1.bn", "running_mean");
  const torch::Tensor var = Buffer(model, "features.block1.bn", "running_var");
  EXPECT_TRUE(torch::allclose(mean, y.mean(1), 1e-4, 1e-5)) << mean - y.mean(1);
  EXPECT_TRUE(torch::allclose(var, y.var(1), 1e-3, 1e-5)) << var - y.var(1);
}

// Whatever the layer's momentum (0.1, 0.5, a cumulative average), the
// statistics are those of the data; running it again gives the same numbers
// (they do not depend on the statistics before); num_batches_tracked, the
// parameters and the mode are as they were.
TEST(BatchNormRecalibrationTest, StatisticsDoNotDependOnMomentumOrHistory) {
  torch::manual_seed(3);
  const torch::Tensor x = torch::randn({200, 6}) * 40 + 1000;
  for (const std::string momentum : {"0.1", "0.5", "None"}) {
    torch::jit::Module bn = BatchNorm1d(6, momentum);
    bn.attr("num_batches_tracked").toTensor().fill_(17);
    absl::StatusOr<int> n = RecalibrateOn(bn, {""}, x, /*batch=*/50);
    ASSERT_TRUE(n.ok()) << n.status();
    EXPECT_EQ(*n, 1) << momentum;
    const torch::Tensor mean = bn.attr("running_mean").toTensor().clone();
    const torch::Tensor var = bn.attr("running_var").toTensor().clone();
    EXPECT_TRUE(torch::allclose(mean, x.mean(0), 1e-5, 1e-3)) << momentum << "\n"
                                                              << mean - x.mean(0);
    // Per batch of 50 the variance is the unbiased one (50/49 of the biased).
    EXPECT_TRUE(torch::allclose(var, x.var(0), 0.03, 0)) << momentum << "\n" << var / x.var(0);
    EXPECT_EQ(bn.attr("num_batches_tracked").toTensor().item<int64_t>(), 17);
    EXPECT_TRUE(bn.is_training());

    bn.attr("running_mean").toTensor().fill_(-5);
    bn.attr("running_var").toTensor().fill_(123);
    ASSERT_TRUE(RecalibrateOn(bn, {""}, x, 50).ok());
    EXPECT_TRUE(torch::equal(bn.attr("running_mean").toTensor(), mean)) << momentum;
    EXPECT_TRUE(torch::equal(bn.attr("running_var").toTensor(), var)) << momentum;
  }
}

// A group of two: each rank runs every other batch and the sums are added
// up, so both ranks end with the same statistics, bit for bit, and they are
// one process's over all the batches (to float64 rounding).
TEST(BatchNormRecalibrationTest, TwoRanksShareTheBatchesAndEndWithOneProcesssStatistics) {
  fixtures::BaseModel base = Builtin("cnn-small");
  base.module.train();
  const std::vector<std::string> paths = TrainingBatchNormPaths(base.module);
  torch::manual_seed(5);
  const torch::Tensor x = torch::rand({40, 1, 28, 28}) * 3 + 1;
  torch::jit::Module alone = base.module.clone();
  ASSERT_TRUE(RecalibrateOn(alone, paths, x, /*batch=*/8).ok());

  // Five batches of 8: rank 0 runs 0, 2 and 4, rank 1 runs 1 and 3.
  std::vector<torch::jit::Module> ranks = {base.module.clone(), base.module.clone()};
  std::vector<int64_t> run(2, 0);
  std::vector<absl::StatusOr<int>> results(2, absl::UnknownError("not run"));
  test_util::RunTwoRanks(absl::Seconds(30), [&](distributed::Group& group) {
    const int rank = group.rank();
    const int64_t mine = rank == 0 ? 3 : 2;
    results[rank] = RecalibrateBatchNorm(
        ranks[rank], paths, mine,
        [&](int64_t b) {
          ++run[rank];
          ranks[rank].forward({x.narrow(0, (2 * b + rank) * 8, 8)});
          return int64_t{8};
        },
        &group);
  });
  // The first batch of each rank runs twice (the momentum's probe).
  EXPECT_EQ(run[0], 4);
  EXPECT_EQ(run[1], 3);
  for (int rank = 0; rank < 2; ++rank) {
    ASSERT_TRUE(results[rank].ok()) << results[rank].status();
    EXPECT_EQ(*results[rank], 3);
  }
  for (const std::string& path : paths) {
    for (const std::string buffer : {"running_mean", "running_var"}) {
      const torch::Tensor zero = Buffer(ranks[0], path, buffer);
      EXPECT_TRUE(torch::equal(zero, Buffer(ranks[1], path, buffer))) << path << "." << buffer;
      const torch::Tensor one = Buffer(alone, path, buffer);
      EXPECT_TRUE(torch::allclose(zero, one, 1e-5, 1e-7)) << path << "." << buffer << "\n"
                                                          << zero - one;
    }
  }
  // A rank without a batch adds nothing: with all five batches on rank 1,
  // both ranks end with one process's statistics again.
  std::vector<torch::jit::Module> lopsided = {base.module.clone(), base.module.clone()};
  test_util::RunTwoRanks(absl::Seconds(30), [&](distributed::Group& group) {
    const int rank = group.rank();
    results[rank] = RecalibrateBatchNorm(
        lopsided[rank], paths, rank == 0 ? 0 : 5,
        [&](int64_t b) {
          lopsided[rank].forward({x.narrow(0, b * 8, 8)});
          return int64_t{8};
        },
        &group);
  });
  for (int rank = 0; rank < 2; ++rank) {
    ASSERT_TRUE(results[rank].ok()) << results[rank].status();
    EXPECT_EQ(*results[rank], 3);
  }
  for (const std::string& path : paths) {
    const torch::Tensor zero = Buffer(lopsided[0], path, "running_var");
    EXPECT_TRUE(torch::equal(zero, Buffer(lopsided[1], path, "running_var"))) << path;
    EXPECT_TRUE(torch::allclose(zero, Buffer(alone, path, "running_var"), 1e-5, 1e-7)) << path;
  }
}

// A batch that fails on one rank ends the recalibration on both together:
// the failing rank gets its error, the other distributed::PeerFailure, and
// neither keeps half-computed statistics.
TEST(BatchNormRecalibrationTest, ABatchThatFailsOnOneRankLeavesBothRanksStatisticsAsTheyWere) {
  fixtures::BaseModel base = Builtin("cnn-small");
  base.module.train();
  const std::vector<std::string> paths = TrainingBatchNormPaths(base.module);
  torch::manual_seed(5);
  const torch::Tensor x = torch::rand({16, 1, 28, 28});
  std::vector<torch::jit::Module> ranks = {base.module.clone(), base.module.clone()};
  std::vector<std::string> outcome(2);
  test_util::RunTwoRanks(absl::Seconds(30), [&](distributed::Group& group) {
    const int rank = group.rank();
    try {
      const absl::StatusOr<int> r = RecalibrateBatchNorm(
          ranks[rank], paths, 2,
          [&](int64_t b) {
            if (rank == 1 && b == 1) throw std::runtime_error("record 9 does not decode");
            ranks[rank].forward({x.narrow(0, b * 8, 8)});
            return int64_t{8};
          },
          &group);
      outcome[rank] = r.ok() ? "ok" : std::string(r.status().message());
    } catch (const distributed::PeerFailure& e) {
      outcome[rank] = std::string("peer: ") + e.what();
    } catch (const std::runtime_error& e) {
      outcome[rank] = std::string("own: ") + e.what();
    }
  });
  EXPECT_EQ(outcome[0], "peer: rank 1 of 2 failed in the work that every rank shares");
  EXPECT_EQ(outcome[1], "own: record 9 does not decode");
  for (int rank = 0; rank < 2; ++rank) {
    for (const std::string& path : paths) {
      for (const std::string buffer : {"running_mean", "running_var", "num_batches_tracked"}) {
        EXPECT_TRUE(
            torch::equal(Buffer(ranks[rank], path, buffer), Buffer(base.module, path, buffer)))
            << "rank " << rank << ": " << path << "." << buffer;
      }
    }
    EXPECT_TRUE(ranks[rank].is_training());
  }
}

// Layers in eval mode (frozen) are not chosen and not touched; every module
// keeps its mode; parameters do not change.
TEST(BatchNormRecalibrationTest, FrozenLayersKeepTheirStatistics) {
  fixtures::BaseModel base = Builtin("cnn-small");
  torch::jit::Module model = base.module;
  model.train();
  absl::StatusOr<torch::jit::Module> block1 = FindSubmodule(model, "features.block1");
  ASSERT_TRUE(block1.ok());
  block1->eval();
  const std::vector<std::string> paths = TrainingBatchNormPaths(model);
  EXPECT_EQ(paths, (std::vector<std::string>{"features.block2.bn", "features.block3.bn"}));
  const auto before = fixtures::Snapshot(model);
  torch::manual_seed(5);
  const torch::Tensor x = torch::rand({20, 1, 28, 28});
  ASSERT_TRUE(RecalibrateOn(model, paths, x, 8).ok());
  const auto after = fixtures::Snapshot(model);
  ASSERT_EQ(before.size(), after.size());
  for (size_t i = 0; i < before.size(); ++i) {
    const std::string& name = before[i].first;
    const bool recalibrated = (name.rfind("features.block2.bn.running", 0) == 0 ||
                               name.rfind("features.block3.bn.running", 0) == 0);
    EXPECT_EQ(torch::equal(before[i].second, after[i].second), !recalibrated) << name;
  }
  EXPECT_TRUE(model.is_training());
  EXPECT_FALSE(block1->is_training());
  EXPECT_FALSE(FindSubmodule(model, "features.block1.bn")->is_training());
  EXPECT_TRUE(FindSubmodule(model, "features.block2.bn")->is_training());

  EXPECT_EQ(RecalibrateOn(model, {"features.block1.conv"}, x, 8).status().code(),
            absl::StatusCode::kNotFound);
  absl::StatusOr<int> none = RecalibrateOn(model, {}, x, 8);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(*none, 0);
}

}  // namespace
}  // namespace kaizen::training
