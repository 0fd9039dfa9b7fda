#include "server/jobs/text_job.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <limits>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "server/common/sha256.h"
#include "server/text/sentencepiece_tokenizer.h"
#include "tests/test_util/temp_dir.h"
#include "tests/test_util/wordnet.h"

namespace kaizen::jobs {
namespace {

using ::testing::HasSubstr;

// `per_class` glosses of each of three categories, skipping the first `skip`.
LabelledTexts Glosses(int per_class, int skip = 0) {
  const std::vector<std::string> classes = {"noun.animal", "noun.food", "verb.motion"};
  LabelledTexts out;
  out.class_names = classes;
  std::map<std::string, int> seen;
  for (const test_util::WordNetGloss& g : test_util::WordNetGlosses()) {
    for (size_t c = 0; c < classes.size(); ++c) {
      if (g.category != classes[c]) continue;
      const int n = seen[g.category]++;
      if (n < skip || n >= skip + per_class) continue;
      out.texts.push_back(g.gloss);
      out.labels.push_back(static_cast<int64_t>(c));
    }
  }
  return out;
}

v1::StartFineTuneRequest Request(const std::string& base, v1::Strategy strategy) {
  v1::StartFineTuneRequest r;
  r.set_base_model(base);
  r.set_dataset("texts");
  r.set_output_model("out");
  r.set_strategy(strategy);
  return r;
}

v1::Model TextModel(int32_t max_length) {
  v1::Model m;
  m.set_name("enc");
  m.mutable_text_input()->set_max_length(max_length);
  return m;
}

TEST(ReadTextRecordsTest, ReadsEveryTextWithItsLabelInOrder) {
  test_util::TempDir dir;
  const std::string path = dir.File("texts.rec");
  auto writer = datasets::RecordFileWriter::Create(path);
  ASSERT_TRUE(writer.ok()) << writer.status();
  ASSERT_TRUE((*writer)->AppendText(1, "a dog, barking").ok());
  ASSERT_TRUE((*writer)->AppendText(0, std::string(3000, 'x') + " long enough to deflate").ok());
  ASSERT_TRUE((*writer)->Finish({"food", "animal"}).ok());
  auto file = datasets::RecordFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  absl::StatusOr<LabelledTexts> texts = ReadTextRecords(**file);
  ASSERT_TRUE(texts.ok()) << texts.status();
  EXPECT_EQ(texts->class_names, (std::vector<std::string>{"food", "animal"}));
  ASSERT_EQ(texts->texts.size(), 2u);
  EXPECT_EQ(texts->texts[0], "a dog, barking");
  EXPECT_EQ(texts->texts[1].size(), 3023u);
  EXPECT_EQ(texts->labels, (std::vector<int64_t>{1, 0}));
}

TEST(CheckTextJobTest, RefusesWhatATextJobCannotRunNamingTheField) {
  const v1::Model enc = TextModel(64);
  v1::Model image;
  image.set_name("resnet");
  struct Case {
    v1::StartFineTuneRequest request;
    const v1::Model* base;
    std::string message;
  };
  std::vector<Case> cases;
  v1::Model classifier = enc;  // outlives `cases`' pointer to it
  classifier.add_class_names("a");
  classifier.add_class_names("b");
  {
    v1::StartFineTuneRequest r = Request("enc", v1::STRATEGY_INCREMENTAL);
    r.mutable_incremental()->set_selection(v1::EXEMPLAR_SELECTION_HERDING);
    cases.push_back({r, &classifier, "text jobs choose their exemplars at random"});
  }
  cases.push_back({Request("transformer-small", v1::STRATEGY_INCREMENTAL), nullptr,
                   "STRATEGY_INCREMENTAL needs a pretrained text model"});
  cases.push_back({Request("transformer-small", v1::STRATEGY_DISTILL), nullptr,
                   "distillation.teacher_model is empty; STRATEGY_DISTILL needs a teacher"});
  cases.push_back({Request("transformer-small", v1::STRATEGY_FINE_TUNE), nullptr,
                   "has neither weights nor a tokenizer"});
  cases.push_back({Request("resnet", v1::STRATEGY_FULL), &image, "is an image model"});
  {
    v1::StartFineTuneRequest r = Request("enc", v1::STRATEGY_FULL);
    r.mutable_hyperparameters()->mutable_text()->set_max_length(65);
    cases.push_back({r, &enc, "max_length 65 is over base_model \"enc\"'s 64 positions"});
  }
  {
    v1::StartFineTuneRequest r = Request("enc", v1::STRATEGY_FULL);
    r.mutable_hyperparameters()->mutable_text()->set_hidden_size(64);
    cases.push_back({r, &enc, "shape a new encoder"});
  }
  {
    v1::StartFineTuneRequest r = Request("transformer-small", v1::STRATEGY_SCRATCH);
    r.mutable_hyperparameters()->mutable_text()->set_hidden_size(66);
    cases.push_back({r, nullptr, "hidden_size 66 is not a multiple of num_heads 4"});
  }
  {
    v1::StartFineTuneRequest r = Request("transformer-small", v1::STRATEGY_SCRATCH);
    r.mutable_hyperparameters()->mutable_text()->set_mask_probability(0.2);
    cases.push_back({r, nullptr, "mask_probability applies to STRATEGY_MASKED_LM only"});
  }
  {
    v1::StartFineTuneRequest r = Request("transformer-small", v1::STRATEGY_MASKED_LM);
    r.mutable_hyperparameters()->mutable_text()->set_mask_probability(1.0);
    cases.push_back({r, nullptr, "mask_probability is 1; it must be in [0, 1)"});
  }
  {
    v1::StartFineTuneRequest r = Request("enc", v1::STRATEGY_FEATURE_EXTRACTION);
    r.mutable_hyperparameters()->mutable_validation()->set_split(0.1);
    cases.push_back({r, &enc, "validation.split (name a validation dataset) does not apply"});
  }
  {
    v1::StartFineTuneRequest r = Request("enc", v1::STRATEGY_FEATURE_EXTRACTION);
    r.mutable_tuning()->set_max_trials(4);
    cases.push_back({r, &enc, "text jobs do not tune"});
  }
  {
    v1::StartFineTuneRequest r = Request("transformer-small", v1::STRATEGY_SCRATCH);
    r.mutable_hyperparameters()->mutable_text()->set_num_layers(49);
    cases.push_back({r, nullptr, "hyperparameters.text.num_layers is 49"});
  }
  {
    v1::StartFineTuneRequest r = Request("enc", v1::STRATEGY_FULL);
    r.mutable_hyperparameters()->set_learning_rate(std::numeric_limits<double>::infinity());
    cases.push_back({r, &enc, "hyperparameters.learning_rate is inf"});
  }
  {
    v1::StartFineTuneRequest r = Request("transformer-small", v1::STRATEGY_SCRATCH);
    r.mutable_hyperparameters()->mutable_text()->set_pooling(static_cast<v1::TextPooling>(99));
    cases.push_back({r, nullptr, "hyperparameters.text.pooling is 99, not a known pooling"});
  }
  {
    v1::StartFineTuneRequest r = Request("enc", v1::STRATEGY_FULL);
    r.mutable_distillation()->set_teacher_model("t");
    cases.push_back({r, &enc,
                     "distillation is set but strategy is STRATEGY_FULL; distillation options "
                     "apply to STRATEGY_DISTILL only"});
  }
  {
    v1::StartFineTuneRequest r = Request("enc", v1::STRATEGY_DISTILL);
    r.mutable_distillation()->set_teacher_model("t");
    r.mutable_distillation()->set_alpha(1.5);
    cases.push_back({r, &enc, "distillation.alpha is 1.5"});
  }
  v1::Model no_mask = enc;  // outlives `cases`' pointer to it
  no_mask.mutable_text_input()->set_mask_id(-1);
  {
    cases.push_back(
        {Request("enc", v1::STRATEGY_MASKED_LM), &no_mask, "\"enc\"'s tokenizer has no mask id"});
  }
  for (const Case& c : cases) {
    const absl::Status st = CheckTextJob(c.request, c.base);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << c.message;
    EXPECT_THAT(std::string(st.message()), HasSubstr(c.message));
  }
  EXPECT_TRUE(CheckTextJob(Request("enc", v1::STRATEGY_FINE_TUNE), &enc).ok());
  // INCREMENTAL continues a classifier: a base without classes is refused.
  const absl::Status no_classes = CheckTextJob(Request("enc", v1::STRATEGY_INCREMENTAL), &enc);
  EXPECT_EQ(no_classes.code(), absl::StatusCode::kFailedPrecondition) << no_classes;
  EXPECT_THAT(std::string(no_classes.message()), HasSubstr("\"enc\" has no class names"));
  EXPECT_TRUE(CheckTextJob(Request("enc", v1::STRATEGY_INCREMENTAL), &classifier).ok());
  EXPECT_TRUE(CheckTextJob(Request("transformer-small", v1::STRATEGY_MASKED_LM), nullptr).ok());
  // A DISTILL student: a new, smaller encoder (shaped by the text options),
  // or a stored text model.
  v1::StartFineTuneRequest small = Request("transformer-small", v1::STRATEGY_DISTILL);
  small.mutable_distillation()->set_teacher_model("t");
  small.mutable_hyperparameters()->mutable_text()->set_hidden_size(32);
  small.mutable_hyperparameters()->mutable_text()->set_num_layers(1);
  EXPECT_TRUE(CheckTextJob(small, nullptr).ok()) << CheckTextJob(small, nullptr);
  v1::StartFineTuneRequest stored = Request("enc", v1::STRATEGY_DISTILL);
  stored.mutable_distillation()->set_teacher_model("t");
  EXPECT_TRUE(CheckTextJob(stored, &enc).ok()) << CheckTextJob(stored, &enc);
}

TEST(ResolveTextHyperparametersTest, DefaultsThenWhatTheRequestSets) {
  v1::StartFineTuneRequest r = Request("transformer-small", v1::STRATEGY_SCRATCH);
  v1::Hyperparameters hp = ResolveTextHyperparameters(r, nullptr);
  EXPECT_EQ(hp.epochs(), 10);
  EXPECT_EQ(hp.batch_size(), 32);
  EXPECT_DOUBLE_EQ(hp.learning_rate(), 1e-3);
  EXPECT_EQ(hp.optimizer().kind(), v1::OPTIMIZER_ADAMW);
  EXPECT_EQ(hp.text().max_length(), 128);
  EXPECT_EQ(hp.text().vocab_size(), 4000);
  EXPECT_EQ(hp.text().hidden_size(), 128);
  EXPECT_EQ(hp.text().num_layers(), 2);
  EXPECT_EQ(hp.text().pooling(), v1::TEXT_POOLING_FIRST_TOKEN);
  EXPECT_DOUBLE_EQ(hp.text().mask_probability(), 0);

  r = Request("enc", v1::STRATEGY_FINE_TUNE);
  r.mutable_hyperparameters()->set_learning_rate(3e-4);
  r.mutable_hyperparameters()->set_trainable_blocks(2);
  r.mutable_hyperparameters()->set_epochs(3);
  const v1::Model enc = TextModel(64);
  hp = ResolveTextHyperparameters(r, &enc);
  EXPECT_DOUBLE_EQ(hp.learning_rate(), 3e-4);
  EXPECT_DOUBLE_EQ(hp.backbone_lr_multiplier(), 0.1);
  EXPECT_EQ(hp.trainable_blocks(), 2);
  EXPECT_EQ(hp.epochs(), 3);
  EXPECT_EQ(hp.text().max_length(), 64);
  EXPECT_EQ(hp.text().vocab_size(), 0);  // the base's tokenizer

  hp = ResolveTextHyperparameters(Request("transformer-small", v1::STRATEGY_MASKED_LM), nullptr);
  EXPECT_DOUBLE_EQ(hp.learning_rate(), 5e-4);
  EXPECT_DOUBLE_EQ(hp.text().mask_probability(), 0.15);
}

TEST(TrainTextTokenizerTest, TrainsSentencePieceInItsOwnProcessWithTheFramingIds) {
  const LabelledTexts texts = Glosses(100);
  ASSERT_EQ(texts.texts.size(), 300u) << "wordnet-base is not installed";
  absl::StatusOr<TrainedTokenizer> tok = TrainTextTokenizer(texts.texts, 400, 40, {});
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ(tok->input.tokenizer(), v1::TOKENIZER_KIND_SENTENCEPIECE);
  EXPECT_EQ(tok->input.tokenizer_sha256(), common::Sha256Hex(tok->model_file));
  EXPECT_GT(tok->input.vocab_size(), 100);
  EXPECT_LE(tok->input.vocab_size(), 400);
  EXPECT_EQ(tok->input.first_id(), 1);
  EXPECT_EQ(tok->input.last_id(), 2);
  EXPECT_EQ(tok->input.pad_id(), 3);
  EXPECT_EQ(tok->input.mask_id(), 4);
  EXPECT_EQ(tok->input.max_length(), 40);
  EXPECT_THAT(tok->cost, testing::MatchesRegex("[0-9.]+ s, [0-9]+ MiB peak"));
  auto loaded = text::SentencePieceTokenizer::Load(tok->model_file);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ((*loaded)->Piece(4), "[MASK]");

  // The same texts give the same model, byte for byte.
  absl::StatusOr<TrainedTokenizer> again = TrainTextTokenizer(texts.texts, 400, 40, {});
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->model_file, tok->model_file);

