#include "server/store/metadata_store.h"

#include <gtest/gtest.h>

#include <map>

#include "absl/strings/str_cat.h"
#include "tests/test_util/postgres.h"
#include "tests/test_util/store_printers.h"
#include "tests/test_util/temp_dir.h"

namespace kaizen::store {

namespace {

// A loading marker's lease, in milliseconds, that no test outlives.
constexpr int64_t kMinute = 60'000;

DatasetRow Dataset(const std::string& name, int64_t n) {
  DatasetRow r;
  r.file = "datasets/" + name + ".kds";
  r.dataset.set_name(name);
  r.dataset.set_num_examples(n);
  return r;
}

ModelRow Model(const std::string& name, int64_t version, double acc = -1) {
  ModelRow r;
  r.file = "models/" + name + "/v" + std::to_string(version) + ".pt";
  r.model.set_name(name);
  r.model.set_version(version);
  if (acc >= 0) (*r.model.mutable_metrics())["val_accuracy"] = acc;
  return r;
}

// The same suite on both engines.
class MetadataStoreTest : public ::testing::TestWithParam<test_util::Engine> {
 protected:
  void SetUp() override {
    absl::StatusOr<std::string> target = test_util::CatalogueFor(GetParam(), dir_.File("k.db"));
    ASSERT_TRUE(target.ok()) << target.status();
    target_ = *target;
  }
  test_util::TempDir dir_;
  std::string target_;
};

TEST_P(MetadataStoreTest, DatasetsPersistAcrossReopen) {
  {
    auto store = MetadataStore::Open(target_);
    ASSERT_TRUE(store.ok()) << store.status();
    ASSERT_TRUE((*store)->InsertDataset(Dataset("b", 2)).ok());
    ASSERT_TRUE((*store)->InsertDataset(Dataset("a", 1)).ok());
  }
  auto store = MetadataStore::Open(target_);
  ASSERT_TRUE(store.ok());
  auto got = (*store)->GetDataset("b");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->dataset.num_examples(), 2);
  EXPECT_EQ(got->file, "datasets/b.kds");
  auto list = (*store)->ListDatasets("", 10);
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].dataset.name(), "a");
}

TEST_P(MetadataStoreTest, DuplicateDatasetIsAlreadyExists) {
  auto store = *MetadataStore::Open(target_);
  ASSERT_TRUE(store->InsertDataset(Dataset("a", 1)).ok());
  absl::Status st = store->InsertDataset(Dataset("a", 5));
  EXPECT_EQ(st.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(store->GetDataset("a")->dataset.num_examples(), 1);
}

TEST_P(MetadataStoreTest, DeleteReturnsRowAndMissingIsNotFound) {
  auto store = *MetadataStore::Open(target_);
  ASSERT_TRUE(store->InsertDataset(Dataset("a", 1)).ok());
  auto removed = store->DeleteDataset("a");
  ASSERT_TRUE(removed.ok());
  EXPECT_EQ(removed->file, "datasets/a.kds");
  EXPECT_EQ(store->GetDataset("a").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store->DeleteDataset("a").status().code(), absl::StatusCode::kNotFound);
}

TEST_P(MetadataStoreTest, ListsDatasetsAfterCursor) {
  auto store = *MetadataStore::Open(target_);
  for (const char* n : {"c", "a", "d", "b"}) ASSERT_TRUE(store->InsertDataset(Dataset(n, 1)).ok());
  auto page = store->ListDatasets("b", 2);
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->size(), 2u);
  EXPECT_EQ((*page)[0].dataset.name(), "c");
  EXPECT_EQ((*page)[1].dataset.name(), "d");
}

