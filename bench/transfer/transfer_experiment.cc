// The transfer experiment behind the default hyperparameters, in-process
// (bench/transfer/transfer_table.sh runs the same comparison through the
// service API):
//   build/bench/kaizen_transfer_experiment few_shot
//   build/bench/kaizen_transfer_experiment feature_cache
// Pretrains resnet-small with SCRATCH on Fashion-MNIST classes 0-4 (30,000
// images), then trains on 20 images per class of classes 5-9 with each
// strategy and Kaizen's defaults, and reports accuracy on the 5,000 test
// images of classes 5-9 (mean and spread over seeds) and the time taken.
// Environment: KAIZEN_EXP_PRETRAIN_EPOCHS (2), KAIZEN_EXP_SEEDS (3),
// KAIZEN_EXP_PER_CLASS (20 training images per class),
// KAIZEN_EXP_EPOCHS (0: the defaults choose, as for a job that leaves epochs
// unset), KAIZEN_EXP_STRATEGIES ("FE,FT,FULL,SCRATCH"),
// KAIZEN_EXP_THREADS (2), KAIZEN_EXP_HP (text-format Hyperparameters merged
// into the few-shot requests), KAIZEN_EXP_TEST_LIMIT (0 = all 5,000 test
// images), KAIZEN_EXP_SCORE_ON ("test"; "validation" scores on training
// images of classes 5-9 that the few-shot set does not hold, up to
// KAIZEN_EXP_TEST_LIMIT or 5,000: the set to choose defaults on, so that the
// test set only ever reports), KAIZEN_EXP_DIR (/tmp/kaizen-transfer: caches the
// pretrained model).
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "bench/experiment_env.h"
#include "google/protobuf/text_format.h"
#include "server/datasets/idx_ingestor.h"
#include "server/imaging/normalizer.h"
#include "server/models/builtin_models.h"
#include "server/models/model_file.h"
#include "server/models/model_metadata.h"
#include "server/training/hyperparameters.h"
#include "server/training/image_set.h"
#include "server/training/trainer.h"

