// The Open Inference Protocol codec: request form, versions, FP32 and BYTES
// inputs (raw and typed contents) turned into the Predictor's ModelInputs,
// and the probabilities written back as Triton answers them.
#include "server/api/oip_codec.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace kaizen::api {
namespace {

using inference::ModelInferRequest;
using inference::ModelInferResponse;
using serving::ModelInput;

const std::vector<int64_t> kChw = {1, 2, 2};

std::string RawFloats(const std::vector<float>& values) {
  std::string raw(values.size() * sizeof(float), '\0');
  if (!raw.empty()) std::memcpy(raw.data(), values.data(), raw.size());
  return raw;
}

// Per element a 4-byte little-endian length, then the bytes.
std::string LengthPrefixed(const std::vector<std::string>& elements) {
  std::string out;
  for (const std::string& e : elements) {
    const uint32_t n = static_cast<uint32_t>(e.size());
    for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
    out += e;
  }
  return out;
}

ModelInferRequest Request(const std::string& datatype, const std::vector<int64_t>& shape) {
  ModelInferRequest r;
  r.set_model_name("tiny");
  r.set_id("req-1");
  auto* in = r.add_inputs();
  in->set_name("input");
  in->set_datatype(datatype);
  for (int64_t d : shape) in->add_shape(d);
  return r;
}

std::string Message(const absl::Status& status) { return std::string(status.message()); }

TEST(OipCodec, ParsesVersions) {
  EXPECT_EQ(*ParseOipVersion("model_version", ""), 0);
  EXPECT_EQ(*ParseOipVersion("model_version", "12"), 12);
  for (const char* bad : {"0", "-1", "latest", "1.5", "99999999999999999999"}) {
    const absl::Status st = ParseOipVersion("model_version", bad).status();
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_TRUE(absl::StartsWith(st.message(), absl::StrCat("model_version \"", bad, "\""))) << st;
  }
}

TEST(OipCodec, RequestFormNeedsOneInputOfASupportedDatatypeAndKnownOutputs) {
  ModelInferRequest ok = Request("FP32", {1, 2, 2});
  EXPECT_TRUE(CheckOipRequestForm(ok).ok());

  ModelInferRequest no_model = ok;
  no_model.clear_model_name();
  EXPECT_EQ(Message(CheckOipRequestForm(no_model)), "model_name is empty");

  ModelInferRequest two = ok;
  *two.add_inputs() = ok.inputs(0);
  EXPECT_EQ(Message(CheckOipRequestForm(two)),
            "the request has 2 input tensors; expected exactly one (\"input\")");

  ModelInferRequest two_raw = ok;
  two_raw.add_raw_input_contents("a");
  two_raw.add_raw_input_contents("b");
  EXPECT_TRUE(absl::StartsWith(Message(CheckOipRequestForm(two_raw)),
                               "raw_input_contents has 2 entries for 1 input tensor"));

  ModelInferRequest both = ok;
  both.add_raw_input_contents(RawFloats({1, 2, 3, 4}));
  both.mutable_inputs(0)->mutable_contents()->add_fp32_contents(1);
  EXPECT_TRUE(absl::StartsWith(Message(CheckOipRequestForm(both)),
                               "input \"input\" sets contents while the request also has "
                               "raw_input_contents"));

  ModelInferRequest int8 = Request("INT8", {1, 2, 2});
  EXPECT_EQ(Message(CheckOipRequestForm(int8)),
            "input \"input\" has datatype \"INT8\"; expected FP32 (preprocessed inputs, shape "
            "[N, C, H, W] or [C, H, W]) or BYTES (encoded JPEG or PNG images, shape [N])");

  ModelInferRequest logits = ok;
  logits.add_outputs()->set_name("logits");
  EXPECT_EQ(Message(CheckOipRequestForm(logits)),
            "requested output \"logits\" does not exist; the model has one output, "
            "\"probabilities\"");
  ModelInferRequest probabilities = ok;
  probabilities.add_outputs()->set_name("probabilities");
  EXPECT_TRUE(CheckOipRequestForm(probabilities).ok());
}

TEST(OipCodec, DecodesFp32FromRawAndTypedContents) {
  const std::vector<float> values = {1, 2, 3, 4, 5, 6, 7, 8};
  ModelInferRequest raw = Request("FP32", {2, 1, 2, 2});
  raw.add_raw_input_contents(RawFloats(values));
  absl::StatusOr<OipInputs> from_raw = DecodeOipInputs(raw, kChw, 4);
  ASSERT_TRUE(from_raw.ok()) << from_raw.status();
  ASSERT_EQ(from_raw->inputs.size(), 1u);
  const ModelInput& in = from_raw->inputs[0];
  EXPECT_EQ(in.kind, ModelInput::Kind::kTensor);
  EXPECT_EQ(in.what, "input \"input\"");
  EXPECT_EQ(in.shape, (std::vector<int64_t>{2, 1, 2, 2}));
  EXPECT_EQ(std::vector<float>(in.values.begin(), in.values.end()), values);
  EXPECT_FALSE(in.single);

  ModelInferRequest typed = Request("FP32", {1, 2, 2});
  for (int i = 0; i < 4; ++i) typed.mutable_inputs(0)->mutable_contents()->add_fp32_contents(i);
  absl::StatusOr<OipInputs> from_typed = DecodeOipInputs(typed, kChw, 4);
  ASSERT_TRUE(from_typed.ok()) << from_typed.status();
  EXPECT_EQ(from_typed->inputs[0].shape, kChw);
  EXPECT_EQ(
      std::vector<float>(from_typed->inputs[0].values.begin(), from_typed->inputs[0].values.end()),
      (std::vector<float>{0, 1, 2, 3}));
}

TEST(OipCodec, MovedInputsStillViewTheirValues) {
  ModelInferRequest raw = Request("FP32", {1, 2, 2});
  raw.add_raw_input_contents(RawFloats({1, 2, 3, 4}));
  OipInputs moved = *DecodeOipInputs(raw, kChw, 4);
  OipInputs again = std::move(moved);
  EXPECT_EQ(again.inputs[0].values.data(), again.values.data());
  EXPECT_EQ(again.inputs[0].values.size(), 4u);
}

TEST(OipCodec, RefusesFp32OfAnotherShapeOrSize) {
  ModelInferRequest shape = Request("FP32", {2, 3, 2, 2});
  EXPECT_EQ(Message(DecodeOipInputs(shape, kChw, 4).status()),
            "input \"input\" has shape [2, 3, 2, 2]; expected [N, 1, 2, 2] or [1, 2, 2] (FP32, "
            "the model's input shape)");

  ModelInferRequest short_raw = Request("FP32", {1, 1, 2, 2});
  short_raw.add_raw_input_contents(std::string(12, '\0'));
  EXPECT_EQ(Message(DecodeOipInputs(short_raw, kChw, 4).status()),
            "input \"input\": raw_input_contents[0] holds 12 bytes; shape [1, 1, 2, 2] of FP32 "
            "needs 16 (4 little-endian float32 values)");

  ModelInferRequest short_typed = Request("FP32", {1, 2, 2});
  short_typed.mutable_inputs(0)->mutable_contents()->add_fp32_contents(1);
  EXPECT_EQ(Message(DecodeOipInputs(short_typed, kChw, 4).status()),
            "input \"input\": contents.fp32_contents holds 1 values; shape [1, 2, 2] needs 4");
}

TEST(OipCodec, RefusesEmptyOversizedAndOverflowingFp32Batches) {
  const absl::Status empty = DecodeOipInputs(Request("FP32", {0, 1, 2, 2}), kChw, 4).status();
  EXPECT_EQ(empty.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(empty.message().find("the batch is empty"), absl::string_view::npos) << empty;

  EXPECT_EQ(Message(DecodeOipInputs(Request("FP32", {5, 1, 2, 2}), kChw, 4).status()),
            "input \"input\" has shape [5, 1, 2, 2]: 5 inputs; at most 4 are accepted in one "
            "request");

  const int64_t big = int64_t{1} << 31;
  const absl::Status overflow =
      DecodeOipInputs(Request("FP32", {2, 3, big, big}), {3, big, big}, 4).status();
  EXPECT_EQ(overflow.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(overflow.message().find("overflows a 64-bit count"), absl::string_view::npos)
      << overflow;
}

TEST(OipCodec, DecodesBytesFromRawAndTypedContentsAsOneImageEach) {
  ModelInferRequest typed = Request("BYTES", {2});
  typed.mutable_inputs(0)->set_name("images");
  typed.mutable_inputs(0)->mutable_contents()->add_bytes_contents("first");
  typed.mutable_inputs(0)->mutable_contents()->add_bytes_contents("second");
  absl::StatusOr<OipInputs> from_typed = DecodeOipInputs(typed, kChw, 4);
  ASSERT_TRUE(from_typed.ok()) << from_typed.status();
  ASSERT_EQ(from_typed->inputs.size(), 2u);
  EXPECT_EQ(from_typed->inputs[0].kind, ModelInput::Kind::kEncodedImage);
  EXPECT_EQ(from_typed->inputs[0].what, "input \"images\"[0]");
  EXPECT_EQ(from_typed->inputs[0].encoded_image, "first");
  EXPECT_EQ(from_typed->inputs[1].what, "input \"images\"[1]");
  EXPECT_EQ(from_typed->inputs[1].encoded_image, "second");

  ModelInferRequest raw = Request("BYTES", {2});
  raw.add_raw_input_contents(LengthPrefixed({"abc", ""}));
  absl::StatusOr<OipInputs> from_raw = DecodeOipInputs(raw, kChw, 4);
  ASSERT_TRUE(from_raw.ok()) << from_raw.status();
  ASSERT_EQ(from_raw->inputs.size(), 2u);
  EXPECT_EQ(from_raw->inputs[0].encoded_image, "abc");
  EXPECT_EQ(from_raw->inputs[1].encoded_image, "");
}

TEST(OipCodec, RefusesBytesOfAnotherShapeCountOrLayout) {
  EXPECT_EQ(Message(DecodeOipInputs(Request("BYTES", {1, 1}), kChw, 4).status()),
            "input \"input\" has shape [1, 1]; expected [N] (BYTES, N encoded JPEG or PNG "
            "images, or N UTF-8 texts for a text model)");
  EXPECT_EQ(Message(DecodeOipInputs(Request("BYTES", {5}), kChw, 4).status()),
            "input \"input\" has shape [5]: 5 inputs; at most 4 are accepted in one request");
  EXPECT_EQ(DecodeOipInputs(Request("BYTES", {0}), kChw, 4).status().code(),
            absl::StatusCode::kInvalidArgument);

  ModelInferRequest typed = Request("BYTES", {2});
  typed.mutable_inputs(0)->mutable_contents()->add_bytes_contents("one");
  EXPECT_EQ(Message(DecodeOipInputs(typed, kChw, 4).status()),
            "input \"input\": contents.bytes_contents holds 1 elements; shape [2] needs 2");

  ModelInferRequest raw = Request("BYTES", {2});
  raw.add_raw_input_contents(LengthPrefixed({"one"}));
  EXPECT_EQ(Message(DecodeOipInputs(raw, kChw, 4).status()),
            "input \"input\": raw_input_contents[0] holds 1 elements; shape [2] needs 2");

  ModelInferRequest truncated = Request("BYTES", {1});
  truncated.add_raw_input_contents(LengthPrefixed({"abcdef"}).substr(0, 7));
  const absl::Status st = DecodeOipInputs(truncated, kChw, 4).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("declares 6 bytes but only 3 remain"), absl::string_view::npos) << st;
}

TEST(OipCodec, NamesInputsWithEscapedNames) {
  ModelInferRequest r = Request("FP32", {9});
  r.mutable_inputs(0)->set_name("a\"b\n");
  EXPECT_TRUE(absl::StartsWith(Message(DecodeOipInputs(r, kChw, 4).status()),
                               "input \"a\\\"b\\n\" has shape [9]"));
}

TEST(OipCodec, WritesProbabilitiesAsOneRawFp32Output) {
  const ModelInferRequest request = Request("FP32", {1, 2, 2});
  const torch::Tensor probs = torch::tensor({0.1, 0.2, 0.7, 0.5, 0.25, 0.25}, torch::kDouble)
                                  .reshape({2, 3});  // converted to float
  ModelInferResponse response;
  ASSERT_TRUE(EncodeOipOutput(request, 3, probs, &response).ok());
  EXPECT_EQ(response.model_name(), "tiny");
  EXPECT_EQ(response.model_version(), "3");
  EXPECT_EQ(response.id(), "req-1");
  ASSERT_EQ(response.outputs_size(), 1);
  EXPECT_EQ(response.outputs(0).name(), "probabilities");
  EXPECT_EQ(response.outputs(0).datatype(), "FP32");
  EXPECT_EQ(
      std::vector<int64_t>(response.outputs(0).shape().begin(), response.outputs(0).shape().end()),
      (std::vector<int64_t>{2, 3}));
  ASSERT_EQ(response.raw_output_contents_size(), 1);
  EXPECT_EQ(response.raw_output_contents(0), RawFloats({0.1f, 0.2f, 0.7f, 0.5f, 0.25f, 0.25f}));

  ModelInferResponse flat;
  const absl::Status st = EncodeOipOutput(request, 3, torch::ones({6}), &flat);
  EXPECT_EQ(st.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(st.message(), "the model answered a tensor of shape [6]; expected [N, classes]");
}

}  // namespace
}  // namespace kaizen::api
