#include "server/training/tuner.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <optional>
#include <random>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "server/common/status_macros.h"
#include "server/training/batch_sampler.h"
#include "server/training/freezing.h"
#include "server/training/hyperparameters.h"
#include "server/training/image_set.h"
#include "server/training/trainer.h"

namespace kaizen::training {
namespace {

using kaizen::v1::Hyperparameters;
using kaizen::v1::Strategy;
using kaizen::v1::TuningTrial;

constexpr int kDefaultReductionFactor = 3;
constexpr int kDefaultTimeBudgetSeconds = 3600;
constexpr int kMaxTimeBudgetSeconds = 7 * 24 * 3600;
constexpr int kMaxFolds = 3;
constexpr int kMaxImagesForFolds = 10000;
constexpr double kSplitFraction = 0.2;
// Seed streams (DeriveSeed) of the sampling and the folds.
constexpr uint64_t kSampleStream = 0x7475'6e65;  // "tune"
constexpr uint64_t kFoldStream = 0x666f'6c64;    // "fold"

// What a trial sets; zero fields keep the request's value.
struct Config {
  double learning_rate = 0;
  double backbone_lr_multiplier = 0;
  int32_t trainable_blocks = 0;
  bool operator==(const Config& o) const {
    return learning_rate == o.learning_rate && backbone_lr_multiplier == o.backbone_lr_multiplier &&
           trainable_blocks == o.trainable_blocks;
  }
};

// Which settings the search varies.
struct SearchSpace {
  bool learning_rate = false;
  bool backbone_lr_multiplier = false;
  bool trainable_blocks = false;
  bool epochs = false;
  int32_t blocks = 0;  // the base's block count
  std::vector<std::string> Names() const {
    std::vector<std::string> names;
    if (learning_rate) names.push_back("learning_rate");
    if (backbone_lr_multiplier) names.push_back("backbone_lr_multiplier");
    if (trainable_blocks) names.push_back("trainable_blocks");
    if (epochs) names.push_back("epochs");
    return names;
  }
  // Settings besides the epochs: without one, every trial is the same.
  bool VariesSettings() const {
    return learning_rate || backbone_lr_multiplier || trainable_blocks;
  }
};

// One scoring split: train on `train`, score on `val`.
struct Fold {
  const datasets::DecodedDataset* train = nullptr;
  const datasets::DecodedDataset* val = nullptr;
};

struct Scoring {
  std::string description;  // empty when trials cannot be scored
  std::string why_not;      // then: why
  std::vector<Fold> folds;
  std::vector<datasets::DecodedDataset> storage;  // the folds' subsets
};

// The trial's figures once trained on every fold.
struct Score {
  double accuracy = 0;
  double loss = 0;
  int32_t best_epoch = 0;  // 1-based, in the round's epochs
  int32_t epochs = 0;
  std::string failure;  // non-empty: the settings failed
};

absl::Status CheckRange(absl::string_view field, int64_t value, int64_t lo, int64_t hi) {
  if (value >= lo && value <= hi) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrFormat("tuning.%s is %d; it must be in [%d, %d]", field, value, lo, hi));
}

datasets::DecodedDataset SubsetOf(const datasets::DecodedDataset& data,
                                  const std::vector<int64_t>& indices) {
  datasets::DecodedDataset out;
  out.class_names = data.class_names;
  out.records.reserve(indices.size());
  for (int64_t i : indices) {
    datasets::DecodedDataset::Record r = data.records[static_cast<size_t>(i)];
    const int64_t bytes = static_cast<int64_t>(r.height) * r.width * r.channels;
    const auto begin = data.pixels.begin() + r.offset;
    r.offset = static_cast<int64_t>(out.pixels.size());
    out.pixels.insert(out.pixels.end(), begin, begin + bytes);
    out.records.push_back(r);
  }
  return out;
}

// Per class, the indices of its records.
std::vector<std::vector<int64_t>> ByClass(const datasets::DecodedDataset& data) {
  std::vector<std::vector<int64_t>> by_class(data.class_names.size());
  for (size_t i = 0; i < data.records.size(); ++i) {
    const int32_t label = data.records[i].label;
    if (label >= 0 && static_cast<size_t>(label) < by_class.size()) {
      by_class[static_cast<size_t>(label)].push_back(static_cast<int64_t>(i));
    }
  }
  return by_class;
}

absl::StatusOr<Scoring> PlanScoring(const datasets::DecodedDataset& train,
                                    const datasets::DecodedDataset* validation,
                                    const std::string& validation_name, uint64_t seed) {
  Scoring s;
  if (validation != nullptr) {
    if (validation->class_names != train.class_names) {
      return absl::InvalidArgumentError(
          "the validation dataset's class names differ from the training dataset's");
    }
    s.description = absl::StrCat("the validation dataset ", validation_name);
    s.folds.push_back({&train, validation});
    return s;
  }
  const std::vector<std::vector<int64_t>> by_class = ByClass(train);
  size_t smallest = train.records.size();
  size_t smallest_class = 0;
  for (size_t c = 0; c < by_class.size(); ++c) {
    if (by_class[c].size() < smallest) {
      smallest = by_class[c].size();
      smallest_class = c;
    }
  }
  // Large datasets with a rare class split too: k folds would hold k
  // copies of the images.
  if (smallest >= static_cast<size_t>(kMinPerClassForSplit) ||
      train.records.size() > static_cast<size_t>(kMaxImagesForFolds)) {
    std::vector<int32_t> labels;
    labels.reserve(train.records.size());
    for (const auto& r : train.records) labels.push_back(r.label);
    auto [keep, held] = StratifiedSplit(labels, kSplitFraction, DeriveSeed(seed, kFoldStream, 0));
    s.storage.reserve(2);
    s.storage.push_back(SubsetOf(train, keep));
    s.storage.push_back(SubsetOf(train, held));
    s.folds.push_back({&s.storage[0], &s.storage[1]});
    s.description = absl::StrFormat(
        "a stratified %d%% validation split of the training data (%d images scored)",
        static_cast<int>(kSplitFraction * 100), held.size());
    return s;
  }
  if (smallest < 2) {
    s.why_not = absl::StrFormat(
        "class %s has %d training image%s; scoring a trial needs at least 2 per class "
        "(2-fold cross-validation), so the defaults stand",
        by_class.empty() ? "?" : train.class_names[smallest_class], smallest,
        smallest == 1 ? "" : "s");
    return s;
  }
  const int k = static_cast<int>(std::min<size_t>(kMaxFolds, smallest));
  std::vector<std::vector<int64_t>> fold_of(static_cast<size_t>(k));
  std::mt19937_64 rng(DeriveSeed(seed, kFoldStream, 1));
  for (std::vector<int64_t> members : by_class) {
    std::shuffle(members.begin(), members.end(), rng);
    for (size_t i = 0; i < members.size(); ++i) fold_of[i % k].push_back(members[i]);
  }
  s.storage.reserve(2 * static_cast<size_t>(k));
  for (int f = 0; f < k; ++f) {
    std::vector<int64_t> rest;
    for (int g = 0; g < k; ++g) {
      if (g != f) rest.insert(rest.end(), fold_of[g].begin(), fold_of[g].end());
    }
    std::sort(rest.begin(), rest.end());
    std::vector<int64_t> held = fold_of[f];
    std::sort(held.begin(), held.end());
    s.storage.push_back(SubsetOf(train, rest));
    s.storage.push_back(SubsetOf(train, held));
  }
  for (int f = 0; f < k; ++f) s.folds.push_back({&s.storage[2 * f], &s.storage[2 * f + 1]});
  s.description = absl::StrFormat(
      "%d-fold stratified cross-validation (the smallest class has %d images, fewer than the "
      "%d a validation split needs)",
      k, smallest, kMinPerClassForSplit);
  return s;
}

// What the request leaves to the search, before the base's block count is
// known.
SearchSpace RequestedSpace(Strategy st, const Hyperparameters& req) {
  SearchSpace space;
  space.learning_rate = req.learning_rate() == 0;
  space.backbone_lr_multiplier =
      req.backbone_lr_multiplier() == 0 &&
      (st == kaizen::v1::STRATEGY_FINE_TUNE || st == kaizen::v1::STRATEGY_FULL);
  space.trainable_blocks = req.trainable_blocks() == 0 && st == kaizen::v1::STRATEGY_FINE_TUNE;
  space.epochs = req.epochs() == 0;
  return space;
}

SearchSpace SpaceFor(const TunerOptions& o) {
  SearchSpace space = RequestedSpace(o.strategy, o.requested);
  space.blocks =
      static_cast<int32_t>(ListBlocks(o.base, o.base_metadata.head().module_path()).size());
  space.trainable_blocks = space.trainable_blocks && space.blocks > 1;
  return space;
}

// Trial 1 is the defaults; the others are sampled around them.
std::vector<Config> SampleConfigs(const TunerOptions& o, const SearchSpace& space, int n,
                                  uint64_t seed) {
  std::vector<Config> configs;
  configs.push_back({o.resolved.learning_rate(), o.resolved.backbone_lr_multiplier(),
                     o.resolved.trainable_blocks()});
  std::mt19937_64 rng(DeriveSeed(seed, kSampleStream, 0));
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  auto log_uniform = [&](double lo, double hi) {
    return std::exp(std::log(lo) + unit(rng) * (std::log(hi) - std::log(lo)));
  };
  // With only the epochs to search, every trial would be the same.
  if (!space.VariesSettings()) return configs;
  // Draws that repeat a configuration are skipped (a search over the blocks
  // alone has only so many).
  for (int draw = 0; static_cast<int>(configs.size()) < n && draw < 50 * n; ++draw) {
    Config c = configs.front();
    // Every draw is made whether or not it is used, so that the plan for a
    // given seed does not depend on which settings the request fixed.
    const double lr = log_uniform(o.resolved.learning_rate() / 10, o.resolved.learning_rate() * 3);
    const double mult = log_uniform(0.01, 1.0);
    const double u = unit(rng);
    if (space.learning_rate) c.learning_rate = lr;
    if (space.backbone_lr_multiplier) c.backbone_lr_multiplier = mult;
    if (space.trainable_blocks) {
      c.trainable_blocks = 1 + std::min(space.blocks - 1, static_cast<int32_t>(u * space.blocks));
    }
    if (std::find(configs.begin(), configs.end(), c) == configs.end()) configs.push_back(c);
  }
  return configs;
}

// Trials per round: n, then ceil(n / eta) ... until a round starts with at
// most eta trials (the last).
std::vector<int> RoundSizes(int n, int eta) {
  std::vector<int> sizes = {n};
  while (sizes.back() > eta) sizes.push_back((sizes.back() + eta - 1) / eta);
  return sizes;
}

// How long a trial trains: the epochs and batch size of every fold, and the
// share of the full epochs (the last round's) they are.
struct TrialLength {
  int32_t epochs = 0;  // 0: the default for the fold's size
  int32_t batch_size = 0;
  double share = 1;
};

// The request's hyperparameters with `config`, for a training set of `n`
// images scored on a separate set, resolved. A warm-up the request sets
// shrinks with the trial's share of the epochs.
absl::StatusOr<Hyperparameters> TrialHyperparameters(const TunerOptions& o, const Config& config,
                                                     const TrialLength& length, int64_t n) {
  Hyperparameters h = o.requested;
  h.set_learning_rate(config.learning_rate);
  h.set_backbone_lr_multiplier(config.backbone_lr_multiplier);
  h.set_trainable_blocks(config.trainable_blocks);
  if (length.epochs > 0) h.set_epochs(length.epochs);
  if (length.epochs > 0 && length.share < 1) {
    h.set_head_warmup_epochs(
        std::min(length.epochs - 1,
                 static_cast<int32_t>(std::floor(h.head_warmup_epochs() * length.share))));
    h.mutable_schedule()->set_warmup_epochs(
        std::min(0.9 * length.epochs, h.schedule().warmup_epochs() * length.share));
  }
  if (length.batch_size > 0) h.set_batch_size(length.batch_size);
  // Augmentation the request leaves unset is the final run's, not what a
  // fold's smaller size would resolve to (FEATURE_EXTRACTION augments below
  // 50 images): trials score the settings the final run will use.
  if (!h.has_augmentation()) *h.mutable_augmentation() = o.resolved.augmentation();
  h.set_seed(o.resolved.seed());
  // The fold's validation images come as a separate dataset.
  h.mutable_validation()->set_dataset("tuning");
  return ResolveHyperparameters(o.strategy, h, n);
}

std::string Percent(double v) { return absl::StrFormat("%.1f%%", 100 * v); }

class Search {
 public:
  Search(const TunerOptions& o, const TunerCallbacks& cb, Scoring scoring, int64_t full_n)
      : o_(o), cb_(cb), scoring_(std::move(scoring)), full_n_(full_n) {
    now_ = o.now ? o.now : [] { return absl::Now(); };
    start_ = now_();
    const int seconds = o.tuning.time_budget_seconds() > 0 ? o.tuning.time_budget_seconds()
                                                           : kDefaultTimeBudgetSeconds;
    budget_ = absl::Seconds(seconds);
    eta_ = o.tuning.reduction_factor() > 0 ? o.tuning.reduction_factor() : kDefaultReductionFactor;
    seed_ = o.tuning.seed() != 0 ? o.tuning.seed() : o.resolved.seed();
    for (const TuningTrial& t : o.done) done_[{t.trial(), t.round()}] = t;
  }

