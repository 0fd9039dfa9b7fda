#include "server/distributed/group.h"

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <torch/csrc/distributed/c10d/FileStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "server/common/status_macros.h"
#include "server/models/torch_errors.h"

namespace kaizen::distributed {
namespace {

using Clock = std::chrono::steady_clock;

std::chrono::milliseconds Millis(absl::Duration d) {
  return std::chrono::milliseconds(absl::ToInt64Milliseconds(d));
}

absl::StatusOr<int> IntVariable(const std::function<const char*(const char*)>& getenv,
                                const char* name, int lo, int hi) {
  const char* value = getenv(name);
  int parsed = 0;
  if (value == nullptr || !absl::SimpleAtoi(value, &parsed) || parsed < lo || parsed > hi) {
    return absl::InvalidArgumentError(absl::StrFormat("%s=%s: expected an integer in [%d, %d]",
                                                      name, value ? value : "(unset)", lo, hi));
  }
  return parsed;
}

bool IsLoopback(absl::string_view host) {
  return host == "localhost" || absl::StartsWith(host, "127.") || host == "::1";
}

// The interface Gloo listens on: GLOO_SOCKET_IFNAME as in torch.distributed,
// the loopback for a group on one machine, else the one this host's name
// resolves to (a pod's IP in Kubernetes).
std::shared_ptr<gloo::transport::Device> GlooDevice(const Rendezvous& r) {
  if (!r.store_file.empty()) return c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
  const std::string& master_addr = r.master_addr;
  if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname && *ifname) {
    return c10d::ProcessGroupGloo::createDeviceForInterface(ifname);
  }
  if (IsLoopback(master_addr)) return c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
  return c10d::ProcessGroupGloo::createDefaultDevice();
}

// Gloo reduces contiguous CPU tensors: others travel through a staging copy
// that is written back after the collective.
struct Staged {
  explicit Staged(const std::vector<torch::Tensor>& tensors) : original(tensors) {
    for (const torch::Tensor& t : tensors) {
      host.push_back(t.is_cpu() && t.is_contiguous() ? t : t.to(torch::kCPU).contiguous());
    }
  }
  void WriteBack() {
    for (size_t i = 0; i < original.size(); ++i) {
      if (!host[i].is_same(original[i])) original[i].copy_(host[i]);
    }
  }
  std::vector<torch::Tensor> original;
  std::vector<at::Tensor> host;
};

}  // namespace

absl::StatusOr<Rendezvous> RendezvousFromEnvironment(
    const std::function<const char*(const char*)>& getenv, absl::Duration timeout) {
  Rendezvous r;
  r.timeout = timeout;
  const char* names[] = {"MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK"};
  int set = 0;
  for (const char* name : names) set += getenv(name) != nullptr ? 1 : 0;
  if (set == 0) return r;
  if (set != 4) {
    std::string missing;
    for (const char* name : names) {
      if (getenv(name) == nullptr) absl::StrAppend(&missing, missing.empty() ? "" : ", ", name);
    }
    return absl::InvalidArgumentError(absl::StrCat(
        "a distributed worker needs MASTER_ADDR, MASTER_PORT, WORLD_SIZE and RANK; missing ",
        missing));
  }
  r.master_addr = getenv("MASTER_ADDR");
  if (r.master_addr.empty() || r.master_addr.size() > 253) {
    return absl::InvalidArgumentError("MASTER_ADDR must be a host name or address");
  }
  ASSIGN_OR_RETURN(r.master_port, IntVariable(getenv, "MASTER_PORT", 1, 65535));
  ASSIGN_OR_RETURN(r.world_size, IntVariable(getenv, "WORLD_SIZE", 1, 1024));
  ASSIGN_OR_RETURN(r.rank, IntVariable(getenv, "RANK", 0, r.world_size - 1));
  return r;
}

struct Group::State {
  c10::intrusive_ptr<c10d::Store> store;
  int port = 0;  // the TCPStore's (rank 0: the one it serves)
  c10::intrusive_ptr<c10d::ProcessGroupGloo> gloo;
};

Group::Group(int rank, int world_size, absl::Duration timeout, std::unique_ptr<State> state)
    : rank_(rank), world_size_(world_size), timeout_(timeout), state_(std::move(state)) {}

Group::~Group() = default;

