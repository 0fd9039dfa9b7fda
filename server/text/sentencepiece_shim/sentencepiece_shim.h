// The C interface of libkaizen_sentencepiece.so (sentencepiece_shim.cc),
// which server/text/sentencepiece_tokenizer.cc loads with dlopen. Plain C
// types only: nothing of SentencePiece, protobuf or Abseil crosses it, and no
// exception does. Errors fill `error` (NUL-terminated, cut to error_size).
#ifndef KAIZEN_SERVER_TEXT_SENTENCEPIECE_SHIM_SENTENCEPIECE_SHIM_H_
#define KAIZEN_SERVER_TEXT_SENTENCEPIECE_SHIM_SENTENCEPIECE_SHIM_H_

#include <stddef.h>

extern "C" {

// Receives the output of a call: ids (int) or bytes (char), `n` of them.
typedef void (*kaizen_spm_int_sink)(void* context, const int* values, size_t n);
typedef void (*kaizen_spm_byte_sink)(void* context, const char* bytes, size_t n);

// A processor for a serialized ModelProto, or null with `error` filled.
void* kaizen_spm_load(const char* model, size_t size, char* error, size_t error_size);
void kaizen_spm_free(void* processor);
// 0 and the ids through `sink`, or nonzero with `error` filled.
int kaizen_spm_encode(const void* processor, const char* text, size_t size,
                      kaizen_spm_int_sink sink, void* context, char* error, size_t error_size);
// vocabulary size, then the unk, bos, eos and pad ids (-1: none).
void kaizen_spm_describe(const void* processor, int out[5]);
// The piece of `id` through `sink` (nothing when out of range).
void kaizen_spm_piece(const void* processor, int id, kaizen_spm_byte_sink sink, void* context);
// SentencePieceTrainer::Train with spm_train's flags; 0, or nonzero with
// `error` filled.
int kaizen_spm_train(const char* flags, char* error, size_t error_size);
// SentencePieceTrainer::Train with spm_train's flags (no --input, no
// --model_prefix) on the lines of `corpus` ('\n'-separated), in memory:
// nothing is read or written but the serialized ModelProto, through `sink`.
// 0, or nonzero with `error` filled.
int kaizen_spm_train_lines(const char* flags, const char* corpus, size_t size,
                           kaizen_spm_byte_sink sink, void* context, char* error,
                           size_t error_size);
// A small character model trained in memory with the normalization rule
// `rule` (e.g. "nmt_nfkc"), its serialized ModelProto through `sink`: the
// character map SentencePiece itself builds for that rule is in it. 0, or
// nonzero with `error` filled.
int kaizen_spm_reference_model(const char* rule, kaizen_spm_byte_sink sink, void* context,
                               char* error, size_t error_size);

}  // extern "C"

#endif  // KAIZEN_SERVER_TEXT_SENTENCEPIECE_SHIM_SENTENCEPIECE_SHIM_H_
