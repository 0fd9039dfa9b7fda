// Text classification end to end through the real server on a loopback
// port (issue 20): WordNet glosses uploaded as CSV, a transformer-small
// trained from scratch (its SentencePiece tokenizer trained on the training
// texts), masked-language-model pretraining, FEATURE_EXTRACTION and
// FINE_TUNE from stored text models, the test set evaluated by the job, and
// Predict / the Open Inference Protocol answering texts with the model's
// own tokenizer.
#include <gtest/gtest.h>
#include <torch/script.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "client/lib/kaizen_client.h"
#include "gmock/gmock.h"
#include "inference/grpc_service.grpc.pb.h"
#include "server/api/server.h"
#include "server/common/sha256.h"
#include "server/models/model_metadata.h"
#include "tests/test_util/image_fixtures.h"
#include "tests/test_util/server/loopback_server.h"
#include "tests/test_util/temp_dir.h"
#include "tests/test_util/wordnet.h"

namespace kaizen {
namespace {

using ::testing::HasSubstr;

constexpr int kTrainPerClass = 120;
constexpr int kTestPerClass = 40;
const char* const kCategories[] = {"noun.animal", "noun.food", "verb.motion"};

std::string CsvField(const std::string& s) {
  return absl::StrCat("\"", absl::StrReplaceAll(s, {{"\"", "\"\""}}), "\"");
}

class TextFineTuneE2E : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::map<std::string, int> taken;
    suite_ = new Suite;
    for (test_util::WordNetGloss& g : test_util::WordNetGlosses()) {
      bool wanted = false;
      for (const char* c : kCategories) wanted |= g.category == c;
      if (!wanted) continue;
      const int n = taken[g.category]++;
      if (n < kTrainPerClass) {
        suite_->train.push_back(std::move(g));
      } else if (n < kTrainPerClass + kTestPerClass) {
        suite_->test.push_back(std::move(g));
      }
    }
  }
  static void TearDownTestSuite() { delete suite_; }

  void SetUp() override {
    ASSERT_EQ(suite_->train.size(), 3u * kTrainPerClass) << "wordnet-base is not installed";
    api::KaizenServer::Options o = test_util::LoopbackOptions(data_.path());
    auto s = test_util::StartLoopbackServer(o);
    ASSERT_TRUE(s.ok()) << s.status();
    s_ = *std::move(s);
    ASSERT_TRUE(Upload("train", suite_->train).ok());
    ASSERT_TRUE(Upload("test", suite_->test).ok());
  }

  absl::StatusOr<v1::Dataset> Upload(const std::string& name,
                                     const std::vector<test_util::WordNetGloss>& rows) {
    std::string csv = "text,label\n";
    for (const auto& g : rows) absl::StrAppend(&csv, CsvField(g.gloss), ",", g.category, "\n");
    const std::string path = files_.File(name + ".csv");
    test_util::WriteBinaryFile(path, csv);
    v1::UploadDatasetHeader h;
    h.set_name(name);
    h.set_format(v1::DATASET_FORMAT_TEXT_CSV);
    return s_.client->UploadDataset(h, {path});
  }

  static v1::StartFineTuneRequest Request(const std::string& base, const std::string& output,
                                          v1::Strategy strategy, int epochs) {
    v1::StartFineTuneRequest r;
    r.set_base_model(base);
    r.set_dataset("train");
    r.set_output_model(output);
    r.set_strategy(strategy);
    v1::Hyperparameters* hp = r.mutable_hyperparameters();
    hp->set_epochs(epochs);
    hp->set_batch_size(16);
    hp->set_seed(5);
    v1::TextOptions* t = hp->mutable_text();
    if (base == "transformer-small") {
      t->set_vocab_size(600);
      t->set_hidden_size(64);
      t->set_num_layers(1);
    }
    t->set_max_length(48);
    return r;
  }

  absl::StatusOr<v1::Job> Run(const v1::StartFineTuneRequest& r) {
    absl::StatusOr<v1::Job> job = s_.client->StartFineTune(r);
    if (!job.ok()) return job.status();
    return test_util::WaitForJob(*s_.client, job->id(), {v1::JOB_STATE_SUCCEEDED});
  }

  // Starts `r`, pauses it as soon as it has written `versions` versions
  // (polling every 2 ms) and waits until it is PAUSED: the paused job.
  void StartAndPauseAfter(const v1::StartFineTuneRequest& r, int64_t versions, v1::Job* paused) {
    absl::StatusOr<v1::Job> started = s_.client->StartFineTune(r);
    ASSERT_TRUE(started.ok()) << started.status();
    const std::string id = started->id();
    const absl::Time deadline = absl::Now() + absl::Minutes(4);
    while (absl::Now() < deadline) {
      absl::StatusOr<v1::Job> now = s_.client->GetJob(id);
      ASSERT_TRUE(now.ok()) << now.status();
      if (now->latest_version() >= versions) break;
      absl::SleepFor(absl::Milliseconds(2));
    }
    ASSERT_TRUE(s_.client->PauseJob(id).ok());
    absl::StatusOr<v1::Job> done = test_util::WaitForJob(*s_.client, id, {v1::JOB_STATE_PAUSED});
    ASSERT_TRUE(done.ok()) << done.status();
    *paused = *std::move(done);
    ASSERT_GE(paused->latest_version(), versions);
    ASSERT_LT(paused->latest_version(), r.hyperparameters().epochs())
        << "the job finished before the pause";
    // One version per finished epoch; the epoch under way is not kept.
    EXPECT_EQ(paused->history_size(), paused->latest_version());
  }