absl::StatusOr<std::unique_ptr<Group>> Group::Join(
    const Rendezvous& r, const std::function<absl::Status(int)>& on_listening) {
  // Gloo writes to its peers' sockets with plain write(2)/writev(2): a peer
  // that left (a killed rank) would end this whole process with SIGPIPE,
  // the server included, instead of failing the collective with EPIPE.
  // Ignored process-wide, once; nothing here relies on SIGPIPE's default.
  static std::once_flag ignore_sigpipe;
  std::call_once(ignore_sigpipe, [] { std::signal(SIGPIPE, SIG_IGN); });
  if (r.world_size < 1 || r.rank < 0 || r.rank >= r.world_size) {
    return absl::InvalidArgumentError(
        absl::StrFormat("rank %d is not in a group of %d", r.rank, r.world_size));
  }
  const bool file = !r.store_file.empty();
  if (!file &&
      (r.master_port < 0 || r.master_port > 65535 || (r.rank != 0 && r.master_port == 0))) {
    return absl::InvalidArgumentError(absl::StrCat("bad master port ", r.master_port));
  }
  auto state = std::make_unique<State>();
  std::string where = file ? r.store_file : absl::StrCat(r.master_addr, ":", r.master_port);
  try {
    if (file) {
      state->store = c10::make_intrusive<c10d::FileStore>(r.store_file, r.world_size);
      state->store->setTimeout(Millis(r.timeout));
    } else {
      c10d::TCPStoreOptions so;
      so.port = static_cast<uint16_t>(r.master_port);
      so.isServer = r.rank == 0;
      so.numWorkers = r.world_size;
      so.waitWorkers = false;
      so.timeout = Millis(r.timeout);
      auto tcp = c10::make_intrusive<c10d::TCPStore>(r.master_addr, so);
      state->port = tcp->getPort();
      where = absl::StrCat(r.master_addr, ":", state->port);
      state->store = tcp;
    }
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrFormat(
        "rank %d of %d could not %s the rendezvous store %s: %s", r.rank, r.world_size,
        r.rank == 0 ? "open" : "reach", where, models::TorchErrorSummary(e)));
  }
  if (r.rank == 0 && on_listening) RETURN_IF_ERROR(on_listening(state->port));
  try {
    auto options = c10d::ProcessGroupGloo::Options::create(Millis(r.timeout));
    options->devices.push_back(GlooDevice(r));
    options->threads = 1;
    state->gloo =
        c10::make_intrusive<c10d::ProcessGroupGloo>(state->store, r.rank, r.world_size, options);
  } catch (const std::exception& e) {
    const std::string summary = models::TorchErrorSummary(e);
    const bool timed_out =
        absl::StrContains(summary, "imeout") || absl::StrContains(summary, "imed out");
    return absl::Status(
        timed_out ? absl::StatusCode::kDeadlineExceeded : absl::StatusCode::kUnavailable,
        absl::StrFormat("rank %d of %d: the group did not form%s (via %s): %s", r.rank,
                        r.world_size,
                        timed_out ? absl::StrCat(" within ", absl::FormatDuration(r.timeout)) : "",
                        where, summary));
  }
  return std::unique_ptr<Group>(new Group(r.rank, r.world_size, r.timeout, std::move(state)));
}

absl::Status Group::Run(const char* what, const std::function<void()>& collective) {
  const Clock::time_point start = Clock::now();
  try {
    collective();
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrFormat(
        "rank %d of %d: %s failed (another rank stopped or timed out after %s): %s", rank_,
        world_size_, what, absl::FormatDuration(timeout_), models::TorchErrorSummary(e)));
  }
  collective_seconds_ += std::chrono::duration<double>(Clock::now() - start).count();
  ++collectives_;
  return absl::OkStatus();
}

absl::Status Group::Broadcast(const std::vector<torch::Tensor>& tensors, int root,
                              absl::Duration timeout) {
  if (world_size_ == 1) return absl::OkStatus();
  if (timeout > absl::ZeroDuration()) {
    // Gloo waits for a peer no longer than the group's timeout, whatever
    // the collective's options say (measured: BroadcastOptions::timeout is
    // not honoured by this LibTorch). The other ranks wait for the root on
    // the rendezvous store instead, which takes a timeout per call; the
    // broadcast itself then starts with every rank there. The key is the
    // same on every rank: they run the same collectives in the same order.
    const std::string key = absl::StrCat("kaizen/root-ready/", collectives_);
    try {
      if (rank_ == root) {
        state_->store->set(key, std::vector<uint8_t>{1});
      } else {
        state_->store->wait({key}, Millis(timeout));
      }
    } catch (const std::exception& e) {
      return absl::UnavailableError(absl::StrFormat(
          "rank %d of %d: waited %s for rank %d to broadcast: %s", rank_, world_size_,
          absl::FormatDuration(timeout), root, models::TorchErrorSummary(e)));
    }
  }
  Staged staged(tensors);
  RETURN_IF_ERROR(Run("broadcast", [&] {
    c10d::BroadcastOptions options;
    options.rootRank = root;
    for (const at::Tensor& t : staged.host) {
      std::vector<at::Tensor> one{t};
      state_->gloo->broadcast(one, options)->wait();
    }
  }));
  staged.WriteBack();
  return absl::OkStatus();
}

absl::Status Group::Sum(const std::vector<torch::Tensor>& tensors) {
  if (world_size_ == 1) return absl::OkStatus();
  Staged staged(tensors);
  RETURN_IF_ERROR(Run("all-reduce", [&] {
    // One collective per tensor: Gloo reduces a list as the copies of one
    // tensor on several devices.
    for (const at::Tensor& t : staged.host) {
      std::vector<at::Tensor> one{t};
      state_->gloo->allreduce(one)->wait();
    }
  }));
  staged.WriteBack();
  return absl::OkStatus();
}

