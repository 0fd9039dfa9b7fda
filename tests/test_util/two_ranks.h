// Two ranks of a distributed::Group as two threads of this process: the
// collectives of code that every rank runs, tested without worker processes.
#pragma once

#include <gtest/gtest.h>

#include <future>
#include <memory>
#include <string>
#include <thread>

#include "absl/cleanup/cleanup.h"
#include "absl/time/time.h"
#include "server/distributed/group.h"

namespace kaizen::test_util {

// Rank 0 on this thread and rank 1 on another, meeting on a loopback port
// that rank 0 picks (or through `store_file`, as the server's own groups
// do); `body(group)` runs on each.
template <typename Body>
void RunTwoRanks(absl::Duration timeout, Body body, const std::string& store_file = "") {
  std::promise<int> port;
  distributed::Rendezvous r0;
  r0.world_size = 2;
  r0.timeout = timeout;
  r0.store_file = store_file;
  bool port_told = false;
  std::thread rank1([&] {
    distributed::Rendezvous r1 = r0;
    r1.rank = 1;
    r1.master_port = port.get_future().get();
    absl::StatusOr<std::unique_ptr<distributed::Group>> g = distributed::Group::Join(r1);
    ASSERT_TRUE(g.ok()) << g.status();
    body(**g);
  });
  // However rank 0 ends (a failed join, a failed assertion, an exception),
  // rank 1 hears of a port (-1 fails its join) and is joined.
  absl::Cleanup join_rank1 = [&] {
    if (!port_told) port.set_value(-1);
    rank1.join();
  };
  absl::StatusOr<std::unique_ptr<distributed::Group>> g = distributed::Group::Join(r0, [&](int p) {
    port_told = true;
    port.set_value(p);
    return absl::OkStatus();
  });
  ASSERT_TRUE(g.ok()) << g.status();
  body(**g);
}

}  // namespace kaizen::test_util
