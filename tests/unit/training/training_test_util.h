// Small datasets, models and settings shared by the training tests.
#pragma once

#include <torch/script.h>

#include <cstdint>
#include <random>
#include <string>
#include <utility>

#include "gtest/gtest.h"
#include "kaizen/v1/finetune_service.pb.h"
#include "server/datasets/dataset_file.h"
#include "server/models/builtin_models.h"

namespace kaizen::training::fixtures {

// `classes` classes of `per_class` images each: a bright square whose
// position depends on the class, on noise. Easy to separate.
inline datasets::DecodedDataset SyntheticDataset(int classes, int per_class, int size = 28,
                                                 int channels = 1, uint64_t seed = 1) {
  datasets::DecodedDataset d;
  std::mt19937_64 rng(seed);
  for (int c = 0; c < classes; ++c) d.class_names.push_back("class" + std::to_string(c));
  const int square = size / 3;
  for (int i = 0; i < per_class; ++i) {
    for (int c = 0; c < classes; ++c) {
      datasets::DecodedDataset::Record r;
      r.label = c;
      r.height = size;
      r.width = size;
      r.channels = channels;
      r.offset = static_cast<int64_t>(d.pixels.size());
      const int top = (c % 2) * (size - square - 2) + 1 + static_cast<int>(rng() % 2);
      const int left = ((c / 2) % 2) * (size - square - 2) + 1 + static_cast<int>(rng() % 2);
      for (int y = 0; y < size; ++y) {
        for (int x = 0; x < size; ++x) {
          const bool in = y >= top && y < top + square && x >= left && x < left + square;
          const int v = (in ? 200 : 30) + static_cast<int>(rng() % 40);
          for (int ch = 0; ch < channels; ++ch) d.pixels.push_back(static_cast<uint8_t>(v));
        }
      }
      d.records.push_back(r);
    }
  }
  return d;
}

struct BaseModel {
  torch::jit::Module module;
  kaizen::v1::Model metadata;
};

inline BaseModel Builtin(const std::string& name, int64_t classes = 10, int64_t size = 28,
                         int64_t channels = 1, uint64_t seed = 3) {
  models::BuiltinOptions o;
  o.in_channels = channels;
  o.input_size = size;
  o.num_classes = classes;
  o.seed = seed;
  auto module = models::CreateBuiltinModel(name, o);
  auto meta = models::DescribeBuiltinModel(name, o);
  EXPECT_TRUE(module.ok() && meta.ok());
  return {*module, *meta};
}

// Fully specified settings for fast, deterministic runs.
inline kaizen::v1::Hyperparameters FastHyperparameters(int epochs = 2, int batch = 16) {
  kaizen::v1::Hyperparameters hp;
  hp.set_epochs(epochs);
  hp.set_batch_size(batch);
  hp.set_learning_rate(1e-3);
  hp.set_backbone_lr_multiplier(1.0);
  hp.set_trainable_blocks(1);
  hp.mutable_optimizer()->set_kind(kaizen::v1::OPTIMIZER_ADAM);
  hp.mutable_schedule()->set_kind(kaizen::v1::SCHEDULE_CONSTANT);
  hp.set_seed(7);
  hp.mutable_validation()->set_split(0);
  hp.mutable_head()->set_kind(kaizen::v1::HEAD_KIND_LINEAR);
  hp.set_drop_last_fraction(0.5);
  return hp;
}

// Copies of every named parameter and buffer of `m`, by name.
inline std::vector<std::pair<std::string, torch::Tensor>> Snapshot(const torch::jit::Module& m) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& p : m.named_parameters(true)) out.emplace_back(p.name, p.value.detach().clone());
  for (const auto& b : m.named_buffers(true)) out.emplace_back(b.name, b.value.detach().clone());
  return out;
}

}  // namespace kaizen::training::fixtures
