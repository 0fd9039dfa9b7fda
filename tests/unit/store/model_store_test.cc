#include "server/store/model_store.h"

#include <torch/script.h>

#include <filesystem>
#include <set>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/common/text_limits.h"
#include "server/store/data_dir.h"
#include "tests/test_util/store_printers.h"
#include "tests/test_util/temp_dir.h"

namespace kaizen::store {

namespace {

torch::jit::Module TinyClassifier(int64_t classes) {
  torch::jit::Module m(c10::QualifiedName("__torch__.test.Tiny"),
                       std::make_shared<torch::jit::CompilationUnit>());
  m.register_parameter("weight", at::zeros({classes, 4}), false);
  m.define("def forward(self, x):\n    return torch.linear(x.flatten(1), self.weight)\n");
  return m;
}

TEST(ModelStoreTest, ListPagesStopAtTheByteLimit) {
  test_util::TempDir dir;
  ASSERT_TRUE(PrepareDataDir(dir.path()).ok());
  auto metadata = MetadataStore::Open(dir.path() + "/kaizen.db");
  ASSERT_TRUE(metadata.ok()) << metadata.status();
  ModelStore::Options o;
  o.data_dir = dir.path();
  ModelStore models(o, metadata->get());
  // Eight records of ~600 KB each (5,000 class names of 120 bytes): a page of
  // all of them would pass 4 MiB.
  constexpr int kClasses = 5000;
  kaizen::v1::Model meta;
  for (int i = 0; i < kClasses; ++i) {
    meta.add_class_names(absl::StrCat(i, std::string(120 - absl::StrCat(i).size(), 'c')));
  }
  for (int i = 0; i < 8; ++i) {
    auto added = models.AddVersion(absl::StrCat("big-", i), TinyClassifier(kClasses), meta, "");
    ASSERT_TRUE(added.ok()) << added.status();
  }
  std::set<std::string> seen;
  kaizen::v1::ListModelsRequest request;
  int pages = 0;
  do {
    auto page = models.List(request);
    ASSERT_TRUE(page.ok()) << page.status();
    ++pages;
    EXPECT_LT(page->ByteSizeLong(), common::kMaxPageBytes + common::kMaxRecordBytes);
    for (const auto& m : page->models()) EXPECT_TRUE(seen.insert(m.name()).second) << m.name();
    request.set_page_token(page->next_page_token());
  } while (!request.page_token().empty());
  EXPECT_GE(pages, 2);
  EXPECT_EQ(seen.size(), 8u + 2u);  // and the two built-ins
}

// INCREMENTAL: the rehearsal memory lives and dies with its version.
TEST(ModelStoreTest, StoresTheRehearsalMemoryBesideAVersion) {
  test_util::TempDir dir;
  ASSERT_TRUE(PrepareDataDir(dir.path()).ok());
  auto metadata = MetadataStore::Open(dir.path() + "/kaizen.db");
  ASSERT_TRUE(metadata.ok()) << metadata.status();
  ModelStore::Options o;
  o.data_dir = dir.path();
  ModelStore models(o, metadata->get());
  datasets::DecodedDataset memory;
  memory.class_names = {"a", "b"};
  for (int i = 0; i < 3; ++i) {
    datasets::DecodedDataset::Record r;
    r.label = i % 2;
    r.height = 2;
    r.width = 2;
    r.channels = 1;
    r.offset = static_cast<int64_t>(memory.pixels.size());
    for (int p = 0; p < 4; ++p) memory.pixels.push_back(static_cast<uint8_t>(10 * i + p));
    memory.records.push_back(r);
  }
  kaizen::v1::Model meta;
  meta.add_class_names("a");
  meta.add_class_names("b");
  auto v1 = models.AddVersion("inc", TinyClassifier(2), meta, "state", &memory);
  ASSERT_TRUE(v1.ok()) << v1.status();
  auto v2 = models.AddVersion("inc", TinyClassifier(2), meta, "state");
  ASSERT_TRUE(v2.ok()) << v2.status();

  auto back = models.ReadExemplars("inc", 1);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->class_names, memory.class_names);
  EXPECT_EQ(back->pixels, memory.pixels);
  ASSERT_EQ(back->records.size(), 3u);
  EXPECT_EQ(back->records[1].label, 1);
  // A version written without one has none.
  EXPECT_EQ(models.ReadExemplars("inc", 2).status().code(), absl::StatusCode::kNotFound);
  absl::StatusOr<bool> has = models.HasExemplars("inc", 1);
  ASSERT_TRUE(has.ok()) << has.status();
  EXPECT_TRUE(*has);
  has = models.HasExemplars("inc", 2);
  ASSERT_TRUE(has.ok()) << has.status();
  EXPECT_FALSE(*has);
  EXPECT_EQ(models.HasExemplars("inc", 9).status().code(), absl::StatusCode::kNotFound);
  // No temporary file is left beside the version, and pruning removes the
  // memory with it.
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.path() + "/models/inc")) {
    EXPECT_EQ(e.path().string().find(".tmp"), std::string::npos) << e.path();
    ++files;
  }
  EXPECT_EQ(files, 5);  // two models, two resume states, one memory
  ASSERT_TRUE(models.PruneVersions("inc", {2}, 2).ok());
  files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.path() + "/models/inc")) {
    EXPECT_EQ(e.path().string().find(".exemplars"), std::string::npos) << e.path();
    ++files;
  }
  EXPECT_EQ(files, 2);
}

