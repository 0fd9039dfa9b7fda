// Automatic tuning for a fine-tuning job (StartFineTuneRequest.tuning): a
// seeded successive-halving search over the learning rate, the backbone's
// learning-rate multiplier, the trainable blocks and the epochs, each trial
// scored on held-out training data, never on a test set. A pure library like
// the trainer: the caller (JobManager) stores the trials, publishes them as
// events and runs the final training with the winner.
//
// Scoring. A validation dataset named by the request scores every trial,
// which then trains on all the training data. Otherwise, when every class has
// at least kMinPerClassForSplit images (or the set holds over 10,000), a
// stratified 20% split; with 2 to kMinPerClassForSplit - 1 images in the
// smallest class, stratified k-fold cross-validation (k = min(3, smallest
// class)); with a class of one image,
// nothing can be scored and the defaults stand (said in
// TuningResult.scoring).
//
// The search. Trial 1 is the defaults, so the defaults always compete;
// trials 2..max_trials are sampled (seeded, no two alike) around them: the
// learning rate log-uniformly in [default / 10, default * 3], the backbone
// multiplier (FINE_TUNE, FULL) log-uniformly in [0.01, 1], the trainable
// blocks (FINE_TUNE) uniformly from 1 to the base's block count. Only what
// the request leaves unset is searched; when that is the epochs alone, one
// trial runs. Every fold of a trial trains the same epochs and batch size
// (those of the largest fold), and a warm-up the request sets shrinks with
// the round's epochs. Each round keeps the best 1/reduction_factor of its
// trials (by mean validation accuracy; lower validation loss breaks ties)
// and runs them, best first, with reduction_factor times the epochs; the
// round that starts with at most reduction_factor trials is the last and
// runs the full epochs, and its best trial wins. When the time budget ends a
// round early, its best trial so far wins (the previous round's best ran
// first). When the epochs are searched and the winner ran the full epochs,
// its epochs are the share of them at which its mean validation accuracy
// peaked (the latest epoch within kEpochTolerance of the peak), applied to
// the budget of the final run on all the data; a winner that ran fewer
// epochs keeps the default epochs.
#pragma once

#include <torch/script.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "kaizen/v1/finetune_service.pb.h"
#include "kaizen/v1/model_service.pb.h"
#include "server/datasets/dataset_file.h"
#include "server/training/trainer.h"

namespace kaizen::training {

// The smallest class needs this many images for a 20% split that leaves it
// 8 to train on; below it, k-fold.
inline constexpr int kMinPerClassForSplit = 10;
// Accuracy within this of the peak counts as the peak when choosing epochs.
inline constexpr double kEpochTolerance = 0.005;
inline constexpr int kMaxTuningTrials = 64;

struct TunerOptions {
  kaizen::v1::Strategy strategy = kaizen::v1::STRATEGY_UNSPECIFIED;
  // As the caller asked (unset fields are searched) and as resolved for the
  // whole training set (ResolveHyperparameters; the seed is the job's).
  kaizen::v1::Hyperparameters requested;
  kaizen::v1::Hyperparameters resolved;
  kaizen::v1::TuningOptions tuning;
  // The base the trials start from (never modified) and its metadata.
  torch::jit::Module base;
  kaizen::v1::Model base_metadata;
  torch::Device device = torch::kCPU;
  // STRATEGY_DISTILL: the teacher every trial distils from.
  std::optional<TrainerOptions::Distillation> distillation;
  // As TrainerOptions::max_prefix_cache_bytes, for every trial.
  int64_t max_prefix_cache_bytes = TrainerOptions{}.max_prefix_cache_bytes;
  bool channels_last = TrainerOptions{}.channels_last;
  // Trials of an earlier run of the same search that stopped (pause,
  // shutdown): a planned trial with the same number and round is taken from
  // here instead of trained again. The search is deterministic, so the plan
  // is the same.
  std::vector<kaizen::v1::TuningTrial> done;
  // Time already spent by that earlier run; counts against the budget.
  absl::Duration spent = absl::ZeroDuration();
  // Tests: the tuning clock.
  std::function<absl::Time()> now;
  // Tests: changes the resolved settings of trial `trial` before it trains
  // (e.g. to make it diverge).
  std::function<void(int trial, kaizen::v1::Hyperparameters*)> adjust_trial;
};

struct TunerCallbacks {
  // Checked before every training step of every trial: true stops tuning.
  std::function<bool()> should_stop;
  // Once the plan is made: TuningResult with `scoring` and `searched` set.
  std::function<void(const kaizen::v1::TuningResult&)> on_plan;
  // Each trial once its score is known (and again with its outcome once its
  // round ends), with the tuning time so far (TunerOptions::spent included).
  std::function<void(const kaizen::v1::TuningTrial&, absl::Duration elapsed)> on_trial;
  // Decisions in words: the scoring, each round's promotions, the winner.
  std::function<void(const std::string&)> on_message;
};

struct TuneOutcome {
  kaizen::v1::TuningResult result;
  // Stopped by should_stop before the search ended: `result` holds the trials
  // finished so far, done is false.
  bool stopped = false;
  // When result.done: the hyperparameters of the final run, resolved for the
  // whole training set (the defaults when no trial could be scored).
  kaizen::v1::Hyperparameters winner;
};

// Never throws. InvalidArgument for a bad request (ValidateTuningRequest)
// or a validation dataset whose classes differ;
// a trial whose settings fail (a loss that became NaN) is recorded as
// "failed: ..." and the search goes on; other training errors (out of memory)
// end the search with that status.
absl::StatusOr<TuneOutcome> Tune(const TunerOptions& options, const datasets::DecodedDataset& train,
                                 const datasets::DecodedDataset* validation,
                                 const TunerCallbacks& callbacks);

// The checks Tune makes, for StartFineTune to refuse a bad request before it
// is queued: the ranges of `tuning` ("tuning.max_trials is 100; it must be in
// [0, 64]"), and, when it asks for trials, at least one setting left for the
// search ("tuning: the request sets learning_rate and epochs, every setting
// tuning searches for STRATEGY_SCRATCH; leave one unset").
// A trial's settings in words, those `plan.searched` names and the epochs:
// "learning rate 0.0012, 4 trainable blocks, 50 epochs".
std::string DescribeTrial(const kaizen::v1::TuningTrial& trial,
                          const kaizen::v1::TuningResult& plan);

absl::Status ValidateTuningRequest(kaizen::v1::Strategy strategy,
                                   const kaizen::v1::Hyperparameters& requested,
                                   const kaizen::v1::TuningOptions& tuning);

}  // namespace kaizen::training
