// kaizen-model-inspector: the sandboxed half of model uploads (the server's
// half is sandboxed_inspection.cc). Reads one InspectModelRequest on stdin,
// confines itself (rlimits, seccomp: no writes, no network, no exec), checks
// the archive, loads the module, checks its operators, runs the forward
// passes, and writes one InspectModelResponse on stdout. Anything the model's
// code prints goes to /dev/null.
#include <ATen/Parallel.h>
#include <fcntl.h>
#include <torch/csrc/jit/runtime/print_handler.h>
#include <torch/script.h>
#include <unistd.h>

#include <iostream>
#include <iterator>
#include <new>
#include <optional>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kaizen/internal/model_inspection.pb.h"
#include "server/models/sandboxed_inspection.h"
#include "server/models/torchscript_inspector.h"
#include "server/sandbox/child_limits.h"
#include "server/sandbox/torchscript_precheck.h"

ABSL_FLAG(int64_t, memory_bytes, int64_t{4} << 30, "Address-space limit (RLIMIT_AS).");
ABSL_FLAG(int64_t, cpu_seconds, 120, "CPU-time limit (RLIMIT_CPU).");

namespace {

constexpr size_t kMaxRequestBytes = 16 << 20;

kaizen::models::InspectOptions OptionsFrom(const kaizen::internal::InspectModelRequest& r) {
  const kaizen::v1::UploadModelHeader& h = r.header();
  kaizen::models::InspectOptions o;
  o.input_shape.assign(h.input_shape().begin(), h.input_shape().end());
  o.mean.assign(h.normalization().mean().begin(), h.normalization().mean().end());
  o.std.assign(h.normalization().std().begin(), h.normalization().std().end());
  o.class_names.assign(h.class_names().begin(), h.class_names().end());
  o.head_module = h.head_module();
  o.batch_size = r.serving_batch_size();
  o.max_image_pixels = r.max_image_pixels();
  o.extra_operators.assign(r.extra_operators().begin(), r.extra_operators().end());
  return o;
}

kaizen::sandbox::TorchScriptLimits LimitsFrom(const kaizen::internal::InspectModelRequest& r) {
  kaizen::sandbox::TorchScriptLimits l;
  l.zip.max_members = r.max_members();
  l.zip.max_member_bytes = r.max_unpacked_bytes();
  l.zip.max_total_bytes = r.max_unpacked_bytes();
  l.max_pickle_bytes = r.max_pickle_bytes();
  l.pickle.max_depth = r.max_pickle_depth();
  return l;
}

absl::StatusOr<kaizen::v1::Model> Inspect(const kaizen::internal::InspectModelRequest& request,
                                          std::optional<kaizen::models::UploadedEncoder>* encoder) {
  const absl::Status precheck =
      kaizen::sandbox::PrecheckTorchScriptFile(request.path(), LimitsFrom(request));
  if (!precheck.ok()) return precheck;
  at::set_num_threads(1);
  torch::jit::setPrintHandler([](const std::string&) {});
  return kaizen::models::InspectTorchScriptFile(request.path(), OptionsFrom(request), encoder);
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  std::string input;
  char buf[64 << 10];
  for (ssize_t n; (n = ::read(0, buf, sizeof(buf))) > 0;) {
    input.append(buf, static_cast<size_t>(n));
    if (input.size() > kMaxRequestBytes) return 3;
  }
  // The answer goes to a private copy of stdout; the model's prints, if
  // any, to /dev/null.
  const int answer_fd = ::dup(1);
  const int null_fd = ::open("/dev/null", O_WRONLY);
  if (answer_fd < 0 || null_fd < 0 || ::dup2(null_fd, 1) < 0) return 4;
  ::close(null_fd);
  // The request is the server's; the file it names is the untrusted part,
  // and the only one this process may read besides the system's.
  kaizen::internal::InspectModelRequest request;
  kaizen::sandbox::ChildLimits limits;
  limits.memory_bytes = absl::GetFlag(FLAGS_memory_bytes);
  limits.cpu_seconds = absl::GetFlag(FLAGS_cpu_seconds);
  kaizen::internal::InspectModelResponse response;
  absl::StatusOr<kaizen::v1::Model> model;
  std::optional<kaizen::models::UploadedEncoder> encoder;
  const bool parsed = request.ParseFromString(input);
  if (parsed) limits.readable = {request.path()};
  if (!parsed) {
    model = absl::InternalError("the inspector could not parse its request");
  } else if (absl::Status confined = kaizen::sandbox::ConfineCurrentProcess(limits, answer_fd);
             !confined.ok()) {
    // Fail closed: nothing runs unconfined.
    model = absl::InternalError(
        absl::StrCat("the model sandbox could not be set up: ", confined.message()));
  } else {
    try {
      model = Inspect(request, &encoder);
    } catch (const std::bad_alloc&) {
      model = absl::InvalidArgumentError(absl::StrCat("the model needs more memory than the ",
                                                      limits.memory_bytes >> 20,
                                                      " MiB allowed (--model_inspect_memory_mb)"));
    }
  }
  if (model.ok()) {
    *response.mutable_model() = *std::move(model);
    if (encoder.has_value()) {
      *response.mutable_text_encoder() = kaizen::models::EncoderOutputToProto(*encoder);
    }
  } else {
    response.set_error_code(static_cast<int>(model.status().code()));
    response.set_error_message(std::string(model.status().message()));
  }
  return kaizen::sandbox::WriteAll(answer_fd, response.SerializeAsString()) ? 0 : 5;
}