  absl::StatusOr<v1::PredictResponse> PredictTexts(
      const std::string& model, const std::vector<test_util::WordNetGloss>& rows) {
    v1::PredictRequest r;
    r.set_model(model);
    for (const auto& g : rows) r.add_inputs()->set_text(g.gloss);
    return s_.client->Predict(r);
  }

  struct Suite {
    std::vector<test_util::WordNetGloss> train, test;
  };
  static Suite* suite_;
  test_util::TempDir data_;
  test_util::TempDir files_;
  test_util::LoopbackServer s_;
};

TextFineTuneE2E::Suite* TextFineTuneE2E::suite_ = nullptr;

TEST_F(TextFineTuneE2E, ScratchTrainsATokenizerAndAClassifierThatPredictServesAsTrained) {
  v1::StartFineTuneRequest r = Request("transformer-small", "glosses", v1::STRATEGY_SCRATCH, 8);
  r.set_test_dataset("test");
  r.mutable_hyperparameters()->set_learning_rate(2e-3);
  absl::StatusOr<v1::Job> job = Run(r);
  ASSERT_TRUE(job.ok()) << job.status();
  // A version after each epoch.
  EXPECT_EQ(job->latest_version(), 8);
  ASSERT_EQ(job->history_size(), 8);

  absl::StatusOr<v1::Model> model = s_.client->GetModel("glosses", 8);
  ASSERT_TRUE(model.ok()) << model.status();
  ASSERT_TRUE(model->has_text_input());
  EXPECT_EQ(model->text_input().tokenizer(), v1::TOKENIZER_KIND_SENTENCEPIECE);
  EXPECT_EQ(model->text_input().max_length(), 48);
  EXPECT_GT(model->text_input().vocab_size(), 100);
  EXPECT_LE(model->text_input().vocab_size(), 600);
  EXPECT_EQ(model->text_input().tokenizer_sha256().size(), 64u);
  ASSERT_EQ(model->class_names_size(), 3);
  EXPECT_EQ(model->class_names(2), "verb.motion");
  ASSERT_TRUE(model->has_test_evaluation());
  const v1::Evaluation& e = model->test_evaluation();
  EXPECT_EQ(e.examples(), 3 * kTestPerClass);
  // Three classes: chance is 1/3.
  EXPECT_GT(e.accuracy(), 0.6) << "held-out accuracy after 8 epochs from scratch";

  // Predict tokenises with the tokenizer the model carries: on the test
  // texts it agrees with the job's own evaluation of them.
  absl::StatusOr<v1::PredictResponse> p = PredictTexts("glosses", suite_->test);
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_EQ(p->predictions_size(), 3 * kTestPerClass);
  EXPECT_EQ(p->version(), 8);
  int correct = 0;
  for (int i = 0; i < p->predictions_size(); ++i) {
    correct += p->predictions(i).classes(0).label() == suite_->test[i].category;
  }
  EXPECT_NEAR(static_cast<double>(correct) / p->predictions_size(), e.accuracy(), 1.5 / 120);

  // One text alone gets the answer it got in a padded batch.
  absl::StatusOr<v1::PredictResponse> one = PredictTexts("glosses", {suite_->test[7]});
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ(one->predictions(0).classes(0).label(), p->predictions(7).classes(0).label());
  EXPECT_NEAR(one->predictions(0).classes(0).probability(),
              p->predictions(7).classes(0).probability(), 1e-4);

  // An image sent to a text model is refused by name.
  v1::PredictRequest image;
  image.set_model("glosses");
  image.add_inputs()->set_text("a small dog");
  image.add_inputs()->set_encoded_image("\x89PNG");
  absl::StatusOr<v1::PredictResponse> refused = s_.client->Predict(image);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr("inputs[1]: model \"glosses\" version 8 is a text model"));

  // EvaluateModel on the same texts gives the job's own evaluation.
  absl::StatusOr<v1::Evaluation> evaluated = s_.client->EvaluateModel("glosses", 0, "test", 2);
  ASSERT_TRUE(evaluated.ok()) << evaluated.status();
  EXPECT_EQ(evaluated->examples(), e.examples());
  EXPECT_DOUBLE_EQ(evaluated->accuracy(), e.accuracy());
  EXPECT_EQ(evaluated->top_k(), 2);
  EXPECT_GE(evaluated->top_k_accuracy(), evaluated->accuracy());
  EXPECT_EQ(evaluated->dataset(), "test");
  ASSERT_EQ(evaluated->classes_size(), 3);
  // An image dataset for a text model is refused by name.
  v1::UploadDatasetHeader images;
  images.set_name("images");
  images.set_format(v1::DATASET_FORMAT_IMAGE_FOLDER);
  const std::string folder = files_.File("images.tar.gz");
  test_util::WriteBinaryFile(
      folder, test_util::MakeArchive({{"a/1.png", test_util::EncodePng(16, 16, 3, 1)},
                                      {"b/2.png", test_util::EncodePng(16, 16, 3, 2)}},
                                     test_util::ArchiveKind::kTarGz));
  ASSERT_TRUE(s_.client->UploadDataset(images, {folder}).ok());
  absl::StatusOr<v1::Evaluation> mixed = s_.client->EvaluateModel("glosses", 0, "images");
  EXPECT_EQ(mixed.status().code(), absl::StatusCode::kInvalidArgument) << mixed.status();
  EXPECT_THAT(std::string(mixed.status().message()),
              HasSubstr("model \"glosses\" is a text model and dataset \"images\" holds images"));

  // The Open Inference Protocol: BYTES in, probabilities out.
  auto oip = inference::GRPCInferenceService::NewStub(s_.channel);
  {
    grpc::ClientContext ctx;
    inference::ModelMetadataRequest mr;
    mr.set_name("glosses");
    inference::ModelMetadataResponse meta;
    ASSERT_TRUE(oip->ModelMetadata(&ctx, mr, &meta).ok());
    ASSERT_EQ(meta.inputs_size(), 1);
    EXPECT_EQ(meta.inputs(0).datatype(), "BYTES");
  }
  inference::ModelInferRequest ir;
  ir.set_model_name("glosses");
  auto* in = ir.add_inputs();
  in->set_name("input");
  in->set_datatype("BYTES");
  in->add_shape(2);
  in->mutable_contents()->add_bytes_contents(suite_->test[0].gloss);
  in->mutable_contents()->add_bytes_contents(suite_->test[7].gloss);
  grpc::ClientContext ctx;
  inference::ModelInferResponse out;
  const grpc::Status st = oip->ModelInfer(&ctx, ir, &out);
  ASSERT_TRUE(st.ok()) << st.error_message();
  ASSERT_EQ(out.outputs_size(), 1);
  EXPECT_EQ(out.outputs(0).shape(0), 2);
  EXPECT_EQ(out.outputs(0).shape(1), 3);
  ASSERT_EQ(out.raw_output_contents_size(), 1);
  const float* probs = reinterpret_cast<const float*>(out.raw_output_contents(0).data());
  EXPECT_NEAR(probs[3 + 0] + probs[3 + 1] + probs[3 + 2], 1.0, 1e-4);
  float best = 0;
  for (int c = 0; c < 3; ++c) best = std::max(best, probs[3 + c]);
  EXPECT_NEAR(best, p->predictions(7).classes(0).probability(), 1e-4);

  // Hostile BYTES: each refused by the element and what is wrong with it.
  const auto infer = [&](std::vector<std::string> texts, int64_t shape) {
    inference::ModelInferRequest r;
    r.set_model_name("glosses");
    auto* t = r.add_inputs();
    t->set_name("input");
    t->set_datatype("BYTES");
    t->add_shape(shape);
    for (std::string& text : texts) t->mutable_contents()->add_bytes_contents(std::move(text));
    grpc::ClientContext c;
    inference::ModelInferResponse response;
    const grpc::Status status = oip->ModelInfer(&c, r, &response);
    return std::make_pair(status, response);
  };
  auto [not_utf8, unused] = infer({"a small dog", "caf\xc3 au lait"}, 2);
  EXPECT_EQ(not_utf8.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(not_utf8.error_message(),
              HasSubstr("input \"input\"[1]: the text is not valid UTF-8 at byte 3 (of 12)"));
  auto [short_contents, unused2] = infer({"a small dog"}, 2);
  EXPECT_EQ(short_contents.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(short_contents.error_message(), HasSubstr("holds 1 elements; shape [2] needs 2"));
  // A megabyte of text is cut (to 64 KiB, then to max_length ids), not
  // refused: it gets the answer of its first 4 KiB.
  std::string huge = suite_->test[7].gloss + " ";
  while (huge.size() < (1 << 20)) huge += "and so on ";
  const std::string start = huge.substr(0, 4096);
  auto [cut, cut_response] = infer({huge, start}, 2);
  ASSERT_TRUE(cut.ok()) << cut.error_message();
  ASSERT_EQ(cut_response.raw_output_contents_size(), 1);
  const float* cut_probs =
      reinterpret_cast<const float*>(cut_response.raw_output_contents(0).data());
  for (int c = 0; c < 3; ++c) EXPECT_NEAR(cut_probs[c], cut_probs[3 + c], 1e-5);
  // The server still answers after all of that.
  absl::StatusOr<v1::PredictResponse> after = PredictTexts("glosses", {suite_->test[7]});
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->predictions(0).classes(0).label(), p->predictions(7).classes(0).label());
}

