// A kaizen-server process for tests that need the real binary (a server that
// is meant to crash, a peak-RSS measurement): started on a loopback port with
// a data directory, stderr appended to a log file, stopped with SIGTERM.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace kaizen::test_util {

class ServerProcess {
 public:
  // Starts `binary_dir`/kaizen-server with --data_dir, --grpc_port=port,
  // --host=127.0.0.1, --metrics_port=-1, --threads=1 and `extra_args`.
  ServerProcess(const std::string& binary_dir, const std::string& data_dir, int port,
                const std::vector<std::string>& extra_args = {});
  // SIGTERM and wait, unless it has already ended.
  ~ServerProcess();
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  pid_t pid() const { return pid_; }
  // Waits for the process to end; returns its wait status.
  int Wait();

 private:
  pid_t pid_ = -1;
};

// A port in 20000..39999 derived from the process id and `salt`, so that
// tests running side by side do not collide.
int TestPort(int salt);

}  // namespace kaizen::test_util
