#include "server/models/sandboxed_inspection.h"

#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "kaizen/internal/model_inspection.pb.h"
#include "server/common/logging.h"
#include "server/sandbox/subprocess.h"

namespace kaizen::models {
namespace {

constexpr size_t kStderrShown = 400;

std::string StderrTail(const std::string& err) {
  if (err.empty()) return "";
  absl::string_view tail = err;
  if (tail.size() > kStderrShown) tail.remove_prefix(tail.size() - kStderrShown);
  return absl::StrCat("; its last output: \"", absl::CHexEscape(tail), "\"");
}

// Why the child ended without an answer, in the uploader's terms.
absl::Status ExplainFailure(const sandbox::SubprocessResult& r, const SandboxOptions& options) {
  std::string why;
  if (r.timed_out) {
    why = absl::StrCat("did not finish within ", absl::FormatDuration(options.timeout),
                       " (--model_inspect_timeout_seconds); its code may not terminate");
  } else if (r.term_signal == SIGXCPU ||
             (r.term_signal == SIGKILL && r.cpu_seconds >= options.cpu_seconds)) {
    why = absl::StrCat("used more than ", options.cpu_seconds,
                       " CPU seconds (--model_inspect_cpu_seconds); its code may not terminate");
  } else if (r.term_signal != 0) {
    why =
        absl::StrCat("crashed: ", sandbox::DescribeEnd(r), " (peak memory ", r.max_rss_bytes >> 20,
                     " MiB of the ", options.memory_bytes >> 20, " MiB allowed)");
  } else {
    why = absl::StrCat("failed: ", sandbox::DescribeEnd(r));
  }
  return absl::InvalidArgumentError(absl::StrCat("loading and running the model in the sandbox ",
                                                 why, StderrTail(r.stderr_bytes)));
}

}  // namespace

std::string DefaultInspectorPath() {
  return sandbox::BesideThisExecutable("kaizen-model-inspector");
}

kaizen::internal::TextEncoderOutput EncoderOutputToProto(const UploadedEncoder& encoder) {
  using Proto = kaizen::internal::TextEncoderOutput;
  Proto p;
  switch (encoder.output) {
    case EncoderOutput::kHiddenStates:
      p.set_kind(Proto::KIND_HIDDEN_STATES);
      break;
    case EncoderOutput::kTupleHiddenStates:
      p.set_kind(Proto::KIND_TUPLE_HIDDEN_STATES);
      break;
    case EncoderOutput::kPooled:
      p.set_kind(Proto::KIND_POOLED);
      break;
  }
  p.set_hidden_size(encoder.hidden_size);
  for (const std::string& b : encoder.blocks) p.add_blocks(b);
  return p;
}

std::optional<UploadedEncoder> EncoderOutputFromProto(
    const kaizen::internal::TextEncoderOutput& proto) {
  using Proto = kaizen::internal::TextEncoderOutput;
  if (proto.hidden_size() < 1 || proto.hidden_size() > kMaxUploadedHiddenSize) return std::nullopt;
  UploadedEncoder e;
  e.hidden_size = proto.hidden_size();
  e.blocks.assign(proto.blocks().begin(), proto.blocks().end());
  switch (proto.kind()) {
    case Proto::KIND_HIDDEN_STATES:
      e.output = EncoderOutput::kHiddenStates;
      return e;
    case Proto::KIND_TUPLE_HIDDEN_STATES:
      e.output = EncoderOutput::kTupleHiddenStates;
      return e;
    case Proto::KIND_POOLED:
      e.output = EncoderOutput::kPooled;
      return e;
    default:
      return std::nullopt;
  }
}

absl::StatusOr<kaizen::v1::Model> InspectInSandbox(const std::string& path,
                                                   const kaizen::v1::UploadModelHeader& header,
                                                   const SandboxOptions& options,
                                                   std::optional<UploadedEncoder>* encoder) {
  if (encoder != nullptr) encoder->reset();
  kaizen::internal::InspectModelRequest request;
  request.set_path(std::filesystem::absolute(path).string());
  *request.mutable_header() = header;
  request.mutable_header()->clear_parts();
  request.set_serving_batch_size(options.serving_batch_size);
  request.set_max_image_pixels(options.max_image_pixels);
  for (const std::string& op : options.extra_operators) request.add_extra_operators(op);
  request.set_max_members(options.max_members);
  request.set_max_unpacked_bytes(options.max_unpacked_bytes);
  request.set_max_pickle_bytes(options.max_pickle_bytes);
  request.set_max_pickle_depth(options.max_pickle_depth);

  sandbox::SubprocessOptions run;
  run.binary = options.inspector_path.empty() ? DefaultInspectorPath() : options.inspector_path;
  run.args = {absl::StrCat("--memory_bytes=", options.memory_bytes),
              absl::StrCat("--cpu_seconds=", options.cpu_seconds)};
  run.env = {"OMP_NUM_THREADS=1", "OMP_WAIT_POLICY=PASSIVE", "OPENBLAS_NUM_THREADS=1"};
  run.input = request.SerializeAsString();
  run.timeout = options.timeout;
  absl::StatusOr<sandbox::SubprocessResult> result = sandbox::RunSubprocess(std::move(run));
  if (!result.ok()) return result.status();
  common::LogInfo("model inspected in sandbox", {{"ms", absl::ToInt64Milliseconds(result->wall)},
                                                 {"cpu_seconds", result->cpu_seconds},
                                                 {"peak_rss_mb", result->max_rss_bytes >> 20},
                                                 {"end", sandbox::DescribeEnd(*result)}});
  kaizen::internal::InspectModelResponse response;
  if (result->exit_code != 0 || !response.ParseFromString(result->stdout_bytes)) {
    return ExplainFailure(*result, options);
  }
  if (response.error_code() != 0) {
    return absl::Status(static_cast<absl::StatusCode>(response.error_code()),
                        response.error_message());
  }
  if (!response.has_model()) return ExplainFailure(*result, options);
  if (response.has_text_encoder()) {
    std::optional<UploadedEncoder> e = EncoderOutputFromProto(response.text_encoder());
    if (!e.has_value() || !response.model().has_text_input() ||
        !response.model().head().module_path().empty()) {
      return absl::InternalError("the inspector described the text encoder's output wrongly");
    }
    if (encoder != nullptr) *encoder = e;
  }
  return response.model();
}

}  // namespace kaizen::models
