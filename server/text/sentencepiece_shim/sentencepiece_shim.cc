// libkaizen_sentencepiece.so: Debian's SentencePiece behind a C interface
// (sentencepiece_shim.h), loaded privately by sentencepiece_tokenizer.cc.
//
// Why a separate library: Debian's libsentencepiece.so carries its own copy
// of protobuf-lite and exports its symbols (about 1,600). Linked into a
// process that also has libprotobuf.so (gRPC's), the two copies interpose on
// each other: libprotobuf's own start-up ran sentencepiece's parser and
// crashed before main(). dlopen(RTLD_DEEPBIND) keeps them apart but breaks
// the C++ runtime's copy-relocated objects (std::cerr crashed in the
// trainer's logging); dlmopen(LM_ID_NEWLM) gives the library a namespace
// of its own, with its own C and C++ runtimes, so only plain C values may
// cross: the callers copy results out through sinks and serialise calls.
#include "server/text/sentencepiece_shim/sentencepiece_shim.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <algorithm>
#include <cstring>
#include <exception>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace {

// Lines from memory, for the trainers that take no file.
class Lines : public sentencepiece::SentenceIterator {
 public:
  explicit Lines(std::vector<std::string> lines) : lines_(std::move(lines)) {}
  bool done() const override { return next_ >= lines_.size(); }
  void Next() override { ++next_; }
  const std::string& value() const override { return lines_[next_]; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  std::vector<std::string> lines_;
  size_t next_ = 0;
};

void Fill(char* error, size_t error_size, const std::string& message) {
  if (error == nullptr || error_size == 0) return;
  const size_t n = std::min(message.size(), error_size - 1);
  std::memcpy(error, message.data(), n);
  error[n] = '\0';
}

}  // namespace

extern "C" {

void* kaizen_spm_load(const char* model, size_t size, char* error, size_t error_size) {
  try {
    auto* processor = new sentencepiece::SentencePieceProcessor();
    const auto status = processor->LoadFromSerializedProto(std::string_view(model, size));
    if (!status.ok()) {
      Fill(error, error_size, status.ToString());
      delete processor;
      return nullptr;
    }
    return processor;
  } catch (const std::exception& e) {
    Fill(error, error_size, e.what());
    return nullptr;
  }
}

void kaizen_spm_free(void* processor) {
  delete static_cast<sentencepiece::SentencePieceProcessor*>(processor);
}

int kaizen_spm_encode(const void* processor, const char* text, size_t size,
                      kaizen_spm_int_sink sink, void* context, char* error, size_t error_size) {
  try {
    std::vector<int> ids;
    const auto status =
        static_cast<const sentencepiece::SentencePieceProcessor*>(processor)->Encode(
            std::string_view(text, size), &ids);
    if (!status.ok()) {
      Fill(error, error_size, status.ToString());
      return 1;
    }
    sink(context, ids.data(), ids.size());
    return 0;
  } catch (const std::exception& e) {
    Fill(error, error_size, e.what());
    return 1;
  }
}

void kaizen_spm_describe(const void* processor, int out[5]) {
  const auto* p = static_cast<const sentencepiece::SentencePieceProcessor*>(processor);
  out[0] = p->GetPieceSize();
  out[1] = p->unk_id();
  out[2] = p->bos_id();
  out[3] = p->eos_id();
  out[4] = p->pad_id();
}

void kaizen_spm_piece(const void* processor, int id, kaizen_spm_byte_sink sink, void* context) {
  const auto* p = static_cast<const sentencepiece::SentencePieceProcessor*>(processor);
  if (id < 0 || id >= p->GetPieceSize()) return;
  const std::string& piece = p->IdToPiece(id);
  sink(context, piece.data(), piece.size());
}

int kaizen_spm_train(const char* flags, char* error, size_t error_size) {
  try {
    const auto status = sentencepiece::SentencePieceTrainer::Train(std::string_view(flags));
    if (!status.ok()) {
      Fill(error, error_size, status.ToString());
      return 1;
    }
    return 0;
  } catch (const std::exception& e) {
    Fill(error, error_size, e.what());
    return 1;
  }
}

int kaizen_spm_train_lines(const char* flags, const char* corpus, size_t size,
                           kaizen_spm_byte_sink sink, void* context, char* error,
                           size_t error_size) {
  try {
    std::vector<std::string> lines;
    std::string_view rest(corpus, size);
    while (!rest.empty()) {
      const size_t end = std::min(rest.find('\n'), rest.size());
      lines.emplace_back(rest.substr(0, end));
      rest.remove_prefix(std::min(end + 1, rest.size()));
    }
    Lines iterator(std::move(lines));
    std::string model;
    const auto status =
        sentencepiece::SentencePieceTrainer::Train(std::string_view(flags), &iterator, &model);
    if (!status.ok()) {
      Fill(error, error_size, status.ToString());
      return 1;
    }
    sink(context, model.data(), model.size());
    return 0;
  } catch (const std::exception& e) {
    Fill(error, error_size, e.what());
    return 1;
  }
}

int kaizen_spm_reference_model(const char* rule, kaizen_spm_byte_sink sink, void* context,
                               char* error, size_t error_size) {
  try {
    Lines lines({"a reference model for the normalizer", "of one rule"});
    std::string model;
    const auto status = sentencepiece::SentencePieceTrainer::Train(
        std::string("--model_type=char --hard_vocab_limit=false --vocab_size=100 "
                    "--minloglevel=2 --normalization_rule_name=") +
            rule,
        &lines, &model);
    if (!status.ok()) {
      Fill(error, error_size, status.ToString());
      return 1;
    }
    sink(context, model.data(), model.size());
    return 0;
  } catch (const std::exception& e) {
    Fill(error, error_size, e.what());
    return 1;
  }
}

}  // extern "C"