absl::StatusOr<bool> Group::Any(bool flag) {
  torch::Tensor t = torch::full({1}, flag ? 1 : 0, torch::kInt32);
  RETURN_IF_ERROR(Sum({t}));
  return t.item<int32_t>() > 0;
}

absl::Status Group::ReduceGradients(const std::vector<torch::Tensor>& parameters, double weight,
                                    int64_t bucket_bytes) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> grads;
  grads.reserve(parameters.size());
  for (const torch::Tensor& p : parameters) {
    if (!p.grad().defined()) const_cast<torch::Tensor&>(p).mutable_grad() = torch::zeros_like(p);
    grads.push_back(p.grad());
  }
  size_t begin = 0;
  while (begin < grads.size()) {
    // One bucket: consecutive gradients of one dtype, at least one.
    size_t end = begin;
    int64_t bytes = 0;
    while (end < grads.size() && grads[end].scalar_type() == grads[begin].scalar_type() &&
           (end == begin || bytes + grads[end].nbytes() <= static_cast<size_t>(bucket_bytes))) {
      bytes += static_cast<int64_t>(grads[end].nbytes());
      ++end;
    }
    std::vector<torch::Tensor> flat;
    for (size_t i = begin; i < end; ++i) flat.push_back(grads[i].reshape({-1}));
    torch::Tensor bucket = torch::cat(flat);
    if (weight != 1.0) bucket.mul_(weight);
    if (world_size_ > 1) RETURN_IF_ERROR(Sum({bucket}));
    int64_t offset = 0;
    for (size_t i = begin; i < end; ++i) {
      const int64_t n = grads[i].numel();
      grads[i].copy_(bucket.narrow(0, offset, n).view_as(grads[i]));
      offset += n;
    }
    begin = end;
  }
  return absl::OkStatus();
}

PassShare ShareOfPass(int64_t rows, int64_t batch, const Group* group) {
  PassShare share;
  share.shared = group != nullptr && rows >= group->world_size();
  share.chunks = share.shared ? ChunksOfRank(rows, batch, group->rank(), group->world_size())
                              : ChunksOfRank(rows, batch, 0, 1);
  return share;
}

absl::Status RunOnAllRanks(Group& group, const std::function<void()>& work,
                           const std::function<bool(const std::exception&)>& recoverable) {
  // What each rank's work did: 0 went well, 1 threw what a caller may
  // recover from, 2 threw anything else (it ends the job).
  constexpr int32_t kRecoverable = 1, kFatal = 2;
  std::exception_ptr failure;
  int32_t outcome = 0;
  std::string what = "an error that is not a std::exception";
  try {
    work();
  } catch (const std::exception& e) {
    failure = std::current_exception();
    outcome = recoverable == nullptr || recoverable(e) ? kRecoverable : kFatal;
    what = e.what();
  } catch (...) {
    failure = std::current_exception();
    outcome = kFatal;
  }
  torch::Tensor outcomes = torch::zeros({group.world_size()}, torch::kInt32);
  outcomes[group.rank()] = outcome;
  if (const absl::Status agreed = group.Sum({outcomes}); !agreed.ok()) {
    // The group is broken: no rank may go on as if the others agreed.
    if (!failure) return agreed;
    return absl::Status(
        agreed.code(),
        absl::StrCat(agreed.message(), " (this rank's own share had failed: ", what, ")"));
  }
  if (failure) std::rethrow_exception(failure);
  std::vector<std::string> ranks;
  bool fatal = false;
  for (int r = 0; r < group.world_size(); ++r) {
    const int32_t o = outcomes[r].item<int32_t>();
    if (o != 0) ranks.push_back(absl::StrCat(r));
    fatal = fatal || o == kFatal;
  }
  if (ranks.empty()) return absl::OkStatus();
  const std::string message =
      absl::StrCat(ranks.size() == 1 ? "rank " : "ranks ", absl::StrJoin(ranks, ", "), " of ",
                   group.world_size(), " failed in the work that every rank shares");
  if (fatal) return absl::AbortedError(absl::StrCat(message, ", with an error that ends the job"));
  throw PeerFailure(message);
}

std::vector<int64_t> ShardOfBatch(const std::vector<int64_t>& batch, int rank, int world_size) {
  std::vector<int64_t> shard;
  for (size_t i = static_cast<size_t>(rank); i < batch.size();
       i += static_cast<size_t>(world_size)) {
    shard.push_back(batch[i]);
  }
  return shard;
}

std::vector<std::vector<int64_t>> ChunksOfRank(int64_t rows, int64_t batch, int rank,
                                               int world_size) {
  const int64_t chunk = std::max<int64_t>(1, std::min(batch, rows / world_size));
  std::vector<std::vector<int64_t>> mine;
  for (int64_t begin = 0, k = 0; begin < rows; begin += chunk, ++k) {
    if (k % world_size != rank) continue;
    std::vector<int64_t>& chunk_rows = mine.emplace_back();
    for (int64_t i = begin; i < std::min(rows, begin + chunk); ++i) chunk_rows.push_back(i);
  }
  return mine;
}

}  // namespace kaizen::distributed
