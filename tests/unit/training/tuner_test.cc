#include "server/training/tuner.h"

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/training/hyperparameters.h"
#include "tests/unit/training/training_test_util.h"

namespace kaizen::training {
namespace {

using kaizen::v1::TuningTrial;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

struct TuneRun {
  absl::StatusOr<TuneOutcome> outcome;
  std::vector<TuningTrial> reported;
  std::vector<std::string> messages;
  std::vector<absl::Duration> elapsed;
  // Trials reported as soon as they were trained (no outcome yet).
  int trained() const {
    return static_cast<int>(
        std::count_if(reported.begin(), reported.end(),
                      [](const TuningTrial& t) { return t.outcome().empty(); }));
  }
};

// SCRATCH on cnn-small with 4 epochs and batch 8: the search varies the
// learning rate only, and quickly.
TunerOptions Options(const kaizen::v1::Hyperparameters& requested, int64_t examples, int max_trials,
                     int reduction_factor, int image_size = 28) {
  TunerOptions o;
  o.strategy = kaizen::v1::STRATEGY_SCRATCH;
  o.requested = requested;
  absl::StatusOr<kaizen::v1::Hyperparameters> resolved =
      ResolveHyperparameters(o.strategy, requested, examples);
  EXPECT_TRUE(resolved.ok()) << resolved.status();
  o.resolved = *resolved;
  o.tuning.set_max_trials(max_trials);
  o.tuning.set_reduction_factor(reduction_factor);
  fixtures::BaseModel base = fixtures::Builtin("cnn-small", 2, image_size);
  o.base = base.module;
  o.base_metadata = base.metadata;
  return o;
}

kaizen::v1::Hyperparameters FixedEpochs() {
  kaizen::v1::Hyperparameters h;
  h.set_epochs(4);
  h.set_batch_size(8);
  h.set_seed(11);
  h.mutable_augmentation()->set_horizontal_flip(false);
  return h;
}

// A 1-second budget on a clock that leaps 1000 s at every reading: the
// first trial (the defaults, which always runs) is the last.
void RunOutOfTimeAfterTheFirstTrial(TunerOptions* o) {
  o->tuning.set_time_budget_seconds(1);
  auto t = std::make_shared<absl::Time>(absl::UnixEpoch());
  o->now = [t] { return *t += absl::Seconds(1000); };
}

// Settings that leave the epochs to the 300-step budget, on 12x12 images
// (quick).
kaizen::v1::Hyperparameters DefaultEpochs() {
  kaizen::v1::Hyperparameters h;
  h.set_batch_size(8);
  h.set_seed(5);
  h.mutable_augmentation()->set_enabled(false);
  return h;
}

TuneRun TuneWith(const TunerOptions& o, const datasets::DecodedDataset& train,
                 const datasets::DecodedDataset* validation = nullptr,
                 std::function<bool(const TuneRun&)> stop = nullptr) {
  TuneRun run;
  TunerCallbacks cb;
  cb.on_trial = [&](const TuningTrial& t, absl::Duration elapsed) {
    run.reported.push_back(t);
    run.elapsed.push_back(elapsed);
  };
  cb.on_message = [&](const std::string& m) { run.messages.push_back(m); };
  if (stop) cb.should_stop = [&] { return stop(run); };
  run.outcome = Tune(o, train, validation, cb);
  return run;
}

std::vector<std::string> Outcomes(const kaizen::v1::TuningResult& r, int round) {
  std::vector<std::string> out;
  for (const TuningTrial& t : r.trials()) {
    if (t.round() == round) out.push_back(t.outcome());
  }
  std::sort(out.begin(), out.end());
  return out;
}

TEST(TunerTest, HalvesTheTrialsAndTheWinnerIsTheBestFinalist) {
  // 6 images per class: too few for a validation split, so 3-fold.
  const datasets::DecodedDataset train = fixtures::SyntheticDataset(2, 6);
  const TunerOptions o = Options(FixedEpochs(), 12, /*max_trials=*/4, /*reduction_factor=*/2);
  const TuneRun run = TuneWith(o, train);
  ASSERT_TRUE(run.outcome.ok()) << run.outcome.status();
  const kaizen::v1::TuningResult& r = run.outcome->result;
  EXPECT_FALSE(run.outcome->stopped);
  EXPECT_TRUE(r.done());
  EXPECT_THAT(r.scoring(), HasSubstr("3-fold stratified cross-validation"));
  EXPECT_THAT(r.searched(), ElementsAre("learning_rate"));
  // 4 trials at half the epochs, then the best 2 at the full 4.
  ASSERT_EQ(r.trials_size(), 6);
  for (const TuningTrial& t : r.trials()) EXPECT_EQ(t.epochs(), t.round() == 1 ? 2 : 4);
  EXPECT_EQ(r.trials(0).trial(), 1);
  EXPECT_DOUBLE_EQ(r.trials(0).learning_rate(), o.resolved.learning_rate()) << "trial 1 = defaults";
  for (int i = 1; i < 4; ++i) {
    EXPECT_GE(r.trials(i).learning_rate(), o.resolved.learning_rate() / 10);
    EXPECT_LE(r.trials(i).learning_rate(), o.resolved.learning_rate() * 3);
  }
  EXPECT_THAT(Outcomes(r, 1), ElementsAre("eliminated", "eliminated", "promoted", "promoted"));
  EXPECT_THAT(Outcomes(r, 2), ElementsAre("finalist", "winner"));
  // The promoted are the round's best two; the winner the last round's best.
  std::vector<TuningTrial> round1(r.trials().begin(), r.trials().begin() + 4);
  for (const TuningTrial& up : round1) {
    if (up.outcome() != "promoted") continue;
    for (const TuningTrial& out : round1) {
      if (out.outcome() == "eliminated") EXPECT_GE(up.val_accuracy(), out.val_accuracy());
    }
  }
  const TuningTrial& a = r.trials(4);
  const TuningTrial& b = r.trials(5);
  const TuningTrial& winner = a.outcome() == "winner" ? a : b;
  const TuningTrial& finalist = a.outcome() == "winner" ? b : a;
  EXPECT_GE(winner.val_accuracy(), finalist.val_accuracy());
  EXPECT_EQ(r.winner(), winner.trial());
  EXPECT_THAT(r.reason(), HasSubstr(absl::StrCat("trial ", winner.trial())));
  // The final run: the winner's learning rate, the request's epochs, on all
  // 12 images.
  EXPECT_DOUBLE_EQ(run.outcome->winner.learning_rate(), winner.learning_rate());
  EXPECT_EQ(run.outcome->winner.epochs(), 4);
  EXPECT_EQ(run.outcome->winner.seed(), 11u);
  EXPECT_EQ(run.trained(), 6);
  EXPECT_THAT(run.messages.front(), HasSubstr("4 trials over learning_rate in 2 rounds"));
  EXPECT_GT(r.seconds(), 0);
}

TEST(TunerTest, ASearchResumedWithItsFinishedTrialsTrainsOnlyTheRest) {
  const datasets::DecodedDataset train = fixtures::SyntheticDataset(2, 6);
  TunerOptions o = Options(FixedEpochs(), 12, 4, 2);
  const TuneRun first = TuneWith(o, train);
  ASSERT_TRUE(first.outcome.ok()) << first.outcome.status();
  // Stopped after its third trial: those three are kept.
  for (const TuningTrial& t : first.reported) {
    if (t.outcome().empty() && o.done.size() < 3) o.done.push_back(t);
  }
  const TuneRun second = TuneWith(o, train);
  ASSERT_TRUE(second.outcome.ok()) << second.outcome.status();
  EXPECT_EQ(second.trained(), 3);
  // Deterministic on the CPU: the same search, the same result.
  EXPECT_EQ(second.outcome->result.winner(), first.outcome->result.winner());
  ASSERT_EQ(second.outcome->result.trials_size(), first.outcome->result.trials_size());
  for (int i = 0; i < first.outcome->result.trials_size(); ++i) {
    const TuningTrial& x = first.outcome->result.trials(i);
    const TuningTrial& y = second.outcome->result.trials(i);
    EXPECT_EQ(x.trial(), y.trial());
    EXPECT_DOUBLE_EQ(x.learning_rate(), y.learning_rate());
    EXPECT_DOUBLE_EQ(x.val_accuracy(), y.val_accuracy());
    EXPECT_DOUBLE_EQ(x.val_loss(), y.val_loss());
    EXPECT_EQ(x.outcome(), y.outcome());
  }
}

TEST(TunerTest, StopsWhenAskedAndKeepsTheFinishedTrials) {
  const datasets::DecodedDataset train = fixtures::SyntheticDataset(2, 6);
  const TuneRun run = TuneWith(Options(FixedEpochs(), 12, 4, 2), train, nullptr,
                               [](const TuneRun& r) { return r.trained() >= 2; });
  ASSERT_TRUE(run.outcome.ok()) << run.outcome.status();
  EXPECT_TRUE(run.outcome->stopped);
  EXPECT_FALSE(run.outcome->result.done());
  EXPECT_EQ(run.outcome->result.trials_size(), 2);
  EXPECT_EQ(run.outcome->result.winner(), 0);
}

TEST(TunerTest, NoTrialStartsAfterTheTimeBudget) {
  const datasets::DecodedDataset train = fixtures::SyntheticDataset(2, 6);
  TunerOptions o = Options(FixedEpochs(), 12, 4, 2);
  RunOutOfTimeAfterTheFirstTrial(&o);
  const TuneRun run = TuneWith(o, train);
  ASSERT_TRUE(run.outcome.ok()) << run.outcome.status();
  const kaizen::v1::TuningResult& r = run.outcome->result;
  // The defaults always run; nothing after them.
  ASSERT_EQ(r.trials_size(), 1);
  EXPECT_EQ(r.winner(), 1);
  EXPECT_TRUE(r.done());
  EXPECT_THAT(r.reason(), HasSubstr("the time budget (1s) ended the search in round 1"));
  EXPECT_DOUBLE_EQ(run.outcome->winner.learning_rate(), o.resolved.learning_rate());
}

TEST(TunerTest, AClassOfOneImageCannotBeScoredAndTheDefaultsStand) {
  datasets::DecodedDataset train = fixtures::SyntheticDataset(2, 4);
  // Keep one image of class1.
  datasets::DecodedDataset one = train;
  one.records.clear();
  bool kept = false;
  for (const auto& rec : train.records) {
    if (rec.label == 1 && kept) continue;
    kept = kept || rec.label == 1;
    one.records.push_back(rec);
  }
  const TunerOptions o = Options(FixedEpochs(), 5, 4, 2);
  const TuneRun run = TuneWith(o, one);
  ASSERT_TRUE(run.outcome.ok()) << run.outcome.status();
  const kaizen::v1::TuningResult& r = run.outcome->result;
  EXPECT_TRUE(r.done());
  EXPECT_EQ(r.trials_size(), 0);
  EXPECT_EQ(r.winner(), 0);
  EXPECT_THAT(r.scoring(), HasSubstr("class class1 has 1 training image; scoring a trial needs "
                                     "at least 2 per class"));
  EXPECT_DOUBLE_EQ(run.outcome->winner.learning_rate(), o.resolved.learning_rate());
  EXPECT_EQ(run.outcome->winner.epochs(), o.resolved.epochs());
}

TEST(TunerTest, SettingsThatFailAreRecordedAndTheSearchGoesOn) {
  const datasets::DecodedDataset train = fixtures::SyntheticDataset(2, 6);
  TunerOptions o = Options(FixedEpochs(), 12, 3, 2);
  // Trial 2 diverges.
  auto diverge = [](kaizen::v1::Hyperparameters* h) {
    h->set_learning_rate(1e12);
    h->mutable_optimizer()->set_kind(kaizen::v1::OPTIMIZER_SGD);
    h->mutable_schedule()->set_kind(kaizen::v1::SCHEDULE_CONSTANT);
  };
  o.adjust_trial = [&](int trial, kaizen::v1::Hyperparameters* h) {
    if (trial == 2) diverge(h);
  };
  TuneRun run = TuneWith(o, train);
  ASSERT_TRUE(run.outcome.ok()) << run.outcome.status();
  const kaizen::v1::TuningResult& r = run.outcome->result;
  // 3 trials at 2 epochs, the 2 that did not fail at 4.
  ASSERT_EQ(r.trials_size(), 5);
  EXPECT_THAT(r.trials(1).outcome(),
              ::testing::MatchesRegex("failed: (loss became|the validation loss is not finite).*"));
  EXPECT_EQ(r.trials(1).epochs(), 2);
  EXPECT_NE(r.winner(), 2);
  EXPECT_NE(r.winner(), 0);

  // Every trial fails: the defaults stand.
  o.adjust_trial = [&](int, kaizen::v1::Hyperparameters* h) { diverge(h); };
  run = TuneWith(o, train);
  ASSERT_TRUE(run.outcome.ok()) << run.outcome.status();
  ASSERT_EQ(run.outcome->result.trials_size(), 3);
  EXPECT_EQ(run.outcome->result.winner(), 0);
  EXPECT_THAT(run.outcome->result.reason(), HasSubstr("no trial could be scored"));
  EXPECT_DOUBLE_EQ(run.outcome->winner.learning_rate(), o.resolved.learning_rate());
}

TEST(TunerTest, ARequestedWarmUpShrinksWithTheRoundsEpochs) {
  const datasets::DecodedDataset train = fixtures::SyntheticDataset(2, 6);
  kaizen::v1::Hyperparameters h = FixedEpochs();
  // Fine for the final 4 epochs; a first round of 2 gets 1.
  h.set_head_warmup_epochs(3);
  const TuneRun run = TuneWith(Options(h, 12, 3, 2), train);
  ASSERT_TRUE(run.outcome.ok()) << run.outcome.status();
  ASSERT_EQ(run.outcome->result.trials_size(), 5);
  for (const TuningTrial& t : run.outcome->result.trials()) {
    EXPECT_THAT(t.outcome(), ::testing::Not(::testing::StartsWith("failed")));
  }
  EXPECT_EQ(run.outcome->winner.head_warmup_epochs(), 3);
}

TEST(TunerTest, EnoughImagesUseASplitAndTheEpochsFollowTheWinnersPeak) {
  // 10 per class: a 20% split (2 per class scored).
  const datasets::DecodedDataset train = fixtures::SyntheticDataset(2, 10, 12);
  const TunerOptions o = Options(DefaultEpochs(), 20, 2, 2, /*image_size=*/12);
  const TuneRun run = TuneWith(o, train);
  ASSERT_TRUE(run.outcome.ok()) << run.outcome.status();
  const kaizen::v1::TuningResult& r = run.outcome->result;
  EXPECT_THAT(r.scoring(), HasSubstr("stratified 20% validation split of the training data (4 "
                                     "images scored)"));
  EXPECT_THAT(r.searched(), ElementsAre("learning_rate", "epochs"));
  ASSERT_EQ(r.trials_size(), 2);
  const TuningTrial& w = r.trials(r.trials(0).outcome() == "winner" ? 0 : 1);
  ASSERT_EQ(w.outcome(), "winner");
  ASSERT_GE(w.best_epoch(), 1);
  ASSERT_LE(w.best_epoch(), w.epochs());
  const int expected =
      std::max(1, static_cast<int>(std::lround(static_cast<double>(w.best_epoch()) / w.epochs() *
                                               o.resolved.epochs())));
  EXPECT_EQ(run.outcome->winner.epochs(), expected);
  EXPECT_THAT(r.reason(),
              HasSubstr(absl::StrFormat("peaked at epoch %d of %d", w.best_epoch(), w.epochs())));
}

TEST(TunerTest, AValidationDatasetScoresEveryTrial) {
  const datasets::DecodedDataset train = fixtures::SyntheticDataset(2, 4);
  const datasets::DecodedDataset val = fixtures::SyntheticDataset(2, 3, 28, 1, 9);
  kaizen::v1::Hyperparameters h = FixedEpochs();
  h.mutable_validation()->set_dataset("held-out");
  const TuneRun run = TuneWith(Options(h, 8, 2, 2), train, &val);
  ASSERT_TRUE(run.outcome.ok()) << run.outcome.status();
  EXPECT_EQ(run.outcome->result.scoring(), "the validation dataset held-out");
  EXPECT_EQ(run.outcome->result.trials_size(), 2);

  datasets::DecodedDataset other = val;
  other.class_names = {"cat", "dog"};
  const TuneRun bad = TuneWith(Options(h, 8, 2, 2), train, &other);
  EXPECT_EQ(bad.outcome.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.outcome.status().message(), HasSubstr("class names differ"));
}

TEST(TunerTest, BadRequestsAreRefusedWithTheField) {
  const auto scratch = kaizen::v1::STRATEGY_SCRATCH;
  const kaizen::v1::Hyperparameters open;
  kaizen::v1::TuningOptions t;
  t.set_max_trials(65);
  EXPECT_EQ(ValidateTuningRequest(scratch, open, t).message(),
            "tuning.max_trials is 65; it must be in [0, 64]");
  t.set_max_trials(4);
  t.set_reduction_factor(1);
  EXPECT_EQ(ValidateTuningRequest(scratch, open, t).message(),
            "tuning.reduction_factor is 1; it must be in [2, 10]");
  t.set_reduction_factor(0);
  t.set_time_budget_seconds(-5);
  EXPECT_THAT(ValidateTuningRequest(scratch, open, t).message(),
              HasSubstr("tuning.time_budget_seconds is -5"));
  t.set_time_budget_seconds(0);
  EXPECT_TRUE(ValidateTuningRequest(scratch, open, t).ok());
  // Nothing left to search.
  kaizen::v1::Hyperparameters fixed;
  fixed.set_learning_rate(0.01);
  fixed.set_epochs(5);
  EXPECT_EQ(ValidateTuningRequest(scratch, fixed, t).message(),
            "tuning: the request sets learning_rate and epochs, every setting tuning searches for "
            "STRATEGY_SCRATCH; leave one unset");
  // FINE_TUNE still has its multiplier and blocks to search.
  EXPECT_TRUE(ValidateTuningRequest(kaizen::v1::STRATEGY_FINE_TUNE, fixed, t).ok());
  // Without trials nothing is checked.
  EXPECT_TRUE(ValidateTuningRequest(scratch, fixed, kaizen::v1::TuningOptions()).ok());
}

TEST(TunerTest, AWinnerFromARoundTheBudgetCutShortKeepsTheDefaultEpochs) {
  const datasets::DecodedDataset train = fixtures::SyntheticDataset(2, 10, 12);
  TunerOptions o =
      Options(DefaultEpochs(), 20, /*max_trials=*/3, /*reduction_factor=*/2, /*image_size=*/12);
  RunOutOfTimeAfterTheFirstTrial(&o);
  const TuneRun run = TuneWith(o, train);
  ASSERT_TRUE(run.outcome.ok()) << run.outcome.status();
  const kaizen::v1::TuningResult& r = run.outcome->result;
  ASSERT_EQ(r.trials_size(), 1);
  EXPECT_EQ(r.trials(0).round(), 1);
  EXPECT_LT(r.trials(0).epochs(), o.resolved.epochs()) << "round 1 of 2 runs half the epochs";
  EXPECT_EQ(run.outcome->winner.epochs(), o.resolved.epochs());
  EXPECT_THAT(r.reason(), HasSubstr("so the final run on all 20 images trains the default"));
  EXPECT_THAT(r.reason(),
              HasSubstr("the only trial of that round that ran before the time budget"));
  // The time so far comes with each trial, so a crash cannot reset it.
  ASSERT_FALSE(run.elapsed.empty());
  EXPECT_GE(run.elapsed.front(), absl::Seconds(1000));
}

TEST(TunerTest, OnlyTheEpochsToSearchRunsOneTrial) {
  const datasets::DecodedDataset train = fixtures::SyntheticDataset(2, 10, 12);
  kaizen::v1::Hyperparameters h = DefaultEpochs();
  h.set_learning_rate(3e-3);
  const TuneRun run = TuneWith(Options(h, 20, 9, 3, /*image_size=*/12), train);
  ASSERT_TRUE(run.outcome.ok()) << run.outcome.status();
  EXPECT_THAT(run.outcome->result.searched(), ElementsAre("epochs"));
  ASSERT_EQ(run.outcome->result.trials_size(), 1);
  EXPECT_EQ(run.outcome->result.trials(0).outcome(), "winner");
  EXPECT_THAT(run.messages.front(),
              HasSubstr("1 trial (only the epochs are searched: one trial picks them)"));
}

}  // namespace
}  // namespace kaizen::training
