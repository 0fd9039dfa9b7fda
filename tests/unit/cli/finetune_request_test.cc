#include "client/cli/finetune_request.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "client/cli/usage.h"

namespace kaizen::cli {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

FineTuneFlags Required() {
  FineTuneFlags f;
  f.base = "cnn-small";
  f.dataset = "photos";
  f.output_model = "photos-cnn";
  f.strategy = "fine_tune";
  return f;
}

TEST(FineTuneRequestTest, OnlyGivenFlagsAreSentSoServerDefaultsApply) {
  absl::StatusOr<kaizen::v1::StartFineTuneRequest> r = BuildStartFineTuneRequest(Required());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->base_model(), "cnn-small");
  EXPECT_EQ(r->dataset(), "photos");
  EXPECT_EQ(r->output_model(), "photos-cnn");
  EXPECT_EQ(r->strategy(), kaizen::v1::STRATEGY_FINE_TUNE);
  EXPECT_FALSE(r->has_hyperparameters());
  EXPECT_FALSE(r->has_distillation());
  EXPECT_EQ(r->keep_checkpoints(), 0);
}

TEST(FineTuneRequestTest, EachMissingRequiredFlagIsAUsageErrorWithAnExample) {
  for (std::string FineTuneFlags::*field :
       {&FineTuneFlags::base, &FineTuneFlags::dataset, &FineTuneFlags::output_model,
        &FineTuneFlags::strategy}) {
    FineTuneFlags f = Required();
    f.*field = "";
    absl::StatusOr<kaizen::v1::StartFineTuneRequest> r = BuildStartFineTuneRequest(f);
    ASSERT_FALSE(r.ok());
    EXPECT_TRUE(IsUsageError(r.status()));
    EXPECT_THAT(r.status().message(), HasSubstr("finetune start needs --"));
    EXPECT_THAT(r.status().message(), HasSubstr("(e.g. --"));
  }
}

TEST(FineTuneRequestTest, ADryRunAsksForValidationOnlyAndNeedsNoOutputName) {
  FineTuneFlags f = Required();
  f.output_model = "";
  f.dry_run = true;
  absl::StatusOr<kaizen::v1::StartFineTuneRequest> r = BuildStartFineTuneRequest(f);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->validate_only());
  EXPECT_EQ(r->output_model(), "");
  EXPECT_FALSE(BuildStartFineTuneRequest(Required())->validate_only());
}

TEST(FineTuneRequestTest, NumbersAndChoicesLandInTheirFields) {
  FineTuneFlags f = Required();
  f.strategy = "Feature-Extraction";  // case and '-' do not matter
  f.epochs = "7";
  f.batch_size = "16";
  f.lr = "3e-4";
  f.optimizer = "sgd";
  f.momentum = "0.9";
  f.nesterov = true;
  f.schedule = "cosine";
  f.warmup_epochs = "0.5";
  f.early_stopping_patience = "3";
  f.seed = "42";
  f.head = "mlp";
  f.mixed_precision = "bf16";
  f.priority = "-5";
  f.keep_checkpoints = "2";
  f.world_size = "2";
  absl::StatusOr<kaizen::v1::StartFineTuneRequest> r = BuildStartFineTuneRequest(f);
  ASSERT_TRUE(r.ok()) << r.status();
  const kaizen::v1::Hyperparameters& hp = r->hyperparameters();
  EXPECT_EQ(r->strategy(), kaizen::v1::STRATEGY_FEATURE_EXTRACTION);
  EXPECT_EQ(hp.epochs(), 7);
  EXPECT_EQ(hp.batch_size(), 16);
  EXPECT_DOUBLE_EQ(hp.learning_rate(), 3e-4);
  EXPECT_EQ(hp.optimizer().kind(), kaizen::v1::OPTIMIZER_SGD);
  EXPECT_DOUBLE_EQ(hp.optimizer().momentum(), 0.9);
  EXPECT_TRUE(hp.optimizer().nesterov());
  EXPECT_EQ(hp.schedule().kind(), kaizen::v1::SCHEDULE_COSINE);
  EXPECT_DOUBLE_EQ(hp.schedule().warmup_epochs(), 0.5);
  EXPECT_TRUE(hp.early_stopping().enabled());
  EXPECT_EQ(hp.early_stopping().patience(), 3);
  EXPECT_EQ(hp.seed(), 42u);
  EXPECT_EQ(hp.head().kind(), kaizen::v1::HEAD_KIND_MLP);
  EXPECT_EQ(hp.mixed_precision(), kaizen::v1::MIXED_PRECISION_BF16);
  EXPECT_EQ(r->priority(), -5);
  EXPECT_EQ(r->keep_checkpoints(), 2);
  EXPECT_EQ(r->world_size(), 2);
}

