#include "server/store/model_store.h"

#include <torch/script.h>

#include <set>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "server/common/text_limits.h"
#include "server/store/data_dir.h"
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

}  // namespace
}  // namespace kaizen::store
