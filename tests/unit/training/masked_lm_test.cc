#include "server/training/masked_lm.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/models/text_encoder.h"
#include "tests/test_util/gloss_text.h"
#include "tests/test_util/temp_dir.h"
#include "tests/test_util/wordnet.h"

namespace kaizen::training {
namespace {

using ::testing::HasSubstr;

constexpr int64_t kCls = 1;
constexpr int64_t kSep = 2;
constexpr int64_t kMask = 4;

MaskingOptions Masking(int64_t vocab = 1000) {
  MaskingOptions o;
  o.mask_id = kMask;
  o.vocab_size = vocab;
  o.never_mask = {kCls, kSep};
  return o;
}

// 400 rows of ids in [5, 1000) framed by kCls ... kSep, lengths 3..60,
// padded with 0 to 60.
std::pair<torch::Tensor, torch::Tensor> Rows(uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const int64_t n = 400, width = 60;
  torch::Tensor ids = at::randint(5, 1000, {n, width}, gen, torch::TensorOptions(torch::kLong));
  torch::Tensor mask = torch::zeros({n, width}, torch::kLong);
  for (int64_t r = 0; r < n; ++r) {
    const int64_t len = 3 + r % (width - 2);
    mask[r].narrow(0, 0, len).fill_(1);
    ids[r][0] = kCls;
    ids[r][len - 1] = kSep;
  }
  return {ids.masked_fill(mask.eq(0), 0), mask};
}

torch::Tensor Ids(const std::vector<std::vector<int64_t>>& rows) {
  std::vector<int64_t> flat;
  for (const auto& r : rows) flat.insert(flat.end(), r.begin(), r.end());
  return torch::tensor(flat, torch::kLong)
      .view({static_cast<int64_t>(rows.size()), static_cast<int64_t>(rows[0].size())});
}

double Share(const torch::Tensor& part, const torch::Tensor& whole) {
  return part.sum().item<double>() / whole.sum().item<double>();
}

TEST(MaskTokensTest, ChoosesFifteenPercentOfTheTokensAndReplacesThemAsBertDoes) {
  auto [ids, mask] = Rows(1);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(9);
  MaskedBatch out = MaskTokens(ids, mask, Masking(), gen);
  const torch::Tensor chosen = out.labels.ne(kNotPredicted);
  const torch::Tensor eligible = mask.ne(0).logical_and(ids.ne(kCls)).logical_and(ids.ne(kSep));
  // Never padding or a framing token; always the original id as the label.
  EXPECT_FALSE(chosen.logical_and(eligible.logical_not()).any().item<bool>());
  EXPECT_TRUE(at::equal(out.labels.masked_select(chosen), ids.masked_select(chosen)));
  // What was not chosen is unchanged.
  EXPECT_TRUE(at::equal(out.input_ids.masked_select(chosen.logical_not()),
                        ids.masked_select(chosen.logical_not())));
  // About 12,000 eligible tokens: the shares are within a few standard
  // deviations of BERT's.
  EXPECT_NEAR(Share(chosen, eligible), 0.15, 0.015);
  const torch::Tensor masked = chosen.logical_and(out.input_ids.eq(kMask));
  const torch::Tensor kept = chosen.logical_and(out.input_ids.eq(ids));
  EXPECT_NEAR(Share(masked, chosen), 0.8, 0.03);
  EXPECT_NEAR(Share(kept, chosen), 0.1, 0.03);  // random draws rarely hit the original
  const torch::Tensor random =
      chosen.logical_and(out.input_ids.ne(kMask)).logical_and(out.input_ids.ne(ids));
  EXPECT_NEAR(Share(random, chosen), 0.1, 0.03);
}

TEST(MaskTokensTest, TheGeneratorDecides) {
  auto [ids, mask] = Rows(2);
  at::Generator a = at::make_generator<at::CPUGeneratorImpl>(5);
  at::Generator b = at::make_generator<at::CPUGeneratorImpl>(5);
  at::Generator c = at::make_generator<at::CPUGeneratorImpl>(6);
  MaskedBatch x = MaskTokens(ids, mask, Masking(), a);
  MaskedBatch y = MaskTokens(ids, mask, Masking(), b);
  MaskedBatch z = MaskTokens(ids, mask, Masking(), c);
  EXPECT_TRUE(at::equal(x.input_ids, y.input_ids));
  EXPECT_TRUE(at::equal(x.labels, y.labels));
  EXPECT_FALSE(at::equal(x.labels, z.labels));
}

TEST(MaskTokensTest, ABatchAlwaysHasAPredictionWhenItCanHaveOne) {
  torch::Tensor ids = Ids({{kCls, 10, 11, kSep}});
  torch::Tensor mask = torch::ones_like(ids);
  MaskingOptions rare = Masking();
  rare.mask_probability = 0.0;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
    MaskedBatch out = MaskTokens(ids, mask, rare, gen);
    const torch::Tensor chosen = out.labels.ne(kNotPredicted);
    ASSERT_EQ(chosen.sum().item<int64_t>(), 1);
    EXPECT_FALSE(chosen[0][0].item<bool>());
    EXPECT_FALSE(chosen[0][3].item<bool>());
  }
  // Nothing eligible: nothing chosen, nothing changed.
  torch::Tensor framing_only = Ids({{kCls, kSep, 0}});
  torch::Tensor framing_mask = Ids({{1, 1, 0}});
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(0);
  MaskedBatch out = MaskTokens(framing_only, framing_mask, Masking(), gen);
  EXPECT_TRUE(out.labels.eq(kNotPredicted).all().item<bool>());
  EXPECT_TRUE(at::equal(out.input_ids, framing_only));
}

TEST(MaskTokensTest, BadOptionsAreNamed) {
  MaskingOptions o = Masking();
  o.mask_id = 1000;
  EXPECT_THAT(ValidateMaskingOptions(o).message(), HasSubstr("mask_id 1000 is outside"));
  o = Masking();
  o.replace_with_mask = 0.95;
  EXPECT_THAT(ValidateMaskingOptions(o).message(), HasSubstr("replace_with_random <= 1"));
  o = Masking(1);
  o.mask_id = 0;
  EXPECT_THAT(ValidateMaskingOptions(o).message(), HasSubstr("at least 2 ids"));
  EXPECT_TRUE(ValidateMaskingOptions(Masking()).ok());
}

TEST(MaskedLanguageModelLossTest, IsTheCrossEntropyOfTheChosenPositions) {
  torch::Tensor logits = torch::randn({2, 3, 7});
  torch::Tensor labels = Ids({{kNotPredicted, 4, kNotPredicted}, {6, kNotPredicted, 0}});
  const torch::Tensor log_p = torch::log_softmax(logits, 2);
  const double expected = -(log_p[0][1][4] + log_p[1][0][6] + log_p[1][2][0]).item<double>() / 3.0;
  EXPECT_NEAR(MaskedLanguageModelLoss(logits, labels).item<double>(), expected, 1e-5);
}

class PretrainTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::vector<test_util::WordNetGloss> all = test_util::WordNetGlosses();
    ASSERT_GT(all.size(), 100000u) << "wordnet-base is not installed";
    std::vector<std::string> train, held_out;
    for (size_t i = 0; i < 6000; ++i) train.push_back(all[i * 11].gloss);
    for (size_t i = 0; i < 1000; ++i) held_out.push_back(all[i * 11 + 5].gloss);
    auto tokenizer = test_util::GlossSentencePiece(dir_, train, 1000);
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    vocab_ = (*tokenizer)->vocab_size();
    auto t = test_util::FrameTexts(**tokenizer, train, 48);
    auto h = test_util::FrameTexts(**tokenizer, held_out, 48);
    ASSERT_TRUE(t.ok() && h.ok());
    train_ = *t;
    held_out_ = *h;
  }

  PretrainOptions Options() const {
    PretrainOptions o;
    o.epochs = 8;
    o.batch_size = 32;
    o.learning_rate = 3e-3;
    o.masking.mask_id = test_util::kGlossMask;
    o.masking.vocab_size = vocab_;
    o.masking.never_mask = {test_util::kGlossBos, test_util::kGlossEos};
    o.pad_id = test_util::kGlossPad;
    return o;
  }

  // A new encoder (always the same weights) in a wrapper whose head is
  // drawn from `head_seed`.
  torch::jit::Module Model(uint64_t head_seed = 0) const {
    models::TextEncoderOptions e;
    e.vocab_size = vocab_;
    e.max_length = 48;
    e.hidden_size = 64;
    e.num_heads = 4;
    e.num_layers = 2;
    e.intermediate_size = 128;
    auto encoder = models::CreateTextEncoder(e);
    EXPECT_TRUE(encoder.ok()) << encoder.status();
    auto mlm = models::CreateMaskedLanguageModel(*encoder, head_seed);
    EXPECT_TRUE(mlm.ok()) << mlm.status();
    return *mlm;
  }

  // The cross-entropy of predicting each held-out token (framing left out)
  // by its frequency in the training sequences (add-one smoothed): what a
  // model that ignores the context could reach.
  double UnigramLoss() const {
    std::vector<double> counts(vocab_, 1.0);
    double total = vocab_;
    for (const auto& s : train_) {
      for (size_t i = 1; i + 1 < s.size(); ++i) counts[s[i]] += 1, total += 1;
    }
    double loss = 0;
    int64_t n = 0;
    for (const auto& s : held_out_) {
      for (size_t i = 1; i + 1 < s.size(); ++i, ++n) loss -= std::log(counts[s[i]] / total);
    }
    return loss / static_cast<double>(n);
  }

  test_util::TempDir dir_;
  int64_t vocab_ = 0;
  std::vector<std::vector<int32_t>> train_, held_out_;
};

