#include "server/jobs/text_job.h"

#include <algorithm>
#include <chrono>
#include <csignal>
#include <memory>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "server/common/sha256.h"
#include "server/common/status_macros.h"
#include "server/sandbox/subprocess.h"
#include "server/text/sentencepiece_tokenizer.h"
#include "server/training/evaluator.h"
#include "server/training/forward_latency.h"
#include "server/training/hyperparameters.h"
#include "server/training/masked_lm.h"
#include "server/training/text_model.h"
#include "server/training/text_trainer.h"

namespace kaizen::jobs {
namespace {

using kaizen::v1::Strategy;

// TrainTextTokenizer's ids.
constexpr int32_t kBosId = 1;
constexpr int32_t kEosId = 2;
constexpr int32_t kPadId = 3;
constexpr int32_t kMaskId = 4;

constexpr int32_t kDefaultEpochs = 10;
constexpr int32_t kDefaultBatchSize = 32;
constexpr int32_t kDefaultMaxLength = 128;
constexpr int32_t kDefaultVocabSize = 4000;
// What a job's tokenizer is trained on (TrainTextTokenizer).
constexpr size_t kMaxTokenizerSentences = 100000;
constexpr size_t kMaxTokenizerSentenceBytes = 16384;
constexpr size_t kMaxTokenizerCorpusBytes = size_t{256} << 20;
// A model the trainer writes back is refused beyond this (a 100,000-piece
// model is about 2 MiB).
constexpr size_t kMaxTokenizerModelBytes = size_t{64} << 20;

bool IsTextStrategy(Strategy s) {
  return s == kaizen::v1::STRATEGY_FEATURE_EXTRACTION || s == kaizen::v1::STRATEGY_FINE_TUNE ||
         s == kaizen::v1::STRATEGY_FULL || s == kaizen::v1::STRATEGY_SCRATCH ||
         s == kaizen::v1::STRATEGY_DISTILL || s == kaizen::v1::STRATEGY_MASKED_LM ||
         s == kaizen::v1::STRATEGY_INCREMENTAL;
}

absl::Status CheckRange(absl::string_view field, int64_t value, int64_t lo, int64_t hi) {
  if (value != 0 && (value < lo || value > hi)) {
    return absl::InvalidArgumentError(absl::StrCat("hyperparameters.text.", field, " is ", value,
                                                   "; it must be 0 (the default) or in [", lo, ", ",
                                                   hi, "]"));
  }
  return absl::OkStatus();
}

// Every row of `texts` through `input`; InvalidArgument naming the row.
absl::StatusOr<training::TextExamples> Encode(const training::TextModelInput& input,
                                              const LabelledTexts& texts, absl::string_view what) {
  training::TextExamples out;
  out.sequences.reserve(texts.texts.size());
  for (size_t i = 0; i < texts.texts.size(); ++i) {
    absl::StatusOr<std::vector<int32_t>> ids = input.Encode(texts.texts[i]);
    if (!ids.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " text ", i + 1, ": ", ids.status().message()));
    }
    out.sequences.push_back(*std::move(ids));
  }
  out.labels = texts.labels;
  return out;
}

int64_t CountParameters(const torch::jit::Module& module) {
  int64_t n = 0;
  for (const torch::Tensor& p : module.parameters(/*recurse=*/true)) n += p.numel();
  return n;
}

models::TextEncoderOptions NewEncoderOptions(const kaizen::v1::TextOptions& text, int32_t vocab,
                                             int64_t classes, uint64_t seed) {
  models::TextEncoderOptions o;
  o.vocab_size = vocab;
  o.max_length = text.max_length();
  o.hidden_size = text.hidden_size();
  o.num_layers = text.num_layers();
  o.num_heads = text.num_heads();
  o.intermediate_size = 4 * o.hidden_size;
  o.pooling = training::FromProto(text.pooling());
  o.num_classes = classes;
  o.seed = seed;
  return o;
}

}  // namespace

absl::StatusOr<LabelledTexts> ReadTextRecords(const datasets::RecordFile& file) {
  LabelledTexts out;
  out.class_names = file.class_names();
  out.texts.reserve(file.size());
  out.labels.reserve(file.size());
  for (uint64_t i = 0; i < file.size(); ++i) {
    ASSIGN_OR_RETURN(std::string text, file.ReadText(i));
    out.texts.push_back(std::move(text));
    out.labels.push_back(file.info(i).label);
    file.Release(i);
  }
  return out;
}

bool BuildsNewTextEncoder(const kaizen::v1::StartFineTuneRequest& request) {
  return request.base_model() == models::kTransformerSmall;
}