// A MASKED_LM job writes the encoder after each epoch; paused midway it
// resumes from its latest version; the encoder starts classifiers.
TEST_F(TextFineTuneE2E, MaskedLmPretrainsAnEncoderThatFeatureExtractionAndFineTuneStartFrom) {
  constexpr int kEpochs = 10;
  v1::StartFineTuneRequest mlm =
      Request("transformer-small", "encoder", v1::STRATEGY_MASKED_LM, kEpochs);
  v1::Job paused;
  ASSERT_NO_FATAL_FAILURE(StartAndPauseAfter(mlm, 1, &paused));
  const std::string id = paused.id();
  const int64_t at = paused.latest_version();
  absl::StatusOr<v1::Model> partial = s_.client->GetModel("encoder", at);
  ASSERT_TRUE(partial.ok()) << partial.status();
  EXPECT_EQ(partial->metrics().at("epoch"), at);

  ASSERT_TRUE(s_.client->ResumeJob(id).ok());
  absl::StatusOr<v1::Job> pretrained =
      test_util::WaitForJob(*s_.client, id, {v1::JOB_STATE_SUCCEEDED});
  ASSERT_TRUE(pretrained.ok()) << pretrained.status();
  EXPECT_EQ(pretrained->latest_version(), kEpochs) << "continued, not started again";
  ASSERT_EQ(pretrained->history_size(), kEpochs);
  for (int e = 0; e < kEpochs; ++e) EXPECT_EQ(pretrained->history(e).epoch(), e + 1);
  absl::StatusOr<v1::Model> encoder = s_.client->GetModel("encoder", 0);
  ASSERT_TRUE(encoder.ok()) << encoder.status();
  ASSERT_TRUE(encoder->has_text_input());
  EXPECT_GE(encoder->text_input().mask_id(), 0);
  EXPECT_EQ(encoder->text_input().tokenizer_sha256(), partial->text_input().tokenizer_sha256());
  ASSERT_EQ(encoder->metrics().count("masked_lm_loss"), 1u);
  EXPECT_GT(encoder->metrics().at("masked_lm_loss"), 0);
  EXPECT_LT(encoder->metrics().at("masked_lm_loss"), pretrained->history(0).train_loss());

  for (const v1::Strategy strategy : {v1::STRATEGY_FEATURE_EXTRACTION, v1::STRATEGY_FINE_TUNE}) {
    v1::StartFineTuneRequest r =
        Request("encoder", absl::StrCat("clf-", static_cast<int>(strategy)), strategy, 2);
    r.set_test_dataset("test");
    absl::StatusOr<v1::Job> job = Run(r);
    ASSERT_TRUE(job.ok()) << v1::Strategy_Name(strategy) << ": " << job.status();
    absl::StatusOr<v1::Model> clf = s_.client->GetModel(r.output_model(), 0);
    ASSERT_TRUE(clf.ok()) << clf.status();
    // The classifier carries the encoder's tokenizer.
    EXPECT_EQ(clf->text_input().tokenizer_sha256(), encoder->text_input().tokenizer_sha256());
    EXPECT_EQ(clf->test_evaluation().examples(), 3 * kTestPerClass);
    absl::StatusOr<v1::PredictResponse> p = PredictTexts(r.output_model(), {suite_->test[0]});
    ASSERT_TRUE(p.ok()) << p.status();
    EXPECT_EQ(p->predictions_size(), 1);
  }
}