// Pretrained on 6,000 glosses (8 epochs), the model predicts masked tokens of 1,000 other
// glosses better than their frequencies alone do: it uses the context. Every
// chosen token is scored as [MASK] (none left visible or replaced), so that
// copying the input earns nothing and the frequencies are a fair baseline.
TEST_F(PretrainTest, LearnsToPredictMaskedTokensFromTheirContext) {
  torch::manual_seed(0);  // dropout
  torch::jit::Module mlm = Model();
  const PretrainOptions options = Options();
  MaskingOptions all_masked = options.masking;
  all_masked.replace_with_mask = 1.0;
  all_masked.replace_with_random = 0.0;
  auto before = EvaluateMaskedLanguageModel(mlm, held_out_, all_masked, options.pad_id, 64, 1);
  ASSERT_TRUE(before.ok()) << before.status();
  std::vector<int32_t> epochs_seen;
  PretrainOptions with_callback = options;
  std::vector<bool> best;
  with_callback.on_epoch = [&](const PretrainEpoch& e) {
    epochs_seen.push_back(e.metrics.epoch());
    best.push_back(e.is_best);
    return absl::OkStatus();
  };
  auto result = PretrainMaskedLanguageModel(mlm, train_, with_callback);
  ASSERT_TRUE(result.ok()) << result.status();
  auto after = EvaluateMaskedLanguageModel(mlm, held_out_, all_masked, options.pad_id, 64, 1);
  ASSERT_TRUE(after.ok()) << after.status();
  const double unigram = UnigramLoss();
  std::cout << "held-out masked-token loss: before " << *before << ", after " << *after
            << ", unigram " << unigram << "; epoch losses";
  for (double l : result->epoch_losses) std::cout << " " << l;
  std::cout << "\n";
  EXPECT_EQ(epochs_seen, (std::vector<int32_t>{1, 2, 3, 4, 5, 6, 7, 8}));
  // Without validation the training loss judges; the first epoch is the
  // best so far by definition.
  ASSERT_EQ(best.size(), 8u);
  EXPECT_TRUE(best[0]);
  for (size_t i = 1; i < best.size(); ++i) {
    EXPECT_EQ(best[i], result->epoch_losses[i] <
                           *std::min_element(result->epoch_losses.begin(),
                                             result->epoch_losses.begin() + static_cast<long>(i)))
        << "epoch " << i + 1;
  }
  EXPECT_EQ(result->steps, 8 * ((6000 + 31) / 32));
  EXPECT_FALSE(result->stopped);
  EXPECT_LT(result->epoch_losses.back(), result->epoch_losses.front());
  EXPECT_LT(*after, *before - 1.0);
  EXPECT_LT(*after, unigram - 0.1);  // measured 5.47 against 5.67
}

