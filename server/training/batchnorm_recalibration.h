// Recomputes the running statistics of the BatchNorm layers that trained, on
// un-augmented training images, so that a checkpoint in eval mode normalises
// as the weights it holds expect. The exponential moving average that
// training leaves behind lags weights that move fast and mixes in augmented
// and tiny last batches: a from-scratch model scored 46-79% in eval mode on
// its own training images against 94-100% in train mode.
#pragma once

#include <torch/script.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/distributed/group.h"

namespace kaizen::training {

// Dotted paths of the BatchNorm layers of `module` (submodules holding tensor
// buffers `running_mean` and `running_var`) that are in training mode now.
// Called right after SetTrainingMode these are exactly the layers whose
// statistics training updates; frozen BatchNorm, in eval mode, is left out.
std::vector<std::string> TrainingBatchNormPaths(const torch::jit::Module& module);

// Replaces the running mean and variance of the layers at `paths` in `module`
// by the statistics of the data that `run_batch` feeds through it: for b in
// [0, num_batches) run_batch(b) runs `module` forward on batch b (at least two
// examples) and returns how many examples it held. Each layer gets the
// example-weighted mean of the batch means and the variance of the union
// (the batch variances plus the spread of the batch means), whatever the
// module's momentum, which is read off the layer (1 for a cumulative
// average). Deterministic; the parameters, num_batches_tracked and every
// module's train/eval mode are as before. A layer whose momentum is 0 cannot
// be recalibrated and keeps its statistics. Returns the number of layers
// recalibrated; NotFound when a path names no BatchNorm layer; errors of
// LibTorch propagate as exceptions, as for any forward pass.
//
// In a group (`group` not null; every rank calls it, with the same model)
// run_batch feeds this rank's share of the batches (a rank may have none)
// and the sums are added up over the ranks in one collective: every rank
// ends with the same statistics, those of the union of all ranks' batches,
// and a layer is recalibrated only where every rank could read its
// momentum. When a batch fails on one rank, every rank leaves together
// (distributed::RunOnAllRanks). A failed sum is the group's status. On any
// failure the statistics and modes are as before.
absl::StatusOr<int> RecalibrateBatchNorm(torch::jit::Module& module,
                                         const std::vector<std::string>& paths, int64_t num_batches,
                                         const std::function<int64_t(int64_t)>& run_batch,
                                         distributed::Group* group = nullptr);

}  // namespace kaizen::training