std::map<std::string, at::Tensor> Parameters(const std::string& path) {
  std::map<std::string, at::Tensor> out;
  for (const auto& p : torch::jit::load(path).named_parameters(/*recurse=*/true)) {
    out.emplace(p.name, p.value.detach().clone());
  }
  return out;
}

// tools/package_text_encoder.py --tiny_bert: a BERT-shaped encoder traced in
// Python, returning (hidden states, pooled) as a traced Hugging Face BertModel
// does, packaged with a WordPiece vocabulary of tiny_bert_texts.csv's words.
TEST_F(TextFineTuneE2E, AnUploadedTracedEncoderGetsAHeadFineTunesAndServes) {
  v1::UploadModelHeader h;
  h.set_name("bert");
  absl::StatusOr<v1::Model> bert = s_.client->UploadModel(h, KAIZEN_FIXTURE_DIR "/tiny_bert.pt");
  ASSERT_TRUE(bert.ok()) << bert.status();
  EXPECT_EQ(bert->architecture(), "tiny-bert");
  ASSERT_TRUE(bert->has_text_input());
  EXPECT_EQ(bert->text_input().tokenizer(), v1::TOKENIZER_KIND_WORDPIECE);
  EXPECT_EQ(bert->text_input().pooling(), v1::TEXT_POOLING_MASKED_MEAN);
  EXPECT_EQ(bert->head().module_path(), "fc");
  EXPECT_EQ(bert->head().in_features(), 32);
  // The stored file is the encoder with its head; its size and digest are
  // the stored file's.
  const std::string downloaded = files_.File("bert.pt");
  ASSERT_TRUE(s_.client->DownloadModel("bert", 0, downloaded).ok());
  const std::string bytes = test_util::ReadBinaryFile(downloaded);
  EXPECT_EQ(static_cast<int64_t>(bytes.size()), bert->size_bytes());
  EXPECT_EQ(common::Sha256Hex(bytes), bert->sha256());

  const std::string csv_path = KAIZEN_SOURCE_DIR "/tests/fixtures/tiny_bert_texts.csv";
  std::vector<std::pair<std::string, std::string>> rows;  // text, label
  for (absl::string_view line :
       absl::StrSplit(test_util::ReadBinaryFile(csv_path), '\n', absl::SkipEmpty())) {
    const size_t comma = line.rfind(',');
    if (line == "text,label" || comma == absl::string_view::npos) continue;
    rows.emplace_back(std::string(line.substr(0, comma)), std::string(line.substr(comma + 1)));
  }
  ASSERT_EQ(rows.size(), 20u);
  v1::UploadDatasetHeader d;
  d.set_name("vehicles");
  d.set_format(v1::DATASET_FORMAT_TEXT_CSV);
  ASSERT_TRUE(s_.client->UploadDataset(d, {csv_path}).ok());
  for (const v1::Strategy strategy : {v1::STRATEGY_FEATURE_EXTRACTION, v1::STRATEGY_FINE_TUNE}) {
    v1::StartFineTuneRequest r =
        Request("bert", absl::StrCat("bert-", static_cast<int>(strategy)), strategy, 30);
    r.set_dataset("vehicles");
    r.mutable_hyperparameters()->mutable_text()->set_max_length(32);
    r.mutable_hyperparameters()->set_batch_size(4);
    // 150 steps: FINE_TUNE's default 1e-3 is for larger sets.
    r.mutable_hyperparameters()->set_learning_rate(0.01);
    absl::StatusOr<v1::Job> job = Run(r);
    ASSERT_TRUE(job.ok()) << v1::Strategy_Name(strategy) << ": " << job.status();
    // FINE_TUNE trains the top block (the last encoder layer) beside the
    // head; FEATURE_EXTRACTION only the head.
    const std::string trained = files_.File(r.output_model() + ".pt");
    ASSERT_TRUE(s_.client->DownloadModel(r.output_model(), 0, trained).ok());
    const std::map<std::string, at::Tensor> before = Parameters(downloaded);
    const std::map<std::string, at::Tensor> after = Parameters(trained);
    ASSERT_EQ(before.size(), after.size());
    for (const auto& [name, value] : before) {
      const bool moved = !at::equal(value, after.at(name));
      const bool should_move =
          absl::StartsWith(name, "fc.") || (strategy == v1::STRATEGY_FINE_TUNE &&
                                            absl::StartsWith(name, "encoder.encoder.layer.1."));
      EXPECT_EQ(moved, should_move) << v1::Strategy_Name(strategy) << ": " << name;
    }
    // 20 training texts of 2 classes: the training accuracy climbs from chance.
    EXPECT_GE(job->history(job->history_size() - 1).train_accuracy(), 0.8) << job->DebugString();
    // Predict tokenises as training did: it scores the training texts as
    // the last epoch did.
    v1::PredictRequest p;
    p.set_model(r.output_model());
    for (const auto& [text, label] : rows) p.add_inputs()->set_text(text);
    absl::StatusOr<v1::PredictResponse> answer = s_.client->Predict(p);
    ASSERT_TRUE(answer.ok()) << answer.status();
    ASSERT_EQ(answer->predictions_size(), static_cast<int>(rows.size()));
    int correct = 0;
    for (size_t i = 0; i < rows.size(); ++i) {
      correct += answer->predictions(static_cast<int>(i)).classes(0).label() == rows[i].second;
    }
    EXPECT_GE(correct, 16) << "of " << rows.size();
  }
}