TEST_F(PretrainTest, StopsWhenAsked) {
  torch::jit::Module mlm = Model();
  PretrainOptions options = Options();
  int calls = 0;
  options.should_stop = [&] { return ++calls > 3; };
  auto result = PretrainMaskedLanguageModel(mlm, train_, options);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(result->stopped);
  EXPECT_EQ(result->steps, 3);
  EXPECT_TRUE(result->epoch_losses.empty());

  // A stop during the held-out pass: the epoch is not kept or handed out.
  const std::vector<std::vector<int32_t>> few(train_.begin(), train_.begin() + 64);
  const std::vector<std::vector<int32_t>> held_out(held_out_.begin(), held_out_.begin() + 64);
  PretrainOptions validated = Options();
  int64_t batches = 0;
  const std::function<bool()> stop_in_validation = [&] { return ++batches > 1; };
  validated.validation_loss = [&] {
    return EvaluateMaskedLanguageModel(mlm, held_out, validated.masking, validated.pad_id, 16, 3,
                                       stop_in_validation);
  };
  int handed_out = 0;
  validated.on_epoch = [&](const PretrainEpoch&) {
    ++handed_out;
    return absl::OkStatus();
  };
  result = PretrainMaskedLanguageModel(mlm, few, validated);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(result->stopped);
  EXPECT_TRUE(result->epoch_losses.empty());
  EXPECT_EQ(handed_out, 0);
}

