#include "server/jobs/export_folders.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/common/atomic_file.h"
#include "tests/test_util/temp_dir.h"

namespace kaizen::jobs {
namespace {

// An export folder as ExportJob leaves it: a model, settings, and a hard
// link to a record file that the dataset store also holds; its mtime set.
void MakeExport(const std::string& exports, const std::string& folder, const std::string& record,
                int64_t model_bytes, time_t mtime) {
  const std::string dir = exports + "/" + folder;
  ASSERT_TRUE(std::filesystem::create_directories(dir + "/out"));
  ASSERT_TRUE(common::WriteFileAtomically(dir + "/base.pt", std::string(model_bytes, 'm')).ok());
  ASSERT_TRUE(common::WriteFileAtomically(dir + "/spec.json", "{}").ok());
  ASSERT_EQ(::link(record.c_str(), (dir + "/train.rec").c_str()), 0);
  const timeval times[2] = {{mtime, 0}, {mtime, 0}};
  ASSERT_EQ(::utimes(dir.c_str(), times), 0);
}

// The bytes allocated to a file: what removing its last link frees.
int64_t Allocated(const std::string& path) {
  struct stat st;
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return static_cast<int64_t>(st.st_blocks) * 512;
}

TEST(ExportFoldersTest, NamesAreAnExportsFolderOrRefused) {
  EXPECT_EQ(*ExportFolderName("exports/ft-0123456789ab-a1b2c3"), "ft-0123456789ab-a1b2c3");
  EXPECT_EQ(*ExportFolderName("ft-0123456789ab-a1b2c3"), "ft-0123456789ab-a1b2c3");
  for (const char* bad : {"", "exports/", "a1b2c3", "-a1b2c3", "ft-x-A1B2C3", "ft-x-a1b2c",
                          "ft-x_a1b2c3", "../models-a1b2c3", "exports/../x-a1b2c3", "ft/x-a1b2c3",
                          ".ft-a1b2c3x", "ft-x-a1b2c3/", "exports/exports/ft-x-a1b2c3"}) {
    const absl::StatusOr<std::string> name = ExportFolderName(bad);
    ASSERT_FALSE(name.ok()) << bad;
    EXPECT_EQ(name.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(name.status().message().find("not an export's folder"), std::string::npos);
  }
  EXPECT_FALSE(ExportFolderName(std::string(194, 'a') + "-a1b2c3").ok());  // 201 characters
  EXPECT_TRUE(ExportFolderName(std::string(193, 'a') + "-a1b2c3").ok());
}

TEST(ExportFoldersTest, ListsNewestFirstWithWhatDeletingEachWouldFree) {
  test_util::TempDir dir;
  const std::string exports = dir.path() + "/exports";
  EXPECT_TRUE(ListExportFolders(exports)->empty());  // none yet
  EXPECT_EQ(*CountExportFolders(exports), 0);
  const std::string record = dir.path() + "/train.rec";
  ASSERT_TRUE(common::WriteFileAtomically(record, std::string(5000, 'r')).ok());
  const std::string gone = dir.path() + "/gone.rec";
  ASSERT_TRUE(common::WriteFileAtomically(gone, std::string(7000, 'g')).ok());
  MakeExport(exports, "ft-000000000001-aaaaaa", record, 100, 1'000'000);
  MakeExport(exports, "ft-000000000002-bbbbbb", record, 200, 3'000'000);
  MakeExport(exports, "ft-000000000001-cccccc", gone, 300, 2'000'000);
  // The dataset of gone.rec was deleted: the export's link is its last.
  ASSERT_EQ(::unlink(gone.c_str()), 0);
  // Not exports: a file, a link to a folder, a folder of another name.
  ASSERT_TRUE(common::WriteFileAtomically(exports + "/ft-000000000003-dddddd", "x").ok());
  std::filesystem::create_directory_symlink(exports + "/ft-000000000002-bbbbbb",
                                            exports + "/ft-000000000004-eeeeee");
  std::filesystem::create_directory(exports + "/notes");

  const absl::StatusOr<std::vector<ExportFolder>> all = ListExportFolders(exports);
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ((*all)[0].folder, "ft-000000000002-bbbbbb");
  EXPECT_EQ((*all)[0].job_id, "ft-000000000002");
  EXPECT_EQ((*all)[0].create_time, absl::FromTimeT(3'000'000));
  const std::string b = exports + "/ft-000000000002-bbbbbb/";
  // The model and spec.json, not the live record.
  EXPECT_EQ((*all)[0].size_bytes, Allocated(b + "base.pt") + Allocated(b + "spec.json"));
  EXPECT_FALSE((*all)[0].size_incomplete);
  EXPECT_EQ((*all)[1].folder, "ft-000000000001-cccccc");
  const std::string c = exports + "/ft-000000000001-cccccc/";
  // And the deleted dataset's record.
  EXPECT_EQ((*all)[1].size_bytes,
            Allocated(c + "base.pt") + Allocated(c + "spec.json") + Allocated(c + "train.rec"));
  EXPECT_GE(Allocated(c + "train.rec"), 7000);
  EXPECT_EQ((*all)[2].folder, "ft-000000000001-aaaaaa");
  EXPECT_EQ(*CountExportFolders(exports), 3);
  const absl::StatusOr<std::vector<ExportFolder>> one =
      ListExportFolders(exports, "ft-000000000001");
  ASSERT_TRUE(one.ok()) << one.status();
  ASSERT_EQ(one->size(), 2u);
  EXPECT_EQ((*one)[0].folder, "ft-000000000001-cccccc");
  EXPECT_TRUE(ListExportFolders(exports, "ft-00000000000")->empty());
}

TEST(ExportFoldersTest, DeletingMovesTheFolderAwayThenRemovesIt) {
  test_util::TempDir dir;
  const std::string exports = dir.path() + "/exports";
  const std::string scratch = dir.path() + "/tmp";
  ASSERT_TRUE(std::filesystem::create_directories(scratch));
  const std::string record = dir.path() + "/train.rec";
  ASSERT_TRUE(common::WriteFileAtomically(record, std::string(5000, 'r')).ok());
  MakeExport(exports, "ft-000000000001-aaaaaa", record, 100, 1'000'000);
  MakeExport(exports, "ft-000000000002-bbbbbb", record, 100, 1'000'000);

  ASSERT_TRUE(DeleteExportFolder(exports, scratch, "exports/ft-000000000001-aaaaaa").ok());
  EXPECT_FALSE(std::filesystem::exists(exports + "/ft-000000000001-aaaaaa"));
  EXPECT_TRUE(std::filesystem::is_empty(scratch));
  // The record its link pointed at is the dataset's, untouched.
  struct stat st;
  ASSERT_EQ(::stat(record.c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 5000);
  EXPECT_EQ(st.st_nlink, 2u);  // and the other export's link
  EXPECT_EQ(DeleteExportFolder(exports, scratch, "ft-000000000001-aaaaaa").code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(DeleteExportFolder(exports, scratch, "../tmp").code(),
            absl::StatusCode::kInvalidArgument);
  // A link named as an export is not followed into its target.
  std::filesystem::create_directory_symlink(exports + "/ft-000000000002-bbbbbb",
                                            exports + "/ft-000000000003-cccccc");
  EXPECT_EQ(DeleteExportFolder(exports, scratch, "ft-000000000003-cccccc").code(),
            absl::StatusCode::kNotFound);
  EXPECT_TRUE(std::filesystem::exists(exports + "/ft-000000000002-bbbbbb/base.pt"));
  ASSERT_TRUE(DeleteExportFolder(exports, scratch, "ft-000000000002-bbbbbb").ok());
  EXPECT_EQ(*CountExportFolders(exports), 0);
}

// A process that locks `path` (creating it) with flock and holds it until
// killed: another replica, counting or exporting.
pid_t HoldLockInAnotherProcess(const std::string& path) {
  int ready[2];
  if (::pipe(ready) != 0) return -1;
  const pid_t child = ::fork();
  if (child == 0) {  // only async-signal-safe calls here
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT, 0600);
    if (fd < 0 || ::flock(fd, LOCK_EX) != 0) ::_exit(1);
    if (::write(ready[1], "x", 1) != 1) ::_exit(1);
    for (;;) ::pause();
  }
  ::close(ready[1]);
  char byte;
  const bool locked = child > 0 && ::read(ready[0], &byte, 1) == 1;
  ::close(ready[0]);
  return locked ? child : -1;
}

void Kill(pid_t child) {
  ASSERT_EQ(::kill(child, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
}

// Runs `check` in a child process as an unprivileged user when this one is
// root (as CI is), where file modes bind; true when it returned true.
bool RunUnprivileged(const std::function<bool()>& check) {
  const pid_t child = ::fork();
  if (child == 0) {
    if (::geteuid() == 0 && (::setgid(65534) != 0 || ::setuid(65534) != 0)) ::_exit(2);
    ::_exit(check() ? 0 : 1);
  }
  int status = 0;
  return child > 0 && ::waitpid(child, &status, 0) == child && WIFEXITED(status) &&
         WEXITSTATUS(status) == 0;
}

TEST(ExportFoldersTest, SizesCountBlocksAndLinksWithinTheFolderWithinABudget) {
  test_util::TempDir dir;
  const std::string exports = dir.path() + "/exports";
  const std::string record = dir.path() + "/train.rec";
  ASSERT_TRUE(common::WriteFileAtomically(record, std::string(5000, 'r')).ok());
  MakeExport(exports, "ft-000000000001-aaaaaa", record, 100, 1'000'000);
  const std::string out = exports + "/ft-000000000001-aaaaaa/out";
  // A sparse file of 1 GiB takes (almost) no blocks.
  {
    const int fd = ::open((out + "/sparse").c_str(), O_WRONLY | O_CREAT, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::ftruncate(fd, int64_t{1} << 30), 0);
    ::close(fd);
  }
  const absl::StatusOr<std::vector<ExportFolder>> before = ListExportFolders(exports);
  ASSERT_TRUE(before.ok()) << before.status();
  ASSERT_EQ(before->size(), 1u);
  EXPECT_LT((*before)[0].size_bytes, 1 << 20);
  EXPECT_FALSE((*before)[0].size_incomplete);
  // A file the pods linked twice inside out/ is freed with the folder.
  ASSERT_TRUE(common::WriteFileAtomically(out + "/ckpt", std::string(64 << 10, 'c')).ok());
  ASSERT_EQ(::link((out + "/ckpt").c_str(), (out + "/ckpt.best").c_str()), 0);
  const absl::StatusOr<std::vector<ExportFolder>> after = ListExportFolders(exports);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_GE((*after)[0].size_bytes - (*before)[0].size_bytes, 64 << 10);
  EXPECT_LT((*after)[0].size_bytes - (*before)[0].size_bytes, 2 * (64 << 10));
  // Entries beyond the budget are not looked at: the size is incomplete.
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(common::WriteFileAtomically(absl::StrCat(out, "/f", i), "x").ok());
  }
  const absl::StatusOr<std::vector<ExportFolder>> full = ListExportFolders(exports);
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_FALSE((*full)[0].size_incomplete);  // 29 entries
  const absl::StatusOr<std::vector<ExportFolder>> capped = ListExportFolders(exports, "", 10);
  ASSERT_TRUE(capped.ok()) << capped.status();
  EXPECT_TRUE((*capped)[0].size_incomplete);
  EXPECT_LE((*capped)[0].size_bytes, (*full)[0].size_bytes);
}

// What the pods made unreadable (chmod 000 under out/) neither fails the
// listing, which says the size is incomplete, nor resists deletion.
TEST(ExportFoldersTest, AFolderThePodsMadeUnreadableIsListedAndDeleted) {
  test_util::TempDir dir;
  ASSERT_EQ(::chmod(dir.path().c_str(), 0777), 0);  // the unprivileged user's too
  const std::string exports = dir.path() + "/exports";
  const std::string scratch = dir.path() + "/tmp";
  EXPECT_TRUE(RunUnprivileged([&] {
    const std::string out = exports + "/ft-000000000001-aaaaaa/out";
    std::error_code ec;
    std::filesystem::create_directories(out + "/x/y", ec);
    std::filesystem::create_directories(scratch, ec);
    if (ec || !common::WriteFileAtomically(out + "/x/y/ckpt", "weights").ok() ||
        ::chmod((out + "/x/y").c_str(), 0) != 0 || ::chmod((out + "/x").c_str(), 0) != 0) {
      return false;
    }
    const absl::StatusOr<std::vector<ExportFolder>> listed = ListExportFolders(exports);
    if (!listed.ok() || listed->size() != 1 || !(*listed)[0].size_incomplete) return false;
    return DeleteExportFolder(exports, scratch, "ft-000000000001-aaaaaa").ok() &&
           std::filesystem::is_empty(scratch) && *CountExportFolders(exports) == 0;
  }));
}

// Folders nested deeper than a listing enters leave the size incomplete;
// deeper than the removal gives access to, with one closed at the bottom,
// the deletion fails and what remains is put back, listed and counted.
TEST(ExportFoldersTest, TreesNestedTooDeepAreIncompleteAndPutBackWhenTheyResist) {
  test_util::TempDir dir;
  ASSERT_EQ(::chmod(dir.path().c_str(), 0777), 0);
  const std::string exports = dir.path() + "/exports";
  const std::string scratch = dir.path() + "/tmp";
  EXPECT_TRUE(RunUnprivileged([&] {
    std::string deepest = exports + "/ft-000000000001-aaaaaa/out";
    for (int i = 0; i < 140; ++i) deepest += "/d";
    std::error_code ec;
    std::filesystem::create_directories(deepest, ec);
    std::filesystem::create_directories(scratch, ec);
    if (ec || !common::WriteFileAtomically(deepest + "/ckpt", "weights").ok() ||
        ::chmod(deepest.c_str(), 0) != 0) {
      return false;
    }
    const absl::StatusOr<std::vector<ExportFolder>> listed = ListExportFolders(exports);
    if (!listed.ok() || listed->size() != 1 || !(*listed)[0].size_incomplete) return false;
    const absl::Status deleted = DeleteExportFolder(exports, scratch, "ft-000000000001-aaaaaa");
    return deleted.code() == absl::StatusCode::kInternal &&
           deleted.message().find("could not all be removed") != absl::string_view::npos &&
           *CountExportFolders(exports) == 1 && std::filesystem::is_empty(scratch);
  }));
}

TEST(ExportReservationTest, ExportsInProgressCountTowardTheBoundUntilReleased) {
  test_util::TempDir dir;
  const std::string exports = dir.path() + "/exports";                       // created by the first
  std::filesystem::create_directories(exports + "/ft-000000000001-aaaaaa");  // one in place
  {
    absl::StatusOr<ExportReservation> first =
        ExportReservation::Reserve(exports, "ft-000000000002-bbbbbb", 3, absl::Seconds(1));
    ASSERT_TRUE(first.ok()) << first.status();
    absl::StatusOr<ExportReservation> second =
        ExportReservation::Reserve(exports, "ft-000000000002-cccccc", 3, absl::Seconds(1));
    ASSERT_TRUE(second.ok()) << second.status();
    const absl::StatusOr<ExportReservation> third =
        ExportReservation::Reserve(exports, "ft-000000000002-dddddd", 3, absl::Seconds(1));
    EXPECT_EQ(third.status().code(), absl::StatusCode::kResourceExhausted);
    EXPECT_NE(third.status().message().find(
                  "holds 3 exports, finished or in progress (--max_exports=3); delete one first"),
              std::string::npos)
        << third.status();
    ExportReservation moved = std::move(*second);  // still held by the moved-to
    EXPECT_FALSE(
        ExportReservation::Reserve(exports, "ft-000000000002-eeeeee", 3, absl::Seconds(1)).ok());
    // A name in place or reserved already is drawn again by the caller.
    EXPECT_EQ(ExportReservation::Reserve(exports, "ft-000000000001-aaaaaa", 9, absl::Seconds(1))
                  .status()
                  .code(),
              absl::StatusCode::kAlreadyExists);
    EXPECT_EQ(ExportReservation::Reserve(exports, "ft-000000000002-bbbbbb", 9, absl::Seconds(1))
                  .status()
                  .code(),
              absl::StatusCode::kAlreadyExists);
    // Neither the lock nor the reservations are exports.
    EXPECT_EQ(*CountExportFolders(exports), 1);
    EXPECT_EQ(ListExportFolders(exports)->size(), 1u);
  }
  EXPECT_TRUE(
      ExportReservation::Reserve(exports, "ft-000000000002-ffffff", 3, absl::Seconds(1)).ok());
  // Released reservations leave nothing behind but the lock.
  std::vector<std::string> left;
  for (const auto& e : std::filesystem::directory_iterator(exports)) {
    left.push_back(e.path().filename().string());
  }
  std::sort(left.begin(), left.end());
  EXPECT_EQ(left, (std::vector<std::string>{".lock", "ft-000000000001-aaaaaa"}));
}

// Another replica: counting, it keeps this one waiting (no longer than the
// wait); exporting, its reservation counts while it lives and is dropped
// once it died (SIGKILL).
TEST(ExportReservationTest, AnotherProcesssLockAndReservationHoldOnlyWhileItLives) {
  test_util::TempDir dir;
  const std::string exports = dir.path() + "/exports";
  ASSERT_TRUE(std::filesystem::create_directories(exports));
  const pid_t counting = HoldLockInAnotherProcess(exports + "/.lock");
  ASSERT_GT(counting, 0);
  const absl::Time start = absl::Now();
  const absl::StatusOr<ExportReservation> waited =
      ExportReservation::Reserve(exports, "ft-000000000001-aaaaaa", 1, absl::Milliseconds(200));
  EXPECT_EQ(waited.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(waited.status().message().find("has held exports/.lock for more than 200ms"),
            std::string::npos)
      << waited.status();
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(200));
  Kill(counting);

  const std::string theirs = exports + "/.reserved-ft-000000000002-bbbbbb";
  const pid_t exporting = HoldLockInAnotherProcess(theirs);
  ASSERT_GT(exporting, 0);
  EXPECT_EQ(ExportReservation::Reserve(exports, "ft-000000000001-aaaaaa", 1, absl::Seconds(1))
                .status()
                .code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(std::filesystem::exists(theirs));
  Kill(exporting);
  const absl::StatusOr<ExportReservation> mine =
      ExportReservation::Reserve(exports, "ft-000000000001-aaaaaa", 1, absl::Seconds(1));
  EXPECT_TRUE(mine.ok()) << mine.status();
  EXPECT_FALSE(std::filesystem::exists(theirs));
}

// Exports as JobManager::Export makes them (a reservation, the slow copy,
// the folder in place, the reservation released), from many threads at
// once, each with descriptors of its own as replicas have: the bound is
// never passed.
TEST(ExportReservationTest, ConcurrentExportsNeverPassTheBound) {
  test_util::TempDir dir;
  const std::string exports = dir.path() + "/exports";
  constexpr int kBound = 3;
  std::atomic<int> made{0}, refused{0}, failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      const std::string folder = absl::StrCat("ft-00000000000", t, "-abcdef");
      absl::StatusOr<ExportReservation> place =
          ExportReservation::Reserve(exports, folder, kBound, absl::Seconds(30));
      if (absl::IsResourceExhausted(place.status())) {
        ++refused;
        return;
      }
      if (!place.ok()) {
        ++failed;
        return;
      }
      absl::SleepFor(absl::Milliseconds(20));  // the copy of the starting model
      std::error_code ec;
      std::filesystem::create_directory(absl::StrCat(exports, "/", folder), ec);
      ec ? ++failed : ++made;
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(made.load(), kBound);
  EXPECT_EQ(refused.load(), 8 - kBound);
  EXPECT_EQ(*CountExportFolders(exports), kBound);
}

}  // namespace
}  // namespace kaizen::jobs