// A model's best version: the highest val_accuracy, else (MASKED_LM
// encoders) the lowest val_masked_lm_loss, else the latest.
TEST(ModelStoreTest, TheBestVersionIsChosenByValidationAccuracyThenHeldOutLoss) {
  test_util::TempDir dir;
  ASSERT_TRUE(PrepareDataDir(dir.path()).ok());
  auto metadata = MetadataStore::Open(dir.path() + "/kaizen.db");
  ASSERT_TRUE(metadata.ok());
  ModelStore::Options o;
  o.data_dir = dir.path();
  ModelStore models(o, metadata->get());
  auto add = [&](const std::string& name, const char* metric, double value) {
    kaizen::v1::Model meta;
    meta.add_class_names("a");
    meta.add_class_names("b");
    if (metric != nullptr) (*meta.mutable_metrics())[metric] = value;
    ASSERT_TRUE(models.AddVersion(name, TinyClassifier(2), meta, "").ok());
  };
  add("enc", "val_masked_lm_loss", 5.0);
  add("enc", "val_masked_lm_loss", 4.0);
  add("enc", "val_masked_lm_loss", 4.5);
  add("clf", "val_accuracy", 0.5);
  add("clf", "val_accuracy", 0.9);
  add("clf", "val_accuracy", 0.7);
  add("plain", nullptr, 0);
  add("plain", nullptr, 0);
  auto best = [&](const std::string& name) {
    absl::StatusOr<kaizen::v1::Model> m = models.Get(name, 0);
    EXPECT_TRUE(m.ok()) << m.status();
    return m.ok() ? m->best_version() : -1;
  };
  EXPECT_EQ(best("enc"), 2);
  EXPECT_EQ(best("clf"), 2);
  EXPECT_EQ(best("plain"), 2);
}