absl::Status CheckTextJob(const kaizen::v1::StartFineTuneRequest& request,
                          const kaizen::v1::Model* base) {
  const Strategy strategy = request.strategy();
  if (!IsTextStrategy(strategy)) {
    return absl::InvalidArgumentError(
        absl::StrCat("dataset \"", request.dataset(),
                     "\" holds text; text jobs run FEATURE_EXTRACTION, "
                     "FINE_TUNE, FULL, SCRATCH, DISTILL, INCREMENTAL or MASKED_LM, not ",
                     kaizen::v1::Strategy_Name(strategy)));
  }
  RETURN_IF_ERROR(training::ResolveDistillation(strategy, request.distillation()).status());
  if (base == nullptr && strategy != kaizen::v1::STRATEGY_SCRATCH &&
      strategy != kaizen::v1::STRATEGY_DISTILL && strategy != kaizen::v1::STRATEGY_MASKED_LM) {
    return absl::InvalidArgumentError(absl::StrCat(
        "base_model ", models::kTransformerSmall,
        " has neither weights nor a tokenizer: ", kaizen::v1::Strategy_Name(strategy),
        " needs a pretrained text model (one a MASKED_LM job wrote, or an earlier text job's); "
        "use STRATEGY_SCRATCH, STRATEGY_DISTILL or STRATEGY_MASKED_LM to build one"));
  }
  if (base != nullptr && !base->has_text_input()) {
    return absl::InvalidArgumentError(
        absl::StrCat("base_model \"", request.base_model(), "\" is an image model and dataset \"",
                     request.dataset(), "\" holds text; use a text model (with a tokenizer), or ",
                     models::kTransformerSmall, " with STRATEGY_SCRATCH or STRATEGY_MASKED_LM"));
  }
  if (request.tuning().max_trials() > 0) {
    return absl::InvalidArgumentError(
        "tuning.max_trials is set but text jobs do not tune in this version; set the "
        "hyperparameters");
  }
  if (strategy == kaizen::v1::STRATEGY_INCREMENTAL) {
    if (base == nullptr || base->class_names().empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "base_model \"", request.base_model(),
          "\" has no class names; STRATEGY_INCREMENTAL continues a text classifier (one a text "
          "job wrote, or an uploaded one with class_names)"));
    }
    if (request.incremental().selection() == kaizen::v1::EXEMPLAR_SELECTION_HERDING) {
      return absl::InvalidArgumentError(
          "incremental.selection EXEMPLAR_SELECTION_HERDING applies to image jobs; text jobs "
          "choose their exemplars at random (EXEMPLAR_SELECTION_RANDOM, the default for text)");
    }
  }
  const kaizen::v1::Hyperparameters& hp = request.hyperparameters();
  RETURN_IF_ERROR(training::CheckRequestedRanges(hp));
  const std::pair<bool, const char*> image_only[] = {
      {hp.has_augmentation(), "augmentation"},
      {hp.mixed_precision() == kaizen::v1::MIXED_PRECISION_BF16 ||
           hp.mixed_precision() == kaizen::v1::MIXED_PRECISION_FP16,
       "mixed_precision"},
      {hp.head().kind() == kaizen::v1::HEAD_KIND_MLP, "head.kind HEAD_KIND_MLP"},
      {hp.head_warmup_epochs() != 0, "head_warmup_epochs"},
      {hp.drop_last_fraction() != 0, "drop_last_fraction"},
      {hp.validation().source_case() == kaizen::v1::ValidationOptions::kSplit,
       "validation.split (name a validation dataset)"},
      {hp.has_early_stopping(), "early_stopping"},
      {hp.label_smoothing() != 0, "label_smoothing"},
  };
  for (const auto& [set, field] : image_only) {
    if (set) {
      return absl::InvalidArgumentError(
          absl::StrCat("hyperparameters.", field, " does not apply to text jobs in this version"));
    }
  }
  if (hp.epochs() < 0 || hp.batch_size() < 0 || hp.learning_rate() < 0) {
    return absl::InvalidArgumentError(
        "hyperparameters.epochs, batch_size and learning_rate must not be negative");
  }
  const kaizen::v1::TextOptions& t = hp.text();
  if (!kaizen::v1::TextPooling_IsValid(t.pooling())) {
    return absl::InvalidArgumentError(
        absl::StrCat("hyperparameters.text.pooling is ", t.pooling(), ", not a known pooling"));
  }
  RETURN_IF_ERROR(CheckRange("max_length", t.max_length(), 4, 4096));
  RETURN_IF_ERROR(CheckRange("vocab_size", t.vocab_size(), 16, 100000));
  RETURN_IF_ERROR(CheckRange("hidden_size", t.hidden_size(), 8, 2048));
  RETURN_IF_ERROR(CheckRange("num_layers", t.num_layers(), 1, 48));
  RETURN_IF_ERROR(CheckRange("num_heads", t.num_heads(), 1, 64));
  if (!(t.mask_probability() >= 0 && t.mask_probability() < 1)) {
    return absl::InvalidArgumentError(absl::StrCat("hyperparameters.text.mask_probability is ",
                                                   t.mask_probability(), "; it must be in [0, 1)"));
  }
  if (t.mask_probability() != 0 && strategy != kaizen::v1::STRATEGY_MASKED_LM) {
    return absl::InvalidArgumentError(
        "hyperparameters.text.mask_probability applies to STRATEGY_MASKED_LM only");
  }
  const bool shape_set = t.vocab_size() != 0 || t.hidden_size() != 0 || t.num_layers() != 0 ||
                         t.num_heads() != 0 || t.pooling() != kaizen::v1::TEXT_POOLING_UNSPECIFIED;
  if (base != nullptr && shape_set) {
    return absl::InvalidArgumentError(absl::StrCat(
        "hyperparameters.text.vocab_size, hidden_size, num_layers, num_heads and pooling shape a "
        "new encoder; base_model \"",
        request.base_model(), "\" has its own (use ", models::kTransformerSmall, " to build one)"));
  }
  if (strategy == kaizen::v1::STRATEGY_MASKED_LM && base != nullptr &&
      base->text_input().mask_id() < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "base_model \"", request.base_model(),
        "\"'s tokenizer has no mask id (text_input.mask_id); masked-language modelling needs one"));
  }
  if (base != nullptr && t.max_length() > base->text_input().max_length()) {
    return absl::InvalidArgumentError(
        absl::StrCat("hyperparameters.text.max_length ", t.max_length(), " is over base_model \"",
                     request.base_model(), "\"'s ", base->text_input().max_length(), " positions"));
  }
  if (base == nullptr) {
    const int32_t hidden = t.hidden_size() != 0 ? t.hidden_size() : 128;
    const int32_t heads = t.num_heads() != 0 ? t.num_heads() : 4;
    if (hidden % heads != 0) {
      return absl::InvalidArgumentError(absl::StrCat("hyperparameters.text.hidden_size ", hidden,
                                                     " is not a multiple of num_heads ", heads));
    }
  }
  return absl::OkStatus();
}