// The tokenizer is parsed at upload as training and Predict parse it: one
// whose vocabulary disagrees with kaizen.json is refused then, by name.
TEST_F(TextFineTuneE2E, AnUploadWhoseTokenizerDisagreesWithItsMetadataIsRefused) {
  torch::jit::ExtraFilesMap extra{{"kaizen.json", ""}, {"kaizen_tokenizer", ""}};
  torch::jit::Module bert =
      torch::jit::load(KAIZEN_FIXTURE_DIR "/tiny_bert.pt", torch::kCPU, extra);
  absl::StatusOr<v1::Model> meta = models::ModelFromMetadataJson(extra["kaizen.json"]);
  ASSERT_TRUE(meta.ok()) << meta.status();
  const int32_t ids = meta->text_input().vocab_size();
  // One id fewer than the vocabulary has: the encoder still runs on every
  // id below it, so only the tokenizer check can tell.
  meta->mutable_text_input()->set_vocab_size(ids - 1);
  absl::StatusOr<std::string> json = models::ModelToMetadataJson(*meta);
  ASSERT_TRUE(json.ok());
  extra["kaizen.json"] = *json;
  const std::string path = files_.File("short.pt");
  bert.save(path, extra);
  v1::UploadModelHeader h;
  h.set_name("short");
  absl::StatusOr<v1::Model> refused = s_.client->UploadModel(h, path);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument) << refused.status();
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr(absl::StrCat("the tokenizer has ", ids,
                                     " ids but text_input.vocab_size is ", ids - 1)));
  EXPECT_EQ(s_.client->GetModel("short", 0).status().code(), absl::StatusCode::kNotFound);
}