  absl::StatusOr<TuneOutcome> Run();

 private:
  absl::Duration Elapsed() const { return o_.spent + (now_() - start_); }
  void Message(const std::string& m) {
    if (cb_.on_message) cb_.on_message(m);
  }
  void Report(const TuningTrial& t) {
    if (cb_.on_trial) cb_.on_trial(t, Elapsed());
  }
  // Trains `config` on every fold for `fraction` of the full epochs.
  absl::StatusOr<std::optional<Score>> Evaluate(int number, const Config& config, int round,
                                                int rounds);
  absl::StatusOr<Hyperparameters> Winner(const TuningTrial& best, int rounds);

  const TunerOptions& o_;
  const TunerCallbacks& cb_;
  Scoring scoring_;
  int64_t full_n_ = 0;  // images in the whole training set
  std::function<absl::Time()> now_;
  absl::Time start_;
  absl::Duration budget_;
  int eta_ = kDefaultReductionFactor;
  uint64_t seed_ = 0;
  SearchSpace space_;
  std::map<std::pair<int, int>, TuningTrial> done_;
};

absl::StatusOr<std::optional<Score>> Search::Evaluate(int number, const Config& config, int round,
                                                      int rounds) {
  Score score;
  // One length for every fold: the full epochs and batch size of the
  // largest fold's training set, this round's share of them.
  const Fold* largest = &scoring_.folds.front();
  for (const Fold& f : scoring_.folds) {
    if (f.train->records.size() > largest->train->records.size()) largest = &f;
  }
  ASSIGN_OR_RETURN(const Hyperparameters full,
                   TrialHyperparameters(o_, config, TrialLength{},
                                        static_cast<int64_t>(largest->train->records.size())));
  const double shrink = std::pow(static_cast<double>(eta_), rounds - round);
  TrialLength length;
  length.epochs = std::max(1, static_cast<int32_t>(std::lround(full.epochs() / shrink)));
  length.batch_size = full.batch_size();
  length.share = static_cast<double>(length.epochs) / full.epochs();
  score.epochs = length.epochs;
  std::vector<std::vector<double>> acc;   // per fold, per epoch
  std::vector<std::vector<double>> loss;  // per fold, per epoch
  for (const Fold& fold : scoring_.folds) {
    absl::StatusOr<Hyperparameters> hp =
        TrialHyperparameters(o_, config, length, static_cast<int64_t>(fold.train->records.size()));
    if (!hp.ok()) {
      score.failure = std::string(hp.status().message());
      return score;
    }
    if (o_.adjust_trial) o_.adjust_trial(number, &*hp);
    TrainerOptions opts;
    opts.strategy = o_.strategy;
    opts.hyperparameters = *hp;
    opts.base = o_.base;
    opts.base_metadata = o_.base_metadata;
    opts.device = o_.device;
    opts.distillation = o_.distillation;
    opts.max_prefix_cache_bytes = o_.max_prefix_cache_bytes;
    opts.channels_last = o_.channels_last;
    Callbacks cb;
    cb.should_stop = cb_.should_stop;
    acc.emplace_back();
    loss.emplace_back();
    cb.on_epoch = [&](const kaizen::v1::EpochMetrics& m) {
      acc.back().push_back(m.val_accuracy());
      loss.back().push_back(m.val_loss());
    };
    absl::StatusOr<TrainResult> r = Train(opts, TrainingData{fold.train, fold.val}, cb);
    if (!r.ok()) {
      if (!absl::IsInvalidArgument(r.status())) return r.status();
      score.failure = std::string(r.status().message());
      return score;
    }
    if (r->cancelled) return std::optional<Score>();
  }
  // The mean validation curve over the folds; early stopping may have
  // ended some sooner.
  size_t len = acc.front().size();
  for (const auto& a : acc) len = std::min(len, a.size());
  if (len == 0) {
    score.failure = "no epoch completed";
    return score;
  }
  std::vector<double> mean_acc(len, 0), mean_loss(len, 0);
  for (size_t f = 0; f < acc.size(); ++f) {
    for (size_t e = 0; e < len; ++e) {
      mean_acc[e] += acc[f][e] / static_cast<double>(acc.size());
      mean_loss[e] += loss[f][e] / static_cast<double>(acc.size());
    }
  }
  size_t pick = len - 1;
  if (space_.epochs) {
    const double peak = *std::max_element(mean_acc.begin(), mean_acc.end());
    for (size_t e = 0; e < len; ++e) {
      if (mean_acc[e] >= peak - kEpochTolerance) pick = e;
    }
  }
  if (!std::isfinite(mean_acc[pick]) || !std::isfinite(mean_loss[pick])) {
    score.failure = "the validation loss is not finite";
    return score;
  }
  score.accuracy = mean_acc[pick];
  score.loss = mean_loss[pick];
  score.best_epoch = static_cast<int32_t>(pick + 1);
  return score;
}

absl::StatusOr<Hyperparameters> Search::Winner(const TuningTrial& best, int rounds) {
  Hyperparameters h = o_.requested;
  if (space_.learning_rate) h.set_learning_rate(best.learning_rate());
  if (space_.backbone_lr_multiplier) h.set_backbone_lr_multiplier(best.backbone_lr_multiplier());
  if (space_.trainable_blocks) h.set_trainable_blocks(best.trainable_blocks());
  h.set_seed(o_.resolved.seed());
  if (space_.epochs && best.round() == rounds) {
    // The share of the full epochs at which the winner peaked, on the
    // whole training set's budget. A winner from an earlier round (the time
    // ran out) trained a fraction of them: it keeps the default.
    const double share = static_cast<double>(best.best_epoch()) / best.epochs();
    h.set_epochs(std::max(1, static_cast<int32_t>(std::lround(share * o_.resolved.epochs()))));
  }
  return ResolveHyperparameters(o_.strategy, h, full_n_);
}

absl::StatusOr<TuneOutcome> Search::Run() {
  TuneOutcome out;
  kaizen::v1::TuningResult& result = out.result;
  space_ = SpaceFor(o_);
  for (const std::string& name : space_.Names()) result.add_searched(name);
  auto finish = [&](TuneOutcome* outcome) {
    outcome->result.set_seconds(absl::ToDoubleSeconds(Elapsed()));
  };
  result.set_scoring(scoring_.folds.empty() ? scoring_.why_not : scoring_.description);
  if (cb_.on_plan) cb_.on_plan(result);
  if (scoring_.folds.empty()) {
    result.set_reason(scoring_.why_not);
    result.set_done(true);
    out.winner = o_.resolved;
    Message(absl::StrCat("tuning: ", scoring_.why_not));
    finish(&out);
    return out;
  }
  const std::vector<Config> configs = SampleConfigs(o_, space_, o_.tuning.max_trials(), seed_);
  const int n = static_cast<int>(configs.size());
  const std::vector<int> sizes = RoundSizes(n, eta_);
  const int rounds = static_cast<int>(sizes.size());
  std::string fewer;
  if (n < o_.tuning.max_trials()) {
    fewer = space_.VariesSettings()
                ? absl::StrFormat(" (only %d distinct settings to try)", n)
                : std::string(" (only the epochs are searched: one trial picks them)");
  }
  Message(absl::StrFormat(
      "tuning: %d trial%s%s over %s in %d round%s (each keeps the best 1/%d), scored on %s; "
      "time budget %s",
      n, n == 1 ? "" : "s", fewer, absl::StrJoin(space_.Names(), ", "), rounds,
      rounds == 1 ? "" : "s", eta_, scoring_.description, absl::FormatDuration(budget_)));

  // This round's trials in the order they run: by number in round 1, then
  // best first.
  std::vector<int> alive(static_cast<size_t>(n));
  std::iota(alive.begin(), alive.end(), 1);
  std::vector<TuningTrial> reached;  // the scored trials of the furthest round
  bool out_of_time = false;
  int last_round = 0;
  for (int round = 1; round <= rounds && !out_of_time; ++round) {
    std::vector<TuningTrial> scored;
    for (int number : alive) {
      TuningTrial t;
      if (auto it = done_.find({number, round}); it != done_.end()) {
        t = it->second;
      } else {
        if (Elapsed() >= budget_ && !(round == 1 && number == 1)) {
          out_of_time = true;
          break;
        }
        const Config& c = configs[static_cast<size_t>(number - 1)];
        const absl::Time started = now_();
        ASSIGN_OR_RETURN(std::optional<Score> s, Evaluate(number, c, round, rounds));
        if (!s) {
          out.stopped = true;
          finish(&out);
          return out;
        }
        t.set_trial(number);
        t.set_round(round);
        t.set_learning_rate(c.learning_rate);
        t.set_backbone_lr_multiplier(c.backbone_lr_multiplier);
        t.set_trainable_blocks(c.trainable_blocks);
        t.set_epochs(s->epochs);
        t.set_val_accuracy(s->accuracy);
        t.set_val_loss(s->loss);
        t.set_best_epoch(s->best_epoch);
        t.set_seconds(absl::ToDoubleSeconds(now_() - started));
        if (!s->failure.empty()) t.set_outcome(absl::StrCat("failed: ", s->failure));
        Report(t);
      }
      *result.add_trials() = t;
      if (!absl::StartsWith(t.outcome(), "failed")) scored.push_back(t);
    }
    if (scored.empty()) break;
    last_round = round;
    // Best first: accuracy, then lower loss, then the order they ran in.
    std::stable_sort(scored.begin(), scored.end(), [](const TuningTrial& a, const TuningTrial& b) {
      if (a.val_accuracy() != b.val_accuracy()) return a.val_accuracy() > b.val_accuracy();
      return a.val_loss() < b.val_loss();
    });
    reached = scored;
    if (round == rounds || out_of_time) break;
    const size_t keep = std::min(scored.size(), static_cast<size_t>(sizes[round]));
    alive.clear();
    for (size_t i = 0; i < keep; ++i) alive.push_back(scored[i].trial());
    // The round's outcomes, on the stored trials too.
    std::vector<std::string> promoted;
    for (auto& t : *result.mutable_trials()) {
      if (t.round() != round || absl::StartsWith(t.outcome(), "failed")) continue;
      const bool up = std::find(alive.begin(), alive.end(), t.trial()) != alive.end();
      t.set_outcome(up ? "promoted" : "eliminated");
      Report(t);
    }
    for (int number : alive) {
      for (const TuningTrial& t : scored) {
        if (t.trial() == number) {
          promoted.push_back(absl::StrFormat("%d (%s)", number, Percent(t.val_accuracy())));
        }
      }
    }
    Message(absl::StrFormat(
        "tuning round %d of %d: trials %s go on with %dx the epochs; "
        "best eliminated %s",
        round, rounds, absl::StrJoin(promoted, ", "), eta_,
        scored.size() > keep ? Percent(scored[keep].val_accuracy()) : std::string("none")));
  }
  if (out_of_time && last_round > 1) {
    // Promoted into the round the budget cut short, and never run.
    for (auto& t : *result.mutable_trials()) {
      if (t.round() != last_round - 1 || t.outcome() != "promoted") continue;
      bool ran = false;
      for (const TuningTrial& r : reached) ran = ran || r.trial() == t.trial();
      if (!ran) {
        t.set_outcome("promoted; not run, the time budget ended the search");
        Report(t);
      }
    }
  }
  if (reached.empty()) {
    result.set_reason(
        "no trial could be scored (every one failed); the final run uses the defaults");
    result.set_done(true);
    out.winner = o_.resolved;
    Message(absl::StrCat("tuning: ", result.reason()));
    finish(&out);
    return out;
  }
  const TuningTrial& best = reached.front();
  ASSIGN_OR_RETURN(out.winner, Winner(best, rounds));
  for (auto& t : *result.mutable_trials()) {
    if (t.round() != best.round() || absl::StartsWith(t.outcome(), "failed")) continue;
    t.set_outcome(t.trial() == best.trial() ? "winner" : "finalist");
    Report(t);
  }
  std::string runner_up;
  if (reached.size() > 1) {
    runner_up = absl::StrFormat(", against %s for trial %d, the next best",
                                Percent(reached[1].val_accuracy()), reached[1].trial());
  } else if (out_of_time) {
    runner_up = ", the only trial of that round that ran before the time budget ended";
  } else if (n > 1) {
    runner_up = ", the only trial of that round that did not fail";
  } else {
    runner_up = ", the only trial";
  }
  std::string defaults;
  if (best.trial() != 1) {
    for (const TuningTrial& t : result.trials()) {
      if (t.trial() == 1 && !absl::StartsWith(t.outcome(), "failed")) {
        defaults = absl::StrFormat("; the defaults (trial 1) reached %s in round %d",
                                   Percent(t.val_accuracy()), t.round());
      }
    }
  }
  std::string epochs;
  if (space_.epochs && best.round() == rounds) {
    epochs = absl::StrFormat(
        "; its accuracy peaked at epoch %d of %d, so the final run on all %d images trains %d "
        "epochs",
        best.best_epoch(), best.epochs(), full_n_, out.winner.epochs());
  } else if (space_.epochs) {
    epochs = absl::StrFormat(
        "; it trained %d of the full epochs, so the final run on all %d images trains the "
        "default %d",
        best.epochs(), full_n_, out.winner.epochs());
  }
  result.set_winner(best.trial());
  result.set_reason(absl::StrFormat(
      "trial %d (%s) had the best mean validation accuracy in round %d, %s%s%s%s%s", best.trial(),
      DescribeTrial(best, result), best.round(), Percent(best.val_accuracy()), runner_up, defaults,
      epochs,
      out_of_time ? absl::StrFormat("; the time budget (%s) ended the search in round %d",
                                    absl::FormatDuration(budget_), best.round())
                  : std::string()));
  result.set_done(true);
  Message(absl::StrCat("tuning: ", result.reason()));
  finish(&out);
  return out;
}

}  // namespace

