#include "tests/test_util/server_process.h"

#include <signal.h>
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

int TestPort(int salt) { return 20000 + static_cast<int>((getpid() * 31 + salt * 977) % 20000); }

}  // namespace kaizen::test_util