  // A dataset too small for the pieces asked for gets fewer.
  absl::StatusOr<TrainedTokenizer> small =
      TrainTextTokenizer({"a cat", "a dog", "the cat sat"}, 5000, 16, {});
  ASSERT_TRUE(small.ok()) << small.status();
  EXPECT_LT(small->input.vocab_size(), 100);
}

// The trainer's limits end it, and say which flag to raise; what the
// library refuses is the data's fault; a missing trainer is the server's.
TEST(TrainTextTokenizerTest, LimitsAndFailuresArePreciseErrors) {
  const LabelledTexts texts = Glosses(100);
  ASSERT_EQ(texts.texts.size(), 300u) << "wordnet-base is not installed";
  TokenizerSandbox box;
  box.timeout = absl::Milliseconds(1);
  absl::StatusOr<TrainedTokenizer> slow = TrainTextTokenizer(texts.texts, 400, 40, box);
  EXPECT_EQ(slow.status().code(), absl::StatusCode::kResourceExhausted) << slow.status();
  EXPECT_THAT(std::string(slow.status().message()),
              HasSubstr("longer than 1ms (--tokenizer_train_timeout_seconds)"));

  box = TokenizerSandbox();
  box.memory_bytes = int64_t{1} << 20;
  absl::StatusOr<TrainedTokenizer> big = TrainTextTokenizer(texts.texts, 400, 40, box);
  EXPECT_EQ(big.status().code(), absl::StatusCode::kResourceExhausted) << big.status();
  EXPECT_THAT(std::string(big.status().message()),
              HasSubstr("more memory than the 1 MiB allowed (--tokenizer_train_memory_mb)"));

  // Between too little to start and enough, the library fails in many ways
  // (a thread that cannot start, a failed check, an uncaught bad_alloc):
  // each is the memory limit.
  int short_of_memory = 0;
  for (int64_t mib : {20, 24, 28, 32}) {
    box = TokenizerSandbox();
    box.memory_bytes = mib << 20;
    absl::StatusOr<TrainedTokenizer> tight = TrainTextTokenizer(texts.texts, 400, 40, box);
    if (tight.ok()) continue;
    ++short_of_memory;
    EXPECT_EQ(tight.status().code(), absl::StatusCode::kResourceExhausted)
        << mib << " MiB: " << tight.status();
    EXPECT_THAT(std::string(tight.status().message()),
                HasSubstr(absl::StrCat("more memory than the ", mib, " MiB allowed")));
  }
  EXPECT_GT(short_of_memory, 0);

  absl::StatusOr<TrainedTokenizer> none = TrainTextTokenizer({}, 400, 40, {});
  EXPECT_EQ(none.status().code(), absl::StatusCode::kInvalidArgument) << none.status();
  EXPECT_THAT(std::string(none.status().message()),
              HasSubstr("training a SentencePiece tokenizer on the dataset's texts failed: "));

  box = TokenizerSandbox();
  box.trainer_path = "/nonexistent/kaizen-tokenizer-trainer";
  absl::StatusOr<TrainedTokenizer> missing = TrainTextTokenizer(texts.texts, 400, 40, box);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInternal) << missing.status();
}

