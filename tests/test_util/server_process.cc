#include "tests/test_util/server_process.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>

#include "absl/strings/str_cat.h"

namespace kaizen::test_util {

ServerProcess::ServerProcess(const std::string& binary_dir, const std::string& data_dir, int port,
                             const std::vector<std::string>& extra_args) {
  std::vector<std::string> args = {absl::StrCat(binary_dir, "/kaizen-server"),
                                   absl::StrCat("--data_dir=", data_dir),
                                   absl::StrCat("--grpc_port=", port),
                                   "--host=127.0.0.1",
                                   "--metrics_port=-1",
                                   "--threads=1"};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  const std::string log = data_dir + "/server.log";
  pid_ = fork();
  if (pid_ == 0) {
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    freopen(log.c_str(), "a", stderr);
    execv(argv[0], argv.data());
    _exit(127);
  }
}

ServerProcess::~ServerProcess() {
  if (pid_ <= 0) return;
  kill(pid_, SIGTERM);
  Wait();
}

int ServerProcess::Wait() {
  int status = 0;
  if (pid_ > 0 && waitpid(pid_, &status, 0) == pid_) pid_ = -1;
  return status;
}

int ServerProcess::Kill(int signal) {
  if (pid_ <= 0) return 0;
  kill(pid_, signal);
  return Wait();
}

int FreeLoopbackPort() {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  int port = -1;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  close(fd);
  return port;
}

}  // namespace kaizen::test_util
