#include "server/training/text_trainer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>
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

using kaizen::v1::Strategy;
using ::testing::HasSubstr;

constexpr int32_t kPad = 0;

models::TextEncoderOptions Encoder() {
  models::TextEncoderOptions o;
  o.vocab_size = 50;
  o.max_length = 16;
  o.hidden_size = 16;
  o.num_layers = 2;
  o.num_heads = 2;
  o.intermediate_size = 32;
  o.num_classes = 7;
  o.seed = 3;
  return o;
}

torch::jit::Module Base() {
  absl::StatusOr<torch::jit::Module> m = models::CreateTextEncoder(Encoder());
  EXPECT_TRUE(m.ok()) << m.status();
  return *m;
}

kaizen::v1::Model Metadata() {
  kaizen::v1::Model m;
  m.set_architecture(std::string(models::kTransformerSmall));
  m.mutable_head()->set_module_path("fc");
  return m;
}

// Class 0 holds token 10, class 1 token 11, class 2 token 12, among random
// tokens 20..49; lengths 4..12, framed by 1 ... 2.
TextExamples Synthetic(int64_t n, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  TextExamples e;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t label = i % 3;
    const int64_t len =
        4 + at::randint(0, 9, {1}, gen, torch::TensorOptions(torch::kLong)).item<int64_t>();
    std::vector<int32_t> s = {1};
    for (int64_t k = 0; k < len; ++k) {
      s.push_back(static_cast<int32_t>(
          20 + at::randint(0, 30, {1}, gen, torch::TensorOptions(torch::kLong)).item<int64_t>()));
    }
    s[1 + (i % len)] = static_cast<int32_t>(10 + label);
    s.push_back(2);
    e.sequences.push_back(s);
    e.labels.push_back(label);
  }
  return e;
}

TextTrainerOptions Options(Strategy strategy, int32_t epochs = 3) {
  TextTrainerOptions o;
  o.strategy = strategy;
  o.hyperparameters = DefaultTextHyperparameters(strategy, epochs, 16);
  o.hyperparameters.set_seed(5);
  o.base = Base();
  o.base_metadata = Metadata();
  o.num_classes = 3;
  o.pad_id = kPad;
  return o;
}

// Which of the base's parameters the trained classifier changed, by name.
std::map<std::string, bool> Changed(const torch::jit::Module& base,
                                    const torch::jit::Module& trained) {
  std::map<std::string, torch::Tensor> before;
  for (const auto& p : base.named_parameters()) before[p.name] = p.value;
  std::map<std::string, bool> changed;
  for (const auto& p : trained.named_parameters()) {
    auto it = before.find(p.name);
    if (it == before.end() || it->second.sizes() != p.value.sizes()) continue;
    changed[p.name] = !at::equal(it->second, p.value);
  }
  return changed;
}

TEST(TextTrainerTest, DefaultsPerStrategy) {
  const auto fe = DefaultTextHyperparameters(kaizen::v1::STRATEGY_FEATURE_EXTRACTION, 10, 32);
  EXPECT_EQ(fe.learning_rate(), 1e-2);
  EXPECT_EQ(fe.optimizer().kind(), kaizen::v1::OPTIMIZER_ADAMW);
  EXPECT_EQ(fe.schedule().kind(), kaizen::v1::SCHEDULE_COSINE);
  EXPECT_EQ(fe.schedule().warmup_epochs(), 1.0);
  const auto ft = DefaultTextHyperparameters(kaizen::v1::STRATEGY_FINE_TUNE, 10, 32);
  EXPECT_EQ(ft.trainable_blocks(), 1);
  EXPECT_EQ(ft.learning_rate(), 1e-3);
  EXPECT_EQ(ft.backbone_lr_multiplier(), 0.1);
  const auto scratch = DefaultTextHyperparameters(kaizen::v1::STRATEGY_SCRATCH, 10, 32);
  EXPECT_EQ(scratch.backbone_lr_multiplier(), 1.0);
  EXPECT_EQ(scratch.epochs(), 10);
  EXPECT_EQ(scratch.batch_size(), 32);
}

