// The tiny model the serving tests serve: a 3-class "classifier" on [1, 2, 2]
// inputs whose logits are the first three pixels times `scale`.
#pragma once

#include <gtest/gtest.h>
#include <torch/script.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kaizen/v1/model_service.pb.h"
#include "server/models/model_file.h"
#include "server/serving/loaded_model.h"
#include "tests/test_util/temp_dir.h"

namespace kaizen::serving::fixtures {

inline torch::jit::Module TinyModule(double scale = 1.0) {
  torch::jit::Module m("Tiny");
  m.define(scale == 1.0 ? std::string("def forward(self, x):\n  return x.flatten(1)[:, :3]\n")
                        : absl::StrCat("def forward(self, x):\n  return x.flatten(1)[:, :3] * ",
                                       scale, "\n"));
  return m;
}

inline kaizen::v1::Model TinyMetadata() {
  kaizen::v1::Model meta;
  for (int64_t d : {1, 2, 2}) meta.add_input_shape(d);
  for (const char* c : {"a", "b", "c"}) meta.add_class_names(c);
  return meta;
}

// Version `version` of "tiny", saved with Kaizen's metadata under `dir` and
// loaded for serving (warmed up at `warmup_batch_sizes`).
inline std::shared_ptr<const LoadedModel> TinyModel(const kaizen::test_util::TempDir& dir,
                                                    int64_t version = 1, double scale = 1.0,
                                                    std::vector<int64_t> warmup_batch_sizes = {1}) {
  kaizen::v1::Model meta = TinyMetadata();
  meta.set_name("tiny");
  meta.set_version(version);
  const std::string path = dir.File(absl::StrCat("tiny-", version, ".pt"));
  EXPECT_TRUE(models::SaveModelFile(TinyModule(scale), meta, path).ok());
  auto loaded = LoadedModel::Load(path, meta, torch::kCPU, warmup_batch_sizes);
  EXPECT_TRUE(loaded.ok()) << loaded.status();
  return *loaded;
}

}  // namespace kaizen::serving::fixtures
