// End-to-end tests of STRATEGY_DISTILL: real jobs on Fashion-MNIST through a
// real server on a loopback port. A resnet-small teacher trained here is
// distilled into cnn-small, and the job reports teacher and student side by
// side (accuracy, parameters, latency); bad requests get precise statuses; a
// student larger than its teacher is warned about, not refused; and a job
// killed with kill -9 resumes with the very teacher version it resolved when
// it was submitted, even after a newer one appeared.
#include <gtest/gtest.h>
#include <signal.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/lib/kaizen_client.h"
#include "gmock/gmock.h"
#include "tests/test_util/server/job_helpers.h"
#include "tests/test_util/server_process.h"
#include "tests/test_util/temp_dir.h"
#include "tests/test_util/wait.h"

namespace kaizen {
namespace {

using ::testing::HasSubstr;
using v1::Job;
using v1::JobEvent;

// Four classes that are easy to confuse (t-shirt, pullover, coat, shirt):
// there is something for soft targets to teach.
const std::vector<int> kClasses = {0, 2, 4, 6};

class DistillE2EBase : public test_util::JobServerTest {
 protected:
  // `strategy` on "train" with augmentation off, batch 16, `epochs` epochs.
  static v1::StartFineTuneRequest Plain(const std::string& base, const std::string& output,
                                        v1::Strategy strategy, int epochs) {
    v1::StartFineTuneRequest r = Request(base, "train", output, strategy, epochs);
    r.mutable_hyperparameters()->set_batch_size(16);
    r.mutable_hyperparameters()->mutable_augmentation()->set_enabled(false);
    r.set_keep_checkpoints(10);
    return r;
  }

  static v1::StartFineTuneRequest Distill(const std::string& student, const std::string& teacher,
                                          const std::string& output, int epochs) {
    v1::StartFineTuneRequest r = Plain(student, output, v1::STRATEGY_DISTILL, epochs);
    r.mutable_distillation()->set_teacher_model(teacher);
    return r;
  }

