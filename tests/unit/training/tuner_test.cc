#include "server/training/tuner.h"

#include <algorithm>
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

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using kaizen::v1::TuningTrial;

struct TuneRun {
  absl::StatusOr<TuneOutcome> outcome;
  std::vector<TuningTrial> reported;
  std::vector<std::string> messages;
  // Trials reported as soon as they were trained (no outcome yet).
  int trained() const {
    return static_cast<int>(std::count_if(reported.begin(), reported.end(),
                                          [](const TuningTrial& t) { return t.outcome().empty(); }));
  }
};

// SCRATCH on cnn-small with 4 epochs and batch 8: the search varies the
// learning rate only, and quickly.
TunerOptions Options(const kaizen::v1::Hyperparameters& requested, int64_t examples,
                     int max_trials, int reduction_factor, int image_size = 28) {
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

TuneRun TuneWith(const TunerOptions& o, const datasets::DecodedDataset& train,
             const datasets::DecodedDataset* validation = nullptr,
             std::function<bool(const TuneRun&)> stop = nullptr) {
  TuneRun run;
  TunerCallbacks cb;
  cb.on_trial = [&](const TuningTrial& t) { run.reported.push_back(t); };
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
  o.tuning.set_time_budget_seconds(1);
  absl::Time t = absl::UnixEpoch();
  o.now = [&t] { return t += absl::Seconds(1000); };
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

TEST(TunerTest, SettingsThatFailAreRecordedAndTheDefaultsStandWhenAllFail) {
  const datasets::DecodedDataset train = fixtures::SyntheticDataset(2, 6);
  kaizen::v1::Hyperparameters h = FixedEpochs();
  // Fine for the final 4 epochs, impossible in the first round's 2.
  h.set_head_warmup_epochs(3);
  const TunerOptions o = Options(h, 12, 2, 2);
  const TuneRun run = TuneWith(o, train);
  ASSERT_TRUE(run.outcome.ok()) << run.outcome.status();
  const kaizen::v1::TuningResult& r = run.outcome->result;
  // 2 trials and a factor of 2: one round, at the full 4 epochs: no failure.
  ASSERT_EQ(r.trials_size(), 2);
  EXPECT_NE(r.winner(), 0);
  // 3 trials: a first round at 2 epochs, where every trial fails.
  TunerOptions o3 = Options(h, 12, 3, 2);
  const TuneRun failing = TuneWith(o3, train);
  ASSERT_TRUE(failing.outcome.ok()) << failing.outcome.status();
  const kaizen::v1::TuningResult& f = failing.outcome->result;
  ASSERT_EQ(f.trials_size(), 3);
  for (const TuningTrial& t : f.trials()) {
    EXPECT_THAT(t.outcome(), HasSubstr("failed: hyperparameters.head_warmup_epochs is 3; it must "
                                       "be less than epochs (2)"));
  }
  EXPECT_EQ(f.winner(), 0);
  EXPECT_THAT(f.reason(), HasSubstr("no trial could be scored"));
  EXPECT_DOUBLE_EQ(failing.outcome->winner.learning_rate(), o3.resolved.learning_rate());
}

TEST(TunerTest, EnoughImagesUseASplitAndTheEpochsFollowTheWinnersPeak) {
  // 10 per class: a 20% split (2 per class scored). The epochs are left to
  // the 300-step budget: small images keep that quick.
  const datasets::DecodedDataset train = fixtures::SyntheticDataset(2, 10, 12);
  kaizen::v1::Hyperparameters h;
  h.set_batch_size(8);
  h.set_seed(5);
  h.mutable_augmentation()->set_horizontal_flip(false);
  const TunerOptions o = Options(h, 20, 2, 2, /*image_size=*/12);
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
  const int expected = std::max(
      1, static_cast<int>(std::lround(static_cast<double>(w.best_epoch()) / w.epochs() *
                                      o.resolved.epochs())));
  EXPECT_EQ(run.outcome->winner.epochs(), expected);
  EXPECT_THAT(r.reason(), HasSubstr(absl::StrFormat("peaked at epoch %d of %d", w.best_epoch(),
                                                    w.epochs())));
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

TEST(TunerTest, BadOptionsAreRefusedWithTheField) {
  kaizen::v1::TuningOptions t;
  t.set_max_trials(65);
  EXPECT_EQ(ValidateTuningOptions(t).message(), "tuning.max_trials is 65; it must be in [0, 64]");
  t.set_max_trials(4);
  t.set_reduction_factor(1);
  EXPECT_EQ(ValidateTuningOptions(t).message(),
            "tuning.reduction_factor is 1; it must be in [2, 10]");
  t.set_reduction_factor(0);
  t.set_time_budget_seconds(-5);
  EXPECT_THAT(ValidateTuningOptions(t).message(), HasSubstr("tuning.time_budget_seconds is -5"));
  t.set_time_budget_seconds(0);
  EXPECT_TRUE(ValidateTuningOptions(t).ok());
}

}  // namespace
}  // namespace kaizen::training