TEST(RunTextJobTest, ScratchBuildsAClassifierThatCarriesItsTokenizerAndIsEvaluatedByName) {
  TextJobInputs in;
  in.strategy = v1::STRATEGY_SCRATCH;
  v1::StartFineTuneRequest r = Request("transformer-small", v1::STRATEGY_SCRATCH);
  v1::Hyperparameters* hp = r.mutable_hyperparameters();
  hp->set_epochs(3);
  hp->set_batch_size(16);
  hp->set_learning_rate(2e-3);
  hp->mutable_text()->set_vocab_size(400);
  hp->mutable_text()->set_hidden_size(32);
  hp->mutable_text()->set_num_layers(1);
  hp->mutable_text()->set_max_length(40);
  in.hyperparameters = ResolveTextHyperparameters(r, nullptr);
  in.train = Glosses(80);
  ASSERT_EQ(in.train.texts.size(), 240u) << "wordnet-base is not installed";
  in.validation = Glosses(20, 80);
  std::vector<std::string> messages;
  std::vector<int> epochs;
  in.on_message = [&](const std::string& m) { messages.push_back(m); };
  in.on_epoch = [&](const v1::EpochMetrics& m) { epochs.push_back(m.epoch()); };
  absl::StatusOr<TextJobOutput> out = RunTextJob(in);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_FALSE(out->stopped);
  EXPECT_EQ(out->epochs_completed, 3);
  EXPECT_EQ(epochs, (std::vector<int>{1, 2, 3}));
  ASSERT_FALSE(messages.empty());
  EXPECT_THAT(messages[0], HasSubstr("training a SentencePiece tokenizer (at most 400 pieces)"));
  const v1::Model& meta = out->metadata;
  EXPECT_EQ(meta.text_input().tokenizer_sha256(), common::Sha256Hex(out->tokenizer));
  EXPECT_EQ(meta.class_names_size(), 3);
  EXPECT_EQ(meta.head().out_features(), 3);
  EXPECT_EQ(meta.metrics().count("val_accuracy"), 1u);
  EXPECT_GT(meta.parameter_count(), 0);

  // Evaluated on texts whose classes come in another order: matched by name.
  LabelledTexts test = Glosses(20, 100);
  test.class_names = {"verb.motion", "noun.animal", "noun.food"};
  for (int64_t& l : test.labels) l = (l + 1) % 3;
  v1::Model named = meta;
  named.set_name("m");
  named.set_version(1);
  absl::StatusOr<v1::Evaluation> e =
      EvaluateTextClassifier(out->module, named, out->tokenizer, test, 16, nullptr);
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->examples(), 60);
  EXPECT_EQ(e->model(), "m");
  EXPECT_GE(e->accuracy(), 0.0);
  ASSERT_EQ(e->classes_size(), 3);
  EXPECT_EQ(e->classes(0).name(), "verb.motion");
  EXPECT_EQ(e->classes(0).support(), 20);

  // Stopping ends the evaluation with Cancelled.
  e = EvaluateTextClassifier(out->module, named, out->tokenizer, test, 16, [] { return true; });
  EXPECT_EQ(e.status().code(), absl::StatusCode::kCancelled);
}