absl::Status ValidateTuningRequest(Strategy strategy, const Hyperparameters& requested,
                                   const kaizen::v1::TuningOptions& tuning) {
  RETURN_IF_ERROR(CheckRange("max_trials", tuning.max_trials(), 0, kMaxTuningTrials));
  RETURN_IF_ERROR(
      CheckRange("time_budget_seconds", tuning.time_budget_seconds(), 0, kMaxTimeBudgetSeconds));
  if (tuning.reduction_factor() != 0) {
    RETURN_IF_ERROR(CheckRange("reduction_factor", tuning.reduction_factor(), 2, 10));
  }
  const SearchSpace space = RequestedSpace(strategy, requested);
  if (tuning.max_trials() > 0 && !space.VariesSettings() && !space.epochs) {
    std::vector<std::string> set = {"learning_rate"};
    if (strategy == kaizen::v1::STRATEGY_FINE_TUNE || strategy == kaizen::v1::STRATEGY_FULL) {
      set.push_back("backbone_lr_multiplier");
    }
    if (strategy == kaizen::v1::STRATEGY_FINE_TUNE) set.push_back("trainable_blocks");
    return absl::InvalidArgumentError(absl::StrFormat(
        "tuning: the request sets %s and epochs, every setting tuning searches for %s; leave "
        "one unset",
        absl::StrJoin(set, ", "), kaizen::v1::Strategy_Name(strategy)));
  }
  return absl::OkStatus();
}