namespace kaizen::training {
namespace {

constexpr char kFashion[] = "/usr/share/datasets/fashion-mnist/";

using bench::EnvInt;
using bench::EnvStr;

// Ends the experiment with `what` when `ok` is false.
void Require(bool ok, const std::string& what) { bench::Require(ok, "transfer experiment", what); }

template <typename T>
void Require(const absl::StatusOr<T>& v, const std::string& what) {
  Require(v.ok(), what + ": " + v.status().ToString());
}

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Records of `data` with labels in [lo, hi], relabelled from 0; at most
// `per_class` of each (the first ones in file order, after the first `skip`
// of each) when > 0.
datasets::DecodedDataset Classes(const datasets::DecodedDataset& data, int lo, int hi,
                                 int per_class, int skip = 0) {
  datasets::DecodedDataset out;
  for (int c = lo; c <= hi; ++c) out.class_names.push_back(data.class_names[c]);
  std::map<int, int> taken;
  std::map<int, int> skipped;
  for (const auto& r : data.records) {
    if (r.label < lo || r.label > hi) continue;
    if (skipped[r.label] < skip) {
      ++skipped[r.label];
      continue;
    }
    if (per_class > 0 && taken[r.label] >= per_class) continue;
    ++taken[r.label];
    datasets::DecodedDataset::Record copy = r;
    copy.label = r.label - lo;
    copy.offset = static_cast<int64_t>(out.pixels.size());
    const int64_t bytes = int64_t{r.height} * r.width * r.channels;
    out.pixels.insert(out.pixels.end(), data.pixels.begin() + r.offset,
                      data.pixels.begin() + r.offset + bytes);
    out.records.push_back(copy);
  }
  return out;
}

double TestAccuracy(torch::jit::Module module, const kaizen::v1::Model& meta,
                    const datasets::DecodedDataset& test) {
  auto set = ConvertDataset(test, {meta.input_shape().begin(), meta.input_shape().end()});
  Require(set, "converting the test set");
  imaging::Normalizer normalizer(meta.normalization(), meta.input_shape(0), torch::kCPU);
  module.eval();
  torch::NoGradGuard no_grad;
  int64_t correct = 0;
  for (int64_t begin = 0; begin < set->size(); begin += 500) {
    const int64_t n = std::min<int64_t>(500, set->size() - begin);
    const torch::Tensor x =
        normalizer.Normalize(imaging::Normalizer::ToUnit(set->images.narrow(0, begin, n)));
    const torch::Tensor pred = module.forward({x}).toTensor().argmax(1);
    correct += pred.eq(set->labels.narrow(0, begin, n)).sum().item<int64_t>();
  }
  return static_cast<double>(correct) / static_cast<double>(set->size());
}

struct Trained {
  torch::jit::Module module;
  kaizen::v1::Model metadata;
  double seconds = 0;
  double first_epoch_seconds = 0;
  double later_epoch_seconds = 0;  // median of epochs 2+
  kaizen::v1::Hyperparameters resolved;
  int64_t total_steps = 0;
};

Trained RunJob(kaizen::v1::Strategy strategy, kaizen::v1::Hyperparameters requested,
               const torch::jit::Module& base, const kaizen::v1::Model& base_meta,
               const datasets::DecodedDataset& train) {
  auto hp = ResolveHyperparameters(strategy, requested, static_cast<int64_t>(train.records.size()));
  Require(hp, "resolving hyperparameters");
  TrainerOptions options;
  options.strategy = strategy;
  options.hyperparameters = *hp;
  options.base = base;
  options.base_metadata = base_meta;
  Trained out;
  out.resolved = *hp;
  std::vector<double> epoch_seconds;
  Callbacks callbacks;
  callbacks.on_step = [&](const kaizen::v1::StepProgress& p) { out.total_steps = p.total_steps(); };
  callbacks.on_epoch = [&](const kaizen::v1::EpochMetrics& m) {
    epoch_seconds.push_back(m.seconds());
    if (train.records.size() > 10000) {
      std::printf("  pretrain epoch %d: loss %.4f acc %.4f val_acc %.4f (%.0f s)\n", m.epoch(),
                  m.train_loss(), m.train_accuracy(), m.val_accuracy(), m.seconds());
      std::fflush(stdout);
    }
  };
  callbacks.on_checkpoint = [&](const Checkpoint& cp) {
    out.module = cp.module;
    out.metadata = cp.metadata;
    return absl::OkStatus();
  };
  const double start = Now();
  auto result = Train(options, {&train, nullptr}, callbacks);
  Require(result.ok(), "training: " + result.status().ToString());
  out.seconds = Now() - start;
  if (!epoch_seconds.empty()) out.first_epoch_seconds = epoch_seconds[0];
  if (epoch_seconds.size() > 1) {
    std::vector<double> later(epoch_seconds.begin() + 1, epoch_seconds.end());
    std::sort(later.begin(), later.end());
    out.later_epoch_seconds = later[later.size() / 2];
  }
  return out;
}

void FewShotTransfer() {
  at::set_num_threads(EnvInt("KAIZEN_EXP_THREADS", 2));
  const std::string dir = EnvStr("KAIZEN_EXP_DIR", "/tmp/kaizen-transfer");
  ::mkdir(dir.c_str(), 0755);
  const std::vector<std::string> names = {"T-shirt/top", "Trouser",   "Pullover", "Dress",
                                          "Coat",        "Sandal",    "Shirt",    "Sneaker",
                                          "Bag",         "Ankle boot"};
  auto train_all = datasets::IngestIdx(std::string(kFashion) + "train-images-idx3-ubyte.gz",
                                       std::string(kFashion) + "train-labels-idx1-ubyte.gz", names,
                                       "train-images", "train-labels", {});
  auto test_all = datasets::IngestIdx(std::string(kFashion) + "t10k-images-idx3-ubyte.gz",
                                      std::string(kFashion) + "t10k-labels-idx1-ubyte.gz", names,
                                      "t10k-images", "t10k-labels", {});
  Require(train_all, "reading the Fashion-MNIST training set");
  Require(test_all, "reading the Fashion-MNIST test set");
  const datasets::DecodedDataset pretrain = Classes(train_all->data, 0, 4, 0);
  const int per_class = EnvInt("KAIZEN_EXP_PER_CLASS", 20);
  Require(per_class >= 1, "KAIZEN_EXP_PER_CLASS must be >= 1");
  const datasets::DecodedDataset few = Classes(train_all->data, 5, 9, per_class);
  const std::string score_on = EnvStr("KAIZEN_EXP_SCORE_ON", "test");
  Require(score_on == "test" || score_on == "validation",
          "KAIZEN_EXP_SCORE_ON must be \"test\" or \"validation\"");
  const int score_per_class = EnvInt("KAIZEN_EXP_TEST_LIMIT", 0) / 5;
  const datasets::DecodedDataset test =
      score_on == "test"
          ? Classes(test_all->data, 5, 9, score_per_class)
          : Classes(train_all->data, 5, 9, score_per_class > 0 ? score_per_class : 1000,
                    /*skip=*/per_class);
  std::printf("pretrain %zu images, few-shot %zu, scored on %zu %s images\n",
              pretrain.records.size(), few.records.size(), test.records.size(), score_on.c_str());

  // Pretraining (cached on disk between runs).
  const int pretrain_epochs = EnvInt("KAIZEN_EXP_PRETRAIN_EPOCHS", 2);
  const std::string pretrained_path =
      dir + "/pretrained-e" + std::to_string(pretrain_epochs) + ".pt";
  torch::jit::Module pretrained;
  kaizen::v1::Model pretrained_meta;
  struct stat st;
  if (::stat(pretrained_path.c_str(), &st) != 0) {
    models::BuiltinOptions o;
    o.num_classes = 5;
    o.seed = 1;
    auto base = models::CreateBuiltinModel("resnet-small", o);
    auto meta = models::DescribeBuiltinModel("resnet-small", o);
    Require(base, "building resnet-small");
    Require(meta, "describing resnet-small");
    kaizen::v1::Hyperparameters hp;
    hp.set_epochs(pretrain_epochs);
    hp.set_seed(1);
    hp.mutable_validation()->set_split(0.05);
    Trained t = RunJob(kaizen::v1::STRATEGY_SCRATCH, hp, *base, *meta, pretrain);
    std::printf("pretrained %d epochs in %.0f s\n", pretrain_epochs, t.seconds);
    Require(models::SaveModelFile(t.module, t.metadata, pretrained_path).ok(),
            "saving " + pretrained_path);
  }
  pretrained = torch::jit::load(pretrained_path);
  auto meta = models::ReadModelMetadata(pretrained_path);
  Require(meta, "reading " + pretrained_path);
  pretrained_meta = *meta;

  const int seeds = EnvInt("KAIZEN_EXP_SEEDS", 3);
  const int epochs = EnvInt("KAIZEN_EXP_EPOCHS", 0);
  const std::map<std::string, kaizen::v1::Strategy> by_name = {
      {"FE", kaizen::v1::STRATEGY_FEATURE_EXTRACTION},
      {"FT", kaizen::v1::STRATEGY_FINE_TUNE},
      {"FULL", kaizen::v1::STRATEGY_FULL},
      {"SCRATCH", kaizen::v1::STRATEGY_SCRATCH}};
  std::printf("\n%-20s %-28s %s\n", "strategy", "accuracy (mean, spread)", "seconds/run");
  for (absl::string_view name :
       absl::StrSplit(EnvStr("KAIZEN_EXP_STRATEGIES", "FE,FT,FULL,SCRATCH"), ',')) {
    const kaizen::v1::Strategy strategy = by_name.at(std::string(name));
    std::vector<double> accuracies;
    double seconds = 0, first = 0, later = 0;
    for (int s = 1; s <= seeds; ++s) {
      kaizen::v1::Hyperparameters hp;
      // Overrides for tuning, e.g. KAIZEN_EXP_HP='batch_size: 8 learning_rate: 0.03'.
      Require(google::protobuf::TextFormat::ParseFromString(EnvStr("KAIZEN_EXP_HP", ""), &hp),
              "KAIZEN_EXP_HP is not a text-format Hyperparameters");
      if (epochs > 0) hp.set_epochs(epochs);
      hp.set_seed(static_cast<uint64_t>(s));
      Trained t = RunJob(strategy, hp, pretrained, pretrained_meta, few);
      accuracies.push_back(TestAccuracy(t.module, t.metadata, test));
      seconds += t.seconds;
      first += t.first_epoch_seconds;
      later += t.later_epoch_seconds;
      std::printf("  %s seed %d: %.2f%% (%.1f s; %d epochs, batch %d, %lld steps)\n",
                  std::string(name).c_str(), s, 100 * accuracies.back(), t.seconds,
                  t.resolved.epochs(), t.resolved.batch_size(),
                  static_cast<long long>(t.total_steps));
      std::fflush(stdout);
    }
    double mean = 0;
    for (double a : accuracies) mean += a / accuracies.size();
    const auto [lo, hi] = std::minmax_element(accuracies.begin(), accuracies.end());
    std::printf("%-20s %6.2f%% (spread %.2f)            %.1f  [epoch 1 %.2f s, later %.3f s]\n",
                kaizen::v1::Strategy_Name(strategy).c_str(), 100 * mean, 100 * (*hi - *lo),
                seconds / seeds, first / seeds, later / seeds);
    std::fflush(stdout);
  }
}

// Epoch 1 (backbone + feature caching) against later epochs (head only) for
// FEATURE_EXTRACTION on a few thousand images.
// Exits 1 when the cache speeds later epochs up less than 10x.
void FeatureCacheSpeedup() {
  at::set_num_threads(EnvInt("KAIZEN_EXP_THREADS", 2));
  auto train_all = datasets::IngestIdx(std::string(kFashion) + "t10k-images-idx3-ubyte.gz",
                                       std::string(kFashion) + "t10k-labels-idx1-ubyte.gz", {},
                                       "t10k-images", "t10k-labels", {});
  Require(train_all, "reading the Fashion-MNIST test set");
  const datasets::DecodedDataset data = Classes(train_all->data, 0, 9, 300);  // 3,000 images
  models::BuiltinOptions o;
  auto base = models::CreateBuiltinModel("resnet-small", o);
  auto meta = models::DescribeBuiltinModel("resnet-small", o);
  Require(base, "building resnet-small");
  Require(meta, "describing resnet-small");
  kaizen::v1::Hyperparameters hp;
  hp.set_epochs(4);
  hp.set_seed(1);
  Trained t = RunJob(kaizen::v1::STRATEGY_FEATURE_EXTRACTION, hp, *base, *meta, data);
  std::printf("feature cache: epoch 1 %.3f s, later epochs (median) %.4f s, ratio %.0fx\n",
              t.first_epoch_seconds, t.later_epoch_seconds,
              t.first_epoch_seconds / std::max(1e-9, t.later_epoch_seconds));
  Require(t.first_epoch_seconds >= 10 * t.later_epoch_seconds,
          "the feature cache speeds later epochs up less than 10x");
}

}  // namespace
}  // namespace kaizen::training

int main(int argc, char** argv) {
  const std::string which = argc > 1 ? argv[1] : "";
  if (which == "few_shot") {
    kaizen::training::FewShotTransfer();
  } else if (which == "feature_cache") {
    kaizen::training::FeatureCacheSpeedup();
  } else {
    std::cerr << "usage: " << argv[0]
              << " few_shot|feature_cache (settings: see the source's header)\n";
    return 2;
  }
  return 0;
}