// DISTILL on text: a stored text classifier teaches a new, narrower
// transformer-small. The teacher reads the texts with its own tokenizer, the
// student with the one the job trains; the job pins the teacher's version
// and reports both side by side on validation and test texts.
TEST_F(TextFineTuneE2E, DistillTeachesANarrowerEncoderFromAStoredTextClassifier) {
  std::vector<test_util::WordNetGloss> validation, held_out;
  for (size_t i = 0; i < suite_->test.size(); ++i) {
    (i % 2 == 0 ? validation : held_out).push_back(suite_->test[i]);
  }
  ASSERT_TRUE(Upload("val", validation).ok());
  ASSERT_TRUE(Upload("held", held_out).ok());
  v1::StartFineTuneRequest t = Request("transformer-small", "teacher", v1::STRATEGY_SCRATCH, 8);
  t.mutable_hyperparameters()->set_learning_rate(2e-3);
  t.mutable_hyperparameters()->mutable_text()->set_num_layers(2);
  ASSERT_TRUE(Run(t).ok());

  v1::StartFineTuneRequest r = Request("transformer-small", "student", v1::STRATEGY_DISTILL, 8);
  r.mutable_hyperparameters()->set_learning_rate(2e-3);
  r.mutable_hyperparameters()->mutable_text()->set_hidden_size(32);
  // Fewer pieces than the teacher's: the same texts and size would train
  // the same tokenizer, byte for byte.
  r.mutable_hyperparameters()->mutable_text()->set_vocab_size(400);
  r.mutable_hyperparameters()->mutable_validation()->set_dataset("val");
  r.set_test_dataset("held");
  r.mutable_distillation()->set_teacher_model("teacher");
  r.mutable_distillation()->set_temperature(2);
  absl::StatusOr<v1::Job> job = Run(r);
  ASSERT_TRUE(job.ok()) << job.status();
  const v1::DistillationResult& d = job->distillation();
  EXPECT_EQ(d.teacher_model(), "teacher");
  EXPECT_EQ(d.teacher_version(), 8);  // the teacher job's last epoch
  EXPECT_EQ(d.temperature(), 2);
  EXPECT_EQ(d.alpha(), 0.7);  // the default
  absl::StatusOr<v1::Model> teacher = s_.client->GetModel("teacher", 8);
  absl::StatusOr<v1::Model> student = s_.client->GetModel("student", 0);
  ASSERT_TRUE(teacher.ok() && student.ok()) << teacher.status() << student.status();
  EXPECT_EQ(d.teacher_parameter_count(), teacher->parameter_count());
  EXPECT_EQ(d.student_parameter_count(), student->parameter_count());
  EXPECT_LT(2 * student->parameter_count(), teacher->parameter_count());
  // The student carries its own tokenizer, not the teacher's.
  EXPECT_NE(student->text_input().tokenizer_sha256(), teacher->text_input().tokenizer_sha256());
  std::cout << "distilled: validation " << d.teacher_val_accuracy() << " (teacher) vs "
            << d.student_val_accuracy() << " (student); test " << d.teacher_test_accuracy()
            << " vs " << d.student_test_accuracy() << "; parameters " << d.teacher_parameter_count()
            << " vs " << d.student_parameter_count() << "; one text " << d.teacher_latency_ms()
            << " ms vs " << d.student_latency_ms() << " ms\n";
  // One text's forward pass, each model with its own tokenizer.
  EXPECT_GT(d.teacher_latency_ms(), 0);
  EXPECT_GT(d.student_latency_ms(), 0);
  EXPECT_EQ(d.validation_examples(), static_cast<int64_t>(validation.size()));
  EXPECT_EQ(d.student_val_accuracy(), job->history(7).val_accuracy());
  EXPECT_GT(d.teacher_val_accuracy(), 0.5);  // three classes: chance is 1/3
  EXPECT_GT(d.student_val_accuracy(), 0.5);
  ASSERT_TRUE(student->has_test_evaluation());
  EXPECT_EQ(d.test_examples(), static_cast<int64_t>(held_out.size()));
  EXPECT_EQ(d.student_test_accuracy(), student->test_evaluation().accuracy());
  EXPECT_GT(d.teacher_test_accuracy(), 0.5);
  absl::StatusOr<v1::PredictResponse> p = PredictTexts("student", held_out);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->predictions_size(), static_cast<int>(held_out.size()));

  // A teacher that is not there, or that predicts other classes.
  v1::StartFineTuneRequest missing = r;
  missing.set_output_model("o");
  missing.mutable_distillation()->set_teacher_model("nope");
  EXPECT_EQ(s_.client->StartFineTune(missing).status().code(), absl::StatusCode::kNotFound);
  std::vector<test_util::WordNetGloss> two;
  for (const auto& g : suite_->train) {
    if (g.category != "verb.motion") two.push_back(g);
  }
  ASSERT_TRUE(Upload("two", two).ok());
  v1::StartFineTuneRequest other = r;
  other.set_output_model("o");
  other.set_dataset("two");
  other.clear_test_dataset();
  other.mutable_hyperparameters()->clear_validation();
  absl::StatusOr<v1::Job> refused = s_.client->StartFineTune(other);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument) << refused.status();
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr("predicts the classes [noun.animal, noun.food, verb.motion] but dataset "
                        "\"two\" has [noun.animal, noun.food]"));
}

// A text classifier's job writes a version after each epoch; paused midway,
// it resumes from its latest version (the epoch under way runs again), and
// its epochs have the losses of a run that never stopped.
TEST_F(TextFineTuneE2E, APausedTextJobResumesFromItsLastEpochWithTheSameLosses) {
  constexpr int kEpochs = 12;
  v1::StartFineTuneRequest r =
      Request("transformer-small", "straight", v1::STRATEGY_SCRATCH, kEpochs);
  r.mutable_hyperparameters()->set_learning_rate(2e-3);
  absl::StatusOr<v1::Job> straight = Run(r);
  ASSERT_TRUE(straight.ok()) << straight.status();
  ASSERT_EQ(straight->history_size(), kEpochs);

  r.set_output_model("paused");
  v1::Job paused;
  ASSERT_NO_FATAL_FAILURE(StartAndPauseAfter(r, 2, &paused));
  const std::string id = paused.id();
  const int64_t at = paused.latest_version();

  ASSERT_TRUE(s_.client->ResumeJob(id).ok());
  absl::StatusOr<v1::Job> done = test_util::WaitForJob(*s_.client, id, {v1::JOB_STATE_SUCCEEDED});
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->latest_version(), kEpochs);
  ASSERT_EQ(done->history_size(), kEpochs);
  for (int e = 0; e < kEpochs; ++e) {
    EXPECT_NEAR(done->history(e).train_loss(), straight->history(e).train_loss(), 1e-5)
        << "epoch " << e + 1 << " (paused after " << at << ")";
  }
  // The same model: the same answers.
  const std::vector<test_util::WordNetGloss> some(suite_->test.begin(), suite_->test.begin() + 10);
  absl::StatusOr<v1::PredictResponse> a = PredictTexts("straight", some);
  absl::StatusOr<v1::PredictResponse> b = PredictTexts("paused", some);
  ASSERT_TRUE(a.ok() && b.ok()) << a.status() << b.status();
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(a->predictions(i).classes(0).label(), b->predictions(i).classes(0).label()) << i;
    EXPECT_NEAR(a->predictions(i).classes(0).probability(),
                b->predictions(i).classes(0).probability(), 1e-4)
        << i;
  }
}