std::string DescribeTrial(const TuningTrial& t, const kaizen::v1::TuningResult& plan) {
  auto searched = [&](absl::string_view name) {
    return std::find(plan.searched().begin(), plan.searched().end(), name) != plan.searched().end();
  };
  std::vector<std::string> parts;
  if (searched("learning_rate")) {
    parts.push_back(absl::StrFormat("learning rate %.3g", t.learning_rate()));
  }
  if (searched("backbone_lr_multiplier")) {
    parts.push_back(absl::StrFormat("backbone x%.3g", t.backbone_lr_multiplier()));
  }
  if (searched("trainable_blocks")) {
    parts.push_back(absl::StrFormat("%d trainable blocks", t.trainable_blocks()));
  }
  parts.push_back(absl::StrFormat("%d epochs", t.epochs()));
  return absl::StrJoin(parts, ", ");
}

absl::StatusOr<TuneOutcome> Tune(const TunerOptions& options, const datasets::DecodedDataset& train,
                                 const datasets::DecodedDataset* validation,
                                 const TunerCallbacks& callbacks) {
  try {
    RETURN_IF_ERROR(ValidateTuningRequest(options.strategy, options.requested, options.tuning));
    if (options.tuning.max_trials() == 0) {
      return absl::InvalidArgumentError("tuning.max_trials is 0: nothing to tune");
    }
    const uint64_t seed =
        options.tuning.seed() != 0 ? options.tuning.seed() : options.resolved.seed();
    ASSIGN_OR_RETURN(Scoring scoring, PlanScoring(train, validation,
                                                  options.requested.validation().dataset(), seed));
    Search search(options, callbacks, std::move(scoring),
                  static_cast<int64_t>(train.records.size()));
    return search.Run();
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("tuning: ", e.what()));
  }
}

}  // namespace kaizen::training
