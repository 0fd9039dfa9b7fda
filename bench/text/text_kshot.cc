// The k-shot table for text (issue 20), in process: does a pretrained
// transformer-small transfer to categories it never saw?
//
// WordNet's glosses (Debian's wordnet-base) labelled by lexicographer file
// are split in two groups of categories. Group A (every category but the
// eight below) pretrains two encoders: one with masked-language modelling
// on its glosses, one supervised on its categories. Group B (noun.animal,
// noun.body, noun.food, noun.location, noun.plant, noun.time, verb.motion,
// verb.communication) is the new task: k labelled glosses per class
// (k = 5, 20, 100), each pretrained encoder with FEATURE_EXTRACTION,
// FINE_TUNE and FULL against SCRATCH (a fresh transformer-small of the same shape),
// each over 3 seeds (a seed draws the k-shot set and seeds the training),
// scored on 100 other glosses per class that no run trains on. The
// tokenizer (SentencePiece, unigram) is trained on group A's glosses only.
//
//   build/bench/kaizen_text_kshot > table.md
//
// Environment: KAIZEN_TEXT_SHOTS ("5,20,100"), KAIZEN_TEXT_SEEDS (3),
// KAIZEN_TEXT_MLM_EPOCHS (8), KAIZEN_TEXT_PRETRAIN_EPOCHS (2: the supervised
// pretraining), KAIZEN_TEXT_PRETRAIN_PER_CLASS (1500:
// group A glosses per category, for both pretrainings), KAIZEN_TEXT_TEST_PER_CLASS
// (100), KAIZEN_TEXT_HIDDEN (128), KAIZEN_TEXT_LAYERS (2), KAIZEN_TEXT_VOCAB
// (4000), KAIZEN_TEXT_STEPS (200: few-shot optimiser steps, as epochs
// rounded up, 5 to 100 epochs), KAIZEN_TEXT_TSV (a file for one row per run),
// KAIZEN_TEXT_THREADS (2).
//
// The few-shot hyperparameters are DefaultTextHyperparameters'; nothing here
// is chosen on the test glosses, which only report.
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "bench/experiment_env.h"
#include "server/models/text_encoder.h"
#include "server/training/masked_lm.h"
#include "server/training/text_trainer.h"
#include "tests/test_util/gloss_text.h"
#include "tests/test_util/temp_dir.h"
#include "tests/test_util/wordnet.h"