TEST(TextTrainerTest, PadSequencesPadsToTheLongestRow) {
  auto [ids, mask] = PadSequences({{1, 5, 2}, {1, 2}}, 9, torch::kCPU);
  EXPECT_EQ(ids.sizes(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(ids.dtype(), torch::kLong);
  EXPECT_EQ(ids[1][2].item<int64_t>(), 9);
  EXPECT_EQ(mask.sum().item<int64_t>(), 5);
}

TEST(TextTrainerTest, FeatureExtractionTrainsTheHeadAlone) {
  torch::manual_seed(0);
  TextTrainerOptions o = Options(kaizen::v1::STRATEGY_FEATURE_EXTRACTION, 5);
  const TextExamples train = Synthetic(96, 1);
  absl::StatusOr<TextTrainResult> r = TrainTextClassifier(o, train);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->head_path, "fc");
  EXPECT_EQ(r->trainable_parameters, 16 * 3 + 3);
  for (const auto& [name, changed] : Changed(o.base, r->classifier)) {
    EXPECT_FALSE(changed) << name;  // every encoder parameter as it was
  }
  EXPECT_EQ(r->classifier.attr("fc").toModule().attr("weight").toTensor().sizes(),
            (std::vector<int64_t>{3, 16}));
  ASSERT_EQ(r->epochs.size(), 5u);
  EXPECT_LT(r->epochs.back().train_loss(), r->epochs.front().train_loss());
}

TEST(TextTrainerTest, FineTuneTrainsTheTopBlockAndTheHead) {
  torch::manual_seed(0);
  TextTrainerOptions o = Options(kaizen::v1::STRATEGY_FINE_TUNE, 2);
  absl::StatusOr<TextTrainResult> r = TrainTextClassifier(o, Synthetic(64, 2));
  ASSERT_TRUE(r.ok()) << r.status();
  int changed_top = 0;
  for (const auto& [name, changed] : Changed(o.base, r->classifier)) {
    if (name.rfind("layer2.", 0) == 0) {
      changed_top += changed;
    } else {
      EXPECT_FALSE(changed) << name;
    }
  }
  EXPECT_GT(changed_top, 10);
}

TEST(TextTrainerTest, FullAndScratchTrainEverything) {
  for (Strategy strategy : {kaizen::v1::STRATEGY_FULL, kaizen::v1::STRATEGY_SCRATCH}) {
    SCOPED_TRACE(kaizen::v1::Strategy_Name(strategy));
    torch::manual_seed(0);
    TextTrainerOptions o = Options(strategy, 1);
    absl::StatusOr<TextTrainResult> r = TrainTextClassifier(o, Synthetic(32, 3));
    ASSERT_TRUE(r.ok()) << r.status();
    // Every parameter trains: the encoder's and the new head's (3 classes).
    models::TextEncoderOptions three = Encoder();
    three.num_classes = 3;
    EXPECT_EQ(r->trainable_parameters, models::TextEncoderParameterCount(three));
    for (const auto& [name, changed] : Changed(o.base, r->classifier)) {
      EXPECT_TRUE(changed) << name;
    }
  }
}

TEST(TextTrainerTest, ReportsValidationEveryEpochAndPredicts) {
  torch::manual_seed(0);
  TextTrainerOptions o = Options(kaizen::v1::STRATEGY_SCRATCH, 8);
  std::vector<int32_t> seen;
  o.on_epoch = [&](const kaizen::v1::EpochMetrics& m) { seen.push_back(m.epoch()); };
  const TextExamples train = Synthetic(240, 4);
  const TextExamples validation = Synthetic(60, 5);
  absl::StatusOr<TextTrainResult> r = TrainTextClassifier(o, train, &validation);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(seen, (std::vector<int32_t>{1, 2, 3, 4, 5, 6, 7, 8}));
  std::cout << "validation accuracy: " << r->epochs.back().val_accuracy() << "\n";
  EXPECT_GT(r->epochs.back().val_accuracy(),
            0.8);  // measured 0.95: the class token is easy to find
  absl::StatusOr<TextPredictions> p = PredictText(r->classifier, validation.sequences, kPad, 7);
  ASSERT_TRUE(p.ok()) << p.status();
  int64_t correct = 0;
  for (size_t i = 0; i < p->classes.size(); ++i) correct += p->classes[i] == validation.labels[i];
  EXPECT_NEAR(static_cast<double>(correct) / 60.0, r->epochs.back().val_accuracy(), 1e-9);
  EXPECT_EQ(p->logits.sizes(), (std::vector<int64_t>{60, 3}));
}

// DISTILL learns from the teacher's logits: with labels that are noise and a
// teacher that knows the class token, the student finds the classes; SCRATCH
// on the same noisy labels does not.
TEST(TextTrainerTest, DistillLearnsTheTeachersAnswersWhereTheLabelsAreNoise) {
  TextExamples train = Synthetic(240, 4);
  const TextExamples validation = Synthetic(60, 5);
  const torch::Tensor truth = torch::tensor(train.labels, torch::kLong);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(11);
  for (int64_t& label : train.labels) {
    label = at::randint(0, 3, {1}, gen, torch::TensorOptions(torch::kLong)).item<int64_t>();
  }
  TextTrainerOptions d = Options(kaizen::v1::STRATEGY_DISTILL, 8);
  d.distillation.emplace();
  d.distillation->teacher_logits = 5.0 * torch::one_hot(truth, 3).to(torch::kFloat);
  d.distillation->temperature = 2;
  d.distillation->alpha = 0.9;
  absl::StatusOr<TextTrainResult> distilled = TrainTextClassifier(d, train, &validation);
  ASSERT_TRUE(distilled.ok()) << distilled.status();
  absl::StatusOr<TextTrainResult> noisy =
      TrainTextClassifier(Options(kaizen::v1::STRATEGY_SCRATCH, 8), train, &validation);
  ASSERT_TRUE(noisy.ok()) << noisy.status();
  const double student = distilled->epochs.back().val_accuracy();
  const double scratch = noisy->epochs.back().val_accuracy();
  std::cout << "validation accuracy: distilled " << student << ", scratch on the noisy labels "
            << scratch << "\n";
  EXPECT_GT(student, 0.8);
  EXPECT_LT(scratch, 0.6);
  // Every parameter trains.
  for (const auto& [name, changed] : Changed(d.base, distilled->classifier)) {
    EXPECT_TRUE(changed) << name;
  }
}

// The examples of `e` whose label is in [lo, hi).
TextExamples Classes(const TextExamples& e, int64_t lo, int64_t hi) {
  TextExamples out;
  for (size_t i = 0; i < e.labels.size(); ++i) {
    if (e.labels[i] < lo || e.labels[i] >= hi) continue;
    out.sequences.push_back(e.sequences[i]);
    out.labels.push_back(e.labels[i]);
  }
  return out;
}

// KL(softmax(previous / T) || softmax(student[:, :K] / T)) averaged over rows,
// K = previous's columns: how far a student's old-class answers moved.
double OldClassDrift(const torch::Tensor& previous, const torch::Tensor& student, double t) {
  const int64_t k = previous.size(1);
  const torch::Tensor p = torch::softmax(previous / t, 1);
  const torch::Tensor log_q = torch::log_softmax(student.narrow(1, 0, k) / t, 1);
  return (p * (p.log() - log_q)).sum(1).mean().item<double>();
}

// INCREMENTAL: a classifier of classes 0 and 1 continues on class 2's texts
// and replayed exemplars of the old classes. Its head grows with the old
// rows kept (a run at a negligible learning rate answers as the previous
// classifier on the old classes), and the distillation term holds the old
// classes' answers near the previous classifier's: with weight 5 they move
// less than with weight 0 (the cross-entropy alone).
TEST(TextTrainerTest, IncrementalGrowsTheHeadAndDistillationHoldsTheOldAnswers) {
  TextTrainerOptions first = Options(kaizen::v1::STRATEGY_SCRATCH, 12);
  first.hyperparameters.set_learning_rate(5e-3);
  first.num_classes = 2;
  absl::StatusOr<TextTrainResult> previous =
      TrainTextClassifier(first, Classes(Synthetic(240, 21), 0, 2));
  ASSERT_TRUE(previous.ok()) << previous.status();
  kaizen::v1::Model previous_metadata = Metadata();
  previous_metadata.mutable_head()->set_module_path(previous->head_path);

  // The new class's 100 texts and 8 exemplars of each old class, replayed
  // class-balanced as a job does.
  TextExamples train = Classes(Synthetic(300, 22), 2, 3);
  const TextExamples exemplars = Classes(Synthetic(24, 23), 0, 2);
  ASSERT_EQ(exemplars.labels.size(), 16u);
  for (int repeat = 0; repeat < 6; ++repeat) {
    train.sequences.insert(train.sequences.end(), exemplars.sequences.begin(),
                           exemplars.sequences.end());
    train.labels.insert(train.labels.end(), exemplars.labels.begin(), exemplars.labels.end());
  }
  absl::StatusOr<TextPredictions> before = PredictText(previous->classifier, train.sequences, kPad);
  ASSERT_TRUE(before.ok()) << before.status();

  TextTrainerOptions inc = Options(kaizen::v1::STRATEGY_INCREMENTAL, 8);
  inc.hyperparameters.set_learning_rate(5e-3);
  inc.hyperparameters.set_trainable_blocks(3);
  inc.base = previous->classifier;
  inc.base_metadata = previous_metadata;
  inc.incremental.emplace();
  inc.incremental->previous_logits = before->logits;

  TextTrainerOptions still = inc;
  still.hyperparameters.set_epochs(1);
  still.hyperparameters.set_learning_rate(1e-12);
  absl::StatusOr<TextTrainResult> grown = TrainTextClassifier(still, train);
  ASSERT_TRUE(grown.ok()) << grown.status();
  absl::StatusOr<TextPredictions> same = PredictText(grown->classifier, train.sequences, kPad);
  ASSERT_TRUE(same.ok()) << same.status();
  ASSERT_EQ(same->logits.size(1), 3);
  EXPECT_TRUE(torch::allclose(same->logits.narrow(1, 0, 2), before->logits, 1e-4, 1e-4))
      << "the old classes' logits changed before any training";

  std::map<double, double> drift;
  for (const double weight : {0.0, 5.0}) {
    TextTrainerOptions run = inc;
    run.incremental->weight = weight;
    absl::StatusOr<TextTrainResult> learned = TrainTextClassifier(run, train);
    ASSERT_TRUE(learned.ok()) << learned.status();
    EXPECT_LT(learned->epochs.back().train_loss(), learned->epochs.front().train_loss());
    absl::StatusOr<TextPredictions> after = PredictText(learned->classifier, train.sequences, kPad);
    ASSERT_TRUE(after.ok()) << after.status();
    ASSERT_EQ(after->logits.size(1), 3);
    drift[weight] = OldClassDrift(before->logits, after->logits, run.incremental->temperature);
  }
  std::cout << "old classes' answers moved (KL at T=2): weight 0 " << drift[0.0] << ", weight 5 "
            << drift[5.0] << "\n";
  EXPECT_LT(drift[5.0], drift[0.0]);

  // The previous logits must match the training examples and strategy.
  TextTrainerOptions wrong = inc;
  wrong.incremental->previous_logits = torch::zeros({3, 2});
  EXPECT_THAT(TrainTextClassifier(wrong, train).status().message(),
              HasSubstr("the previous classifier's logits must be ["));
  TextTrainerOptions missing = inc;
  missing.incremental.reset();
  EXPECT_THAT(TrainTextClassifier(missing, train).status().message(),
              HasSubstr("STRATEGY_INCREMENTAL needs the previous classifier's logits"));
}

// A checkpoint after each epoch; a run given one continues from that epoch
// with the losses of a run that never stopped.
TEST(TextTrainerTest, ACheckpointedRunResumesWithTheSameLosses) {
  const TextExamples train = Synthetic(96, 8);
  const TextExamples validation = Synthetic(30, 9);
  TextTrainerOptions o = Options(kaizen::v1::STRATEGY_SCRATCH, 4);
  std::vector<TextTrainerOptions::Checkpoint> checkpoints;
  o.on_checkpoint = [&](const TextTrainerOptions::Checkpoint& c) {
    checkpoints.push_back(c);
    return absl::OkStatus();
  };
  absl::StatusOr<TextTrainResult> straight = TrainTextClassifier(o, train, &validation);
  ASSERT_TRUE(straight.ok()) << straight.status();
  ASSERT_EQ(checkpoints.size(), 4u);
  EXPECT_EQ(checkpoints[1].epoch, 2);
  EXPECT_EQ(checkpoints[1].metrics.epoch(), 2);
  EXPECT_TRUE(checkpoints[0].is_best);  // the first always is

  TextTrainerOptions resumed = Options(kaizen::v1::STRATEGY_SCRATCH, 4);
  resumed.base = checkpoints[1].classifier;
  resumed.base_metadata.mutable_head()->set_module_path(checkpoints[1].head_path);
  resumed.resume_state = checkpoints[1].resume_state;
  std::vector<int32_t> ran;
  resumed.on_epoch = [&](const kaizen::v1::EpochMetrics& m) { ran.push_back(m.epoch()); };
  absl::StatusOr<TextTrainResult> r = TrainTextClassifier(resumed, train, &validation);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(ran, (std::vector<int32_t>{3, 4}));
  ASSERT_EQ(r->epochs.size(), 4u);  // the checkpoint's two, then two more
  for (size_t e = 0; e < 4; ++e) {
    EXPECT_NEAR(r->epochs[e].train_loss(), straight->epochs[e].train_loss(), 1e-5) << e;
    EXPECT_NEAR(r->epochs[e].val_accuracy(), straight->epochs[e].val_accuracy(), 1e-9) << e;
  }

  TextTrainerOptions garbled = resumed;
  garbled.resume_state = "not a resume state";
  EXPECT_EQ(TrainTextClassifier(garbled, train).status().code(),
            absl::StatusCode::kInvalidArgument);
  TextTrainerOptions other_classes = resumed;
  other_classes.num_classes = 4;
  EXPECT_FALSE(TrainTextClassifier(other_classes, Synthetic(12, 8)).ok());
}

TEST(TextTrainerTest, StopsWhenAsked) {
  TextTrainerOptions o = Options(kaizen::v1::STRATEGY_FULL, 3);
  int calls = 0;
  o.should_stop = [&] { return ++calls > 2; };
  absl::StatusOr<TextTrainResult> r = TrainTextClassifier(o, Synthetic(64, 6));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->stopped);
  EXPECT_TRUE(r->epochs.empty());
}