kaizen::v1::Hyperparameters ResolveTextHyperparameters(
    const kaizen::v1::StartFineTuneRequest& request, const kaizen::v1::Model* base) {
  const kaizen::v1::Hyperparameters& req = request.hyperparameters();
  const int32_t epochs = req.epochs() > 0 ? req.epochs() : kDefaultEpochs;
  const int32_t batch = req.batch_size() > 0 ? req.batch_size() : kDefaultBatchSize;
  const bool mlm = request.strategy() == kaizen::v1::STRATEGY_MASKED_LM;
  kaizen::v1::Hyperparameters hp = training::DefaultTextHyperparameters(
      mlm ? kaizen::v1::STRATEGY_SCRATCH : request.strategy(), epochs, batch);
  if (mlm) hp.set_learning_rate(5e-4);
  if (req.learning_rate() > 0) hp.set_learning_rate(req.learning_rate());
  if (req.backbone_lr_multiplier() > 0) hp.set_backbone_lr_multiplier(req.backbone_lr_multiplier());
  if (req.trainable_blocks() > 0) hp.set_trainable_blocks(req.trainable_blocks());
  if (req.optimizer().kind() != kaizen::v1::OPTIMIZER_UNSPECIFIED) {
    *hp.mutable_optimizer() = req.optimizer();
  }
  if (req.schedule().kind() != kaizen::v1::SCHEDULE_UNSPECIFIED) {
    *hp.mutable_schedule() = req.schedule();
  }
  if (req.gradient_clip_norm() > 0) hp.set_gradient_clip_norm(req.gradient_clip_norm());
  hp.set_seed(req.seed());
  *hp.mutable_validation() = req.validation();
  kaizen::v1::TextOptions* t = hp.mutable_text();
  *t = req.text();
  if (t->max_length() == 0) {
    t->set_max_length(base != nullptr ? base->text_input().max_length() : kDefaultMaxLength);
  }
  if (base == nullptr) {
    if (t->vocab_size() == 0) t->set_vocab_size(kDefaultVocabSize);
    if (t->hidden_size() == 0) t->set_hidden_size(128);
    if (t->num_layers() == 0) t->set_num_layers(2);
    if (t->num_heads() == 0) t->set_num_heads(4);
    if (t->pooling() == kaizen::v1::TEXT_POOLING_UNSPECIFIED) {
      t->set_pooling(kaizen::v1::TEXT_POOLING_FIRST_TOKEN);
    }
  }
  if (mlm && t->mask_probability() == 0) t->set_mask_probability(0.15);
  return hp;
}

namespace {

// The trainer's input: one text per line, spread evenly through `texts`
// when they are more than kMaxTokenizerSentences, each cut to
// kMaxTokenizerSentenceBytes, up to kMaxTokenizerCorpusBytes in all.
std::string TokenizerCorpus(const std::vector<std::string>& texts) {
  // Texts j * n / k for j < k: evenly spread, k of them.
  const size_t n = texts.size();
  const size_t k = std::min(n, kMaxTokenizerSentences);
  std::string corpus;
  for (size_t j = 0; j < k; ++j) {
    const std::string_view cut = text::CutText(texts[j * n / k], kMaxTokenizerSentenceBytes, false);
    if (corpus.size() + cut.size() + 1 > kMaxTokenizerCorpusBytes) break;
    absl::StrAppend(
        &corpus,
        absl::StrReplaceAll(absl::string_view(cut.data(), cut.size()), {{"\r", " "}, {"\n", " "}}),
        "\n");
  }
  return corpus;
}

// Why the trainer gave no model, as the job's error.
absl::Status TrainerFailure(const sandbox::SubprocessResult& r, const TokenizerSandbox& box) {
  constexpr int kTrainingFailed = 1;  // tokenizer_trainer_main.cc's exit codes
  constexpr int kOutOfMemory = 3;
  constexpr int kLibraryCheckFailed = 255;  // SentencePiece's own CHECK failures
  // The trainer's reason is its last line (SentencePiece logs the command
  // it runs first; an uncaught exception ends "what():  ...").
  absl::string_view said = absl::StripAsciiWhitespace(r.stderr_bytes);
  if (const size_t nl = said.rfind('\n'); nl != absl::string_view::npos) {
    said.remove_prefix(nl + 1);
  }
  said = absl::StripAsciiWhitespace(absl::StripPrefix(absl::StripAsciiWhitespace(said), "what():"));
  const std::string_view cut =
      text::CutText(std::string_view(said.data(), said.size()), 1000, false);
  said = absl::string_view(cut.data(), cut.size());
  if (r.output_too_large) {
    return absl::InternalError(
        absl::StrCat("the tokenizer trainer wrote more than it may: ", sandbox::DescribeEnd(r)));
  }
  if (r.timed_out) {
    return absl::ResourceExhaustedError(absl::StrCat("training the tokenizer took longer than ",
                                                     absl::FormatDuration(box.timeout),
                                                     " (--tokenizer_train_timeout_seconds)"));
  }
  if (r.term_signal == SIGXCPU ||
      (r.term_signal == SIGKILL && r.cpu_seconds >= static_cast<double>(box.cpu_seconds))) {
    return absl::ResourceExhaustedError(
        absl::StrCat("training the tokenizer used more than its ", box.cpu_seconds,
                     " CPU seconds (--tokenizer_train_cpu_seconds): ", sandbox::DescribeEnd(r)));
  }
  // Running out of address space, seen from inside: an allocation, a
  // thread's stack or SentencePiece's suffix array that could not be had
  // (reported as an error, an uncaught std::bad_alloc, or a failed CHECK).
  const bool no_memory = absl::StrContains(said, "bad_alloc") ||
                         absl::StrContains(said, "Resource temporarily unavailable") ||
                         absl::StrContains(said, "Cannot allocate memory") ||
                         absl::StrContains(r.stderr_bytes, "esaxx");
  const bool library_failed = r.exit_code == kTrainingFailed ||
                              r.exit_code == kLibraryCheckFailed || r.term_signal == SIGABRT;
  if (r.exit_code == kOutOfMemory || (library_failed && no_memory)) {
    return absl::ResourceExhaustedError(
        absl::StrCat("training the tokenizer needs more memory than the ", box.memory_bytes >> 20,
                     " MiB allowed (--tokenizer_train_memory_mb): ", said));
  }
  if (library_failed) {
    return absl::InvalidArgumentError(
        absl::StrCat("training a SentencePiece tokenizer on the dataset's texts failed: ", said));
  }
  return absl::InternalError(absl::StrCat("the tokenizer trainer ", sandbox::DescribeEnd(r),
                                          said.empty() ? "" : ": ", said));
}

}  // namespace