TEST(FineTuneRequestTest, AugmentOnAndOffAreBothExplicit) {
  FineTuneFlags f = Required();
  f.augment = "on";
  absl::StatusOr<kaizen::v1::StartFineTuneRequest> on = BuildStartFineTuneRequest(f);
  ASSERT_TRUE(on.ok()) << on.status();
  EXPECT_TRUE(on->hyperparameters().augmentation().enabled());
  EXPECT_EQ(on->hyperparameters().augmentation().random_crop_padding(), kAugmentCropPadding);
  EXPECT_TRUE(on->hyperparameters().augmentation().horizontal_flip());
  f.augment = "off";
  absl::StatusOr<kaizen::v1::StartFineTuneRequest> off = BuildStartFineTuneRequest(f);
  ASSERT_TRUE(off.ok()) << off.status();
  EXPECT_TRUE(off->hyperparameters().has_augmentation());
  EXPECT_FALSE(off->hyperparameters().augmentation().enabled());
}

TEST(FineTuneRequestTest, OutOfRangeValuesNameTheFlagAndWhatWasExpected) {
  struct Case {
    std::string FineTuneFlags::*field;
    std::string value;
    std::string flag;
  };
  const Case cases[] = {
      {&FineTuneFlags::epochs, "0", "--epochs=0"},
      {&FineTuneFlags::lr, "-1", "--lr=-1"},
      {&FineTuneFlags::lr, "nan", "--lr=nan"},
      {&FineTuneFlags::momentum, "1", "--momentum=1"},
      {&FineTuneFlags::validation_split, "1", "--validation_split=1"},
      {&FineTuneFlags::optimizer, "lbfgs", "--optimizer=lbfgs"},
      {&FineTuneFlags::strategy, "magic", "--strategy=magic"},
      {&FineTuneFlags::seed, "-3", "--seed=-3"},
      {&FineTuneFlags::temperature, "0", "--temperature=0"},
      {&FineTuneFlags::distill_alpha, "0", "--distill_alpha=0"},
      {&FineTuneFlags::keep_checkpoints, "0", "--keep_checkpoints=0"},
  };
  for (const Case& c : cases) {
    FineTuneFlags f = Required();
    f.*c.field = c.value;
    absl::StatusOr<kaizen::v1::StartFineTuneRequest> r = BuildStartFineTuneRequest(f);
    ASSERT_FALSE(r.ok()) << c.flag;
    EXPECT_TRUE(IsUsageError(r.status())) << c.flag;
    EXPECT_THAT(r.status().message(), HasSubstr(c.flag));
    EXPECT_THAT(r.status().message(), HasSubstr("expected"));
  }
}

TEST(FineTuneRequestTest, ValidationSplitAndDatasetExcludeEachOther) {
  FineTuneFlags f = Required();
  f.validation_split = "0.1";
  f.validation_dataset = "held-out";
  absl::StatusOr<kaizen::v1::StartFineTuneRequest> r = BuildStartFineTuneRequest(f);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("not both"));
  f.validation_split = "";
  r = BuildStartFineTuneRequest(f);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->hyperparameters().validation().dataset(), "held-out");
}

TEST(FineTuneRequestTest, DistillationCarriesTeacherAndTemperature) {
  FineTuneFlags f = Required();
  f.strategy = "distill";
  f.teacher = "big:3";
  f.temperature = "4";
  absl::StatusOr<kaizen::v1::StartFineTuneRequest> r = BuildStartFineTuneRequest(f);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->strategy(), kaizen::v1::STRATEGY_DISTILL);
  EXPECT_EQ(r->distillation().teacher_model(), "big:3");
  EXPECT_DOUBLE_EQ(r->distillation().temperature(), 4);
  // Without --distill_alpha the server's default applies.
  EXPECT_EQ(r->distillation().alpha(), 0);
  f.distill_alpha = "0.5";
  r = BuildStartFineTuneRequest(f);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_DOUBLE_EQ(r->distillation().alpha(), 0.5);
}

TEST(FineTuneRequestTest, DistillationFlagsAreCheckedAndNeedTheDistillStrategy) {
  FineTuneFlags f = Required();
  f.strategy = "distill";
  f.teacher = "big";
  f.distill_alpha = "1.5";
  absl::StatusOr<kaizen::v1::StartFineTuneRequest> r = BuildStartFineTuneRequest(f);
  EXPECT_EQ(r.status().message(), "--distill_alpha=1.5: expected a number in (0, 1], e.g. 0.7");
  f.distill_alpha.clear();
  f.temperature = "0.5";
  r = BuildStartFineTuneRequest(f);
  EXPECT_EQ(r.status().message(), "--temperature=0.5: expected a number from 1 to 100, e.g. 4");
  f.temperature.clear();
  f.strategy = "fine_tune";
  r = BuildStartFineTuneRequest(f);
  EXPECT_EQ(r.status().message(),
            "--teacher, --temperature and --distill_alpha need --strategy=distill");
}

