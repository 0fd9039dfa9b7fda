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
  // Sends `signal` (SIGKILL: a crash) and waits for the process to end;
  // returns its wait status.
  int Kill(int signal);

 private:
  pid_t pid_ = -1;
};

// A TCP port on 127.0.0.1 that nothing listened on a moment ago (the kernel's
// pick for port 0), for a server process told its port on the command line.
int FreeLoopbackPort();

}  // namespace kaizen::test_util