absl::StatusOr<TrainedTokenizer> TrainTextTokenizer(const std::vector<std::string>& texts,
                                                    int32_t vocab_size, int32_t max_length,
                                                    const TokenizerSandbox& box) {
  // --hard_vocab_limit=false: a small dataset gets fewer pieces instead of
  // an error. Every text sent is read (no sampling), and one thread makes
  // the pieces a function of the texts.
  sandbox::SubprocessOptions run;
  run.binary = box.trainer_path.empty() ? sandbox::BesideThisExecutable("kaizen-tokenizer-trainer")
                                        : box.trainer_path;
  run.args = {
      absl::StrCat("--spm_flags=--vocab_size=", vocab_size,
                   " --model_type=unigram --character_coverage=1.0 --hard_vocab_limit=false",
                   " --unk_id=0 --bos_id=", kBosId, " --eos_id=", kEosId, " --pad_id=", kPadId,
                   " --user_defined_symbols=[MASK] --minloglevel=2 --num_threads=1",
                   " --input_sentence_size=", kMaxTokenizerSentences,
                   " --max_sentence_length=", kMaxTokenizerSentenceBytes),
      absl::StrCat("--memory_bytes=", box.memory_bytes),
      absl::StrCat("--cpu_seconds=", box.cpu_seconds)};
  run.input = TokenizerCorpus(texts);
  run.timeout = box.timeout;
  run.max_stdout_bytes = kMaxTokenizerModelBytes;
  ASSIGN_OR_RETURN(const sandbox::SubprocessResult result, sandbox::RunSubprocess(std::move(run)));
  if (result.exit_code != 0 || result.output_too_large) return TrainerFailure(result, box);
  TrainedTokenizer out;
  out.model_file = result.stdout_bytes;
  out.cost = absl::StrFormat("%.1f s, %d MiB peak", absl::ToDoubleSeconds(result.wall),
                             result.max_rss_bytes >> 20);
  ASSIGN_OR_RETURN(std::unique_ptr<text::SentencePieceTokenizer> loaded,
                   text::SentencePieceTokenizer::Load(out.model_file));
  kaizen::v1::TextInput& input = out.input;
  input.set_tokenizer(kaizen::v1::TOKENIZER_KIND_SENTENCEPIECE);
  input.set_tokenizer_sha256(common::Sha256Hex(out.model_file));
  input.set_vocab_size(loaded->vocab_size());
  input.set_max_length(max_length);
  input.set_first_id(kBosId);
  input.set_last_id(kEosId);
  input.set_pad_id(kPadId);
  input.set_mask_id(loaded->Piece(kMaskId) == "[MASK]" ? kMaskId : -1);
  input.set_pooling(kaizen::v1::TEXT_POOLING_FIRST_TOKEN);
  return out;
}