// INCREMENTAL on text: a classifier of two categories learns a third from
// a dataset of the third and a few more glosses of one old category,
// replaying exemplars chosen from the dataset its base was trained on
// (found through the base's job) and distilling from the base; accuracy
// before and after on the old and new classes is measured on a test set
// with all three.
TEST_F(TextFineTuneE2E, IncrementalAddsACategoryAndReportsForgettingOnTheTestSet) {
  std::vector<test_util::WordNetGloss> old_rows, new_rows;
  int food = 0;
  for (const auto& g : suite_->train) {
    const bool later = g.category == kCategories[2] ||
                       (g.category == kCategories[1] && food++ >= kTrainPerClass - 20);
    (later ? new_rows : old_rows).push_back(g);
  }
  ASSERT_TRUE(Upload("two", old_rows).ok());
  ASSERT_TRUE(Upload("third", new_rows).ok());
  v1::StartFineTuneRequest first =
      Request("transformer-small", "inc-base", v1::STRATEGY_SCRATCH, 8);
  first.set_dataset("two");
  first.mutable_hyperparameters()->set_learning_rate(2e-3);
  absl::StatusOr<v1::Job> base = Run(first);
  ASSERT_TRUE(base.ok()) << base.status();

  v1::StartFineTuneRequest r = Request("inc-base", "inc-out", v1::STRATEGY_INCREMENTAL, 10);
  r.set_dataset("third");
  r.mutable_hyperparameters()->set_learning_rate(3e-3);
  r.set_test_dataset("test");
  r.mutable_incremental()->set_exemplars_per_class(20);
  // Refused before anything runs: herding is for images.
  {
    v1::StartFineTuneRequest herding = r;
    herding.mutable_incremental()->set_selection(v1::EXEMPLAR_SELECTION_HERDING);
    absl::StatusOr<v1::Job> refused = s_.client->StartFineTune(herding);
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument) << refused.status();
    EXPECT_THAT(std::string(refused.status().message()),
                HasSubstr("choose their exemplars at random"));
  }
  absl::StatusOr<v1::Job> done = Run(r);
  ASSERT_TRUE(done.ok()) << done.status();
  const v1::IncrementalResult& inc = done->incremental();
  EXPECT_EQ(inc.base_model(), "inc-base");
  EXPECT_EQ(inc.base_version(), base->latest_version());
  EXPECT_THAT(std::vector<std::string>(inc.old_classes().begin(), inc.old_classes().end()),
              ::testing::ElementsAre(kCategories[0], kCategories[1]));
  EXPECT_THAT(std::vector<std::string>(inc.new_classes().begin(), inc.new_classes().end()),
              ::testing::ElementsAre(kCategories[2]));
  EXPECT_EQ(inc.selection(), v1::EXEMPLAR_SELECTION_RANDOM);
  ASSERT_EQ(done->request().incremental().previous_datasets_size(), 1);
  EXPECT_EQ(done->request().incremental().previous_datasets(0), "two");
  EXPECT_EQ(inc.evaluated_on(), "test dataset test");
  EXPECT_EQ(inc.old_examples(), 2 * kTestPerClass);
  EXPECT_EQ(inc.new_examples(), kTestPerClass);
  EXPECT_EQ(inc.new_accuracy_before(), 0) << "the base has no such class";
  EXPECT_GT(inc.new_accuracy_after(), 0.5);
  EXPECT_GT(inc.old_accuracy_before(), 0.5);
  EXPECT_NEAR(inc.forgetting(), inc.old_accuracy_before() - inc.old_accuracy_after(), 1e-12);
  std::cout << "incremental on text: old " << inc.old_accuracy_before() << " -> "
            << inc.old_accuracy_after() << ", new " << inc.new_accuracy_before() << " -> "
            << inc.new_accuracy_after() << ", all " << inc.all_accuracy_before() << " -> "
            << inc.all_accuracy_after() << "\n";

  // Without rehearsal and distillation the same job forgets more.
  v1::StartFineTuneRequest plain = r;
  plain.set_output_model("inc-plain");
  plain.mutable_incremental()->set_disable_rehearsal(true);
  plain.mutable_incremental()->set_disable_distillation(true);
  absl::StatusOr<v1::Job> forgot = Run(plain);
  ASSERT_TRUE(forgot.ok()) << forgot.status();
  std::cout << "without rehearsal or distillation: old "
            << forgot->incremental().old_accuracy_before() << " -> "
            << forgot->incremental().old_accuracy_after() << ", new "
            << forgot->incremental().new_accuracy_after() << "\n";
  EXPECT_GT(forgot->incremental().forgetting(), inc.forgetting());

  absl::StatusOr<v1::Model> model = s_.client->GetModel("inc-out", 0);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_THAT(std::vector<std::string>(model->class_names().begin(), model->class_names().end()),
              ::testing::ElementsAre(kCategories[0], kCategories[1], kCategories[2]));
  EXPECT_EQ(model->test_evaluation().examples(), 3 * kTestPerClass);
  std::vector<std::string> messages;
  ASSERT_TRUE(s_.client
                  ->WatchJob(done->id(), 0,
                             [&](const v1::JobEvent& e) {
                               if (!e.message().empty()) messages.push_back(e.message());
                             })
                  .ok());
  const auto said = [&](const std::string& part) {
    return std::any_of(messages.begin(), messages.end(),
                       [&](const std::string& m) { return absl::StrContains(m, part); });
  };
  EXPECT_TRUE(
      said("with 1 new classes [verb.motion] on 140 new texts; 40 exemplars of 2 old "
           "classes chosen at random from two, replayed as 140 texts per epoch"));
  EXPECT_TRUE(said("incremental: on the test dataset test, inc-base:"));
}

