#include "tests/test_util/python.h"

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "tests/test_util/image_fixtures.h"

extern char** environ;

namespace kaizen::test_util {

absl::StatusOr<std::string> RunPython(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {KAIZEN_PYTHON};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunProgram(argv);
}

absl::StatusOr<std::string> RunProgram(std::vector<std::string> argv_strings) {
  std::vector<char*> argv;
  for (std::string& a : argv_strings) argv.push_back(a.data());
  argv.push_back(nullptr);
  const std::string command = absl::StrJoin(argv_strings, " ");

  int out[2];
  if (pipe(out) != 0) return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&actions, out[0]);
  pid_t pid = -1;
  const int spawned = posix_spawnp(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(out[1]);
  if (spawned != 0) {
    close(out[0]);
    return absl::InternalError(absl::StrCat(command, ": ", std::strerror(spawned)));
  }
  std::string output;
  char buf[4096];
  ssize_t n;
  while ((n = read(out[0], buf, sizeof(buf))) > 0 || (n < 0 && errno == EINTR)) {
    if (n > 0) output.append(buf, static_cast<size_t>(n));
  }
  close(out[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return absl::InternalError(
        absl::StrCat(command, " ended with wait status ", status, "; its output:\n", output));
  }
  return output;
}

absl::StatusOr<std::string> RunPythonSource(const std::string& source,
                                            const std::string& script_path,
                                            const std::vector<std::string>& args) {
  WriteBinaryFile(script_path, source);
  std::vector<std::string> all = {script_path};
  all.insert(all.end(), args.begin(), args.end());
  return RunPython(all);
}

std::string FixturePath(const std::string& name) {
  return absl::StrCat(KAIZEN_SOURCE_DIR, "/tests/fixtures/", name);
}

absl::StatusOr<std::string> RunPythonFixture(const std::string& name,
                                             const std::vector<std::string>& args) {
  std::vector<std::string> all = {FixturePath(name)};
  all.insert(all.end(), args.begin(), args.end());
  return RunPython(all);
}

bool PythonHasTorch() { return RunPython({"-c", "import torch"}).ok(); }

}  // namespace kaizen::test_util
