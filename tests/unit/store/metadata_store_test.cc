#include "server/store/metadata_store.h"

#include <gtest/gtest.h>

#include "tests/test_util/temp_dir.h"

namespace kaizen::store {
namespace {

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

TEST(MetadataStore, DatasetsPersistAcrossReopen) {
  test_util::TempDir dir;
  {
    auto store = MetadataStore::Open(dir.File("k.db"));
    ASSERT_TRUE(store.ok()) << store.status();
    ASSERT_TRUE((*store)->InsertDataset(Dataset("b", 2)).ok());
    ASSERT_TRUE((*store)->InsertDataset(Dataset("a", 1)).ok());
  }
  auto store = MetadataStore::Open(dir.File("k.db"));
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

TEST(MetadataStore, DuplicateDatasetIsAlreadyExists) {
  test_util::TempDir dir;
  auto store = *MetadataStore::Open(dir.File("k.db"));
  ASSERT_TRUE(store->InsertDataset(Dataset("a", 1)).ok());
  absl::Status st = store->InsertDataset(Dataset("a", 5));
  EXPECT_EQ(st.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(store->GetDataset("a")->dataset.num_examples(), 1);
}

TEST(MetadataStore, DeleteReturnsRowAndMissingIsNotFound) {
  test_util::TempDir dir;
  auto store = *MetadataStore::Open(dir.File("k.db"));
  ASSERT_TRUE(store->InsertDataset(Dataset("a", 1)).ok());
  auto removed = store->DeleteDataset("a");
  ASSERT_TRUE(removed.ok());
  EXPECT_EQ(removed->file, "datasets/a.kds");
  EXPECT_EQ(store->GetDataset("a").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store->DeleteDataset("a").status().code(), absl::StatusCode::kNotFound);
}

TEST(MetadataStore, ListsDatasetsAfterCursor) {
  test_util::TempDir dir;
  auto store = *MetadataStore::Open(dir.File("k.db"));
  for (const char* n : {"c", "a", "d", "b"}) ASSERT_TRUE(store->InsertDataset(Dataset(n, 1)).ok());
  auto page = store->ListDatasets("b", 2);
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->size(), 2u);
  EXPECT_EQ((*page)[0].dataset.name(), "c");
  EXPECT_EQ((*page)[1].dataset.name(), "d");
}

TEST(MetadataStore, ModelVersionsLatestAndDeletion) {
  test_util::TempDir dir;
  auto store = *MetadataStore::Open(dir.File("k.db"));
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

}  // namespace
}  // namespace kaizen::store