TEST_P(MetadataStoreTest, ModelVersionsLatestAndDeletion) {
  auto store = *MetadataStore::Open(target_);
  ASSERT_TRUE(store->InsertModel(Model("m", 1)).ok());
  ASSERT_TRUE(store->InsertModel(Model("m", 2)).ok());
  ASSERT_TRUE(store->InsertModel(Model("z", 1)).ok());
  EXPECT_EQ(store->InsertModel(Model("m", 2)).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(store->GetModel("m", 0)->model.version(), 2);
  EXPECT_EQ(store->GetModel("m", 1)->model.version(), 1);
  EXPECT_EQ(store->GetModel("m", 3).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(*store->ModelVersions("m"), (std::vector<int64_t>{1, 2}));

  auto latest = *store->ListModels("", 0, 10, /*latest_only=*/true, "");
  ASSERT_EQ(latest.size(), 2u);
  EXPECT_EQ(latest[0].model.version(), 2);
  auto all = *store->ListModels("", 0, 10, /*latest_only=*/false, "");
  EXPECT_EQ(all.size(), 3u);
  auto after = *store->ListModels("m", 1, 10, false, "");
  ASSERT_EQ(after.size(), 2u);
  EXPECT_EQ(after[0].model.version(), 2);

  auto removed = store->DeleteModel("m", 1);
  ASSERT_TRUE(removed.ok());
  EXPECT_EQ(removed->size(), 1u);
  EXPECT_EQ(*store->ModelVersions("m"), (std::vector<int64_t>{2}));
  ASSERT_TRUE(store->DeleteModel("m", 0).ok());
  EXPECT_FALSE(*store->ModelExists("m"));
  EXPECT_EQ(store->AllFiles()->size(), 1u);
}

TEST_P(MetadataStoreTest, ListsOneModelAndOnlyTheNewestVersions) {
  auto store = *MetadataStore::Open(target_);
  for (const auto& [name, version] : std::vector<std::pair<std::string, int64_t>>{
           {"a", 1}, {"a", 2}, {"a", 3}, {"b", 1}, {"c", 1}, {"c", 2}}) {
    ASSERT_TRUE(store->InsertModel(Model(name, version)).ok());
  }
  auto only_a = *store->ListModels("", 0, 10, /*latest_only=*/false, "a");
  ASSERT_EQ(only_a.size(), 3u);
  EXPECT_EQ(only_a[2].model.version(), 3);
  auto newest = *store->ListModels("a", 3, 10, /*latest_only=*/true, "");
  ASSERT_EQ(newest.size(), 2u);
  EXPECT_EQ(newest[0].model.name(), "b");
  EXPECT_EQ(newest[1].model.name(), "c");
  EXPECT_EQ(newest[1].model.version(), 2);
  auto page = *store->ListModels("", 0, 2, /*latest_only=*/false, "");
  ASSERT_EQ(page.size(), 2u);
  EXPECT_EQ(page[1].model.version(), 2);
}

TEST_P(MetadataStoreTest, TestEvaluationIsStoredOnTheVersion) {
  auto store = *MetadataStore::Open(target_);
  ASSERT_TRUE(store->InsertModel(Model("m", 1, 0.5)).ok());
  kaizen::v1::Evaluation e;
  e.set_accuracy(0.75);
  ASSERT_TRUE(store->SetTestEvaluation("m", 1, e).ok());
  EXPECT_DOUBLE_EQ(store->GetModel("m", 1)->model.test_evaluation().accuracy(), 0.75);
  EXPECT_DOUBLE_EQ(store->GetModel("m", 1)->model.metrics().at("val_accuracy"), 0.5);
  EXPECT_EQ(store->SetTestEvaluation("m", 2, e).code(), absl::StatusCode::kNotFound);
}

TEST_P(MetadataStoreTest, QuarantineAndLoadingMarkersOutliveReopeningAndGoWithTheVersion) {
  {
    auto store = *MetadataStore::Open(target_);
    ASSERT_TRUE(store->InsertModel(Model("m", 1)).ok());
    ASSERT_TRUE(store->InsertModel(Model("m", 2)).ok());
    ASSERT_TRUE(store->QuarantineModel("m", 1, "first").ok());
    ASSERT_TRUE(store->QuarantineModel("m", 1, "crashed the server").ok());  // replaces
    ASSERT_TRUE(store->MarkLoading("m", 2, "local", kMinute).ok());
    ASSERT_TRUE(store->MarkLoading("m", 2, "local", kMinute).ok());  // idempotent
  }
  auto store = *MetadataStore::Open(target_);
  auto quarantined = *store->QuarantinedVersions("m");
  ASSERT_EQ(quarantined.size(), 1u);
  EXPECT_EQ(quarantined[1], "crashed the server");
  EXPECT_EQ(*store->TakeLoadingMarkers("local", /*every_owner=*/false, 0, nullptr),
            (std::vector<MetadataStore::LoadingMarker>{{"m", 2, "local"}}));
  EXPECT_TRUE(store->TakeLoadingMarkers("local", false, 0, nullptr)->empty());
  ASSERT_TRUE(store->MarkLoading("m", 2, "local", kMinute).ok());
  ASSERT_TRUE(store->ClearLoading("m", 2, "local").ok());
  EXPECT_TRUE(store->TakeLoadingMarkers("local", false, 0, nullptr)->empty());
  ASSERT_TRUE(store->DeleteModel("m", 1).ok());
  EXPECT_TRUE(store->QuarantinedVersions("m")->empty());
}

// Replicas on one catalogue: each takes back the loading markers it left
// and those of others whose lease ran out (more than a grace ago), never
// another's live marker (a load in progress); a replica's marker is cleared
// by that replica only; a renewal keeps the markers of the owner's loads in
// progress and removes its others; and a lone server takes every marker, a
// version marked twice once, with those servers from before markers had
// leases or owners left. Taking quarantines each version that still exists.
TEST_P(MetadataStoreTest, AReplicaTakesBackOnlyItsOwnLoadingMarkersAndExpiredOnes) {
  auto store = *MetadataStore::Open(target_);
  ASSERT_TRUE(store->InsertModel(Model("m", 1)).ok());
  ASSERT_TRUE(store->InsertModel(Model("m", 2)).ok());
  ASSERT_TRUE(store->MarkLoading("m", 1, "a", kMinute).ok());
  ASSERT_TRUE(store->MarkLoading("m", 1, "b", kMinute).ok());
  ASSERT_TRUE(store->MarkLoading("m", 2, "b", kMinute).ok());
  ASSERT_TRUE(store->ClearLoading("m", 2, "a").ok());  // not a's
  using Markers = std::vector<MetadataStore::LoadingMarker>;
  const auto take = [&](const std::string& owner, int64_t grace_ms = 0) {
    return *store->TakeLoadingMarkers(owner, false, grace_ms, nullptr);
  };
  EXPECT_TRUE(store->TakeExpiredLoadingMarkers(nullptr)->empty());
  EXPECT_EQ(take("a"), (Markers{{"m", 1, "a"}}));
  EXPECT_TRUE(take("a").empty());
  EXPECT_EQ(take("b"), (Markers{{"m", 1, "b"}, {"m", 2, "b"}}));

  // c's lease ran out; d's is renewed before it does, for its load of
  // version 2 in progress, and its marker of version 3 (a load that ended)
  // is removed.
  ASSERT_TRUE(store->MarkLoading("m", 1, "c", -1000).ok());
  ASSERT_TRUE(store->MarkLoading("m", 2, "d", -1000).ok());
  ASSERT_TRUE(store->MarkLoading("m", 3, "d", -1000).ok());
  ASSERT_TRUE(store->RenewLoadingMarkers("d", kMinute, {{"m", 2}}).ok());
  ASSERT_TRUE(store->MarkLoading("m", 2, "e", -1000).ok());
  // Expired for a second, not for a minute.
  EXPECT_TRUE(take("a", kMinute).empty());
  EXPECT_EQ(take("a"), (Markers{{"m", 1, "c"}, {"m", 2, "e"}}));
  ASSERT_TRUE(store->MarkLoading("m", 1, "c", -1000).ok());
  EXPECT_EQ(*store->TakeExpiredLoadingMarkers(nullptr), (Markers{{"m", 1, "c"}}));
  EXPECT_TRUE(store->TakeExpiredLoadingMarkers(nullptr)->empty());
  // Marking again renews: a load of the version that stopped earlier.
  ASSERT_TRUE(store->MarkLoading("m", 1, "f", -1000).ok());
  ASSERT_TRUE(store->MarkLoading("m", 1, "f", kMinute).ok());
  EXPECT_TRUE(store->TakeExpiredLoadingMarkers(nullptr)->empty());
  EXPECT_EQ(take("d"), (Markers{{"m", 2, "d"}}));
  EXPECT_EQ(take("f"), (Markers{{"m", 1, "f"}}));

  // Taken with a reason: quarantined in the same transaction, unless the
  // version is gone (its number may be handed out again).
  ASSERT_TRUE(store->MarkLoading("m", 2, "g", -1000).ok());
  ASSERT_TRUE(store->MarkLoading("m", 3, "g", -1000).ok());
  const MetadataStore::MarkerReason reason = [](const MetadataStore::LoadingMarker& m) {
    return absl::StrCat(m.owner, " died loading ", m.version);
  };
  EXPECT_EQ(*store->TakeExpiredLoadingMarkers(reason), (Markers{{"m", 2, "g"}, {"m", 3, "g"}}));
  const auto quarantined = *store->QuarantinedVersions("m");
  EXPECT_EQ(quarantined, (std::map<int64_t, std::string>{{2, "g died loading 2"}}));

  ASSERT_TRUE(store->MarkLoading("m", 1, "a", kMinute).ok());
  ASSERT_TRUE(store->MarkLoading("m", 1, "b", kMinute).ok());
  {
    absl::MutexLock lock(&store->db()->mutex());
    ASSERT_TRUE(store->db()->Exec("INSERT INTO model_loading(name, version) VALUES('m', 2)").ok());
    ASSERT_TRUE(store->db()
                    ->Exec("INSERT INTO model_loads(name, version, owner) VALUES('m', 3, 'h')")
                    .ok());
  }
  // A marker of a replica from before markers had leases: its owner's.
  EXPECT_TRUE(store->TakeExpiredLoadingMarkers(nullptr)->empty());
  EXPECT_EQ(take("a"), (Markers{{"m", 1, "a"}}));
  EXPECT_EQ(*store->TakeLoadingMarkers("local", /*every_owner=*/true, 0, nullptr),
            (Markers{{"m", 1, "b"}, {"m", 2, ""}, {"m", 3, "h"}}));
  EXPECT_TRUE(store->TakeLoadingMarkers("local", true, 0, nullptr)->empty());
}

// Two stores on one database (two replicas): a name taken by one is taken for
// the other, and each sees the other's rows.
TEST_P(MetadataStoreTest, TwoConnectionsShareOneCatalogue) {
  if (GetParam() == test_util::Engine::kSqlite) GTEST_SKIP() << "one SQLite file, one server";
  auto first = *MetadataStore::Open(target_);
  auto second = *MetadataStore::Open(target_);
  ASSERT_TRUE(first->InsertDataset(Dataset("shared", 3)).ok());
  EXPECT_EQ(second->InsertDataset(Dataset("shared", 4)).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(second->GetDataset("shared")->dataset.num_examples(), 3);
  ASSERT_TRUE(second->InsertModel(Model("m", 1)).ok());
  EXPECT_EQ(first->GetModel("m", 0)->model.version(), 1);
}

// The catalogue's name is made once and read back by every later opening
// (a restart, another replica); another database has another.
TEST_P(MetadataStoreTest, TheCatalogueKeepsOneNameAcrossOpenings) {
  std::string name;
  {
    auto first = *MetadataStore::Open(target_);
    name = first->catalogue_id();
    auto second = *MetadataStore::Open(target_);
    EXPECT_EQ(second->catalogue_id(), name);
  }
  EXPECT_EQ(name.size(), 16u);
  EXPECT_EQ(name.find_first_not_of("0123456789abcdef"), std::string::npos) << name;
  EXPECT_EQ((*MetadataStore::Open(target_))->catalogue_id(), name);
  absl::StatusOr<std::string> other = test_util::CatalogueFor(GetParam(), dir_.File("other.db"));
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_NE((*MetadataStore::Open(*other))->catalogue_id(), name);
}

INSTANTIATE_TEST_SUITE_P(Engines, MetadataStoreTest,
                         ::testing::Values(test_util::Engine::kSqlite,
                                           test_util::Engine::kPostgres),
                         [](const auto& info) { return test_util::EngineName(info.param); });

}  // namespace
}  // namespace kaizen::store