// Retention prunes only up to the version the job has just written: newer
// versions (another replica's, that took the job over meanwhile) stay. A
// run that may not record its version withdraws that one alone.
TEST(ModelStoreTest, PruningLeavesVersionsNewerThanTheOneConsidered) {
  test_util::TempDir dir;
  ASSERT_TRUE(PrepareDataDir(dir.path()).ok());
  auto metadata = MetadataStore::Open(dir.path() + "/kaizen.db");
  ASSERT_TRUE(metadata.ok());
  ModelStore::Options o;
  o.data_dir = dir.path();
  ModelStore models(o, metadata->get());
  kaizen::v1::Model meta;
  meta.add_class_names("a");
  meta.add_class_names("b");
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(models.AddVersion("out", TinyClassifier(2), meta, "state").ok());
  }
  auto versions = [&] {
    absl::StatusOr<kaizen::v1::Model> m = models.Get("out", 0);
    EXPECT_TRUE(m.ok()) << m.status();
    return m.ok() ? std::vector<int64_t>(m->versions().begin(), m->versions().end())
                  : std::vector<int64_t>{};
  };
  ASSERT_TRUE(models.PruneVersions("out", {3}, 3).ok());
  EXPECT_EQ(versions(), (std::vector<int64_t>{3, 4, 5}));
  // By its bytes: a version whose number was handed out again stays.
  const std::string five = models.Get("out", 5)->sha256();
  ASSERT_TRUE(models.RemoveVersion("out", 5, five).ok());
  absl::StatusOr<kaizen::v1::Model> again = models.AddVersion("out", TinyClassifier(3), meta, "");
  ASSERT_TRUE(again.ok()) << again.status();
  ASSERT_EQ(again->version(), 5);
  ASSERT_NE(again->sha256(), five);
  EXPECT_EQ(models.RemoveVersion("out", 5, five).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(versions(), (std::vector<int64_t>{3, 4, 5}));
  // By number alone.
  ASSERT_TRUE(models.RemoveVersion("out", 4).ok());
  EXPECT_EQ(versions(), (std::vector<int64_t>{3, 5}));
  for (const auto& e : std::filesystem::directory_iterator(dir.path() + "/models/out")) {
    EXPECT_NE(e.path().filename().string().rfind("v4-", 0), 0u) << e.path();
  }
  EXPECT_EQ(models.RemoveVersion("out", 4).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(models.RemoveVersion("out", 0).code(), absl::StatusCode::kInvalidArgument);
}

// Another replica (a second connection to the catalogue) writes and deletes
// versions: AnnounceOtherReplicasChanges tells the listener about each
// model's newest one once, about every version it deleted (or whose number
// it reused for other bytes), and not about this store's own writes and
// deletions, which were told when they happened.
TEST(ModelStoreTest, AnnouncesWhatAnotherReplicaWroteAndDeleted) {
  test_util::TempDir dir;
  ASSERT_TRUE(PrepareDataDir(dir.path()).ok());
  auto metadata = MetadataStore::Open(dir.path() + "/kaizen.db");
  auto elsewhere = MetadataStore::Open(dir.path() + "/kaizen.db");
  ASSERT_TRUE(metadata.ok() && elsewhere.ok());
  ModelStore::Options o;
  o.data_dir = dir.path();
  ModelStore models(o, metadata->get());
  using Told = std::vector<std::pair<std::string, int64_t>>;
  Told added, deleted;
  ModelStore::Listener listener;
  listener.added = [&](const kaizen::v1::Model& m) { added.emplace_back(m.name(), m.version()); };
  listener.deleted = [&](const std::string& name, int64_t version) {
    deleted.emplace_back(name, version);
  };
  models.set_listener(listener);
  auto write_elsewhere = [&](const std::string& name, int64_t version,
                             const std::string& sha256 = "aa") {
    ModelRow row;
    row.file = absl::StrCat("models/", name, "/v", version, ".pt");
    row.model.set_name(name);
    row.model.set_version(version);
    row.model.set_sha256(sha256);
    ASSERT_TRUE((*elsewhere)->InsertModel(row).ok());
  };
  auto delete_elsewhere = [&](const std::string& name, int64_t version) {
    ASSERT_TRUE((*elsewhere)->DeleteModel(name, version).ok());
  };
  write_elsewhere("before", 1);
  ASSERT_TRUE(models.AnnounceOtherReplicasChanges().ok());  // takes note only
  EXPECT_TRUE(added.empty());
  write_elsewhere("m", 1);
  write_elsewhere("m", 2);
  write_elsewhere("before", 2);
  ASSERT_TRUE(models.AnnounceOtherReplicasChanges().ok());
  EXPECT_EQ(added, (Told{{"before", 2}, {"m", 2}}));
  EXPECT_TRUE(deleted.empty());
  added.clear();
  ASSERT_TRUE(models.AnnounceOtherReplicasChanges().ok());
  EXPECT_TRUE(added.empty());

  kaizen::v1::Model meta;
  meta.add_class_names("a");
  meta.add_class_names("b");
  ASSERT_TRUE(models.AddVersion("own", TinyClassifier(2), meta, "").ok());
  ASSERT_TRUE(models.AddVersion("own", TinyClassifier(2), meta, "").ok());
  ASSERT_EQ(added.size(), 2u);  // by AddVersion
  ASSERT_TRUE(models.AnnounceOtherReplicasChanges().ok());
  EXPECT_EQ(added.size(), 2u);
  ASSERT_TRUE(models.Delete("own", 2).ok());
  ASSERT_EQ(deleted, (Told{{"own", 2}}));  // by Delete
  deleted.clear();
  added.clear();
  ASSERT_TRUE(models.AnnounceOtherReplicasChanges().ok());
  EXPECT_TRUE(deleted.empty());
  EXPECT_TRUE(added.empty());

  // Deleted elsewhere: the newest version of one model, a whole model, and
  // a version number reused for other bytes.
  delete_elsewhere("m", 2);
  delete_elsewhere("before", 0);
  delete_elsewhere("own", 1);
  write_elsewhere("own", 1, "bb");
  ASSERT_TRUE(models.AnnounceOtherReplicasChanges().ok());
  EXPECT_EQ(deleted, (Told{{"before", 1}, {"before", 2}, {"m", 2}, {"own", 1}}));
  EXPECT_EQ(added, (Told{{"own", 1}}));
  deleted.clear();
  added.clear();
  ASSERT_TRUE(models.AnnounceOtherReplicasChanges().ok());
  EXPECT_TRUE(deleted.empty());
  EXPECT_TRUE(added.empty());

  // A number reused below the old newest: versions 2 and 3 deleted, a new 2.
  write_elsewhere("r", 1);
  write_elsewhere("r", 2);
  write_elsewhere("r", 3);
  ASSERT_TRUE(models.AnnounceOtherReplicasChanges().ok());
  EXPECT_EQ(added, (Told{{"r", 3}}));
  added.clear();
  delete_elsewhere("r", 2);
  delete_elsewhere("r", 3);
  write_elsewhere("r", 2, "cc");
  ASSERT_TRUE(models.AnnounceOtherReplicasChanges().ok());
  EXPECT_EQ(deleted, (Told{{"r", 2}, {"r", 3}}));
  EXPECT_EQ(added, (Told{{"r", 2}}));
  // Only the newest version deleted: the one left was known, nothing to add.
  deleted.clear();
  added.clear();
  delete_elsewhere("r", 2);
  ASSERT_TRUE(models.AnnounceOtherReplicasChanges().ok());
  EXPECT_EQ(deleted, (Told{{"r", 2}}));
  EXPECT_TRUE(added.empty());
}

// Replicas' loading markers: at its start a replica quarantines the versions
// whose markers it left itself and those whose lease ran out more than a
// lease ago (their replica died loading them and did not come back under
// its id), not another replica's live load; while it runs it keeps the
// markers of its loads in progress leased, and once its own renewals have
// gone on for a whole lease it takes those that other replicas stopped
// renewing.
TEST(ModelStoreTest, LoadsOfReplicasThatStoppedRenewingTheirMarkersAreQuarantined) {
  test_util::TempDir dir;
  ASSERT_TRUE(PrepareDataDir(dir.path()).ok());
  auto metadata = MetadataStore::Open(dir.path() + "/kaizen.db");
  ASSERT_TRUE(metadata.ok()) << metadata.status();
  const auto replica = [&](const std::string& id, absl::Duration lease) {
    ModelStore::Options o;
    o.data_dir = dir.path();
    o.replica_id = id;
    o.shared_database = true;
    o.loading_marker_lease = lease;
    return std::make_unique<ModelStore>(o, metadata->get());
  };
  std::unique_ptr<ModelStore> r3 = replica("r3", absl::Seconds(1));
  kaizen::v1::Model meta;
  meta.add_class_names("a");
  meta.add_class_names("b");
  for (int v = 1; v <= 5; ++v) ASSERT_TRUE(r3->AddVersion("m", TinyClassifier(2), meta, "").ok());
  ASSERT_TRUE((*metadata)->MarkLoading("m", 1, "r2", 60'000).ok());  // r2 loads version 1
  ASSERT_TRUE((*metadata)->MarkLoading("m", 2, "r1", -1001).ok());   // r1 died loading 2
  ASSERT_TRUE((*metadata)->MarkLoading("m", 5, "r6", -10).ok());     // r6's lease just ran out
  ASSERT_TRUE(r3->MarkLoading("m", 3).ok());  // r3 died loading 3 (its marker still leased)
  absl::StatusOr<int> quarantined = r3->QuarantineInterruptedLoads();
  ASSERT_TRUE(quarantined.ok()) << quarantined.status();
  EXPECT_EQ(*quarantined, 2);
  auto reasons = (*metadata)->QuarantinedVersions("m");
  ASSERT_TRUE(reasons.ok()) << reasons.status();
  ASSERT_EQ(reasons->size(), 2u);
  EXPECT_EQ((*reasons)[2],
            "replica r1 stopped while loading this version for serving (the lease of its loading "
            "marker ran out unrenewed; found by replica r3) (a crash or kill during load or "
            "warm-up)");
  EXPECT_EQ((*reasons)[3],
            "replica r3 stopped while loading this version for serving (a crash or kill during "
            "load or warm-up)");

  // r5 loads version 4 and renews its marker for three of its leases. The
  // two replicas' upkeep takes r6's marker once (r6 may have been cut off
  // with the rest, so not before a lease of renewals), never r5's. Then r5
  // dies: r3 takes its marker once its lease has run out.
  std::unique_ptr<ModelStore> r5 = replica("r5", absl::Seconds(1));
  ASSERT_TRUE(r5->MarkLoading("m", 4).ok());
  const auto upkeep = [](ModelStore* r) {
    absl::StatusOr<int> taken = r->LoadingMarkerUpkeep();
    EXPECT_TRUE(taken.ok()) << taken.status();
    return taken.ok() ? *taken : 0;
  };
  int taken = 0;
  absl::Time start = absl::Now();
  while (absl::Now() - start < absl::Seconds(3)) {
    const int now = upkeep(r5.get()) + upkeep(r3.get());
    if (now > 0) EXPECT_GE(absl::Now() - start, absl::Seconds(1)) << "taken before a lease";
    taken += now;
    absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_EQ(taken, 1);
  reasons = (*metadata)->QuarantinedVersions("m");
  ASSERT_TRUE(reasons.ok()) << reasons.status();
  EXPECT_EQ(reasons->count(4), 0u);
  EXPECT_THAT((*reasons)[5], ::testing::HasSubstr("replica r6 stopped while loading"));
  r5.reset();  // dies
  start = absl::Now();
  taken = 0;
  while (absl::Now() - start < absl::Seconds(3) && taken == 0) {
    taken = upkeep(r3.get());
    if (taken > 0) EXPECT_GE(absl::Now() - start, absl::Milliseconds(700)) << "r5 lived";
    absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_EQ(taken, 1);
  reasons = (*metadata)->QuarantinedVersions("m");
  ASSERT_TRUE(reasons.ok()) << reasons.status();
  EXPECT_THAT((*reasons)[4], ::testing::HasSubstr("replica r5 stopped while loading"));
  // r2's load, still leased, was left alone throughout.
  auto left = (*metadata)->TakeLoadingMarkers("r2", false, 0, nullptr);
  ASSERT_TRUE(left.ok()) << left.status();
  ASSERT_EQ(left->size(), 1u);
  EXPECT_EQ(left->front().owner, "r2");
}

// A replica's renewals keep only its loads in progress: a marker whose
// ClearLoading failed (left in the catalogue) is removed at the next
// renewal, so that it is not taken for a death once the replica exits.
TEST(ModelStoreTest, ARenewalRemovesTheMarkersOfLoadsThatEnded) {
  test_util::TempDir dir;
  ASSERT_TRUE(PrepareDataDir(dir.path()).ok());
  auto metadata = MetadataStore::Open(dir.path() + "/kaizen.db");
  ASSERT_TRUE(metadata.ok()) << metadata.status();
  ModelStore::Options o;
  o.data_dir = dir.path();
  o.replica_id = "r1";
  o.shared_database = true;
  ModelStore models(o, metadata->get());
  ASSERT_TRUE(models.MarkLoading("m", 1).ok());
  ASSERT_TRUE(models.MarkLoading("m", 2).ok());
  ASSERT_TRUE(models.MarkLoading("m", 2).ok());   // a second load of version 2
  ASSERT_TRUE(models.ClearLoading("m", 2).ok());  // one of them ended
  ASSERT_TRUE(models.ClearLoading("m", 1).ok());
  // As if ClearLoading's write had failed: the row is back.
  ASSERT_TRUE((*metadata)->MarkLoading("m", 1, "r1", 60'000).ok());
  ASSERT_TRUE(models.LoadingMarkerUpkeep().ok());
  using Markers = std::vector<MetadataStore::LoadingMarker>;
  EXPECT_EQ(*(*metadata)->TakeLoadingMarkers("r1", false, 0, nullptr), (Markers{{"m", 2, "r1"}}));
}

// A replica that stalled past its marker's lease while it loaded a version
// had the version quarantined by another replica; when its load then
// succeeds, that quarantine (and only one of that kind, naming it) is
// lifted.
TEST(ModelStoreTest, AQuarantineOfALoadThatOutlivedItsMarkerIsLiftedWhenTheLoadSucceeds) {
  test_util::TempDir dir;
  ASSERT_TRUE(PrepareDataDir(dir.path()).ok());
  auto metadata = MetadataStore::Open(dir.path() + "/kaizen.db");
  ASSERT_TRUE(metadata.ok()) << metadata.status();
  const auto replica = [&](const std::string& id) {
    ModelStore::Options o;
    o.data_dir = dir.path();
    o.replica_id = id;
    o.shared_database = true;
    o.loading_marker_lease = absl::Seconds(1);
    return std::make_unique<ModelStore>(o, metadata->get());
  };
  std::unique_ptr<ModelStore> r1 = replica("r1");
  std::unique_ptr<ModelStore> r3 = replica("r3");
  kaizen::v1::Model meta;
  meta.add_class_names("a");
  meta.add_class_names("b");
  for (int v = 1; v <= 3; ++v) ASSERT_TRUE(r3->AddVersion("m", TinyClassifier(2), meta, "").ok());
  // r1 loads versions 1 and 2 and stalls: both markers' leases run out
  // (long ago), and r3 takes them. Version 3 failed r3's own load.
  ASSERT_TRUE(r1->MarkLoading("m", 1).ok());
  ASSERT_TRUE(r1->MarkLoading("m", 2).ok());
  ASSERT_TRUE((*metadata)->MarkLoading("m", 1, "r1", -5000).ok());
  ASSERT_TRUE((*metadata)->MarkLoading("m", 2, "r1", -5000).ok());
  ASSERT_TRUE(r3->Quarantine("m", 3, "warm-up failed").ok());
  ASSERT_EQ(*r3->QuarantineInterruptedLoads(), 2);
  // r1 wakes: its load of version 1 succeeds; that of version 2 never ends.
  ASSERT_TRUE(r1->ClearLoading("m", 1).ok());
  EXPECT_TRUE(*r1->LiftQuarantineOfAStalledLoad("m", 1));
  EXPECT_FALSE(*r3->LiftQuarantineOfAStalledLoad("m", 2));  // not r3's load
  EXPECT_FALSE(*r1->LiftQuarantineOfAStalledLoad("m", 3));  // another reason
  const auto reasons = (*metadata)->QuarantinedVersions("m");
  ASSERT_TRUE(reasons.ok()) << reasons.status();
  EXPECT_EQ(reasons->count(1), 0u);
  EXPECT_EQ(reasons->count(2), 1u);
  EXPECT_EQ(reasons->at(3), "warm-up failed");
}

}  // namespace
}  // namespace kaizen::store
