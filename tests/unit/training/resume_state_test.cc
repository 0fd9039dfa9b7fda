#include "server/training/resume_state.h"

#include <cstring>
#include <type_traits>

#include "gtest/gtest.h"

namespace kaizen::training {
namespace {

TEST(ResumeStateTest, EveryFieldSurvivesARoundTrip) {
  ResumeState s;
  s.epochs_completed = 3;
  s.global_step = 41;
  s.seed = 0xfeedfacecafebeefULL;
  s.has_best = true;
  s.best_metric = 0.875;
  s.best_epoch = 2;
  s.patience_reference = 0.85;
  s.epochs_without_improvement = 1;
  s.loss_scale = 32768;
  s.history.emplace_back().set_train_loss(1.25);
  s.history.emplace_back().set_val_accuracy(0.5);
  s.optimizer = std::string("opt\0state", 9);
  s.good_steps = 17;
  s.position.step = 5;
  s.position.loss_sum = 12.5;
  s.position.correct = 30;
  s.position.seen = 40;
  s.position.learning_rate = 3e-4;
  s.position.seconds = 1.5;
  s.position.torch_rng = std::string("\x01\x00\x02", 3);
  s.position.cuda_rng = "cuda";
  s.position.augment_rng = "augment";
  s.feature_standardization = std::string("mean\0std", 8);
  s.masked_lm_head = std::string("head\0weights", 12);

  absl::StatusOr<ResumeState> back = DecodeResumeState(EncodeResumeState(s));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->epochs_completed, 3);
  EXPECT_EQ(back->global_step, 41);
  EXPECT_EQ(back->seed, s.seed);
  EXPECT_TRUE(back->has_best);
  EXPECT_EQ(back->best_metric, 0.875);
  EXPECT_EQ(back->best_epoch, 2);
  EXPECT_EQ(back->patience_reference, 0.85);
  EXPECT_EQ(back->epochs_without_improvement, 1);
  EXPECT_EQ(back->loss_scale, 32768);
  ASSERT_EQ(back->history.size(), 2u);
  EXPECT_EQ(back->history[0].train_loss(), 1.25);
  EXPECT_EQ(back->history[1].val_accuracy(), 0.5);
  EXPECT_EQ(back->optimizer, s.optimizer);
  EXPECT_EQ(back->good_steps, 17);
  EXPECT_EQ(back->position.step, 5);
  EXPECT_EQ(back->position.loss_sum, 12.5);
  EXPECT_EQ(back->position.correct, 30);
  EXPECT_EQ(back->position.seen, 40);
  EXPECT_EQ(back->position.learning_rate, 3e-4);
  EXPECT_EQ(back->position.seconds, 1.5);
  EXPECT_EQ(back->position.torch_rng, s.position.torch_rng);
  EXPECT_EQ(back->position.cuda_rng, "cuda");
  EXPECT_EQ(back->position.augment_rng, "augment");
  EXPECT_EQ(back->feature_standardization, s.feature_standardization);
  EXPECT_EQ(back->masked_lm_head, s.masked_lm_head);
}

// A state without a masked-language-model head is written as version 3,
// which the previous release reads (a replica not yet upgraded can take
// over any job but a MASKED_LM one); with a head, as version 4, which ends
// with it.
TEST(ResumeStateTest, OnlyAMaskedLanguageModelsStateNeedsTheFourthVersion) {
  ResumeState s;
  s.epochs_completed = 2;
  s.feature_standardization = "standardisation";
  const std::string v3 = EncodeResumeState(s);
  EXPECT_EQ(v3[4], 3) << "the version, right after the magic";
  absl::StatusOr<ResumeState> back = DecodeResumeState(v3);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->epochs_completed, 2);
  EXPECT_EQ(back->feature_standardization, "standardisation");
  EXPECT_TRUE(back->masked_lm_head.empty());