// The tokenizer trains in kaizen-tokenizer-trainer under the server's
// limits: one it runs past fails that job with the flag to raise, and the
// server and what it stores carry on.
TEST_F(TextFineTuneE2E, ATokenizerTrainingPastItsMemoryLimitFailsOnlyItsJob) {
  test_util::TempDir data;
  api::KaizenServer::Options o = test_util::LoopbackOptions(data.path());
  o.tokenizer_sandbox.memory_bytes = int64_t{1} << 20;
  auto limited = test_util::StartLoopbackServer(o);
  ASSERT_TRUE(limited.ok()) << limited.status();
  s_ = *std::move(limited);
  ASSERT_TRUE(Upload("train", suite_->train).ok());

  absl::StatusOr<v1::Job> job =
      s_.client->StartFineTune(Request("transformer-small", "o", v1::STRATEGY_SCRATCH, 2));
  ASSERT_TRUE(job.ok()) << job.status();
  absl::StatusOr<v1::Job> end =
      test_util::WaitForJob(*s_.client, job->id(), {v1::JOB_STATE_FAILED});
  ASSERT_TRUE(end.ok()) << end.status();
  EXPECT_THAT(end->error(), HasSubstr("training the tokenizer needs more memory than the 1 MiB "
                                      "allowed (--tokenizer_train_memory_mb)"));
  EXPECT_EQ(end->latest_version(), 0);
  EXPECT_EQ(s_.client->GetModel("o", 0).status().code(), absl::StatusCode::kNotFound);
  absl::StatusOr<v1::Dataset> still = s_.client->GetDataset("train");
  ASSERT_TRUE(still.ok()) << still.status();
  EXPECT_EQ(still->num_examples(), static_cast<int64_t>(suite_->train.size()));
}

TEST_F(TextFineTuneE2E, TextJobsThatCannotRunAreRefusedByField) {
  struct Case {
    v1::StartFineTuneRequest request;
    std::string message;
  };
  std::vector<Case> cases;
  cases.push_back({Request("transformer-small", "o", v1::STRATEGY_FEATURE_EXTRACTION, 1),
                   "base_model transformer-small has neither weights nor a tokenizer"});
  cases.push_back({Request("transformer-small", "o", v1::STRATEGY_INCREMENTAL, 1),
                   "STRATEGY_INCREMENTAL needs a pretrained text model"});
  {
    v1::StartFineTuneRequest r = Request("transformer-small", "o", v1::STRATEGY_SCRATCH, 1);
    r.mutable_hyperparameters()->mutable_text()->set_vocab_size(5);
    cases.push_back({r, "hyperparameters.text.vocab_size is 5"});
  }
  {
    v1::StartFineTuneRequest r = Request("transformer-small", "o", v1::STRATEGY_SCRATCH, 1);
    r.mutable_hyperparameters()->mutable_augmentation()->set_enabled(true);
    cases.push_back({r, "hyperparameters.augmentation does not apply to text jobs"});
  }
  {
    v1::StartFineTuneRequest r = Request("transformer-small", "o", v1::STRATEGY_SCRATCH, 1);
    r.set_test_dataset("train");
    cases.push_back({r, "test_dataset \"train\" is the job's training dataset"});
  }
  {
    v1::StartFineTuneRequest r = Request("transformer-small", "o", v1::STRATEGY_MASKED_LM, 1);
    r.set_test_dataset("test");
    cases.push_back({r, "STRATEGY_MASKED_LM trains no classifier to test"});
  }
  for (const Case& c : cases) {
    absl::StatusOr<v1::Job> job = s_.client->StartFineTune(c.request);
    EXPECT_EQ(job.status().code(), absl::StatusCode::kInvalidArgument) << job.status();
    EXPECT_THAT(std::string(job.status().message()), HasSubstr(c.message));
  }
  // The built-in encoder's name is not an output's.
  absl::StatusOr<v1::Job> taken = s_.client->StartFineTune(
      Request("transformer-small", "transformer-small", v1::STRATEGY_SCRATCH, 1));
  EXPECT_EQ(taken.status().code(), absl::StatusCode::kAlreadyExists) << taken.status();
  // MASKED_LM on an image dataset.
  v1::StartFineTuneRequest r = Request("cnn-small", "o", v1::STRATEGY_MASKED_LM, 1);
  r.set_dataset("no-such-images");
  absl::StatusOr<v1::Job> job = s_.client->StartFineTune(r);
  EXPECT_EQ(job.status().code(), absl::StatusCode::kInvalidArgument) << job.status();
  EXPECT_THAT(std::string(job.status().message()), HasSubstr("needs a text dataset"));
}

}  // namespace
}  // namespace kaizen
