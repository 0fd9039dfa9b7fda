// What one stored record can do to everyone's Get and List: nothing.
#include <gtest/gtest.h>

#include "server/common/text_limits.h"
#include "server/store/dataset_store.h"
#include "server/store/metadata_store.h"
#include "tests/test_util/postgres.h"
#include "tests/test_util/temp_dir.h"

namespace kaizen::store {
namespace {

// The same limits on both engines.
class CatalogueLimits : public ::testing::TestWithParam<test_util::Engine> {
 protected:
  std::unique_ptr<MetadataStore> Open() {
    absl::StatusOr<std::string> target = test_util::CatalogueFor(GetParam(), dir.File("k.db"));
    EXPECT_TRUE(target.ok()) << target.status();
    auto store = MetadataStore::Open(target.ok() ? *target : "");
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? *std::move(store) : nullptr;
  }
  test_util::TempDir dir;
};

TEST_P(CatalogueLimits, RowThatIsNotUtf8IsRefusedSoListKeepsWorking) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  // E.g. class names from a model file's own metadata.
  ModelRow bad;
  bad.file = "models/m/v1.pt";
  bad.model.set_name("m");
  bad.model.set_version(1);
  bad.model.add_class_names("caf\xE9");
  absl::Status st = store->InsertModel(bad);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_NE(st.message().find("class_names[0]"), absl::string_view::npos) << st;
  auto list = store->ListModels("", 0, 10, false, "");
  ASSERT_TRUE(list.ok()) << list.status();
  EXPECT_TRUE(list->empty());
}

TEST_P(CatalogueLimits, DatasetPagesEndAtTheByteBudget) {
  auto metadata = Open();
  ASSERT_NE(metadata, nullptr);
  // Ten records of ~700 KB each (the most classes, the longest names): a
  // page of all of them would be ~7 MB.
  constexpr int kRows = 10;
  for (int r = 0; r < kRows; ++r) {
    DatasetRow row;
    row.file = "datasets/d.kds";
    row.dataset.set_name("d" + std::to_string(r));
    for (int c = 0; c < common::kMaxClasses; ++c) {
      std::string name = std::to_string(c);
      name.resize(common::kMaxClassNameBytes, 'x');
      row.dataset.add_classes()->set_class_name(name);
    }
    ASSERT_TRUE(metadata->InsertDataset(row).ok());
  }
  DatasetStore::Options o;
  o.data_dir = dir.path();
  DatasetStore datasets(o, metadata.get());
  std::string token;
  int seen = 0, pages = 0;
  do {
    auto page = datasets.List(1000, token);
    ASSERT_TRUE(page.ok()) << page.status();
    EXPECT_LE(page->ByteSizeLong(), common::kMaxPageBytes + common::kMaxRecordBytes);
    seen += page->datasets_size();
    token = page->next_page_token();
    ++pages;
  } while (!token.empty() && pages < 100);
  EXPECT_EQ(seen, kRows);
  EXPECT_GT(pages, 1);
}

INSTANTIATE_TEST_SUITE_P(Engines, CatalogueLimits,
                         ::testing::Values(test_util::Engine::kSqlite,
                                           test_util::Engine::kPostgres),
                         [](const auto& info) { return test_util::EngineName(info.param); });

}  // namespace
}  // namespace kaizen::store
