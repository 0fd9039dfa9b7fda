#include "client/lib/folder_archiver.h"

#include <archive.h>
#include <archive_entry.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <system_error>
#include <vector>

#include "absl/strings/str_cat.h"

namespace kaizen::client {
namespace {

namespace fs = std::filesystem;

struct ArchiveDeleter {
  void operator()(struct archive* a) const { archive_write_free(a); }
};
struct EntryDeleter {
  void operator()(struct archive_entry* e) const { archive_entry_free(e); }
};
struct FileCloser {
  void operator()(FILE* f) const { std::fclose(f); }
};

struct FolderFile {
  std::string relative;  // "cats/a.jpg", '/'-separated
  fs::path path;
};

absl::Status FsError(const std::error_code& ec, const std::string& what) {
  return absl::InternalError(absl::StrCat(what, ": ", ec.message()));
}

absl::Status ArchiveError(struct archive* a, const std::string& what) {
  const char* message = archive_error_string(a);
  return absl::InternalError(
      absl::StrCat(what, ": ", message != nullptr ? message : "unknown error"));
}

// True when `path` (already canonical) is `root` or lies below it.
bool IsWithin(const fs::path& path, const fs::path& root) {
  auto p = path.begin();
  for (auto r = root.begin(); r != root.end(); ++r, ++p) {
    if (p == path.end() || *p != *r) return false;
  }
  return true;
}

// For a symbolic link: empty when it resolves inside `root` (canonical), or
// the warning that explains why it is skipped.
std::string CheckLink(const fs::path& link, const std::string& relative, const fs::path& root) {
  std::error_code ec;
  const fs::path target = fs::canonical(link, ec);
  if (!ec && IsWithin(target, root)) return "";
  std::error_code read_ec;
  const fs::path points_to = fs::read_symlink(link, read_ec);
  return absl::StrCat("skipped ", relative, ": it is a symbolic link to ",
                      read_ec ? "an unreadable target" : points_to.string(), ", which is outside ",
                      root.string(), "; copy the file into the folder to upload it");
}

// Regular files below `dir`, sorted by their relative path. Links that lead
// out of `dir` are skipped with a warning.
absl::Status ListFiles(const fs::path& dir, std::vector<FolderFile>* files,
                       std::vector<std::string>* warnings) {
  std::error_code ec;
  const fs::path root = fs::canonical(dir, ec);
  if (ec) return FsError(ec, absl::StrCat("cannot resolve ", dir.string()));
  fs::recursive_directory_iterator it(dir, ec);
  if (ec) return FsError(ec, absl::StrCat("cannot list ", dir.string()));
  for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) return FsError(ec, absl::StrCat("cannot list ", dir.string()));
    std::error_code type_ec;
    // status() follows links: a link to a file counts as that file, while the
    // iterator itself never descends into a linked folder.
    if (!fs::is_regular_file(it->status(type_ec)) || type_ec) continue;
    FolderFile file;
    file.path = it->path();
    file.relative = it->path().lexically_relative(dir).generic_string();
    if (it->is_symlink(type_ec)) {
      std::string warning = CheckLink(file.path, file.relative, root);
      if (!warning.empty()) {
        if (warnings != nullptr) warnings->push_back(std::move(warning));
        continue;
      }
    }
    files->push_back(std::move(file));
  }
  if (ec) return FsError(ec, absl::StrCat("cannot list ", dir.string()));
  std::sort(files->begin(), files->end(),
            [](const FolderFile& a, const FolderFile& b) { return a.relative < b.relative; });
  return absl::OkStatus();
}

absl::Status AddFile(struct archive* a, const FolderFile& file, std::vector<char>* buffer) {
  std::unique_ptr<FILE, FileCloser> in(std::fopen(file.path.c_str(), "rb"));
  if (in == nullptr) {
    return absl::InternalError(
        absl::StrCat("cannot open ", file.path.string(), ": ", std::strerror(errno)));
  }
  std::error_code ec;
  const uintmax_t size = fs::file_size(file.path, ec);
  if (ec) return FsError(ec, absl::StrCat("cannot stat ", file.path.string()));
  const fs::file_time_type mtime = fs::last_write_time(file.path, ec);

  std::unique_ptr<struct archive_entry, EntryDeleter> entry(archive_entry_new());
  archive_entry_set_pathname(entry.get(), file.relative.c_str());
  archive_entry_set_filetype(entry.get(), AE_IFREG);
  archive_entry_set_perm(entry.get(), 0644);
  archive_entry_set_size(entry.get(), static_cast<la_int64_t>(size));
  if (!ec) {
    // file_time_type's clock is not system_clock in C++17; convert through
    // the difference between the two clocks' "now".
    const auto system_time = std::chrono::time_point_cast<std::chrono::system_clock::duration>(
        mtime - fs::file_time_type::clock::now() + std::chrono::system_clock::now());
    archive_entry_set_mtime(entry.get(), std::chrono::system_clock::to_time_t(system_time), 0);
  }
  if (archive_write_header(a, entry.get()) != ARCHIVE_OK) {
    return ArchiveError(a, absl::StrCat("cannot add ", file.relative));
  }
  uintmax_t written = 0;
  while (written < size) {
    const size_t want = static_cast<size_t>(std::min<uintmax_t>(buffer->size(), size - written));
    const size_t n = std::fread(buffer->data(), 1, want, in.get());
    if (n == 0) break;
    if (archive_write_data(a, buffer->data(), n) < 0) {
      return ArchiveError(a, absl::StrCat("cannot add ", file.relative));
    }
    written += n;
  }
  if (written != size) {
    return absl::FailedPreconditionError(
        absl::StrCat(file.path.string(), " changed size while it was being archived"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ArchiveFolder(const std::string& dir, const std::string& out_tar_path,
                           std::vector<std::string>* warnings) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return absl::InvalidArgumentError(absl::StrCat(dir, " is not a folder"));
  }
  std::vector<FolderFile> files;
  absl::Status listed = ListFiles(fs::path(dir), &files, warnings);
  if (!listed.ok()) return listed;

  std::unique_ptr<struct archive, ArchiveDeleter> a(archive_write_new());
  if (archive_write_set_format_pax_restricted(a.get()) != ARCHIVE_OK ||
      archive_write_add_filter_none(a.get()) != ARCHIVE_OK) {
    return ArchiveError(a.get(), "cannot set up the tar writer");
  }
  if (archive_write_open_filename(a.get(), out_tar_path.c_str()) != ARCHIVE_OK) {
    return ArchiveError(a.get(), absl::StrCat("cannot create ", out_tar_path));
  }
  std::vector<char> buffer(256 * 1024);
  for (const FolderFile& file : files) {
    absl::Status added = AddFile(a.get(), file, &buffer);
    if (!added.ok()) return added;
  }
  if (archive_write_close(a.get()) != ARCHIVE_OK) {
    return ArchiveError(a.get(), absl::StrCat("cannot finish ", out_tar_path));
  }
  return absl::OkStatus();
}

}  // namespace kaizen::client