// DISTILL: the teacher reads the texts with its own tokenizer (here one
// trained on other texts than the student's), its accuracy on the
// validation texts is reported beside the student's, and a stop during the
// teacher's pass ends the run before training.
TEST(RunTextJobTest, DistillUsesTheTeachersTokenizerAndAStopInItsPassEndsTheRun) {
  auto inputs = [&](v1::Strategy strategy, int32_t hidden, int first) {
    TextJobInputs in;
    in.strategy = strategy;
    v1::StartFineTuneRequest r = Request("transformer-small", strategy);
    v1::Hyperparameters* hp = r.mutable_hyperparameters();
    hp->set_epochs(3);
    hp->set_batch_size(16);
    hp->set_learning_rate(2e-3);
    hp->mutable_text()->set_vocab_size(400);
    hp->mutable_text()->set_hidden_size(hidden);
    hp->mutable_text()->set_num_layers(1);
    hp->mutable_text()->set_max_length(40);
    in.hyperparameters = ResolveTextHyperparameters(r, nullptr);
    in.train = Glosses(80, first);
    in.validation = Glosses(20, 100);
    return in;
  };
  absl::StatusOr<TextJobOutput> teacher = RunTextJob(inputs(v1::STRATEGY_SCRATCH, 32, 0));
  ASSERT_TRUE(teacher.ok()) << teacher.status();

  TextJobInputs in = inputs(v1::STRATEGY_DISTILL, 16, 20);  // other texts: another tokenizer
  in.teacher.emplace();
  in.teacher->module = teacher->module;
  in.teacher->metadata = teacher->metadata;
  in.teacher->tokenizer = teacher->tokenizer;
  in.teacher->temperature = 2;
  absl::StatusOr<TextJobOutput> student = RunTextJob(in);
  ASSERT_TRUE(student.ok()) << student.status();
  EXPECT_FALSE(student->stopped);
  EXPECT_EQ(student->epochs_completed, 3);
  EXPECT_NE(student->tokenizer, teacher->tokenizer);
  EXPECT_LT(student->metadata.parameter_count(), teacher->metadata.parameter_count());
  EXPECT_EQ(student->validation_examples, 60);
  // One text side by side, each model with its own tokenizer.
  EXPECT_EQ(student->latency_rounds, 30) << student->latency_error;
  EXPECT_GT(student->teacher_latency_ms, 0);
  EXPECT_GT(student->student_latency_ms, 0);
  EXPECT_GT(student->teacher_latency_tokens, 2);  // the framing ids and at least one piece
  EXPECT_GT(student->student_latency_tokens, 2);
  EXPECT_EQ(student->student_val_accuracy, student->metadata.metrics().at("val_accuracy"));
  // The teacher's reported accuracy is its own evaluation of those texts.
  v1::Model named = teacher->metadata;
  named.set_name("t");
  absl::StatusOr<v1::Evaluation> e = EvaluateTextClassifier(
      teacher->module, named, teacher->tokenizer, *in.validation, 16, nullptr);
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_NEAR(student->teacher_val_accuracy, e->accuracy(), 1e-9);

  in.should_stop = [] { return true; };
  student = RunTextJob(in);
  ASSERT_TRUE(student.ok()) << student.status();
  EXPECT_TRUE(student->stopped);
  EXPECT_EQ(student->epochs_completed, 0);
}

