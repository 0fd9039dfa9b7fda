// The kaizenctl commands ("datasets upload", "models list", "finetune start",
// "jobs watch", "predict", "bench predict", ...): each turns its arguments into calls on a
// KaizenClient and prints the answer as a table or as JSON. Flags are parsed in main and arrive
// here as plain options.
#pragma once

#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/cli/finetune_request.h"
#include "client/lib/kaizen_client.h"
#include "google/protobuf/message.h"

namespace kaizen::cli {

enum class OutputFormat { kTable, kJson };

struct CommandOptions {
  OutputFormat output = OutputFormat::kTable;
  // Draw progress bars (on stderr) for uploads, downloads and job watches.
  bool show_progress = false;
  // datasets upload: "auto", "folder" or "idx", and the IDX labels file.
  std::string dataset_format = "auto";
  std::string labels;
  // datasets upload, text tables: the text and label columns ("": the
  // server's defaults, text and label).
  std::string text_field;
  std::string label_field;
  // Image folders: the stored-resolution cap (0: the server's).
  int32_t max_stored_shorter_side = 0;
  // Both uploads.
  std::vector<std::string> class_names;
  std::string description;
  // models upload: "3,224,224", "0.485,0.456,0.406", same for std, and the
  // head's dotted module path. (finetune start reads --head as
  // finetune.head.)
  std::string input_shape;
  std::string mean;
  std::string std;
  std::string head;
  // models list.
  bool all_versions = false;
  // finetune start, and whether it goes on like `jobs watch`.
  FineTuneFlags finetune;
  bool watch = false;
  // jobs list: "queued,running"; empty: every state.
  std::string states;
  // jobs watch: replay the events after this sequence.
  int64_t after_sequence = 0;
  // jobs export (--world_size is finetune.world_size).
  bool from_checkpoint = false;
  int32_t threads = 0;
  int32_t memory_mb = 0;
  std::string worker_image;
  std::string volume_claim;
  // predict and bench predict: a pinned version (0: none; NAME:VERSION pins
  // too), "latest" or "best" (empty: the server's default), and the classes
  // returned per input (0: the server's default, 1).
  int64_t version = 0;
  std::string policy;
  int32_t top_k = 0;
  // predict: the arguments are texts, not files.
  bool texts = false;
  // bench predict: calls in flight, measured and warm-up time ("10", "2.5",
  // or a duration such as "500ms"), "on" or "off", an image to send instead
  // of random tensors, and inputs per call. --input_shape (above) gives the
  // random tensors' shape without asking GetModel.
  int concurrency = 1;
  std::string duration = "10";
  std::string warmup = "2";
  std::string batching = "on";
  std::string image;
  int inputs_per_request = 1;
  // --timeout: bench predict's per-call deadline (default 60 s there).
  absl::Duration timeout = absl::InfiniteDuration();
  // tokens add: the server's tokens file.
  std::string tokens_file;
};

class Commands {
 public:
  // `client` and `out` must outlive this object.
  Commands(client::KaizenClient* client, CommandOptions options, std::ostream* out);

  // Runs the command named by the first two arguments ("datasets", "list")
  // with the rest. Unknown commands and wrong argument counts are usage
  // errors (see usage.h).
  absl::Status Run(const std::vector<std::string>& args);

  // The full help text: synopsis, every command, global flags.
  static std::string Usage();

 private:
  using Args = std::vector<std::string>;

  absl::Status DatasetsUpload(const Args& args);
  absl::Status DatasetsList(const Args& args);
  absl::Status DatasetsGet(const Args& args);
  absl::Status DatasetsDelete(const Args& args);
  absl::Status ModelsUpload(const Args& args);
  absl::Status ModelsList(const Args& args);
  absl::Status ModelsGet(const Args& args);
  absl::Status ModelsDelete(const Args& args);
  absl::Status ModelsDownload(const Args& args);
  absl::Status ModelsEvaluate(const Args& args);
  absl::Status FineTuneStart(const Args& args);
  absl::Status JobsList(const Args& args);
  absl::Status JobsGet(const Args& args);
  absl::Status JobsCancel(const Args& args);
  absl::Status JobsPause(const Args& args);
  absl::Status JobsResume(const Args& args);
  absl::Status JobsWatch(const Args& args);
  absl::Status JobsExport(const Args& args);
  absl::Status JobsExports(const Args& args);
  absl::Status JobsDeleteExport(const Args& args);
  absl::Status Predict(const Args& args);
  absl::Status BenchPredict(const Args& args);
  absl::Status TokensAdd(const Args& args);

  // A request for MODEL[:VERSION] with --version, --policy and --top_k, and
  // no inputs yet.
  absl::StatusOr<kaizen::v1::PredictRequest> BasePredictRequest(const std::string& model_ref) const;

  // Follows job `id` from `after_sequence` to its end: the live view, or
  // JSON Lines with --output=json. OK only when the job SUCCEEDED. `known`
  // is the job as just fetched, if it was.
  absl::Status Watch(const std::string& id, int64_t after_sequence, const kaizen::v1::Job* known);

  // Prints `message` as JSON, or `text` for --output=table.
  absl::Status Print(const google::protobuf::Message& message, const std::string& text);

  struct Spec {
    const char* group;
    // Empty for a one-word command ("predict").
    const char* verb;
    const char* args;
    int min_args;
    // -1: no limit.
    int max_args;
    const char* flags;
    const char* help;
    absl::Status (Commands::*run)(const Args&);
  };
  static const std::vector<Spec>& Specs();

  client::KaizenClient* client_;
  CommandOptions options_;
  std::ostream* out_;
};

}  // namespace kaizen::cli