  s.masked_lm_head = "head";
  const std::string v4 = EncodeResumeState(s);
  EXPECT_EQ(v4[4], 4);
  EXPECT_EQ(v4.size(), v3.size() + 8 + 4) << "the head's length and bytes";
  // Version 3 bytes that carry more are damaged.
  std::string longer = v3 + std::string(8, '\0');
  EXPECT_FALSE(DecodeResumeState(longer).ok());
}

// Version 2 (no feature standardisation): a FEATURE_EXTRACTION job
// checkpointed before it existed resumes with an empty field, and so keeps
// training its head on raw features.
TEST(ResumeStateTest, TheSecondVersionStillDecodes) {
  ResumeState s;
  s.epochs_completed = 4;
  s.position.step = 3;
  s.position.augment_rng = "augment";
  std::string v2 = EncodeResumeState(s);
  // Version 3 ends with the field's 8-byte length (0 here).
  ASSERT_EQ(v2.substr(v2.size() - 8), std::string(8, '\0'));
  v2.resize(v2.size() - 8);
  v2[4] = 2;  // the version, right after the magic
  absl::StatusOr<ResumeState> back = DecodeResumeState(v2);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->epochs_completed, 4);
  EXPECT_EQ(back->position.step, 3);
  EXPECT_EQ(back->position.augment_rng, "augment");
  EXPECT_TRUE(back->feature_standardization.empty());
}

// Version 1, as servers before pause/resume wrote it (epoch boundaries only):
// a job they checkpointed must still resume after an upgrade.
TEST(ResumeStateTest, TheFirstVersionStillDecodes) {
  std::string v1;
  auto put = [&v1](auto value) {
    static_assert(std::is_trivially_copyable_v<decltype(value)>);
    char buf[sizeof(value)];
    std::memcpy(buf, &value, sizeof(value));
    v1.append(buf, sizeof(value));
  };
  v1 += "KZRS";
  put(uint32_t{1});
  put(int32_t{2});   // epochs_completed
  put(int64_t{8});   // global_step
  put(uint64_t{7});  // seed
  put(uint8_t{1});   // has_best
  put(double{0.5});  // best_metric
  put(int32_t{2});   // best_epoch
  put(double{0.5});  // patience_reference
  put(int32_t{0});   // epochs_without_improvement
  put(double{0});    // loss_scale
  put(uint64_t{0});  // history entries
  put(uint64_t{3});  // optimizer bytes
  v1 += "abc";
  absl::StatusOr<ResumeState> s = DecodeResumeState(v1);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->epochs_completed, 2);
  EXPECT_EQ(s->global_step, 8);
  EXPECT_EQ(s->seed, 7u);
  EXPECT_EQ(s->optimizer, "abc");
  EXPECT_EQ(s->position.step, 0) << "a version 1 state stands at an epoch boundary";
  EXPECT_TRUE(s->position.torch_rng.empty());
  // A byte more than version 1 holds is damage, not a newer field.
  EXPECT_FALSE(DecodeResumeState(v1 + "x").ok());
}

TEST(ResumeStateTest, DamagedOrUnknownEncodingsAreRefused) {
  ResumeState s;
  s.position.step = 2;
  s.position.torch_rng = "rng";
  const std::string bytes = EncodeResumeState(s);
  for (size_t n : {size_t{0}, size_t{3}, size_t{8}, bytes.size() - 1}) {
    absl::StatusOr<ResumeState> cut = DecodeResumeState(bytes.substr(0, n));
    EXPECT_EQ(cut.status().code(), absl::StatusCode::kInvalidArgument) << n << " bytes";
  }
  std::string future = bytes;
  future[4] = 99;  // the version, right after the magic
  absl::StatusOr<ResumeState> newer = DecodeResumeState(future);
  EXPECT_EQ(newer.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(newer.status().message().find("another Kaizen version"), absl::string_view::npos);
}

}  // namespace
}  // namespace kaizen::training