namespace {

// The encoder a job starts from, its metadata, tokenizer and TextInput.
struct StartingPoint {
  torch::jit::Module module;
  kaizen::v1::Model metadata;
  std::string tokenizer;
};

absl::StatusOr<StartingPoint> Start(const TextJobInputs& in) {
  const kaizen::v1::TextOptions& t = in.hyperparameters.text();
  StartingPoint s;
  if (in.resume.has_value()) {
    s.module = in.resume->module.clone();
    s.metadata = in.resume->metadata;
    s.tokenizer = in.resume->tokenizer;
    return s;
  }
  if (in.base.has_value()) {
    s.module = in.base->clone();
    s.tokenizer = in.base_tokenizer;
    // What describes the base's architecture and input stays; what its own
    // training measured or the catalogue added does not.
    kaizen::v1::Model& m = s.metadata;
    m.set_architecture(in.base_metadata.architecture());
    *m.mutable_head() = in.base_metadata.head();
    *m.mutable_class_names() = in.base_metadata.class_names();
    m.set_parameter_count(in.base_metadata.parameter_count());
    *m.mutable_text_input() = in.base_metadata.text_input();
    m.mutable_text_input()->set_max_length(t.max_length());
    return s;
  }
  if (in.on_message) {
    in.on_message(absl::StrCat("training a SentencePiece tokenizer (at most ", t.vocab_size(),
                               " pieces) on ", in.train.texts.size(), " training texts"));
  }
  ASSIGN_OR_RETURN(TrainedTokenizer tok, TrainTextTokenizer(in.train.texts, t.vocab_size(),
                                                            t.max_length(), in.tokenizer_sandbox));
  if (in.on_message) {
    in.on_message(absl::StrCat("the tokenizer has ", tok.input.vocab_size(), " pieces (trained in ",
                               tok.cost, ", in a sandboxed process)"));
  }
  const models::TextEncoderOptions options = NewEncoderOptions(
      t, tok.input.vocab_size(), static_cast<int64_t>(in.train.class_names.size()),
      in.hyperparameters.seed());
  ASSIGN_OR_RETURN(s.module, models::CreateTextEncoder(options));
  ASSIGN_OR_RETURN(s.metadata, training::DescribeTextEncoder(options, tok.input));
  for (const std::string& c : in.train.class_names) s.metadata.add_class_names(c);
  s.tokenizer = std::move(tok.model_file);
  return s;
}

// `start` without what describes one stored version of it (name, version,
// size, digests, dates, metrics, catalogue lists): what a new version
// written from it starts from.
kaizen::v1::Model WithoutVersionFields(kaizen::v1::Model m) {
  for (auto clear :
       {&kaizen::v1::Model::clear_name, &kaizen::v1::Model::clear_version,
        &kaizen::v1::Model::clear_size_bytes, &kaizen::v1::Model::clear_sha256,
        &kaizen::v1::Model::clear_create_time, &kaizen::v1::Model::clear_job_id,
        &kaizen::v1::Model::clear_metrics, &kaizen::v1::Model::clear_versions,
        &kaizen::v1::Model::clear_latest_version, &kaizen::v1::Model::clear_best_version,
        &kaizen::v1::Model::clear_quarantine_reason, &kaizen::v1::Model::clear_quarantined_versions,
        &kaizen::v1::Model::clear_test_evaluation}) {
    (m.*clear)();
  }
  return m;
}

// MASKED_LM: pretrains the starting point's encoder; after each epoch hands
// out the encoder (CPU, eval mode) as a checkpoint with its figures and the
// bytes that continue the run; a resumed run continues from in.resume's.
absl::StatusOr<TextJobOutput> RunMaskedLm(const TextJobInputs& in, StartingPoint start,
                                          const training::TextExamples& train,
                                          const training::TextExamples* validation) {
  const kaizen::v1::Hyperparameters& hp = in.hyperparameters;
  const kaizen::v1::TextInput& input = start.metadata.text_input();
  if (input.mask_id() < 0) {
    return absl::InvalidArgumentError(
        "the tokenizer has no mask id (text_input.mask_id); masked-language modelling needs one");
  }
  training::PretrainOptions o;
  o.epochs = hp.epochs();
  o.batch_size = hp.batch_size();
  o.learning_rate = hp.learning_rate();
  o.weight_decay = hp.optimizer().weight_decay();
  o.masking.mask_probability = hp.text().mask_probability();
  o.masking.mask_id = input.mask_id();
  o.masking.vocab_size = input.vocab_size();
  if (input.first_id() >= 0) o.masking.never_mask.push_back(input.first_id());
  if (input.last_id() >= 0) o.masking.never_mask.push_back(input.last_id());
  o.pad_id = input.pad_id();
  o.seed = hp.seed();
  o.should_stop = in.should_stop;
  if (in.resume.has_value()) o.resume = in.resume->state;
  start.module.to(in.device);
  ASSIGN_OR_RETURN(torch::jit::Module mlm,
                   models::CreateMaskedLanguageModel(start.module, hp.seed()));
  if (validation != nullptr) {
    // The same positions every epoch (one seed), so epochs compare.
    o.validation_loss = [&] {
      return training::EvaluateMaskedLanguageModel(mlm, validation->sequences, o.masking, o.pad_id,
                                                   o.batch_size, hp.seed(), in.should_stop);
    };
  }
  const kaizen::v1::Model described = WithoutVersionFields(start.metadata);
  const auto describe = [&](const kaizen::v1::EpochMetrics& m) {
    kaizen::v1::Model out = described;
    auto& metrics = *out.mutable_metrics();
    metrics["masked_lm_loss"] = m.train_loss();
    metrics["train_loss"] = m.train_loss();
    if (validation != nullptr) metrics["val_masked_lm_loss"] = m.val_loss();
    return out;
  };
  TextJobOutput out;
  o.on_epoch = [&](const training::PretrainEpoch& e) {
    out.epochs_completed = e.metrics.epoch();
    out.metadata = describe(e.metrics);
    if (in.on_epoch) in.on_epoch(e.metrics);
    if (!in.on_checkpoint) return absl::OkStatus();
    TextJobCheckpoint c;
    {
      torch::NoGradGuard no_grad;  // a copy of the weights, not of their graph
      c.module = start.module.clone();
    }
    c.module.to(torch::kCPU);
    c.module.eval();
    c.metadata = out.metadata;
    c.tokenizer = &start.tokenizer;
    c.epoch = e.metrics.epoch();
    c.is_best = e.is_best;
    c.resume_state = e.resume_state;
    return in.on_checkpoint(c);
  };
  ASSIGN_OR_RETURN(const training::PretrainResult result,
                   training::PretrainMaskedLanguageModel(mlm, train.sequences, o));
  out.stopped = result.stopped;
  start.module.to(torch::kCPU);
  start.module.eval();
  out.module = start.module;
  if (out.epochs_completed == 0) out.metadata = described;  // stopped before an epoch ended
  out.tokenizer = std::move(start.tokenizer);
  return out;
}

// What a classifier's version says of itself: what `start` (the starting
// point's metadata, or a resumed checkpoint's) says of the architecture and
// text input, the dataset's classes, the new head, its size and the figures
// of its last epoch (none: no figures).
kaizen::v1::Model DescribeClassifier(const kaizen::v1::Model& start,
                                     const std::vector<std::string>& classes,
                                     const std::string& head_path, const torch::jit::Module& module,
                                     const kaizen::v1::EpochMetrics* last, bool validated) {
  kaizen::v1::Model m = WithoutVersionFields(start);
  m.clear_class_names();
  for (const std::string& c : classes) m.add_class_names(c);
  kaizen::v1::ModelHead* head = m.mutable_head();
  head->set_module_path(head_path);
  head->set_kind(kaizen::v1::HEAD_KIND_LINEAR);
  head->set_out_features(static_cast<int64_t>(classes.size()));
  m.set_parameter_count(CountParameters(module));
  if (last != nullptr) {
    auto& metrics = *m.mutable_metrics();
    metrics["train_loss"] = last->train_loss();
    metrics["train_accuracy"] = last->train_accuracy();
    if (validated) {
      metrics["val_loss"] = last->val_loss();
      metrics["val_accuracy"] = last->val_accuracy();
    }
  }
  return m;
}

// The teacher's logits on `texts`, tokenised with its own tokenizer, in
// eval mode on `device`: [N, its classes], float32 on the CPU. Cancelled
// when `should_stop` says so between two chunks of batches.
absl::StatusOr<torch::Tensor> TeacherLogits(const TextJobInputs::Teacher& teacher,
                                            const LabelledTexts& texts, const torch::Device& device,
                                            int64_t batch_size, absl::string_view what,
                                            const std::function<bool()>& should_stop) {
  ASSIGN_OR_RETURN(
      const training::TextModelInput input,
      training::TextModelInput::Load(teacher.metadata.text_input(), teacher.tokenizer));
  absl::StatusOr<training::TextExamples> examples = Encode(input, texts, what);
  if (!examples.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the teacher's tokenizer: ", examples.status().message()));
  }
  torch::jit::Module module = teacher.module.clone();
  module.to(device);
  // In chunks of 8 batches, so that a pause or a shutdown waits for one
  // chunk, not for the whole dataset.
  const size_t chunk = 8 * static_cast<size_t>(std::max<int64_t>(1, batch_size));
  const std::vector<std::vector<int32_t>>& all = examples->sequences;
  std::vector<torch::Tensor> parts;
  for (size_t begin = 0; begin < all.size(); begin += chunk) {
    if (should_stop && should_stop()) return absl::CancelledError("stopped");
    const size_t end = std::min(all.size(), begin + chunk);
    const std::vector<std::vector<int32_t>> rows(all.begin() + begin, all.begin() + end);
    ASSIGN_OR_RETURN(training::TextPredictions p,
                     training::PredictText(module, rows, input.input().pad_id(), batch_size));
    parts.push_back(std::move(p.logits));
  }
  return torch::cat(parts);
}

// DISTILL: teacher and student side by side on one text, the training text
// whose student ids are of median length, each tokenised by its own model
// (TextJobOutput's latency fields).
absl::Status MeasureLatency(const TextJobInputs::Teacher& teacher,
                            const std::vector<std::string>& texts,
                            const training::TextExamples& student_ids, torch::jit::Module student,
                            int32_t student_pad_id, const torch::Device& device,
                            TextJobOutput* out) {
  if (student_ids.sequences.empty()) return absl::InvalidArgumentError("no training text");
  std::vector<size_t> by_length(student_ids.sequences.size());
  for (size_t i = 0; i < by_length.size(); ++i) by_length[i] = i;
  const auto middle = by_length.begin() + static_cast<std::ptrdiff_t>(by_length.size() / 2);
  std::nth_element(by_length.begin(), middle, by_length.end(), [&](size_t a, size_t b) {
    return student_ids.sequences[a].size() < student_ids.sequences[b].size();
  });
  const size_t pick = *middle;
  ASSIGN_OR_RETURN(
      const training::TextModelInput teacher_input,
      training::TextModelInput::Load(teacher.metadata.text_input(), teacher.tokenizer));
  ASSIGN_OR_RETURN(const std::vector<int32_t> teacher_ids, teacher_input.Encode(texts[pick]));
  const auto [t_ids, t_mask] =
      training::PadSequences({teacher_ids}, teacher_input.input().pad_id(), torch::kCPU);
  const auto [s_ids, s_mask] =
      training::PadSequences({student_ids.sequences[pick]}, student_pad_id, torch::kCPU);
  ASSIGN_OR_RETURN(
      const training::LatencyComparison c,
      training::CompareForwardLatencyOnInputs(teacher.module.clone(), {t_ids, t_mask},
                                              student.clone(), {s_ids, s_mask}, device));
  out->teacher_latency_ms = c.first_ms;
  out->student_latency_ms = c.second_ms;
  out->latency_rounds = c.rounds;
  out->teacher_latency_tokens = static_cast<int64_t>(teacher_ids.size());
  out->student_latency_tokens = static_cast<int64_t>(student_ids.sequences[pick].size());
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<TextJobOutput> RunTextJob(const TextJobInputs& in) {
  ASSIGN_OR_RETURN(StartingPoint start, Start(in));
  ASSIGN_OR_RETURN(const training::TextModelInput input,
                   training::TextModelInput::Load(start.metadata.text_input(), start.tokenizer));
  ASSIGN_OR_RETURN(const training::TextExamples train, Encode(input, in.train, "training"));
  std::optional<training::TextExamples> validation;
  if (in.validation.has_value()) {
    ASSIGN_OR_RETURN(validation, Encode(input, *in.validation, "validation"));
  }
  const training::TextExamples* val = validation ? &*validation : nullptr;
  if (in.strategy == kaizen::v1::STRATEGY_MASKED_LM) {
    return RunMaskedLm(in, std::move(start), train, val);
  }
  training::TextTrainerOptions o;
  o.strategy = in.strategy;
  o.hyperparameters = in.hyperparameters;
  o.base = start.module;
  o.base.to(in.device);
  o.base_metadata = start.metadata;
  o.num_classes = static_cast<int64_t>(in.train.class_names.size());
  o.pad_id = start.metadata.text_input().pad_id();
  o.on_epoch = in.on_epoch;
  o.should_stop = in.should_stop;
  if (in.resume.has_value()) o.resume_state = in.resume->state;
  const std::vector<std::string>& classes = in.train.class_names;
  if (in.on_checkpoint) {
    o.on_checkpoint = [&](const training::TextTrainerOptions::Checkpoint& c) {
      TextJobCheckpoint out;
      out.module = c.classifier;
      out.metadata = DescribeClassifier(start.metadata, classes, c.head_path, c.classifier,
                                        &c.metrics, val != nullptr);
      out.tokenizer = &start.tokenizer;
      out.epoch = c.epoch;
      out.is_best = c.is_best;
      out.resume_state = c.resume_state;
      return in.on_checkpoint(out);
    };
  }
  TextJobOutput out;
  if (in.teacher.has_value()) {
    const int64_t batch = in.hyperparameters.batch_size();
    training::TextTrainerOptions::Distillation d;
    d.temperature = in.teacher->temperature;
    d.alpha = in.teacher->alpha;
    absl::StatusOr<torch::Tensor> logits =
        TeacherLogits(*in.teacher, in.train, in.device, batch, "training", in.should_stop);
    if (val != nullptr && logits.ok()) {
      absl::StatusOr<torch::Tensor> val_logits = TeacherLogits(
          *in.teacher, *in.validation, in.device, batch, "validation", in.should_stop);
      if (val_logits.ok()) {
        const torch::Tensor labels = torch::tensor(val->labels, torch::kLong);
        out.teacher_val_accuracy =
            val_logits->argmax(1).eq(labels).to(torch::kDouble).mean().item<double>();
        out.validation_examples = static_cast<int64_t>(val->labels.size());
      } else {
        logits = val_logits.status();
      }
    }
    if (absl::IsCancelled(logits.status())) {
      out.stopped = true;  // before training began: nothing to keep
      return out;
    }
    RETURN_IF_ERROR(logits.status());
    d.teacher_logits = *std::move(logits);
    o.distillation = std::move(d);
  }
  if (in.incremental.has_value()) {
    const TextJobInputs::Incremental& inc = *in.incremental;
    const TextJobInputs::Teacher previous{inc.previous, inc.previous_metadata,
                                          inc.previous_tokenizer, inc.temperature, inc.weight};
    absl::StatusOr<torch::Tensor> logits = TeacherLogits(
        previous, in.train, in.device, in.hyperparameters.batch_size(), "training", in.should_stop);
    if (absl::IsCancelled(logits.status())) {
      out.stopped = true;  // before training began: nothing to keep
      return out;
    }
    if (!logits.ok()) {
      return absl::Status(logits.status().code(),
                          absl::StrCat("the previous classifier's outputs on the training texts: ",
                                       logits.status().message()));
    }
    training::TextTrainerOptions::Incremental i;
    i.previous_logits = *std::move(logits);
    i.temperature = inc.temperature;
    i.weight = inc.weight;
    o.incremental = std::move(i);
  }
  // Data parallel: the workers get the examples and logits computed here.
  std::unique_ptr<LocalDataParallel> dp;
  const auto say = [&](const std::string& message) {
    if (in.on_message) in.on_message(message);
  };
  if (in.world_size > 1) {
    absl::StatusOr<std::unique_ptr<LocalDataParallel>> launched = LocalDataParallel::StartText(
        in.data_parallel, in.group_name, in.world_size, in.threads_per_worker, o, train, val);
    if (absl::IsResourceExhausted(launched.status()) && in.world_size_is_default) {
      say(DefaultWorldSizeDoesNotApply(in.world_size, launched.status()));
    } else {
      ASSIGN_OR_RETURN(dp, std::move(launched));
      say(LocalDataParallel::Announcement(in.world_size, in.threads_per_worker,
                                          in.hyperparameters.batch_size()));
      o.group = dp->group();
    }
  }
  const auto started = std::chrono::steady_clock::now();
  absl::StatusOr<training::TextTrainResult> trained = training::TrainTextClassifier(o, train, val);
  if (dp != nullptr) {
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    RETURN_IF_ERROR(dp->Conclude(trained.status(), seconds, say));
  }
  ASSIGN_OR_RETURN(training::TextTrainResult result, std::move(trained));
  out.stopped = result.stopped;
  out.epochs_completed = static_cast<int32_t>(result.epochs.size());
  out.module = result.classifier;
  const kaizen::v1::EpochMetrics* last = result.epochs.empty() ? nullptr : &result.epochs.back();
  out.metadata = DescribeClassifier(start.metadata, classes, result.head_path, out.module, last,
                                    val != nullptr);
  if (last != nullptr && val != nullptr) out.student_val_accuracy = last->val_accuracy();
  if (in.teacher.has_value() && !out.stopped) {
    if (absl::Status measured =
            MeasureLatency(*in.teacher, in.train.texts, train, out.module,
                           start.metadata.text_input().pad_id(), in.device, &out);
        !measured.ok()) {
      out.latency_error = std::string(measured.message());
    }
  }
  out.tokenizer = std::move(start.tokenizer);
  return out;
}

absl::StatusOr<OldAndNewAccuracy> ClassifierOldAndNewAccuracy(
    torch::jit::Module& module, const kaizen::v1::Model& model, const std::string& tokenizer,
    const LabelledTexts& texts, const std::vector<std::string>& old_classes, int64_t batch_size,
    const std::function<bool()>& should_stop) {
  ASSIGN_OR_RETURN(const training::TextModelInput input,
                   training::TextModelInput::Load(model.text_input(), tokenizer));
  ASSIGN_OR_RETURN(const training::TextExamples examples, Encode(input, texts, "evaluation"));
  if (examples.sequences.empty()) return absl::InvalidArgumentError("no text to measure on");
  module.eval();
  int64_t old_right = 0, new_right = 0;
  OldAndNewAccuracy a;
  const size_t step = static_cast<size_t>(std::max<int64_t>(1, batch_size));
  for (size_t begin = 0; begin < examples.sequences.size(); begin += step) {
    if (should_stop && should_stop()) return absl::CancelledError("stopped");
    const size_t end = std::min(examples.sequences.size(), begin + step);
    const std::vector<std::vector<int32_t>> rows(examples.sequences.begin() + begin,
                                                 examples.sequences.begin() + end);
    ASSIGN_OR_RETURN(const training::TextPredictions p,
                     training::PredictText(module, rows, input.input().pad_id(), batch_size));
    const torch::Tensor predicted = p.logits.argmax(1).to(torch::kCPU);
    for (size_t i = begin; i < end; ++i) {
      const std::string& truth = texts.class_names[static_cast<size_t>(examples.labels[i])];
      const int64_t k = predicted[static_cast<int64_t>(i - begin)].item<int64_t>();
      const bool right =
          k >= 0 && k < model.class_names_size() && model.class_names(static_cast<int>(k)) == truth;
      if (std::find(old_classes.begin(), old_classes.end(), truth) != old_classes.end()) {
        ++a.old_examples;
        old_right += right ? 1 : 0;
      } else {
        ++a.new_examples;
        new_right += right ? 1 : 0;
      }
    }
  }
  const auto share = [](int64_t right, int64_t n) {
    return n > 0 ? static_cast<double>(right) / static_cast<double>(n) : 0.0;
  };
  a.old_accuracy = share(old_right, a.old_examples);
  a.new_accuracy = share(new_right, a.new_examples);
  a.all_accuracy = share(old_right + new_right, a.old_examples + a.new_examples);
  return a;
}

absl::StatusOr<kaizen::v1::Evaluation> EvaluateTextClassifier(
    torch::jit::Module& module, const kaizen::v1::Model& model, const std::string& tokenizer,
    const LabelledTexts& test, int64_t batch_size, const std::function<bool()>& should_stop,
    int32_t top_k) {
  ASSIGN_OR_RETURN(const training::TextModelInput input,
                   training::TextModelInput::Load(model.text_input(), tokenizer));
  ASSIGN_OR_RETURN(const training::TextExamples examples, Encode(input, test, "test"));
  std::vector<std::string> model_classes(model.class_names().begin(), model.class_names().end());
  const int64_t outputs = model.head().out_features();
  ASSIGN_OR_RETURN(training::ClassMapping mapping,
                   training::MapClasses(test.class_names, model_classes, outputs));
  if (model_classes.empty()) {
    // Matched by index (MapClasses): the columns are the output indices.
    for (int64_t i = 0; i < outputs; ++i) model_classes.push_back(absl::StrCat(i));
  }
  training::EvaluationAccumulator acc(test.class_names, model_classes, std::move(mapping), top_k);
  const absl::Time start = absl::Now();
  for (size_t begin = 0; begin < examples.sequences.size();
       begin += static_cast<size_t>(batch_size)) {
    if (should_stop && should_stop()) return absl::CancelledError("the evaluation was stopped");
    const size_t end = std::min(examples.sequences.size(), begin + static_cast<size_t>(batch_size));
    const std::vector<std::vector<int32_t>> rows(examples.sequences.begin() + begin,
                                                 examples.sequences.begin() + end);
    ASSIGN_OR_RETURN(const training::TextPredictions p,
                     training::PredictText(module, rows, input.input().pad_id(), batch_size));
    std::vector<int64_t> labels(examples.labels.begin() + begin, examples.labels.begin() + end);
    RETURN_IF_ERROR(acc.Add(p.logits, torch::tensor(labels, torch::kLong)));
  }
  kaizen::v1::Evaluation e = acc.Finish();
  e.set_model(model.name());
  e.set_version(model.version());
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  e.set_seconds(seconds);
  if (seconds > 0) e.set_examples_per_second(static_cast<double>(e.examples()) / seconds);
  return e;
}

}  // namespace kaizen::jobs