  int JobCount() {
    absl::StatusOr<v1::ListJobsResponse> listed = s_.client->ListJobs({});
    EXPECT_TRUE(listed.ok()) << listed.status();
    return listed.ok() ? listed->jobs_size() : -1;
  }
};

class DistillE2E : public DistillE2EBase {
 protected:
  void SetUp() override { StartServer(); }
};

// A server process of its own, to kill.
class DistillRestartE2E : public DistillE2EBase {};

TEST_F(DistillE2E, ADistilledStudentIsReportedBesideItsTeacherAndALabelOnlyStudent) {
  UploadSubset("train", kClasses, 60);
  UploadSubset("test", kClasses, 100, 0, "t10k");
  v1::StartFineTuneRequest teach = Plain("resnet-small", "teacher", v1::STRATEGY_SCRATCH, 8);
  const Job teacher = WaitForSuccess(Start(teach).id());
  ASSERT_EQ(teacher.state(), v1::JOB_STATE_SUCCEEDED) << teacher.error();

  // The same student, budget and seed: from the teacher and from labels.
  v1::StartFineTuneRequest distill = Distill("cnn-small", "teacher", "distilled", 8);
  distill.set_test_dataset("test");
  v1::StartFineTuneRequest labels = Plain("cnn-small", "labels-only", v1::STRATEGY_SCRATCH, 8);
  labels.set_test_dataset("test");
  const Job distilled = WaitForSuccess(Start(distill).id());
  const Job label_only = WaitForSuccess(Start(labels).id());
  ASSERT_EQ(distilled.state(), v1::JOB_STATE_SUCCEEDED) << distilled.error();
  ASSERT_EQ(label_only.state(), v1::JOB_STATE_SUCCEEDED) << label_only.error();

  const v1::DistillationResult& d = distilled.distillation();
  EXPECT_EQ(d.teacher_model(), "teacher");
  EXPECT_EQ(d.teacher_version(), teacher.latest_version());
  EXPECT_DOUBLE_EQ(d.temperature(), 4);
  EXPECT_DOUBLE_EQ(d.alpha(), 0.7);
  // resnet-small is more than five times cnn-small.
  EXPECT_GT(d.teacher_parameter_count(), 5 * d.student_parameter_count());
  absl::StatusOr<v1::Model> student = s_.client->GetModel("distilled", distilled.latest_version());
  ASSERT_TRUE(student.ok()) << student.status();
  EXPECT_EQ(d.student_parameter_count(), student->parameter_count());
  // 20% of 240 images hold out 48 for validation; the test set has 400.
  EXPECT_EQ(d.validation_examples(), 48);
  EXPECT_DOUBLE_EQ(d.student_val_accuracy(), distilled.history().rbegin()->val_accuracy());
  EXPECT_GT(d.teacher_val_accuracy(), 0.5);
  EXPECT_EQ(d.test_examples(), 400);
  EXPECT_GT(d.teacher_test_accuracy(), 0.5);
  EXPECT_GT(d.student_test_accuracy(), 0.5);
  EXPECT_GT(d.teacher_latency_ms(), 0);
  EXPECT_GT(d.student_latency_ms(), 0);

  absl::StatusOr<v1::Model> label_model =
      s_.client->GetModel("labels-only", label_only.latest_version());
  ASSERT_TRUE(label_model.ok()) << label_model.status();
  const double label_accuracy = label_model->test_evaluation().accuracy();
  std::printf(
      "distillation on %d test images: teacher resnet-small %.1f%% (%lld parameters, %.2f ms), "
      "distilled cnn-small %.1f%% (%lld parameters, %.2f ms), cnn-small on labels alone %.1f%%\n",
      static_cast<int>(d.test_examples()), 100 * d.teacher_test_accuracy(),
      static_cast<long long>(d.teacher_parameter_count()), d.teacher_latency_ms(),
      100 * d.student_test_accuracy(), static_cast<long long>(d.student_parameter_count()),
      d.student_latency_ms(), 100 * label_accuracy);
  // One seed on 240 images: the distilled student must not fall behind the
  // label-only one by more than noise.
  EXPECT_GE(d.student_test_accuracy(), label_accuracy - 0.03);

  const std::vector<std::string> lines = Messages(Watch(distilled.id()));
  EXPECT_EQ(Count(lines, absl::StrCat("distilling from teacher teacher:", d.teacher_version())), 1);
  EXPECT_EQ(Count(lines, "distillation: teacher teacher:"), 1);
  EXPECT_EQ(Count(lines, "distillation: test dataset test: teacher teacher:"), 1);
  EXPECT_EQ(Count(lines, "randomly initialised built-in"), 0);
  EXPECT_EQ(Count(lines, "warning: the student"), 0);
}

TEST_F(DistillE2E, BadRequestsGetPreciseStatusesAndALargerStudentOnlyAWarning) {
  UploadSubset("train", {0, 2}, 8);
  UploadSubset("other", {1, 3}, 8);
  // A small trained teacher for "train", and one for other classes.
  const Job small =
      WaitForSuccess(Start(Plain("cnn-small", "small", v1::STRATEGY_SCRATCH, 1)).id());
  v1::StartFineTuneRequest o = Plain("cnn-small", "wrong", v1::STRATEGY_SCRATCH, 1);
  o.set_dataset("other");
  WaitForSuccess(Start(o).id());
  const int jobs = JobCount();

  struct Case {
    v1::StartFineTuneRequest request;
    absl::StatusCode code;
    std::string message;  // the whole message, or a part of it
  };
  std::vector<Case> cases;
  cases.push_back({Distill("cnn-small", "", "x", 1), absl::StatusCode::kInvalidArgument,
                   "distillation.teacher_model is empty; STRATEGY_DISTILL needs a teacher model "
                   "(\"name\" or \"name:version\") with the training dataset's classes"});
  cases.push_back({Distill("cnn-small", "nope", "x", 1), absl::StatusCode::kNotFound,
                   "distillation.teacher_model: model \"nope\""});
  cases.push_back({Distill("cnn-small", "small:99", "x", 1), absl::StatusCode::kNotFound,
                   "distillation.teacher_model: model \"small\""});
  cases.push_back({Distill("cnn-small", "resnet-small", "x", 1),
                   absl::StatusCode::kFailedPrecondition,
                   "distillation.teacher_model \"resnet-small\" is a built-in architecture with "
                   "random weights"});
  cases.push_back({Distill("cnn-small", "wrong", "x", 1), absl::StatusCode::kInvalidArgument,
                   "distillation.teacher_model \"wrong:1\" predicts the classes [class1, class3] "
                   "but dataset \"train\" has [class0, class2]; a teacher needs the dataset's "
                   "class names in the same order"});
  v1::StartFineTuneRequest hot = Distill("cnn-small", "small", "x", 1);
  hot.mutable_distillation()->set_temperature(0.5);
  cases.push_back({hot, absl::StatusCode::kInvalidArgument,
                   "distillation.temperature is 0.5; it must be in [1, 100]"});
  v1::StartFineTuneRequest heavy = Distill("cnn-small", "small", "x", 1);
  heavy.mutable_distillation()->set_alpha(2);
  cases.push_back(
      {heavy, absl::StatusCode::kInvalidArgument, "distillation.alpha is 2; it must be in (0, 1]"});
  v1::StartFineTuneRequest stray = Plain("cnn-small", "x", v1::STRATEGY_SCRATCH, 1);
  stray.mutable_distillation()->set_teacher_model("small");
  cases.push_back({stray, absl::StatusCode::kInvalidArgument,
                   "distillation is set but strategy is STRATEGY_SCRATCH; distillation options "
                   "apply to STRATEGY_DISTILL only"});
  for (const Case& c : cases) {
    absl::StatusOr<Job> job = TryStart(c.request);
    EXPECT_EQ(job.status().code(), c.code) << job.status();
    EXPECT_THAT(std::string(job.status().message()), HasSubstr(c.message));
  }
  EXPECT_EQ(JobCount(), jobs) << "no refused request left a job";

  // resnet-small learning from cnn-small: allowed, with a warning.
  const Job larger = Start(Distill("resnet-small", "small", "larger", 1));
  ASSERT_FALSE(larger.id().empty());
  EXPECT_GT(larger.distillation().student_parameter_count(),
            larger.distillation().teacher_parameter_count());
  EXPECT_EQ(larger.distillation().teacher_version(), small.latest_version());
  // The teacher cannot be deleted while a job distils from it.
  EXPECT_EQ(s_.client->DeleteModel("small").code(), absl::StatusCode::kFailedPrecondition);
  const Job end = WaitForSuccess(larger.id());
  EXPECT_EQ(end.state(), v1::JOB_STATE_SUCCEEDED);
  const std::vector<std::string> lines = Messages(Watch(larger.id()));
  EXPECT_EQ(Count(lines, "warning: the student resnet-small has "), 1);
  EXPECT_EQ(Count(lines, "more than its teacher small:"), 1);
}

// kill -9 in the middle of a DISTILL job: after a restart it resumes from
// its checkpoint and reloads the teacher version it resolved at submission,
// not the newer one the teacher's own job wrote meanwhile.
TEST_F(DistillRestartE2E, AKilledJobResumesWithTheTeacherVersionItResolved) {
  test_util::TempDir dir;
  const int port = test_util::FreeLoopbackPort();
  auto server = std::make_unique<test_util::ServerProcess>(KAIZEN_BINARY_DIR, dir.path(), port);
  ASSERT_TRUE(Connect(port));
  UploadSubset("train", kClasses, 20);
  // The teacher's job writes versions 1 to 5; the distillation is
  // submitted once version 1 exists and waits for the one worker.
  const std::string teacher_id =
      Start(Plain("resnet-small", "teacher", v1::STRATEGY_SCRATCH, 5)).id();
  ASSERT_TRUE(test_util::WaitUntil([&] { return GetJob(teacher_id).latest_version() >= 1; },
                                   absl::Minutes(3)));
  // With augmentation the teacher runs on every batch, no cache.
  v1::StartFineTuneRequest distill = Distill("cnn-small", "teacher", "student", 6);
  distill.mutable_hyperparameters()->mutable_augmentation()->set_enabled(true);
  distill.mutable_hyperparameters()->mutable_augmentation()->set_random_crop_padding(2);
  const Job submitted = Start(distill);
  const int64_t resolved = submitted.distillation().teacher_version();
  ASSERT_GE(resolved, 1);
  const Job teacher = WaitForSuccess(teacher_id);
  ASSERT_EQ(teacher.latest_version(), 5);
  ASSERT_LT(resolved, teacher.latest_version()) << "the teacher's job outran the test";
  const std::string id = submitted.id();
  ASSERT_TRUE(
      test_util::WaitUntil([&] { return GetJob(id).latest_version() >= 1; }, absl::Minutes(3)));
  server->Kill(SIGKILL);

  server = std::make_unique<test_util::ServerProcess>(KAIZEN_BINARY_DIR, dir.path(), port);
  ASSERT_TRUE(Connect(port));
  const Job end = WaitForState(id, {v1::JOB_STATE_SUCCEEDED, v1::JOB_STATE_FAILED});
  const std::vector<std::string> lines = Messages(Watch(id));
  server.reset();
  ASSERT_EQ(end.state(), v1::JOB_STATE_SUCCEEDED) << end.error();
  EXPECT_EQ(end.attempts(), 2);
  EXPECT_EQ(end.history_size(), 6);
  EXPECT_EQ(end.distillation().teacher_version(), resolved);
  EXPECT_EQ(Count(lines, "requeued to resume from checkpoint version"), 1);
  EXPECT_EQ(Count(lines, absl::StrCat("distilling from teacher teacher:", resolved)), 2);
  EXPECT_EQ(Count(lines, "the teacher was reloaded to resume"), 1);
  EXPECT_GT(end.distillation().student_latency_ms(), 0);
}

}  // namespace
}  // namespace kaizen