std::map<std::string, at::Tensor> Parameters(const torch::jit::Module& module) {
  std::map<std::string, at::Tensor> out;
  for (const auto& p : module.named_parameters(/*recurse=*/true)) {
    out.emplace(p.name, p.value.detach().clone());
  }
  return out;
}

// A run stopped during its second epoch and resumed from its first epoch's
// checkpoint (the encoder's weights as they were then, in a wrapper whose
// head starts elsewhere: the bytes carry the head) has the losses,
// validation losses and final weights of a run that never stopped.
TEST_F(PretrainTest, AResumeAfterAnEpochContinuesAsIfTheRunHadNotStopped) {
  const std::vector<std::vector<int32_t>> train(train_.begin(), train_.begin() + 640);
  const std::vector<std::vector<int32_t>> held_out(held_out_.begin(), held_out_.begin() + 128);
  PretrainOptions o = Options();
  o.epochs = 3;
  const auto validate = [&](torch::jit::Module& mlm) {
    return [&mlm, &o, &held_out]() {
      return EvaluateMaskedLanguageModel(mlm, held_out, o.masking, o.pad_id, 64, 9);
    };
  };

  torch::jit::Module straight = Model();
  PretrainOptions straight_options = o;
  straight_options.validation_loss = validate(straight);
  std::vector<PretrainEpoch> straight_epochs;
  straight_options.on_epoch = [&](const PretrainEpoch& e) {
    straight_epochs.push_back(e);
    return absl::OkStatus();
  };
  auto full = PretrainMaskedLanguageModel(straight, train, straight_options);
  ASSERT_TRUE(full.ok()) << full.status();
  ASSERT_EQ(straight_epochs.size(), 3u);
  for (const PretrainEpoch& e : straight_epochs) {
    EXPECT_GT(e.metrics.val_loss(), 0) << e.metrics.epoch();
    EXPECT_FALSE(e.resume_state.empty());
  }

  // Stopped 5 steps into epoch 2; what epoch 1 handed out is kept.
  torch::jit::Module interrupted = Model();
  PretrainOptions first = o;
  first.validation_loss = validate(interrupted);
  std::string state;
  torch::jit::Module encoder_at_1;
  first.on_epoch = [&](const PretrainEpoch& e) {
    state = e.resume_state;
    encoder_at_1 = interrupted.attr("encoder").toModule().clone();
    return absl::OkStatus();
  };
  const int64_t steps_per_epoch = (640 + 31) / 32;
  int64_t checks = 0;
  first.should_stop = [&] { return ++checks > steps_per_epoch + 5; };
  auto stopped = PretrainMaskedLanguageModel(interrupted, train, first);
  ASSERT_TRUE(stopped.ok()) << stopped.status();
  ASSERT_TRUE(stopped->stopped);
  ASSERT_EQ(stopped->epoch_losses.size(), 1u);
  ASSERT_FALSE(state.empty());

  auto resumed_model = models::CreateMaskedLanguageModel(encoder_at_1, /*seed=*/77);
  ASSERT_TRUE(resumed_model.ok()) << resumed_model.status();
  PretrainOptions second = o;
  second.resume = state;
  second.validation_loss = validate(*resumed_model);
  std::vector<PretrainEpoch> resumed_epochs;
  second.on_epoch = [&](const PretrainEpoch& e) {
    resumed_epochs.push_back(e);
    return absl::OkStatus();
  };
  auto resumed = PretrainMaskedLanguageModel(*resumed_model, train, second);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_FALSE(resumed->stopped);
  EXPECT_EQ(resumed->steps, full->steps);
  ASSERT_EQ(resumed->epoch_losses.size(), 3u) << "the epoch before the resume included";
  ASSERT_EQ(resumed_epochs.size(), 2u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_NEAR(resumed->epoch_losses[i], full->epoch_losses[i], 1e-6) << "epoch " << i + 1;
  }
  for (size_t i = 0; i < 2; ++i) {
    const PretrainEpoch& a = straight_epochs[i + 1];
    const PretrainEpoch& b = resumed_epochs[i];
    EXPECT_EQ(b.metrics.epoch(), a.metrics.epoch());
    EXPECT_NEAR(b.metrics.val_loss(), a.metrics.val_loss(), 1e-6) << a.metrics.epoch();
    EXPECT_EQ(b.is_best, a.is_best) << a.metrics.epoch();
  }
  const auto want = Parameters(straight);
  const auto got = Parameters(*resumed_model);
  ASSERT_EQ(got.size(), want.size());
  for (const auto& [name, value] : want) {
    ASSERT_EQ(got.count(name), 1u) << name;
    // Absolute 1e-5: attention's key biases get no gradient but rounding
    // (softmax ignores a shift), which AdamW turns into steps of ~1e-6.
    EXPECT_TRUE(torch::allclose(got.at(name), value, 1e-4, 1e-5))
        << name << ": largest difference " << (got.at(name) - value).abs().max().item<double>()
        << ", largest value " << value.abs().max().item<double>();
  }
}