TEST(TextTrainerTest, BadInputIsNamed) {
  TextExamples train = Synthetic(10, 7);
  train.labels[4] = 3;
  auto r = TrainTextClassifier(Options(kaizen::v1::STRATEGY_FULL), train);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("training label 3 of sequence 4 is outside [0, 3)"));
  auto distill = TrainTextClassifier(Options(kaizen::v1::STRATEGY_DISTILL), Synthetic(10, 7));
  EXPECT_THAT(distill.status().message(), HasSubstr("STRATEGY_DISTILL needs the teacher's logits"));
  TextTrainerOptions wrong_logits = Options(kaizen::v1::STRATEGY_DISTILL);
  wrong_logits.distillation.emplace();
  wrong_logits.distillation->teacher_logits = torch::zeros({10, 4});
  EXPECT_THAT(TrainTextClassifier(wrong_logits, Synthetic(10, 7)).status().message(),
              HasSubstr("the teacher's logits must be [10, 3] (one row per training example, one "
                        "column per class), not [10, 4]"));
  TextTrainerOptions logits_without_distill = Options(kaizen::v1::STRATEGY_FULL);
  logits_without_distill.distillation.emplace();
  EXPECT_THAT(TrainTextClassifier(logits_without_distill, Synthetic(10, 7)).status().message(),
              HasSubstr("teacher logits are given but the strategy is not STRATEGY_DISTILL"));
  TextTrainerOptions one = Options(kaizen::v1::STRATEGY_FULL);
  one.num_classes = 1;
  EXPECT_THAT(TrainTextClassifier(one, Synthetic(10, 7)).status().message(),
              HasSubstr("at least 2 classes"));
  TextExamples empty_row = Synthetic(10, 7);
  empty_row.sequences[2].clear();
  EXPECT_THAT(TrainTextClassifier(Options(kaizen::v1::STRATEGY_FULL), empty_row).status().message(),
              HasSubstr("training sequence 2 is empty"));
  torch::jit::Module model = Base();
  EXPECT_EQ(PredictText(model, {}, kPad).status().code(), absl::StatusCode::kInvalidArgument);
  TextTrainerOptions mlp = Options(kaizen::v1::STRATEGY_FULL);
  mlp.hyperparameters.mutable_head()->set_kind(kaizen::v1::HEAD_KIND_MLP);
  EXPECT_THAT(TrainTextClassifier(mlp, Synthetic(10, 7)).status().message(),
              HasSubstr("text classifiers take a LINEAR head"));
  TextExamples too_long = Synthetic(10, 7);
  too_long.sequences[6].assign(17, 20);
  EXPECT_THAT(TrainTextClassifier(Options(kaizen::v1::STRATEGY_FULL), too_long).status().message(),
              HasSubstr("training sequence 6 has 17 tokens; the encoder takes at most 16"));
  TextExamples unknown_id = Synthetic(10, 7);
  unknown_id.sequences[1][1] = 50;
  EXPECT_THAT(
      TrainTextClassifier(Options(kaizen::v1::STRATEGY_FULL), unknown_id).status().message(),
      HasSubstr("training sequence 1 holds id 50, outside the encoder's vocabulary [0, 50)"));
  // An empty validation set is no validation.
  const TextExamples no_validation;
  auto r2 = TrainTextClassifier(Options(kaizen::v1::STRATEGY_FEATURE_EXTRACTION, 1),
                                Synthetic(10, 7), &no_validation);
  ASSERT_TRUE(r2.ok()) << r2.status();
  EXPECT_EQ(r2->epochs.back().val_accuracy(), 0.0);
}

