#include "client/cli/output.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace kaizen::cli {
namespace {

using ::testing::HasSubstr;

TEST(OutputTest, TableAlignsColumnsWithoutTrailingBlanks) {
  Table table({"NAME", "N"});
  table.AddRow({"fashion-train", "60000"});
  table.AddRow({"x", "1"});
  EXPECT_EQ(table.Render(),
            "NAME           N\n"
            "fashion-train  60000\n"
            "x              1\n");
}

TEST(OutputTest, TableColumnsLineUpWithUtf8Text) {
  Table table({"CLASS", "N"});
  table.AddRow({"caf\xc3\xa9", "1"});  // 4 characters, 5 bytes
  table.AddRow({"shoe", "2"});
  EXPECT_EQ(table.Render(),
            "CLASS  N\n"
            "caf\xc3\xa9   1\n"
            "shoe   2\n");
}

TEST(OutputTest, BytesCountsPercentsAndClocks) {
  EXPECT_EQ(FormatBytes(512), "512 B");
  EXPECT_EQ(FormatBytes(12595), "12.3 KiB");
  EXPECT_EQ(FormatBytes(int64_t{26} << 20), "26.0 MiB");
  EXPECT_EQ(FormatBytes(int64_t{3} << 40), "3.0 TiB");
  EXPECT_EQ(FormatBytes(int64_t{5000} << 40), "5000.0 TiB");  // no unit above TiB
  EXPECT_EQ(FormatCount(12), "12");
  EXPECT_EQ(FormatCount(9999), "9999");
  EXPECT_EQ(FormatCount(950000), "950K");
  EXPECT_EQ(FormatCount(11700000), "11.7M");
  EXPECT_EQ(FormatCount(2500000000), "2.5G");
  EXPECT_EQ(FormatPercent(0.849), "84.9%");
  EXPECT_EQ(FormatClock(42), "0:42");
  EXPECT_EQ(FormatClock(725), "12:05");
  EXPECT_EQ(FormatClock(3723.4), "1:02:03");
  EXPECT_EQ(FormatClock(-5), "0:00");
}

TEST(OutputTest, ExportsAreListedWithWhatDeletingThemFrees) {
  kaizen::v1::ListExportsResponse r;
  kaizen::v1::Export* e = r.add_exports();
  e->set_directory("exports/ft-0123456789ab-a1b2c3");
  e->set_job_id("ft-0123456789ab");
  e->set_size_bytes(3 << 20);
  const std::string table = ExportTable(r);
  EXPECT_NE(table.find("DIRECTORY"), std::string::npos) << table;
  EXPECT_NE(table.find("exports/ft-0123456789ab-a1b2c3  ft-0123456789ab"), std::string::npos)
      << table;
  EXPECT_NE(table.find(FormatBytes(3 << 20)), std::string::npos) << table;
  EXPECT_EQ(table.find(">="), std::string::npos) << table;
  // An incomplete size is a lower bound.
  e->set_size_incomplete(true);
  const std::string partial = ExportTable(r);
  EXPECT_NE(partial.find(">= " + FormatBytes(3 << 20)), std::string::npos) << partial;
}

TEST(OutputTest, AccuraciesArePercentagesOtherMetricsAreNot) {
  EXPECT_EQ(FormatMetric("val_accuracy", 0.5), "50.0%");
  EXPECT_EQ(FormatMetric("val_loss", 0.43125), "0.4313");
}

TEST(OutputTest, ShapesAndUnsetTimes) {
  google::protobuf::RepeatedField<int64_t> shape;
  EXPECT_EQ(FormatShape(shape), "-");
  shape.Add(1);
  shape.Add(28);
  shape.Add(28);
  EXPECT_EQ(FormatShape(shape), "1x28x28");
  EXPECT_EQ(FormatTime(google::protobuf::Timestamp()), "-");
}

TEST(OutputTest, ValidationIsReadFromTheHistoryFirst) {
  kaizen::v1::Job job;
  job.mutable_request()->mutable_hyperparameters()->mutable_validation()->set_split(0.1);
  EXPECT_TRUE(JobHasValidation(job));  // no history yet: by the request
  kaizen::v1::EpochMetrics* epoch = job.add_history();
  epoch->set_train_loss(1.0);
  EXPECT_FALSE(EpochIsValidated(*epoch));
  EXPECT_FALSE(JobHasValidation(job));  // the history says no
  epoch->set_val_accuracy(0.7);
  EXPECT_TRUE(JobHasValidation(job));
  kaizen::v1::Job by_dataset;
  by_dataset.mutable_resolved_hyperparameters()->mutable_validation()->set_dataset("held-out");
  EXPECT_TRUE(JobHasValidation(by_dataset));
  EXPECT_FALSE(JobHasValidation(kaizen::v1::Job()));
}

TEST(OutputTest, JobDetailsListTheTuningTrialsAndTheResult) {
  kaizen::v1::Job job;
  job.set_id("ft-1");
  EXPECT_THAT(JobDetails(job), ::testing::Not(HasSubstr("tuning")));
  job.mutable_request()->mutable_tuning()->set_max_trials(2);
  EXPECT_THAT(JobDetails(job), HasSubstr("  tuning (in progress):\n"));
  kaizen::v1::TuningResult* t = job.mutable_tuning();
  t->set_scoring("3-fold stratified cross-validation");
  t->add_searched("learning_rate");
  kaizen::v1::TuningTrial* a = t->add_trials();
  a->set_trial(1);
  a->set_round(1);
  a->set_learning_rate(0.01);
  a->set_epochs(30);
  a->set_val_accuracy(0.8);
  a->set_val_loss(0.5);
  a->set_best_epoch(28);
  a->set_seconds(2.5);
  a->set_outcome("winner");
  kaizen::v1::TuningTrial* b = t->add_trials();
  b->set_trial(2);
  b->set_round(1);
  b->set_learning_rate(0.5);
  b->set_epochs(30);
  b->set_outcome("failed: loss became NaN");
  t->set_done(true);
  t->set_winner(1);
  t->set_reason("trial 1 won");
  const std::string text = JobDetails(job);
  EXPECT_THAT(text, HasSubstr("  tuning:\n    scored on:  3-fold stratified cross-validation\n"
                              "    searched:   learning_rate\n"));
  EXPECT_THAT(text, HasSubstr("80.0%"));
  EXPECT_THAT(text, HasSubstr("winner"));
  EXPECT_THAT(text, HasSubstr("failed: loss became NaN"));
  EXPECT_THAT(text, HasSubstr("    result:     trial 1 won\n"));
}

TEST(OutputTest, JobDetailsShowTeacherAndStudentSideBySide) {
  kaizen::v1::Job job;
  job.set_id("ft-2");
  job.mutable_request()->set_output_model("small");
  job.mutable_request()->mutable_distillation()->set_teacher_model("big");
  EXPECT_THAT(JobDetails(job), ::testing::Not(HasSubstr("distillation:")));
  job.set_latest_version(4);
  kaizen::v1::DistillationResult* d = job.mutable_distillation();
  d->set_teacher_model("big");
  d->set_teacher_version(3);
  d->set_temperature(4);
  d->set_alpha(0.7);
  d->set_teacher_parameter_count(1000);
  d->set_student_parameter_count(250);
  d->set_teacher_val_accuracy(0.9);
  d->set_student_val_accuracy(0.875);
  d->set_validation_examples(200);
  d->set_teacher_latency_ms(2.5);
  d->set_student_latency_ms(0.75);
  const std::string text = JobDetails(job);
  EXPECT_THAT(text, HasSubstr("teacher:"));
  EXPECT_THAT(text, HasSubstr("big:3 (temperature 4, alpha 0.7)"));
  EXPECT_THAT(text, HasSubstr("  distillation:\n"));
  EXPECT_THAT(text, ::testing::ContainsRegex("teacher big:3 +1000 +90.0% +- +2.50 ms"));
  EXPECT_THAT(text, ::testing::ContainsRegex("student small:4 +250 +87.5% +- +0.75 ms"));
}

TEST(OutputTest, JobDetailsShowIncrementalBeforeAndAfter) {
  kaizen::v1::Job job;
  job.set_id("ft-3");
  kaizen::v1::IncrementalResult* r = job.mutable_incremental();
  r->set_base_model("fm");
  r->set_base_version(2);
  r->add_old_classes("a");
  r->add_old_classes("b");
  r->add_new_classes("c");
  r->set_rehearsal(true);
  r->set_exemplars_per_class(50);
  r->set_max_exemplars(2000);
  r->set_memory_source("datasets old");
  r->set_memory_size(150);
  r->set_distillation(true);
  r->set_temperature(2);
  r->set_distillation_weight(1);
  std::string text = JobDetails(job);
  EXPECT_THAT(text, HasSubstr("  incremental:\n"));
  EXPECT_THAT(text, HasSubstr("fm:2 (2 classes) + 1 new classes [c]"));
  EXPECT_THAT(text, HasSubstr("on, 50 exemplars per class (2000 in all), herding; old classes "
                              "from datasets old; 150 stored with each version"));
  EXPECT_THAT(text, HasSubstr("on, temperature 2, weight 1"));
  EXPECT_THAT(text, ::testing::Not(HasSubstr("forgetting")));
  r->set_evaluated_on("test dataset t");
  r->set_old_examples(100);
  r->set_new_examples(50);
  r->set_old_accuracy_before(0.8);
  r->set_old_accuracy_after(0.7);
  r->set_new_accuracy_after(0.9);
  r->set_all_accuracy_before(0.5);
  r->set_all_accuracy_after(0.75);
  r->set_forgetting(0.1);
  text = JobDetails(job);
  EXPECT_THAT(text, ::testing::ContainsRegex("old +100 +80.0% +70.0%"));
  EXPECT_THAT(text, ::testing::ContainsRegex("new +50 +0.0% +90.0%"));
  EXPECT_THAT(text, ::testing::ContainsRegex("all +150 +50.0% +75.0%"));
  EXPECT_THAT(text, HasSubstr("forgetting:    10.0 points"));
}

TEST(OutputTest, PredictionTableNamesInputsByOrder) {
  kaizen::v1::PredictResponse response;
  response.set_version(3);
  kaizen::v1::ClassScore* score = response.add_predictions()->add_classes();
  score->set_label("shirt");
  score->set_index(6);
  score->set_probability(0.91234);
  response.add_predictions()->add_classes()->set_index(2);
  const std::string table = PredictionTable(response, {"a.png"});
  EXPECT_THAT(table, HasSubstr("a.png    1     shirt  6      0.9123       3\n"));
  EXPECT_THAT(table, HasSubstr("input 1  1     -      2      0.0000       3\n"));
}

TEST(OutputTest, PredictionTableShowsTextsOnOneLineCutAtACharacter) {
  kaizen::v1::PredictResponse response;
  response.set_version(2);
  for (int i = 0; i < 2; ++i) {
    kaizen::v1::ClassScore* score = response.add_predictions()->add_classes();
    score->set_label("noun.food");
    score->set_probability(0.5);
  }
  // 39 bytes, then a 2-byte character across the 40-byte cut.
  const std::string long_text = std::string(39, 'a') + "\xc3\xa9 and more";
  const std::string table = PredictionTable(response, {"a\tb\nc", long_text}, /*texts=*/true);
  EXPECT_THAT(table, HasSubstr("TEXT"));
  EXPECT_THAT(table, ::testing::Not(HasSubstr("FILE")));
  EXPECT_THAT(table, HasSubstr("a b c "));
  EXPECT_THAT(table, HasSubstr(std::string(39, 'a') + "... "));
}

TEST(OutputTest, JsonUsesTheProto3MappingOnOneLineForJsonLines) {
  kaizen::v1::PredictResponse response;
  response.set_version(7);
  absl::StatusOr<std::string> line = ToJsonLine(response);
  ASSERT_TRUE(line.ok()) << line.status();
  EXPECT_THAT(*line, HasSubstr("\"version\":"));
  EXPECT_EQ(line->back(), '\n');
  EXPECT_EQ(line->find('\n'), line->size() - 1);
  absl::StatusOr<std::string> pretty = ToJson(response);
  ASSERT_TRUE(pretty.ok()) << pretty.status();
  EXPECT_GT(std::count(pretty->begin(), pretty->end(), '\n'), 1);
}

TEST(OutputTest, DatasetDetailsSayWhenImagesWereStoredDownscaled) {
  kaizen::v1::Dataset dataset;
  dataset.set_name("photos");
  EXPECT_THAT(DatasetDetails(dataset), ::testing::Not(HasSubstr("stored resolution")));
  dataset.mutable_report()->set_max_stored_shorter_side(256);
  dataset.mutable_report()->set_downscaled_images(1234);
  EXPECT_THAT(
      DatasetDetails(dataset),
      HasSubstr("stored resolution: shorter side at most 256 pixels (1234 images downscaled)"));
}

}  // namespace
}  // namespace kaizen::cli
