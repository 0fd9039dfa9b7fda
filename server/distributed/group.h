// A data-parallel group of training processes on PyTorch's own c10d: ranks
// meet through a TCPStore (rank 0 serves it) and reduce over
// ProcessGroupGloo on CPUs. Every collective has the group's timeout, and a
// rank that dies closes its connections, so the others fail promptly with a
// status naming the collective instead of hanging. The launch contract is
// Kubeflow PyTorchJob's: MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK.
#pragma once

#include <torch/script.h>

#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace kaizen::distributed {

struct Rendezvous {
  // Where the ranks meet: c10d's TCPStore at master_addr:master_port (rank 0
  // serves it, on every interface), or, when `store_file` is set, a FileStore
  // at that path: a group on one machine (the server's own launch), where
  // nothing listens for the rendezvous and Gloo uses the loopback interface
  // whatever GLOO_SOCKET_IFNAME says.
  std::string store_file;
  std::string master_addr = "127.0.0.1";
  int master_port = 0;
  int world_size = 1;
  int rank = 0;
  // Meeting the others and every collective after.
  absl::Duration timeout = absl::Seconds(300);
};

// The PyTorchJob variables read through `getenv` (a parameter for tests):
// all four or none (none: a group of one). Precise errors name the variable.
absl::StatusOr<Rendezvous> RendezvousFromEnvironment(
    const std::function<const char*(const char*)>& getenv, absl::Duration timeout);

// Gradients are reduced in buckets of at most this many bytes (DDP's 25 MiB).
inline constexpr int64_t kDefaultBucketBytes = int64_t{25} << 20;

class Group {
 public:
  // Blocks until all `world_size` ranks have joined or the timeout passes.
  // Rank 0 serves the rendezvous store on master_port (0: any free port) and
  // tells `on_listening` the port (0 with a store file) before it waits for
  // the others, so that a launcher can start them.
  static absl::StatusOr<std::unique_ptr<Group>> Join(
      const Rendezvous& rendezvous,
      const std::function<absl::Status(int port)>& on_listening = nullptr);
  ~Group();

  int rank() const { return rank_; }
  int world_size() const { return world_size_; }

  // Every rank's tensors (contiguous, CPU) become rank `root`'s, in place.
  // The other ranks wait for `root` to reach this call up to `timeout` (on
  // the rendezvous store; zero: the group's timeout, as every collective).
  absl::Status Broadcast(const std::vector<torch::Tensor>& tensors, int root = 0,
                         absl::Duration timeout = absl::ZeroDuration());
  // Element-wise sums over the ranks, in place (contiguous, CPU).
  absl::Status Sum(const std::vector<torch::Tensor>& tensors);
  // True on every rank when `flag` is true on any.
  absl::StatusOr<bool> Any(bool flag);
  // Each rank's gradients of `parameters` are scaled by its `weight` and
  // summed over the ranks, in place, flattened into buckets of at most
  // `bucket_bytes` (one collective each). With weight = local examples /
  // global examples the result is the gradient of the global batch's mean
  // loss. A parameter without a gradient counts as zeros (and gets them), so
  // that every rank sends the same layout.
  absl::Status ReduceGradients(const std::vector<torch::Tensor>& parameters, double weight,
                               int64_t bucket_bytes = kDefaultBucketBytes);

  // Wall time spent in collectives since Join, and how many ran.
  double collective_seconds() const { return collective_seconds_; }
  int64_t collectives() const { return collectives_; }

 private:
  struct State;
  Group(int rank, int world_size, absl::Duration timeout, std::unique_ptr<State> state);
  absl::Status Run(const char* what, const std::function<void()>& collective);

  int rank_;
  int world_size_;
  absl::Duration timeout_;
  std::unique_ptr<State> state_;
  double collective_seconds_ = 0;
  int64_t collectives_ = 0;
};

// Thrown by RunOnAllRanks on a rank whose work went well when another
// rank's threw.
class PeerFailure : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Runs `work` (which may throw anything) on this rank of `group`, then
// agrees with the other ranks on how it went (one small sum), so that no
// rank goes on to its next collective while another has left the work:
//  - where `work` threw, its own exception is rethrown (after agreeing);
//  - where it did not but another rank's threw what a caller may recover
//    from (a std::exception that `recoverable` accepts; any when it is
//    null), PeerFailure naming the ranks;
//  - where another rank's threw anything else (an error that ends the job
//    there), Aborted naming the ranks;
//  - where the agreement itself failed (a rank gone, a timeout: a rank
//    whose work failed early waits for the others up to the group's
//    timeout), that status, on every rank, its own failure or not: a broken
//    group recovers nothing.
// OK when every rank's work went well. Every rank must call it at the same
// point.
absl::Status RunOnAllRanks(Group& group, const std::function<void()>& work,
                           const std::function<bool(const std::exception&)>& recoverable = nullptr);

// The examples of a global batch that rank `rank` of `world_size` trains on:
// positions rank, rank + world_size, ... (every example exactly once across
// the ranks; sizes differ by at most one).
std::vector<int64_t> ShardOfBatch(const std::vector<int64_t>& batch, int rank, int world_size);

// The rows of a table of `rows` rows that rank `rank` of `world_size`
// computes in a pass the group shares: chunks of consecutive rows, at most
// `batch` and at most rows / world_size long (so that every rank has one
// when there are as many rows as ranks), dealt round robin from rank 0.
// Each rank fills in its chunks and zeros elsewhere, and one Sum gives every
// rank the whole table, bit for bit, for a world_size-th of the work.
std::vector<std::vector<int64_t>> ChunksOfRank(int64_t rows, int64_t batch, int rank,
                                               int world_size);

// This rank's part of a pass over `rows` rows in chunks of at most `batch`:
// with a group of at most `rows` ranks (`shared`), ChunksOfRank's; without
// a group, or with more ranks than rows, every chunk, computed alone.
struct PassShare {
  bool shared = false;
  std::vector<std::vector<int64_t>> chunks;
};
PassShare ShareOfPass(int64_t rows, int64_t batch, const Group* group);

}  // namespace kaizen::distributed