// From scratch, on real text: WordNet glosses of four lexicographer
// categories, tokenised by a SentencePiece model trained on glosses; held-out
// accuracy well above the largest class's share (a quarter).
TEST(TextTrainerTest, LearnsToClassifyWordNetGlosses) {
  const std::vector<test_util::WordNetGloss> all = test_util::WordNetGlosses();
  ASSERT_GT(all.size(), 100000u) << "wordnet-base is not installed";
  const std::vector<std::string> categories = {"noun.animal", "noun.food", "verb.motion",
                                               "noun.artifact"};
  std::vector<std::string> corpus, train_text, test_text;
  std::vector<int64_t> train_label, test_label;
  std::map<std::string, int> seen;
  for (const test_util::WordNetGloss& g : all) {
    if (corpus.size() < 10000) corpus.push_back(g.gloss);
    auto it = std::find(categories.begin(), categories.end(), g.category);
    if (it == categories.end()) continue;
    const int k = seen[g.category]++;
    if (k < 300) {
      train_text.push_back(g.gloss);
      train_label.push_back(it - categories.begin());
    } else if (k < 400) {
      test_text.push_back(g.gloss);
      test_label.push_back(it - categories.begin());
    }
  }
  test_util::TempDir dir;
  auto tokenizer = test_util::GlossSentencePiece(dir, corpus, 2000);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  auto train = test_util::FrameTexts(**tokenizer, train_text, 64);
  auto test = test_util::FrameTexts(**tokenizer, test_text, 64);
  ASSERT_TRUE(train.ok() && test.ok());
  models::TextEncoderOptions e;
  e.vocab_size = (*tokenizer)->vocab_size();
  e.max_length = 64;
  e.hidden_size = 64;
  e.num_heads = 4;
  e.intermediate_size = 128;
  e.pooling = models::TextPooling::kMaskedMean;
  auto base = models::CreateTextEncoder(e);
  ASSERT_TRUE(base.ok());
  TextTrainerOptions o;
  o.strategy = kaizen::v1::STRATEGY_SCRATCH;
  o.hyperparameters = DefaultTextHyperparameters(o.strategy, 6, 32);
  o.hyperparameters.set_seed(1);
  o.base = *base;
  o.base_metadata = Metadata();
  o.num_classes = 4;
  o.pad_id = test_util::kGlossPad;
  torch::manual_seed(0);
  const TextExamples held_out{*test, test_label};
  auto r = TrainTextClassifier(o, TextExamples{*train, train_label}, &held_out);
  ASSERT_TRUE(r.ok()) << r.status();
  std::cout << "held-out accuracy on 4 categories:";
  for (const auto& m : r->epochs) std::cout << " " << m.val_accuracy();
  std::cout << "\n";
  EXPECT_GT(r->epochs.back().val_accuracy(), 0.6);
}

}  // namespace
}  // namespace kaizen::training