namespace kaizen::training {
namespace {

const std::vector<std::string> kNewCategories = {"noun.animal",   "noun.body",         "noun.food",
                                                 "noun.location", "noun.plant",        "noun.time",
                                                 "verb.motion",   "verb.communication"};
constexpr int32_t kMaxLength = 64;
constexpr int kMinPretrainGlosses = 400;  // smaller group-A categories are left out

using bench::EnvInt;
using bench::EnvStr;

void Require(bool ok, const std::string& what) { bench::Require(ok, "text_kshot", what); }

template <typename T>
T Must(absl::StatusOr<T> value, const std::string& what) {
  Require(value.ok(), absl::StrCat(what, ": ", value.status().ToString()));
  return std::move(*value);
}

struct Labelled {
  std::vector<std::string> texts;
  std::vector<int64_t> labels;
};

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

kaizen::v1::Model EncoderMetadata() {
  kaizen::v1::Model m;
  m.set_architecture(std::string(models::kTransformerSmall));
  m.mutable_head()->set_module_path("fc");
  return m;
}

struct Stats {
  double mean = 0, sd = 0;
};

Stats Summarize(const std::vector<double>& v) {
  Stats s;
  for (double x : v) s.mean += x;
  s.mean /= static_cast<double>(v.size());
  for (double x : v) s.sd += (x - s.mean) * (x - s.mean);
  s.sd = v.size() > 1 ? std::sqrt(s.sd / static_cast<double>(v.size() - 1)) : 0.0;
  return s;
}

int Main() {
  const std::vector<std::string> shot_list =
      absl::StrSplit(EnvStr("KAIZEN_TEXT_SHOTS", "5,20,100"), ',', absl::SkipEmpty());
  std::vector<int> shots;
  for (const std::string& s : shot_list) shots.push_back(std::atoi(s.c_str()));
  const int seeds = EnvInt("KAIZEN_TEXT_SEEDS", 3);
  const int pretrain_epochs = EnvInt("KAIZEN_TEXT_PRETRAIN_EPOCHS", 2);
  const int mlm_epochs = EnvInt("KAIZEN_TEXT_MLM_EPOCHS", 8);
  const int pretrain_per_class = EnvInt("KAIZEN_TEXT_PRETRAIN_PER_CLASS", 1500);
  const int test_per_class = EnvInt("KAIZEN_TEXT_TEST_PER_CLASS", 100);
  const int steps = EnvInt("KAIZEN_TEXT_STEPS", 200);
  torch::set_num_threads(EnvInt("KAIZEN_TEXT_THREADS", 2));
  Require(!shots.empty() && *std::min_element(shots.begin(), shots.end()) >= 1,
          "KAIZEN_TEXT_SHOTS must list counts of at least 1");
  Require(seeds >= 1, "KAIZEN_TEXT_SEEDS must be at least 1");
  const int max_shot = *std::max_element(shots.begin(), shots.end());

  // Glosses by category, in file order.
  std::map<std::string, std::vector<std::string>> by_category;
  for (const test_util::WordNetGloss& g : test_util::WordNetGlosses()) {
    by_category[g.category].push_back(g.gloss);
  }
  Require(!by_category.empty(), "wordnet-base is not installed");

  // Group A: the pretraining categories and glosses.
  Labelled pretrain;
  std::vector<std::string> pretrain_classes;
  for (const auto& [category, glosses] : by_category) {
    if (std::count(kNewCategories.begin(), kNewCategories.end(), category) ||
        static_cast<int>(glosses.size()) < kMinPretrainGlosses) {
      continue;
    }
    const int64_t label = static_cast<int64_t>(pretrain_classes.size());
    pretrain_classes.push_back(category);
    // Spread over the file (glosses of one category come in related runs).
    const size_t take = std::min<size_t>(glosses.size(), pretrain_per_class);
    for (size_t i = 0; i < take; ++i) {
      pretrain.texts.push_back(glosses[i * glosses.size() / take]);
      pretrain.labels.push_back(label);
    }
  }
  // Group B: per class, a shuffled pool; the last test_per_class are the
  // test glosses, the k-shot sets are drawn from the rest.
  std::vector<std::vector<std::string>> pools;
  Labelled test;
  std::mt19937_64 pool_rng(20261203);
  for (size_t c = 0; c < kNewCategories.size(); ++c) {
    std::vector<std::string> pool = by_category[kNewCategories[c]];
    Require(static_cast<int>(pool.size()) >= max_shot + test_per_class,
            absl::StrCat(kNewCategories[c], " has too few glosses"));
    std::shuffle(pool.begin(), pool.end(), pool_rng);
    for (int i = 0; i < test_per_class; ++i) {
      test.texts.push_back(pool.back());
      test.labels.push_back(static_cast<int64_t>(c));
      pool.pop_back();
    }
    pools.push_back(std::move(pool));
  }
  std::cerr << absl::StrFormat(
      "group A: %d categories, %d glosses; group B: %d categories, %d test glosses\n",
      pretrain_classes.size(), pretrain.texts.size(), kNewCategories.size(), test.texts.size());

  test_util::TempDir dir;
  auto tokenizer =
      Must(test_util::GlossSentencePiece(dir, pretrain.texts, EnvInt("KAIZEN_TEXT_VOCAB", 4000)),
           "training the tokenizer");
  const auto pretrain_seqs =
      Must(test_util::FrameTexts(*tokenizer, pretrain.texts, kMaxLength), "tokenizing group A");
  const auto test_seqs =
      Must(test_util::FrameTexts(*tokenizer, test.texts, kMaxLength), "tokenizing the test set");

  models::TextEncoderOptions shape;
  shape.vocab_size = tokenizer->vocab_size();
  shape.max_length = kMaxLength;
  shape.hidden_size = EnvInt("KAIZEN_TEXT_HIDDEN", 128);
  shape.num_layers = EnvInt("KAIZEN_TEXT_LAYERS", 2);
  shape.num_heads = 4;
  shape.intermediate_size = 4 * shape.hidden_size;
  shape.pooling = models::TextPooling::kMaskedMean;
  shape.num_classes = 2;
  shape.seed = 7;

  // Masked-language-model pretraining on group A's glosses.
  auto started = std::chrono::steady_clock::now();
  torch::manual_seed(1);
  torch::jit::Module mlm_encoder = Must(models::CreateTextEncoder(shape), "building the encoder");
  {
    torch::jit::Module mlm = Must(models::CreateMaskedLanguageModel(mlm_encoder, 8), "MLM head");
    PretrainOptions o;
    o.epochs = mlm_epochs;
    o.masking.mask_id = test_util::kGlossMask;
    o.masking.vocab_size = shape.vocab_size;
    o.masking.never_mask = {test_util::kGlossBos, test_util::kGlossEos};
    o.pad_id = test_util::kGlossPad;
    o.seed = 9;
    o.on_epoch = [](const PretrainEpoch& e) {
      std::cerr << absl::StrFormat("  MLM epoch %d: loss %.3f\n", e.metrics.epoch(),
                                   e.metrics.train_loss());
      return absl::OkStatus();
    };
    Must(PretrainMaskedLanguageModel(mlm, pretrain_seqs, o), "MLM pretraining");
  }
  const double mlm_seconds = Seconds(started);

  // Supervised pretraining on group A's categories (SCRATCH).
  started = std::chrono::steady_clock::now();
  torch::jit::Module supervised_encoder;
  double supervised_train_accuracy = 0;
  {
    TextTrainerOptions o;
    o.strategy = kaizen::v1::STRATEGY_SCRATCH;
    o.hyperparameters = DefaultTextHyperparameters(o.strategy, pretrain_epochs, 32);
    o.hyperparameters.set_seed(11);
    o.base = Must(models::CreateTextEncoder(shape), "building the encoder");
    o.base_metadata = EncoderMetadata();
    o.num_classes = static_cast<int64_t>(pretrain_classes.size());
    o.pad_id = test_util::kGlossPad;
    o.on_epoch = [](const kaizen::v1::EpochMetrics& m) {
      std::cerr << absl::StrFormat("  supervised epoch %d: loss %.3f, accuracy %.3f\n", m.epoch(),
                                   m.train_loss(), m.train_accuracy());
    };
    TextTrainResult r = Must(TrainTextClassifier(o, TextExamples{pretrain_seqs, pretrain.labels}),
                             "supervised pretraining");
    supervised_encoder = r.classifier;
    supervised_train_accuracy = r.epochs.back().train_accuracy();
  }
  const double supervised_seconds = Seconds(started);

  struct Arm {
    std::string name;
    kaizen::v1::Strategy strategy;
    const torch::jit::Module* base;
  };
  torch::jit::Module fresh = Must(models::CreateTextEncoder(shape), "building the encoder");
  const std::vector<Arm> arms = {
      {"SCRATCH", kaizen::v1::STRATEGY_SCRATCH, &fresh},
      {"FE (MLM)", kaizen::v1::STRATEGY_FEATURE_EXTRACTION, &mlm_encoder},
      {"FT (MLM)", kaizen::v1::STRATEGY_FINE_TUNE, &mlm_encoder},
      {"FULL (MLM)", kaizen::v1::STRATEGY_FULL, &mlm_encoder},
      {"FE (supervised)", kaizen::v1::STRATEGY_FEATURE_EXTRACTION, &supervised_encoder},
      {"FT (supervised)", kaizen::v1::STRATEGY_FINE_TUNE, &supervised_encoder},
      {"FULL (supervised)", kaizen::v1::STRATEGY_FULL, &supervised_encoder},
  };
  std::ofstream tsv;
  if (const std::string path = EnvStr("KAIZEN_TEXT_TSV", ""); !path.empty()) {
    tsv.open(path);
    tsv << "shots\tarm\tseed\ttest_accuracy\tseconds\n";
  }
  std::map<std::pair<int, std::string>, std::vector<double>> accuracy;
  for (int k : shots) {
    for (int seed = 1; seed <= seeds; ++seed) {
      // The k-shot set of this seed: k glosses per class from the pool.
      Labelled few;
      std::mt19937_64 rng(static_cast<uint64_t>(seed) * 1000003u);
      for (size_t c = 0; c < pools.size(); ++c) {
        std::vector<std::string> pool = pools[c];
        std::shuffle(pool.begin(), pool.end(), rng);
        for (int i = 0; i < k; ++i) {
          few.texts.push_back(pool[i]);
          few.labels.push_back(static_cast<int64_t>(c));
        }
      }
      const auto few_seqs =
          Must(test_util::FrameTexts(*tokenizer, few.texts, kMaxLength), "tokenizing");
      const int32_t batch = 16;
      const int64_t per_epoch = (static_cast<int64_t>(few.texts.size()) + batch - 1) / batch;
      const int32_t epochs =
          static_cast<int32_t>(std::clamp<int64_t>((steps + per_epoch - 1) / per_epoch, 5, 100));
      for (const Arm& arm : arms) {
        const auto arm_started = std::chrono::steady_clock::now();
        TextTrainerOptions o;
        o.strategy = arm.strategy;
        o.hyperparameters = DefaultTextHyperparameters(arm.strategy, epochs, batch);
        o.hyperparameters.set_seed(static_cast<uint64_t>(seed));
        o.base = *arm.base;
        o.base_metadata = EncoderMetadata();
        o.num_classes = static_cast<int64_t>(kNewCategories.size());
        o.pad_id = test_util::kGlossPad;
        torch::manual_seed(static_cast<uint64_t>(seed));
        TextTrainResult r =
            Must(TrainTextClassifier(o, TextExamples{few_seqs, few.labels}), arm.name);
        TextPredictions p =
            Must(PredictText(r.classifier, test_seqs, test_util::kGlossPad), "predicting");
        int64_t correct = 0;
        for (size_t i = 0; i < p.classes.size(); ++i) correct += p.classes[i] == test.labels[i];
        const double acc = static_cast<double>(correct) / static_cast<double>(test.labels.size());
        accuracy[{k, arm.name}].push_back(acc);
        const double secs = Seconds(arm_started);
        std::cerr << absl::StrFormat("k=%d seed %d %-16s %d epochs: test accuracy %.3f (%.1f s)\n",
                                     k, seed, arm.name, epochs, acc, secs);
        if (tsv.is_open()) {
          tsv << k << "\t" << arm.name << "\t" << seed << "\t" << acc << "\t" << secs << "\n";
        }
      }
    }
  }

  // The table and its verdict, from the numbers above.
  std::cout << absl::StrFormat(
      "Test accuracy on %d glosses of %d new categories (chance %.3f), mean ± sd over %d seeds; "
      "transformer-small (hidden %d, %d layers), pretrained on %d glosses of %d other categories "
      "(MLM %d epochs in %.0f s; supervised %d epochs in %.0f s, final training accuracy "
      "%.3f).\n\n",
      test.texts.size(), kNewCategories.size(), 1.0 / static_cast<double>(kNewCategories.size()),
      seeds, shape.hidden_size, shape.num_layers, pretrain.texts.size(), pretrain_classes.size(),
      mlm_epochs, mlm_seconds, pretrain_epochs, supervised_seconds, supervised_train_accuracy);
  std::cout << "| labelled per class |";
  for (const Arm& arm : arms) std::cout << " " << arm.name << " |";
  std::cout << "\n|---|";
  for (size_t i = 0; i < arms.size(); ++i) std::cout << "---|";
  std::cout << "\n";
  for (int k : shots) {
    std::cout << "| " << k << " |";
    for (const Arm& arm : arms) {
      const Stats s = Summarize(accuracy[{k, arm.name}]);
      std::cout << absl::StrFormat(" %.3f ± %.3f |", s.mean, s.sd);
    }
    std::cout << "\n";
  }
  std::cout << "\n";
  for (int k : shots) {
    const double scratch = Summarize(accuracy[{k, "SCRATCH"}]).mean;
    std::string best;
    double best_mean = -1;
    for (const Arm& arm : arms) {
      if (arm.name == "SCRATCH") continue;
      const double m = Summarize(accuracy[{k, arm.name}]).mean;
      if (m > best_mean) best_mean = m, best = arm.name;
    }
    // A gap within the seeds' spread is no verdict either way.
    const double gain = 100.0 * (best_mean - scratch);
    const double spread =
        100.0 * std::max(Summarize(accuracy[{k, best}]).sd, Summarize(accuracy[{k, "SCRATCH"}]).sd);
    const char* verdict = std::fabs(gain) <= spread ? "is within the seeds' spread of"
                          : gain > 0                ? "beats"
                                                    : "trails";
    std::cout << absl::StrFormat(
        "- %d per class: the best pretrained arm, %s, %s SCRATCH: %+.1f points (%.3f vs %.3f, "
        "larger sd %.1f points).\n",
        k, best, verdict, gain, best_mean, scratch, spread);
  }
  return 0;
}

}  // namespace
}  // namespace kaizen::training

int main() { return kaizen::training::Main(); }
