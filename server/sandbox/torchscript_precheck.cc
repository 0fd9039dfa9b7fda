#include "server/sandbox/torchscript_precheck.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"

namespace kaizen::sandbox {
namespace {

// "archive/data.pkl" -> "data.pkl": LibTorch accepts any single top folder.
absl::string_view WithinArchive(absl::string_view name) {
  const size_t slash = name.find('/');
  return slash == absl::string_view::npos ? absl::string_view() : name.substr(slash + 1);
}

bool IsPickle(absl::string_view inner) {
  return inner == "data.pkl" || inner == "constants.pkl" || absl::EndsWith(inner, ".debug_pkl");
}

}  // namespace

absl::Status PrecheckTorchScriptArchive(uint64_t archive_size, const ReadAt& read,
                                        const TorchScriptLimits& limits) {
  ASSIGN_OR_RETURN(std::vector<ZipMember> members,
                   ReadZipDirectory(archive_size, read, limits.zip));
  bool has_data = false;
  for (const ZipMember& m : members) {
    const absl::string_view inner = WithinArchive(m.name);
    const bool pickle = IsPickle(inner);
    const bool metadata = inner == "extra/kaizen.json";
    if (inner == "data.pkl") has_data = true;
    if (!pickle && !metadata) continue;
    const int64_t limit = pickle ? limits.max_pickle_bytes : limits.max_metadata_bytes;
    ASSIGN_OR_RETURN(std::string bytes, ReadZipMember(m, read, limit));
    if (!pickle) continue;
    if (absl::Status st = ScanPickle(bytes, limits.pickle); !st.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("member \"", absl::CHexEscape(m.name), "\": ", st.message()));
    }
  }
  if (!has_data) {
    return absl::InvalidArgumentError(
        "not a TorchScript archive: no data.pkl member (save it with torch.jit.save)");
  }
  return absl::OkStatus();
}

absl::Status PrecheckTorchScriptFile(const std::string& path, const TorchScriptLimits& limits) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::NotFoundError(absl::StrCat("cannot open ", path, ": ", strerror(errno)));
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a regular file"));
  }
  const ReadAt read = ReadFromFile(fd);
  absl::Status result = PrecheckTorchScriptArchive(static_cast<uint64_t>(st.st_size), read, limits);
  ::close(fd);
  return result;
}

}  // namespace kaizen::sandbox
