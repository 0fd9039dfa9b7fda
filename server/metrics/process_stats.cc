#include "server/metrics/process_stats.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace kaizen::metrics {
namespace {

absl::StatusOr<std::string> ReadProcFile(const char* path) {
  std::ifstream in(path);
  if (!in) return absl::UnavailableError(absl::StrCat("cannot read ", path));
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Boot time in seconds since the epoch ("btime" in /proc/stat), which
// /proc/self/stat's start time counts from.
absl::StatusOr<int64_t> BootTime() {
  absl::StatusOr<std::string> stat = ReadProcFile("/proc/stat");
  if (!stat.ok()) return stat.status();
  for (absl::string_view line : absl::StrSplit(*stat, '\n')) {
    int64_t btime = 0;
    if (absl::ConsumePrefix(&line, "btime ") && absl::SimpleAtoi(line, &btime)) return btime;
  }
  return absl::UnavailableError("/proc/stat has no btime line");
}

int64_t CountOpenFds() {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return 0;
  int64_t n = 0;
  while (const dirent* e = readdir(dir)) {
    if (e->d_name[0] != '.') ++n;
  }
  closedir(dir);
  return n - 1;  // the descriptor opendir holds
}

}  // namespace

absl::StatusOr<ProcessStats> ReadProcessStats() {
  absl::StatusOr<std::string> stat = ReadProcFile("/proc/self/stat");
  if (!stat.ok()) return stat.status();
  // The command name (field 2) is in parentheses and may hold spaces and
  // parentheses itself: fields are counted after the last ')'.
  const size_t close = stat->rfind(')');
  if (close == std::string::npos) return absl::UnavailableError("/proc/self/stat is malformed");
  std::vector<absl::string_view> f =
      absl::StrSplit(absl::string_view(*stat).substr(close + 1), ' ', absl::SkipEmpty());
  // f[0] is field 3 (state): field N is f[N - 3].
  constexpr size_t kUtime = 14 - 3, kStime = 15 - 3, kThreads = 20 - 3, kStart = 22 - 3,
                   kVsize = 23 - 3, kRss = 24 - 3;
  if (f.size() <= kRss) return absl::UnavailableError("/proc/self/stat has too few fields");
  int64_t utime = 0, stime = 0, threads = 0, start = 0, vsize = 0, rss = 0;
  if (!absl::SimpleAtoi(f[kUtime], &utime) || !absl::SimpleAtoi(f[kStime], &stime) ||
      !absl::SimpleAtoi(f[kThreads], &threads) || !absl::SimpleAtoi(f[kStart], &start) ||
      !absl::SimpleAtoi(f[kVsize], &vsize) || !absl::SimpleAtoi(f[kRss], &rss)) {
    return absl::UnavailableError("/proc/self/stat has a field that is not a number");
  }
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  ProcessStats out;
  out.cpu_seconds = static_cast<double>(utime + stime) / ticks;
  out.resident_bytes = rss * static_cast<int64_t>(sysconf(_SC_PAGESIZE));
  out.virtual_bytes = vsize;
  out.threads = threads;
  absl::StatusOr<int64_t> boot = BootTime();
  if (!boot.ok()) return boot.status();
  out.start_time_seconds = static_cast<double>(*boot) + static_cast<double>(start) / ticks;
  out.open_fds = CountOpenFds();
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    out.max_fds = limit.rlim_cur == RLIM_INFINITY ? std::numeric_limits<int64_t>::max()
                                                  : static_cast<int64_t>(limit.rlim_cur);
  }
  return out;
}

}  // namespace kaizen::metrics
