#include "tests/test_util/server/serving_fixture.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "tests/test_util/image_fixtures.h"
#include "tests/test_util/server/loopback_server.h"
#include "tests/test_util/temp_dir.h"

namespace kaizen::test_util {
namespace {

namespace fs = std::filesystem;

constexpr char kCompleteMarker[] = "fixture-complete";

std::string FixtureDir() { return absl::StrCat(KAIZEN_BINARY_DIR, "/test-fixtures/serving"); }

// Holds an exclusive flock on the fixture's lock file while it lives, so that
// test processes running side by side build the directory once.
class FixtureLock {
 public:
  FixtureLock() {
    std::error_code ec;
    fs::create_directories(fs::path(FixtureDir()).parent_path(), ec);
    fd_ = open((FixtureDir() + ".lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ >= 0) flock(fd_, LOCK_EX);
  }
  ~FixtureLock() {
    if (fd_ >= 0) close(fd_);
  }
  FixtureLock(const FixtureLock&) = delete;
  FixtureLock& operator=(const FixtureLock&) = delete;
  bool ok() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

bool Complete(const std::string& dir) { return fs::exists(fs::path(dir) / kCompleteMarker); }

absl::Status Train(LoopbackServer& s, const v1::StartFineTuneRequest& request) {
  absl::StatusOr<v1::Job> job = s.client->StartFineTune(request);
  if (!job.ok()) return job.status();
  return WaitForJob(*s.client, job->id(), {v1::JOB_STATE_SUCCEEDED}).status();
}

absl::Status TrainShoes(LoopbackServer& s, const std::string& files) {
  absl::StatusOr<v1::Dataset> d =
      UploadFashionSubset(*s.client, files, "few", {5, 6, 7, 8, 9}, 20, ShoesClasses());
  if (!d.ok()) return d.status();
  v1::StartFineTuneRequest r;
  r.set_base_model("cnn-small");
  r.set_dataset("few");
  r.set_output_model(kShoesModel);
  r.set_strategy(v1::STRATEGY_FULL);
  r.mutable_hyperparameters()->set_epochs(2);
  r.mutable_hyperparameters()->set_seed(3);
  r.mutable_hyperparameters()->mutable_validation()->set_split(0.2);
  return Train(s, r);
}

absl::Status TrainShapes(LoopbackServer& s, const std::string& files) {
  std::vector<ArchiveEntry> entries;
  for (uint32_t i = 0; i < 12; ++i) {
    entries.push_back({absl::StrCat("light/", i, ".png"), EncodePng(28, 28, 1, i)});
    entries.push_back({absl::StrCat("dark/", i, ".png"), EncodePng(28, 28, 1, 100 + i)});
  }
  const std::string archive = files + "/shapes.tar.gz";
  WriteBinaryFile(archive, MakeArchive(entries, ArchiveKind::kTarGz));
  v1::UploadDatasetHeader h;
  h.set_name("oip-shapes");
  h.set_format(v1::DATASET_FORMAT_IMAGE_FOLDER);
  absl::StatusOr<v1::Dataset> d = s.client->UploadDataset(h, {archive});
  if (!d.ok()) return d.status();
  v1::StartFineTuneRequest r;
  r.set_base_model("cnn-small");
  r.set_dataset("oip-shapes");
  r.set_output_model(kShapesModel);
  r.set_strategy(v1::STRATEGY_SCRATCH);
  r.mutable_hyperparameters()->set_epochs(1);
  r.mutable_hyperparameters()->set_seed(7);
  r.mutable_hyperparameters()->mutable_validation()->set_split(0.25);
  return Train(s, r);
}

absl::Status Copy(const std::string& from, const std::string& to) {
  std::error_code ec;
  fs::copy(from, to, fs::copy_options::recursive | fs::copy_options::overwrite_existing, ec);
  if (ec) return absl::InternalError(absl::StrCat("copy ", from, " to ", to, ": ", ec.message()));
  return absl::OkStatus();
}

// Trains into a sibling folder and renames it into place. The caller holds
// the lock.
absl::Status RebuildLocked() {
  const std::string dir = FixtureDir(), fresh = absl::StrCat(dir, ".new-", getpid());
  std::error_code ec;
  fs::remove_all(fresh, ec);
  fs::create_directories(fresh, ec);
  if (ec) return absl::InternalError(absl::StrCat("mkdir ", fresh, ": ", ec.message()));
  absl::Status trained = TrainServingModels(fresh);
  if (!trained.ok()) {
    fs::remove_all(fresh, ec);
    return trained;
  }
  WriteBinaryFile(absl::StrCat(fresh, "/", kCompleteMarker), "");
  fs::remove_all(dir, ec);
  fs::rename(fresh, dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("rename ", fresh, ": ", ec.message()));
  return absl::OkStatus();
}

}  // namespace

const std::vector<std::string>& ShoesClasses() {
  static const auto* classes =
      new std::vector<std::string>{"sandal", "shirt", "sneaker", "bag", "ankle-boot"};
  return *classes;
}

absl::Status TrainServingModels(const std::string& data_dir) {
  TempDir files;
  absl::StatusOr<LoopbackServer> s = StartLoopbackServer(LoopbackOptions(data_dir));
  if (!s.ok()) return s.status();
  absl::Status st = TrainShoes(*s, files.path());
  if (st.ok()) st = TrainShapes(*s, files.path());
  s->server->Shutdown(absl::Seconds(5));
  s->server->Wait();
  return st;
}

absl::Status RebuildServingFixture() {
  FixtureLock lock;
  if (!lock.ok()) return absl::InternalError("cannot open the fixture's lock file");
  return RebuildLocked();
}

absl::StatusOr<std::string> ServingFixtureDir() {
  FixtureLock lock;
  if (!lock.ok()) return absl::InternalError("cannot open the fixture's lock file");
  if (!Complete(FixtureDir())) {
    absl::Status st = RebuildLocked();
    if (!st.ok()) return st;
  }
  return FixtureDir();
}

absl::Status CopyServingFixture(const std::string& data_dir) {
  absl::StatusOr<std::string> dir = ServingFixtureDir();
  if (!dir.ok()) return dir.status();
  FixtureLock lock;  // not while a rebuild replaces it
  absl::Status st = Copy(*dir, data_dir);
  std::error_code ec;
  fs::remove(fs::path(data_dir) / kCompleteMarker, ec);
  return st;
}

}  // namespace kaizen::test_util