TEST(FineTuneRequestTest, IncrementalFlagsFillIncrementalOptions) {
  FineTuneFlags f = Required();
  f.strategy = "incremental";
  f.exemplars_per_class = "20";
  f.max_exemplars = "500";
  f.exemplar_selection = "random";
  f.previous_datasets = "a, b";
  f.temperature = "3";
  f.distill_weight = "0.5";
  absl::StatusOr<kaizen::v1::StartFineTuneRequest> r = BuildStartFineTuneRequest(f);
  ASSERT_TRUE(r.ok()) << r.status();
  const kaizen::v1::IncrementalOptions& o = r->incremental();
  EXPECT_EQ(o.exemplars_per_class(), 20);
  EXPECT_EQ(o.max_exemplars(), 500);
  EXPECT_EQ(o.selection(), kaizen::v1::EXEMPLAR_SELECTION_RANDOM);
  ASSERT_EQ(o.previous_datasets_size(), 2);
  EXPECT_EQ(o.previous_datasets(1), "b");
  EXPECT_DOUBLE_EQ(o.temperature(), 3);
  EXPECT_DOUBLE_EQ(o.distillation_weight(), 0.5);
  EXPECT_FALSE(o.disable_rehearsal());
  // --temperature is INCREMENTAL's here, not a distillation option.
  EXPECT_FALSE(r->has_distillation());

  FineTuneFlags off = Required();
  off.strategy = "incremental";
  off.no_rehearsal = true;
  off.no_distillation = true;
  r = BuildStartFineTuneRequest(off);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->incremental().disable_rehearsal());
  EXPECT_TRUE(r->incremental().disable_distillation());

  off.strategy = "fine_tune";
  r = BuildStartFineTuneRequest(off);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("need --strategy=incremental"));
  f.exemplar_selection = "best";
  r = BuildStartFineTuneRequest(f);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("--exemplar_selection=best"));
}

TEST(FineTuneRequestTest, TuningFlagsFillTuningOptionsAndNeedTheTrialCount) {
  FineTuneFlags f = Required();
  f.tune_trials = "9";
  f.tune_time_budget = "600";
  f.tune_seed = "5";
  f.tune_reduction_factor = "3";
  absl::StatusOr<kaizen::v1::StartFineTuneRequest> r = BuildStartFineTuneRequest(f);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->tuning().max_trials(), 9);
  EXPECT_EQ(r->tuning().time_budget_seconds(), 600);
  EXPECT_EQ(r->tuning().seed(), 5u);
  EXPECT_EQ(r->tuning().reduction_factor(), 3);
  // Without --tune_trials there is no tuning, and its other flags are errors.
  EXPECT_FALSE(BuildStartFineTuneRequest(Required())->has_tuning());
  f.tune_trials = "";
  r = BuildStartFineTuneRequest(f);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(IsUsageError(r.status()));
  EXPECT_THAT(r.status().message(), HasSubstr("need --tune_trials"));
  f = Required();
  for (const char* bad : {"0", "x", "-2"}) {
    f.tune_trials = bad;
    r = BuildStartFineTuneRequest(f);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_THAT(r.status().message(), HasSubstr(absl::StrCat("--tune_trials=", bad, ": expected")));
  }
  f.tune_trials = "4";
  f.tune_reduction_factor = "1";
  EXPECT_THAT(BuildStartFineTuneRequest(f).status().message(),
              HasSubstr("--tune_reduction_factor=1: expected"));
}

TEST(ParseJobStatesTest, TakesShortNamesEnumNamesAndTheAmericanSpelling) {
  absl::StatusOr<std::vector<kaizen::v1::JobState>> s =
      ParseJobStates("queued, JOB_STATE_RUNNING,canceled,Paused");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_THAT(*s, ElementsAre(kaizen::v1::JOB_STATE_QUEUED, kaizen::v1::JOB_STATE_RUNNING,
                              kaizen::v1::JOB_STATE_CANCELLED, kaizen::v1::JOB_STATE_PAUSED));
  absl::StatusOr<std::vector<kaizen::v1::JobState>> none = ParseJobStates("");
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
  absl::StatusOr<std::vector<kaizen::v1::JobState>> bad = ParseJobStates("queued,done");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("--state=done"));
}

}  // namespace
}  // namespace kaizen::cli