TEST_F(PretrainTest, ResumeBytesOfAnotherRunAreRefused) {
  const std::vector<std::vector<int32_t>> train(train_.begin(), train_.begin() + 64);
  PretrainOptions o = Options();
  o.epochs = 2;
  std::string state;
  o.on_epoch = [&](const PretrainEpoch& e) {
    if (e.metrics.epoch() == 1) state = e.resume_state;
    return absl::OkStatus();
  };
  torch::jit::Module mlm = Model();
  ASSERT_TRUE(PretrainMaskedLanguageModel(mlm, train, o).ok());
  ASSERT_FALSE(state.empty());

  PretrainOptions again = Options();
  again.epochs = 2;
  again.resume = state;
  again.seed = 5;
  EXPECT_THAT(PretrainMaskedLanguageModel(mlm, train, again).status().message(),
              HasSubstr("does not continue this run: it is after epoch 1 of seed 0"));
  again.seed = 0;
  again.epochs = 1;  // nothing left to run
  EXPECT_EQ(PretrainMaskedLanguageModel(mlm, train, again).status().code(),
            absl::StatusCode::kInvalidArgument);
  again.epochs = 2;
  again.resume = "garbage";
  EXPECT_THAT(PretrainMaskedLanguageModel(mlm, train, again).status().message(),
              HasSubstr("damaged or truncated"));
  // A head of other shapes: a wrapper around a narrower encoder.
  models::TextEncoderOptions e;
  e.vocab_size = vocab_;
  e.max_length = 48;
  e.hidden_size = 32;
  e.num_heads = 4;
  e.num_layers = 1;
  e.intermediate_size = 64;
  auto narrow = models::CreateTextEncoder(e);
  ASSERT_TRUE(narrow.ok());
  auto other = models::CreateMaskedLanguageModel(*narrow, 0);
  ASSERT_TRUE(other.ok());
  again.resume = state;
  EXPECT_THAT(PretrainMaskedLanguageModel(*other, train, again).status().message(),
              HasSubstr("head does not fit the model"));
  // An error from on_epoch ends the run with it.
  PretrainOptions failing = Options();
  failing.epochs = 2;
  failing.on_epoch = [](const PretrainEpoch&) { return absl::DataLossError("disk full"); };
  torch::jit::Module fresh = Model();
  auto failed = PretrainMaskedLanguageModel(fresh, train, failing);
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(PretrainTest, RefusesIdsOutsideTheVocabularyAndBadOptions) {
  torch::jit::Module mlm = Model();
  std::vector<std::vector<int32_t>> bad = {{1, 5, 2}, {1, static_cast<int32_t>(vocab_), 2}};
  auto result = PretrainMaskedLanguageModel(mlm, bad, Options());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(result.status().message(), HasSubstr("sequence 1 holds id"));
  PretrainOptions other_vocab = Options();
  other_vocab.masking.vocab_size = vocab_ + 1;
  EXPECT_THAT(PretrainMaskedLanguageModel(mlm, train_, other_vocab).status().message(),
              HasSubstr("but the encoder's vocabulary holds"));
  std::vector<std::vector<int32_t>> too_long = {std::vector<int32_t>(49, 7)};
  EXPECT_THAT(PretrainMaskedLanguageModel(mlm, too_long, Options()).status().message(),
              HasSubstr("sequence 0 has 49 tokens; the encoder takes at most 48"));
  std::vector<std::vector<int32_t>> framing_only(40, {test_util::kGlossBos, test_util::kGlossEos});
  EXPECT_THAT(PretrainMaskedLanguageModel(mlm, framing_only, Options()).status().message(),
              HasSubstr("no sequence holds a token to predict"));
  PretrainOptions zero = Options();
  zero.epochs = 0;
  EXPECT_EQ(PretrainMaskedLanguageModel(mlm, train_, zero).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PretrainMaskedLanguageModel(mlm, {}, Options()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kaizen::training