TEST(RunTextJobTest, MaskedLmTrainsTheEncoderAndAStopEndsTheRun) {
  TextJobInputs in;
  in.strategy = v1::STRATEGY_MASKED_LM;
  v1::StartFineTuneRequest r = Request("transformer-small", v1::STRATEGY_MASKED_LM);
  v1::Hyperparameters* hp = r.mutable_hyperparameters();
  hp->set_epochs(2);
  hp->set_batch_size(16);
  hp->mutable_text()->set_vocab_size(300);
  hp->mutable_text()->set_hidden_size(32);
  hp->mutable_text()->set_num_layers(1);
  hp->mutable_text()->set_max_length(32);
  in.hyperparameters = ResolveTextHyperparameters(r, nullptr);
  in.train = Glosses(60);
  in.validation = Glosses(10, 60);
  std::vector<TextJobCheckpoint> checkpoints;
  std::vector<std::string> tokenizers;
  in.on_checkpoint = [&](const TextJobCheckpoint& c) {
    checkpoints.push_back(c);
    tokenizers.push_back(*c.tokenizer);
    return absl::OkStatus();
  };
  absl::StatusOr<TextJobOutput> out = RunTextJob(in);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->epochs_completed, 2);
  EXPECT_EQ(out->metadata.metrics().count("masked_lm_loss"), 1u);
  EXPECT_EQ(out->metadata.metrics().count("val_masked_lm_loss"), 1u);
  EXPECT_EQ(out->metadata.text_input().mask_id(), 4);
  EXPECT_EQ(out->metadata.head().out_features(), 3);

  // A version per epoch: the encoder, its figures and the bytes to go on.
  ASSERT_EQ(checkpoints.size(), 2u);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(checkpoints[i].epoch, i + 1);
    EXPECT_FALSE(checkpoints[i].resume_state.empty());
    EXPECT_EQ(tokenizers[i], out->tokenizer);
    EXPECT_EQ(checkpoints[i].metadata.metrics().count("val_masked_lm_loss"), 1u);
  }
  EXPECT_TRUE(checkpoints[0].is_best);
  const double last_loss = out->metadata.metrics().at("masked_lm_loss");
  EXPECT_EQ(checkpoints[1].metadata.metrics().at("masked_lm_loss"), last_loss);

  // Resumed from the first version, the second epoch is the same again.
  TextJobInputs again = in;
  again.on_checkpoint = nullptr;
  TextJobInputs::Resume resume;
  resume.module = checkpoints[0].module;
  resume.metadata = checkpoints[0].metadata;
  resume.tokenizer = tokenizers[0];
  resume.state = checkpoints[0].resume_state;
  again.resume = std::move(resume);
  absl::StatusOr<TextJobOutput> resumed = RunTextJob(again);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ(resumed->epochs_completed, 2);
  EXPECT_NEAR(resumed->metadata.metrics().at("masked_lm_loss"), last_loss, 1e-6);
  EXPECT_NEAR(resumed->metadata.metrics().at("val_masked_lm_loss"),
              out->metadata.metrics().at("val_masked_lm_loss"), 1e-6);

  int calls = 0;
  in.should_stop = [&] { return ++calls > 3; };
  out = RunTextJob(in);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_TRUE(out->stopped);
}

}  // namespace
}  // namespace kaizen::jobs
