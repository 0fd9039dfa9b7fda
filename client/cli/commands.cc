#include "client/cli/commands.h"

#include <cmath>
#include <filesystem>
#include <iostream>
#include <optional>
#include <utility>

#include "absl/random/distributions.h"
#include "absl/random/random.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "client/cli/dataset_source.h"
#include "client/cli/job_watcher.h"
#include "client/cli/output.h"
#include "client/cli/predict_bench.h"
#include "client/cli/progress_bar.h"
#include "client/cli/usage.h"
#include "client/lib/folder_archiver.h"
#include "client/lib/temp_file.h"
#include "server/auth/token_file.h"
#include "server/common/atomic_file.h"
#include "server/common/job_state.h"
#include "server/common/names.h"
#include "server/common/status_macros.h"

namespace kaizen::cli {
namespace {

// "3,224,224" -> {3, 224, 224}; empty text gives an empty list.
absl::StatusOr<std::vector<int64_t>> ParseInts(absl::string_view flag, const std::string& text) {
  std::vector<int64_t> values;
  if (text.empty()) return values;
  for (absl::string_view item : absl::StrSplit(text, ',')) {
    int64_t value = 0;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(item), &value) || value <= 0) {
      return UsageError(absl::StrCat("--", flag, "=", text,
                                     ": expected positive integers separated "
                                     "by commas, e.g. 3,224,224"));
    }
    values.push_back(value);
  }
  return values;
}

absl::StatusOr<std::vector<float>> ParseFloats(absl::string_view flag, const std::string& text) {
  std::vector<float> values;
  if (text.empty()) return values;
  for (absl::string_view item : absl::StrSplit(text, ',')) {
    float value = 0;
    if (!absl::SimpleAtof(absl::StripAsciiWhitespace(item), &value)) {
      return UsageError(absl::StrCat("--", flag, "=", text,
                                     ": expected numbers separated by commas, "
                                     "e.g. 0.485,0.456,0.406"));
    }
    values.push_back(value);
  }
  return values;
}

// --class_names=a,b,c, or --class_names=@FILE with one name a line.
absl::StatusOr<std::vector<std::string>> ResolveClassNames(const std::vector<std::string>& flag) {
  if (flag.size() != 1 || !absl::StartsWith(flag[0], "@")) return flag;
  const std::string file = flag[0].substr(1);
  std::string text;
  RETURN_IF_ERROR(common::ReadFile(file, &text));
  std::vector<std::string> names;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    line = absl::StripAsciiWhitespace(line);
    if (!line.empty()) names.emplace_back(line);
  }
  return names;
}

// "10" or "2.5" (seconds), or a duration such as "500ms" or "1m".
absl::StatusOr<absl::Duration> ParseSeconds(absl::string_view flag, const std::string& text) {
  double seconds = 0;
  absl::Duration duration;
  if (absl::SimpleAtod(text, &seconds) && std::isfinite(seconds)) {
    duration = absl::Seconds(seconds);
  } else if (!absl::ParseDuration(text, &duration)) {
    return UsageError(absl::StrCat("--", flag, "=", text,
                                   ": expected seconds (e.g. 10 or 2.5) or a "
                                   "duration (e.g. 500ms)"));
  }
  if (duration < absl::ZeroDuration() || duration == absl::InfiniteDuration()) {
    return UsageError(absl::StrCat("--", flag, "=", text, ": must be finite and >= 0"));
  }
  return duration;
}

// The whole of `path`, which must be a regular file.
absl::StatusOr<std::string> ReadRegularFile(const std::string& path) {
  std::error_code ec;
  const std::filesystem::file_status status = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(status)) {
    return absl::NotFoundError(absl::StrCat("cannot open ", path));
  }
  if (!std::filesystem::is_regular_file(status)) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a regular file"));
  }
  std::string bytes;
  RETURN_IF_ERROR(common::ReadFile(path, &bytes));
  return bytes;
}

// "photos" for "/data/photos/" or "photos/.".
std::string FolderName(const std::string& folder) {
  std::error_code ec;
  std::filesystem::path path = std::filesystem::absolute(folder, ec);
  path = path.lexically_normal();
  if (!path.has_filename()) path = path.parent_path();
  const std::string name = path.filename().string();
  return name.empty() ? "folder" : name;
}

// Wraps `text` at `width` columns, each line starting with `indent` spaces.
std::string Wrap(absl::string_view text, int indent, size_t width = 79) {
  std::string out;
  std::string line;
  for (absl::string_view word : absl::StrSplit(text, ' ', absl::SkipEmpty())) {
    if (!line.empty() && indent + line.size() + 1 + word.size() > width) {
      absl::StrAppend(&out, std::string(indent, ' '), line, "\n");
      line.clear();
    }
    absl::StrAppend(&line, line.empty() ? "" : " ", word);
  }
  if (!line.empty()) absl::StrAppend(&out, std::string(indent, ' '), line, "\n");
  return out;
}

}  // namespace

Commands::Commands(client::KaizenClient* client, CommandOptions options, std::ostream* out)
    : client_(client), options_(std::move(options)), out_(out) {}

const std::vector<Commands::Spec>& Commands::Specs() {
  static const auto* specs = new std::vector<Spec>{
      {"datasets", "upload", "NAME PATH", 2, 2,
       "[--format=auto|folder|idx|csv|tsv|jsonl] [--labels=FILE] [--class_names=a,b,c] "
       "[--text_field=NAME] [--label_field=NAME] [--description=TEXT] "
       "[--max_stored_shorter_side=PIXELS]",
       "Upload a dataset. PATH is a folder of class folders (archived on the "
       "fly), an archive of one (.tar, .tar.gz, .tgz, .zip, .tar.bz2, "
       ".tar.xz), an IDX images file (*-images-idx3-ubyte[.gz]) whose "
       "labels file (*-labels-idx1-ubyte[.gz]) is found beside it unless "
       "--labels is given, or a table of labelled text (.csv, .tsv, .jsonl, "
       ".ndjson, each optionally .gz) whose --text_field and --label_field "
       "columns (default text and label) hold the text and its class. "
       "--class_names (IDX, text) names the classes, in label order; "
       "@FILE reads one name a line. --max_stored_shorter_side (folders) "
       "stores larger images downscaled to that shorter side.",
       &Commands::DatasetsUpload},
      {"datasets", "list", "", 0, 0, "", "List all datasets.", &Commands::DatasetsList},
      {"datasets", "get", "NAME", 1, 1, "",
       "Show a dataset: classes with their counts and the ingestion report.",
       &Commands::DatasetsGet},
      {"datasets", "delete", "NAME", 1, 1, "", "Delete a dataset.", &Commands::DatasetsDelete},
      {"models", "upload", "NAME FILE.pt", 2, 2,
       "[--input_shape=3,224,224] [--mean=0.485,0.456,0.406] "
       "[--std=0.229,0.224,0.225] [--class_names=a,b,c] [--head=fc] "
       "[--description=TEXT]",
       "Upload a TorchScript model. Unset options are read from the file or "
       "defaulted by the server.",
       &Commands::ModelsUpload},
      {"models", "list", "", 0, 0, "[--all_versions]",
       "List models (the newest version of each, or every version).", &Commands::ModelsList},
      {"models", "get", "NAME[:VERSION]", 1, 1, "", "Show a model version (default: the newest).",
       &Commands::ModelsGet},
      {"models", "delete", "NAME[:VERSION]", 1, 1, "",
       "Delete one version of a model, or all of them when no version is "
       "given.",
       &Commands::ModelsDelete},
      {"models", "download", "NAME[:VERSION] OUT", 2, 2, "",
       "Download a model's TorchScript file to OUT (checked against its "
       "SHA-256, written atomically).",
       &Commands::ModelsDownload},
      {"models", "evaluate", "NAME[:VERSION] DATASET", 2, 2, "[--top_k=N]",
       "Evaluate a model version (default: the newest) on every image of a "
       "labelled dataset whose classes are among the model's: accuracy, "
       "top-k accuracy (--top_k, default 5), mean loss, per-class "
       "precision, recall and F1, and the confusion matrix.",
       &Commands::ModelsEvaluate},
      {"finetune", "start", "", 0, 0,
       "--base=MODEL[:V] --dataset=NAME --output_model=NAME "
       "--strategy=feature_extraction|fine_tune|full|scratch|incremental|"
       "distill|masked_lm [--max_length=N] [--vocab_size=N] [--epochs=N] [--batch_size=N] [--lr=X] "
       "[--backbone_lr_multiplier=X] [--trainable_blocks=N] "
       "[--optimizer=sgd|adam|adamw] [--momentum=X] [--nesterov] "
       "[--weight_decay=X] [--schedule=constant|step|cosine] "
       "[--warmup_epochs=X] [--label_smoothing=X] "
       "[--early_stopping_patience=N] [--clip_norm=X] [--seed=N] "
       "[--augment=on|off] [--validation_split=X | --validation_dataset=NAME] "
       "[--test_dataset=NAME] [--tune_trials=N [--tune_time_budget=S] [--tune_seed=N] "
       "[--tune_reduction_factor=N]] [--head=linear|mlp] [--head_warmup_epochs=N] "
       "[--mixed_precision=off|bf16|fp16] [--priority=N] [--request_id=S] "
       "[--keep_checkpoints=N] [--world_size=W] [--teacher=MODEL[:V] [--temperature=X] "
       "[--distill_alpha=X]] "
       "[--exemplars_per_class=N] [--max_exemplars=N] [--exemplar_selection=herding|random] "
       "[--previous_datasets=A,B] [--distill_weight=X] [--no_rehearsal] [--no_distillation] "
       "[--watch | --dry_run]",
       "Queue a fine-tuning job and print its id. --dry_run only checks the "
       "request and prints the job it would queue, its resolved "
       "hyperparameters included (--output_model may be left out). Only the options given are "
       "sent; the rest take the strategy's defaults (see 'jobs get'). "
       "--augment=on asks for random crops (padding 4) and horizontal flips, "
       "--augment=off for no augmentation; without --augment the strategy "
       "decides. distill needs --teacher (a trained model with the dataset's "
       "classes); --temperature (default 4) and --distill_alpha (default 0.7) "
       "shape its loss. incremental continues --base (a model with class names; "
       "--output_model may be its own name) on new data and classes, replaying "
       "--exemplars_per_class (default 50, --max_exemplars 2000 in all) exemplars "
       "and distilling the base on the old classes (--temperature default 2, "
       "--distill_weight default 1); --no_rehearsal and --no_distillation turn "
       "either off. A repeated "
       "--request_id returns the first job instead of a new one. --watch "
       "then follows the job like 'jobs watch'.",
       &Commands::FineTuneStart},
      {"jobs", "list", "", 0, 0, "[--state=queued,running,paused,succeeded,failed,cancelled]",
       "List fine-tuning jobs, all or those in the given states.", &Commands::JobsList},
      {"jobs", "get", "ID", 1, 1, "",
       "Show a job: request, state, resolved hyperparameters, the per-epoch "
       "history, the model versions written and the error of a failed job.",
       &Commands::JobsGet},
      {"jobs", "cancel", "ID", 1, 1, "",
       "Cancel a job: a queued job never starts, a running one stops within "
       "one training step and keeps its last checkpoint.",
       &Commands::JobsCancel},
      {"jobs", "pause", "ID", 1, 1, "",
       "Pause a job until 'jobs resume': a queued job is paused at once; a "
       "running one finishes its current step, writes a checkpoint (a new "
       "model version) and frees its worker; this waits for that (at most "
       "--timeout, default 10 minutes) and prints where it stopped. A paused "
       "job keeps its place in the queue, its dataset and models, and stays "
       "paused across server restarts.",
       &Commands::JobsPause},
      {"jobs", "resume", "ID", 1, 1, "",
       "Put a paused job back in the queue at its old place; it continues "
       "from the step where it stopped, with the losses of a run that never "
       "paused.",
       &Commands::JobsResume},
      {"jobs", "export", "ID", 1, 1,
       "[--world_size=W] [--from_checkpoint] [--threads=N] [--memory_mb=M] "
       "[--worker_image=REF] [--volume_claim=NAME]",
       "Export a job to run as a Kubeflow PyTorchJob of kaizen-worker pods: "
       "the server writes the job's starting model (and a DISTILL job's "
       "teacher), settings and links to "
       "its record files into exports/<folder> of its data directory, and "
       "this prints the manifest (kubectl apply -f): a PyTorchJob that "
       "mounts that folder of --volume_claim (default kaizen-data; "
       "ReadWriteMany for pods on several nodes) in --world_size pods "
       "(default: the job's), each requesting --threads CPUs (default 4) and "
       "--memory_mb MiB, also its limit (default: computed by the server "
       "from its memory budgets and the model), of image --worker_image "
       "(default kaizen), and a NetworkPolicy that "
       "confines them to each other. --from_checkpoint continues from the "
       "job's newest checkpoint. Rank 0 writes out/epoch-<N>.pt there, for "
       "'models upload'. The job itself is unchanged; image "
       "FEATURE_EXTRACTION, FINE_TUNE, FULL, SCRATCH and DISTILL jobs only.",
       &Commands::JobsExport},
      {"jobs", "exports", "[ID]", 0, 1, "",
       "List the exports (folders 'jobs export' wrote under the server's data "
       "directory), all or job ID's, newest first: the directory, the job, "
       "when it was written and what deleting it would free (its model, "
       "settings, what its pods wrote, and the records of datasets deleted "
       "since). The server holds at most --max_exports of them.",
       &Commands::JobsExports},
      {"jobs", "delete-export", "DIRECTORY", 1, 1, "",
       "Delete an export's folder (as 'jobs exports' names it); pods still "
       "running from it lose their folder.",
       &Commands::JobsDeleteExport},
      {"jobs", "watch", "ID", 1, 1, "[--after_sequence=N]",
       "Follow a job to its end: a live progress bar (when stderr is a "
       "terminal) and a line per epoch, checkpoint, message and error, then "
       "a summary. A finished job's events are replayed. --after_sequence "
       "resumes after that event. With --output=json: JSON Lines, one "
       "JobEvent per line. Exits 0 only when the job succeeds.",
       &Commands::JobsWatch},
      {"predict", "", "MODEL[:VERSION] FILE...|TEXT...", 2, -1,
       "[--texts] [--top_k=N] [--version=V] [--policy=latest|best]",
       "Classify JPEG/PNG files with a model: one request with every FILE as "
       "an encoded image (the server accepts 256 per request by default), "
       "resized and normalised by the server as the model's metadata says. "
       "Prints the top --top_k classes (default 1) of each file and the "
       "version that answered: a pinned --version (or MODEL:VERSION), else "
       "the newest (--policy=latest, the default) or the best by validation "
       "metric (--policy=best). With --texts, each argument after MODEL is "
       "a text for a text model, tokenised by the server with the model's "
       "own tokenizer. --output=json prints the PredictResponse.",
       &Commands::Predict},
      {"bench", "predict", "MODEL[:VERSION]", 1, 1,
       "[--concurrency=C] [--duration=S] [--warmup=S] [--batching=on|off] "
       "[--image=FILE] [--inputs_per_request=N] [--input_shape=C,H,W] "
       "[--version=V] [--policy=latest|best] [--top_k=N]",
       "Load test Predict: C calls (default 1) always in flight on one "
       "channel for S seconds (default 10) after a warm-up (default 2) that "
       "is not measured. Each call sends N inputs (default 1): --image "
       "encoded, or else random tensors of the model's input shape (from "
       "GetModel, or --input_shape). --batching=off sets disable_batching on "
       "every call. Prints requests/s, inputs/s, p50/p95/p99/max latency in "
       "ms, errors by status code and the versions that answered (and "
       "whether each of the C clients only saw them move forward). "
       "--output=json prints one object: model, batching, input, "
       "concurrency, inputs_per_request, warmup_seconds, duration_seconds, "
       "requests, inputs, requests_per_second, inputs_per_second, latency_ms "
       "{p50, p95, p99, max, mean}, failed_requests, errors {CODE: count}, "
       "first_error, versions {min, max, monotonic, counts}, "
       "client_cpu_seconds, wall_seconds. --timeout is each call's deadline "
       "(default 60s). Exits 1 if any call failed.",
       &Commands::BenchPredict},
      {"tokens", "add", "NAME admin|trainer|predictor|reader", 2, 2, "--tokens_file=FILE",
       "Make a new bearer token for the server's --tokens_file (no server is "
       "called): adds the line NAME ROLE sha256:HASH to FILE (atomically; "
       "created if missing) and prints the token itself, which is stored "
       "nowhere, on stdout. Send the server SIGHUP to load it. Roles: admin "
       "(everything), trainer (uploads, jobs, reads), predictor (Predict, "
       "ModelInfer, model metadata), reader (Get, List, Watch).",
       &Commands::TokensAdd},
  };
  return *specs;
}

std::string Commands::Usage() {
  std::string out =
      "kaizenctl: command-line client of the Kaizen fine-tuning service.\n\n"
      "Usage: kaizenctl [--server=HOST:PORT] [--output=table|json] "
      "[--timeout=DURATION]\n                 COMMAND [ARGS...]\n\n"
      "Commands:\n";
  for (const Spec& spec : Specs()) {
    absl::StrAppend(&out, "  ", spec.group);
    if (spec.verb[0] != '\0') absl::StrAppend(&out, " ", spec.verb);
    if (spec.args[0] != '\0') absl::StrAppend(&out, " ", spec.args);
    absl::StrAppend(&out, "\n");
    if (spec.flags[0] != '\0') absl::StrAppend(&out, Wrap(spec.flags, 6));
    absl::StrAppend(&out, Wrap(spec.help, 6));
  }
  absl::StrAppend(&out,
                  "\nGlobal flags (anywhere on the command line):\n"
                  "  --server=HOST:PORT   the server (default localhost:50051; "
                  "$KAIZEN_SERVER sets the default)\n"
                  "  --output=table|json  tables for people (default), or one JSON "
                  "document\n"
                  "                       (the response in the proto3 JSON mapping);\n"
                  "                       'jobs watch' and 'finetune start --watch' "
                  "print JSON\n"
                  "                       Lines instead: the Job (start only), then one "
                  "JobEvent\n"
                  "                       per line\n"
                  "  --timeout=DURATION   deadline of each call, e.g. 30s or 10m "
                  "(default: none)\n"
                  "  --token=TOKEN        bearer token (default $KAIZEN_TOKEN, which "
                  "keeps it\n"
                  "                       off the command line)\n"
                  "  --tls                TLS, the server verified with the system's "
                  "roots\n"
                  "  --tls_ca=FILE        TLS, the server verified with this CA\n"
                  "  --tls_cert=FILE --tls_key=FILE\n"
                  "                       client certificate and key (mutual TLS)\n"
                  "  --insecure           allow a token over plaintext to a server "
                  "off loopback\n"
                  "  --version=V          predict, bench predict: the model version, "
                  "like MODEL:V\n"
                  "  --help               this text\n"
                  "\nExit status: 0 on success; 1 when a call fails, with "
                  "\"kaizenctl: CODE: message\"\non stderr; 2 on a usage error. A watch "
                  "('jobs watch', 'finetune start --watch')\nexits 0 only when the job "
                  "SUCCEEDED; a FAILED job ends with\n\"kaizenctl: ABORTED: ...\", a "
                  "CANCELLED one with \"kaizenctl: CANCELLED: ...\",\nand a broken "
                  "stream with its code and the --after_sequence to resume from.\n");
  return out;
}

absl::Status Commands::Run(const std::vector<std::string>& args) {
  if (args.empty()) return UsageError("no command given");
  bool group_known = false;
  std::vector<std::string> verbs;
  for (const Spec& spec : Specs()) {
    if (args[0] != spec.group) continue;
    group_known = true;
    const bool one_word = spec.verb[0] == '\0';
    if (!one_word) {
      verbs.push_back(spec.verb);
      if (args.size() < 2 || args[1] != spec.verb) continue;
    }
    const Args rest(args.begin() + (one_word ? 1 : 2), args.end());
    const int count = static_cast<int>(rest.size());
    if (count < spec.min_args || (spec.max_args >= 0 && count > spec.max_args)) {
      std::string synopsis = absl::StrCat("kaizenctl ", spec.group);
      if (!one_word) absl::StrAppend(&synopsis, " ", spec.verb);
      if (spec.args[0] != '\0') absl::StrAppend(&synopsis, " ", spec.args);
      return UsageError(absl::StrCat("wrong number of arguments; usage: ", synopsis));
    }
    return (this->*spec.run)(rest);
  }
  if (!group_known) {
    std::vector<std::string> groups;
    for (const Spec& spec : Specs()) {
      if (groups.empty() || groups.back() != spec.group) {
        groups.push_back(spec.group);
      }
    }
    return UsageError(
        absl::StrCat("unknown command \"", args[0], "\"; commands: ", absl::StrJoin(groups, ", ")));
  }
  const std::string choices = absl::StrJoin(verbs, ", ");
  if (args.size() < 2) {
    return UsageError(absl::StrCat("\"", args[0], "\" needs a subcommand: ", choices));
  }
  return UsageError(absl::StrCat("unknown command \"", args[0], " ", args[1], "\"; ", args[0],
                                 " commands: ", choices));
}

absl::Status Commands::Print(const google::protobuf::Message& message, const std::string& text) {
  if (options_.output == OutputFormat::kJson) {
    ASSIGN_OR_RETURN(const std::string json, ToJson(message));
    *out_ << json;
  } else {
    *out_ << text;
  }
  out_->flush();
  if (!*out_) return absl::InternalError("cannot write to standard output");
  return absl::OkStatus();
}

// --- datasets ----------------------------------------------------------------

absl::Status Commands::DatasetsUpload(const Args& args) {
  const std::string& name = args[0];
  const std::string& path = args[1];
  ASSIGN_OR_RETURN(const DatasetSource source,
                   ResolveDatasetSource(path, options_.dataset_format, options_.labels));
  kaizen::v1::UploadDatasetHeader header;
  header.set_name(name);
  header.set_format(source.format);
  header.set_description(options_.description);
  header.set_max_stored_shorter_side(options_.max_stored_shorter_side);
  header.set_text_field(options_.text_field);
  header.set_label_field(options_.label_field);
  ASSIGN_OR_RETURN(const std::vector<std::string> class_names,
                   ResolveClassNames(options_.class_names));
  for (const std::string& class_name : class_names) {
    header.add_class_names(class_name);
  }

  std::vector<std::string> files = source.files;
  // Lives until the upload is over; its destructor deletes the archive.
  std::optional<client::TempFile> archive;
  if (!source.folder.empty()) {
    ASSIGN_OR_RETURN(client::TempFile temp, client::TempFile::Create(".tar"));
    std::vector<std::string> warnings;
    RETURN_IF_ERROR(client::ArchiveFolder(source.folder, temp.path(), &warnings));
    for (const std::string& warning : warnings) {
      std::cerr << "kaizenctl: warning: " << warning << "\n";
    }
    files = {temp.path()};
    header.add_parts()->set_file_name(absl::StrCat(FolderName(source.folder), ".tar"));
    archive.emplace(std::move(temp));
  }

  absl::StatusOr<kaizen::v1::Dataset> dataset;
  {
    ProgressBar bar(absl::StrCat("uploading ", name), options_.show_progress);
    dataset = client_->UploadDataset(
        std::move(header), files, [&bar](int64_t sent, int64_t total) { bar.Update(sent, total); });
  }
  archive.reset();
  if (!dataset.ok()) return dataset.status();
  return Print(*dataset, DatasetDetails(*dataset));
}

absl::Status Commands::DatasetsList(const Args&) {
  ASSIGN_OR_RETURN(const kaizen::v1::ListDatasetsResponse response, client_->ListAllDatasets());
  return Print(response, DatasetTable(response));
}

absl::Status Commands::DatasetsGet(const Args& args) {
  ASSIGN_OR_RETURN(const kaizen::v1::Dataset dataset, client_->GetDataset(args[0]));
  return Print(dataset, DatasetDetails(dataset));
}

absl::Status Commands::DatasetsDelete(const Args& args) {
  RETURN_IF_ERROR(client_->DeleteDataset(args[0]));
  return Print(kaizen::v1::DeleteDatasetResponse(),
               absl::StrCat("deleted dataset ", args[0], "\n"));
}

// --- models ------------------------------------------------------------------

absl::Status Commands::ModelsUpload(const Args& args) {
  const std::string& name = args[0];
  const std::string& file = args[1];
  kaizen::v1::UploadModelHeader header;
  header.set_name(name);
  header.set_description(options_.description);
  header.set_head_module(options_.head);
  ASSIGN_OR_RETURN(const std::vector<int64_t> shape,
                   ParseInts("input_shape", options_.input_shape));
  for (int64_t dim : shape) header.add_input_shape(dim);
  ASSIGN_OR_RETURN(const std::vector<float> mean, ParseFloats("mean", options_.mean));
  ASSIGN_OR_RETURN(const std::vector<float> std, ParseFloats("std", options_.std));
  if (mean.size() != std.size()) {
    return UsageError(absl::StrCat("--mean has ", mean.size(), " values and --std ", std.size(),
                                   "; give one of each per channel"));
  }
  for (float m : mean) header.mutable_normalization()->add_mean(m);
  for (float s : std) header.mutable_normalization()->add_std(s);
  ASSIGN_OR_RETURN(const std::vector<std::string> class_names,
                   ResolveClassNames(options_.class_names));
  for (const std::string& class_name : class_names) {
    header.add_class_names(class_name);
  }

  absl::StatusOr<kaizen::v1::Model> model;
  {
    ProgressBar bar(absl::StrCat("uploading ", name), options_.show_progress);
    model = client_->UploadModel(std::move(header), file,
                                 [&bar](int64_t sent, int64_t total) { bar.Update(sent, total); });
  }
  if (!model.ok()) return model.status();
  return Print(*model, ModelDetails(*model));
}

absl::Status Commands::ModelsList(const Args&) {
  ASSIGN_OR_RETURN(const kaizen::v1::ListModelsResponse response,
                   client_->ListAllModels(options_.all_versions));
  return Print(response, ModelTable(response));
}

absl::Status Commands::ModelsGet(const Args& args) {
  std::string name;
  int64_t version = 0;
  RETURN_IF_ERROR(common::ParseModelRef(args[0], &name, &version));
  ASSIGN_OR_RETURN(const kaizen::v1::Model model, client_->GetModel(name, version));
  return Print(model, ModelDetails(model));
}

absl::Status Commands::ModelsDelete(const Args& args) {
  std::string name;
  int64_t version = 0;
  RETURN_IF_ERROR(common::ParseModelRef(args[0], &name, &version));
  RETURN_IF_ERROR(client_->DeleteModel(name, version));
  return Print(kaizen::v1::DeleteModelResponse(),
               version == 0 ? absl::StrCat("deleted model ", name, " (all versions)\n")
                            : absl::StrCat("deleted model ", name, " version ", version, "\n"));
}

absl::Status Commands::ModelsDownload(const Args& args) {
  std::string name;
  int64_t version = 0;
  RETURN_IF_ERROR(common::ParseModelRef(args[0], &name, &version));
  const std::string& out_path = args[1];
  absl::StatusOr<kaizen::v1::Model> model;
  {
    ProgressBar bar(absl::StrCat("downloading ", args[0]), options_.show_progress);
    model = client_->DownloadModel(
        name, version, out_path,
        [&bar](int64_t received, int64_t total) { bar.Update(received, total); });
  }
  if (!model.ok()) return model.status();
  return Print(*model, absl::StrCat("downloaded ", model->name(), " version ", model->version(),
                                    " to ", out_path, " (", FormatBytes(model->size_bytes()),
                                    ", sha256 ", model->sha256(), ")\n"));
}

absl::Status Commands::ModelsEvaluate(const Args& args) {
  std::string name;
  int64_t version = 0;
  RETURN_IF_ERROR(common::ParseModelRef(args[0], &name, &version));
  ASSIGN_OR_RETURN(const kaizen::v1::Evaluation evaluation,
                   client_->EvaluateModel(name, version, args[1], options_.top_k));
  return Print(evaluation, EvaluationDetails(evaluation));
}

// --- fine-tuning jobs --------------------------------------------------------

absl::Status Commands::FineTuneStart(const Args&) {
  ASSIGN_OR_RETURN(const kaizen::v1::StartFineTuneRequest request,
                   BuildStartFineTuneRequest(options_.finetune));
  if (options_.watch && request.validate_only()) {
    return UsageError("--dry_run queues no job to --watch");
  }
  ASSIGN_OR_RETURN(const kaizen::v1::Job job, client_->StartFineTune(request));
  if (request.validate_only()) {
    return Print(job, absl::StrCat("dry run: the server would queue this job\n", JobDetails(job)));
  }
  // "job ft-1a2b3c queued" and what it will do.
  const std::string text =
      absl::StrCat("job ", job.id(), " ", JobStateName(job.state()), "\n  ", JobOneLine(job), "\n");
  if (!options_.watch) return Print(job, text);
  // The start and the watch make one stream: JSON Lines, or lines of text.
  if (options_.output == OutputFormat::kJson) {
    ASSIGN_OR_RETURN(const std::string line, ToJsonLine(job));
    *out_ << line;
  } else {
    *out_ << text;
  }
  out_->flush();
  return Watch(job.id(), /*after_sequence=*/0, &job);
}

absl::Status Commands::JobsList(const Args&) {
  ASSIGN_OR_RETURN(const std::vector<kaizen::v1::JobState> states, ParseJobStates(options_.states));
  ASSIGN_OR_RETURN(const kaizen::v1::ListJobsResponse response, client_->ListAllJobs(states));
  return Print(response, JobTable(response));
}

absl::Status Commands::JobsGet(const Args& args) {
  ASSIGN_OR_RETURN(const kaizen::v1::Job job, client_->GetJob(args[0]));
  return Print(job, JobDetails(job));
}

absl::Status Commands::JobsCancel(const Args& args) {
  ASSIGN_OR_RETURN(const kaizen::v1::Job job, client_->CancelJob(args[0]));
  std::string text;
  if (common::IsTerminal(job.state())) {
    text = absl::StrCat("job ", job.id(), " ", JobStateName(job.state()));
    if (job.latest_version() > 0) {
      absl::StrAppend(&text, "; last checkpoint ", job.request().output_model(), ":",
                      job.latest_version());
    }
    absl::StrAppend(&text, "\n");
  } else {
    text = absl::StrCat("job ", job.id(), " is being cancelled (now ", JobStateName(job.state()),
                        "); it stops within one training step\n");
  }
  return Print(job, text);
}

absl::Status Commands::JobsPause(const Args& args) {
  ASSIGN_OR_RETURN(kaizen::v1::Job job, client_->PauseJob(args[0]));
  // A running job pauses after its current step and checkpoint: wait for
  // that, so that the answer says where it stopped.
  const absl::Duration wait =
      options_.timeout == absl::InfiniteDuration() ? absl::Minutes(10) : options_.timeout;
  const absl::Time deadline = absl::Now() + wait;
  while (job.state() == kaizen::v1::JOB_STATE_RUNNING && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(200));
    ASSIGN_OR_RETURN(job, client_->GetJob(job.id()));
  }
  std::string text;
  switch (job.state()) {
    case kaizen::v1::JOB_STATE_PAUSED:
    case kaizen::v1::JOB_STATE_QUEUED:  // withdrawn by a resume meanwhile
      text = absl::StrCat("job ", job.id(), " ", JobStateName(job.state()));
      if (job.total_steps() > 0 && job.step() > 0) {
        absl::StrAppend(&text, " after step ", job.step(), "/", job.total_steps(), " (epoch ",
                        job.epoch(), "/", job.total_epochs(), ")");
      }
      if (job.latest_version() > 0) {
        absl::StrAppend(&text, "; checkpoint ", job.request().output_model(), ":",
                        job.latest_version());
      }
      absl::StrAppend(&text, "\n");
      break;
    case kaizen::v1::JOB_STATE_RUNNING:
      text = absl::StrCat("job ", job.id(), " is being paused (still running after ",
                          absl::FormatDuration(wait), "); it pauses after its current step\n");
      break;
    default:
      return absl::FailedPreconditionError(absl::StrCat("job ", job.id(), " ended in state ",
                                                        JobStateName(job.state()),
                                                        " before it could pause"));
  }
  return Print(job, text);
}

absl::Status Commands::JobsResume(const Args& args) {
  ASSIGN_OR_RETURN(const kaizen::v1::Job job, client_->ResumeJob(args[0]));
  std::string text = absl::StrCat("job ", job.id(), " ", JobStateName(job.state()));
  if (job.state() == kaizen::v1::JOB_STATE_QUEUED && job.latest_version() > 0) {
    absl::StrAppend(&text, "; it continues from checkpoint ", job.request().output_model(), ":",
                    job.latest_version());
  }
  absl::StrAppend(&text, "\n");
  return Print(job, text);
}

absl::Status Commands::JobsWatch(const Args& args) {
  if (options_.after_sequence < 0) {
    return UsageError("--after_sequence must be >= 0");
  }
  return Watch(args[0], options_.after_sequence, nullptr);
}

absl::Status Commands::JobsExport(const Args& args) {
  kaizen::v1::ExportJobRequest request;
  request.set_id(args[0]);
  if (!options_.finetune.world_size.empty()) {
    int32_t world_size = 0;
    if (!absl::SimpleAtoi(options_.finetune.world_size, &world_size) || world_size < 1) {
      return UsageError("--world_size must be a positive integer");
    }
    request.set_world_size(world_size);
  }
  if (options_.threads < 0) return UsageError("--threads must be >= 1");
  request.set_threads(options_.threads);
  if (options_.memory_mb < 0) return UsageError("--memory_mb must be >= 256");
  request.set_memory_mb(options_.memory_mb);
  request.set_from_checkpoint(options_.from_checkpoint);
  request.set_image(options_.worker_image);
  request.set_volume_claim(options_.volume_claim);
  ASSIGN_OR_RETURN(const kaizen::v1::ExportJobResponse exported, client_->ExportJob(request));
  return Print(exported, exported.manifest());
}

absl::Status Commands::JobsExports(const Args& args) {
  ASSIGN_OR_RETURN(const kaizen::v1::ListExportsResponse listed,
                   client_->ListExports(args.empty() ? "" : args[0]));
  return Print(listed, ExportTable(listed));
}

absl::Status Commands::JobsDeleteExport(const Args& args) {
  RETURN_IF_ERROR(client_->DeleteExport(args[0]));
  kaizen::v1::DeleteExportResponse deleted;
  return Print(deleted, absl::StrCat("deleted ", args[0], "\n"));
}

absl::Status Commands::Watch(const std::string& id, int64_t after_sequence,
                             const kaizen::v1::Job* known) {
  const bool json = options_.output == OutputFormat::kJson;
  int64_t last_sequence = after_sequence;
  absl::Status write_error;
  absl::Status stream;
  if (json) {
    stream = client_->WatchJob(id, after_sequence, [&](const kaizen::v1::JobEvent& event) {
      last_sequence = event.sequence();
      absl::StatusOr<std::string> line = ToJsonLine(event);
      if (!line.ok()) {
        write_error.Update(line.status());
        return;
      }
      *out_ << *line;
      out_->flush();
    });
  } else {
    kaizen::v1::Job job;
    if (known != nullptr) {
      job = *known;
    } else {
      ASSIGN_OR_RETURN(job, client_->GetJob(id));
    }
    JobWatcher watcher(out_, options_.show_progress);
    watcher.SetJob(job);
    stream = client_->WatchJob(id, after_sequence, [&](const kaizen::v1::JobEvent& event) {
      last_sequence = event.sequence();
      watcher.OnEvent(event);
    });
    watcher.Finish();
  }
  RETURN_IF_ERROR(write_error);
  if (!*out_) return absl::InternalError("cannot write to standard output");
  const std::string resume =
      absl::StrCat("resume with: kaizenctl jobs watch ", id, " --after_sequence=", last_sequence);
  if (!stream.ok()) {
    return absl::Status(stream.code(),
                        absl::StrCat(stream.message(), " (the watch of job ", id,
                                     " stopped after event ", last_sequence, "; ", resume, ")"));
  }

  // The stream says how the job ended only if the terminal state came after
  // `after_sequence`; the job itself always does.
  ASSIGN_OR_RETURN(const kaizen::v1::Job job, client_->GetJob(id));
  if (!common::IsTerminal(job.state())) {
    return absl::UnavailableError(absl::StrCat("the server ended the watch of job ", id,
                                               " before the job finished (it is ",
                                               JobStateName(job.state()), "); ", resume));
  }
  if (!json) {
    *out_ << FormatJobSummary(job);
    out_->flush();
  }
  switch (job.state()) {
    case kaizen::v1::JOB_STATE_SUCCEEDED:
      return absl::OkStatus();
    case kaizen::v1::JOB_STATE_CANCELLED:
      return absl::CancelledError(absl::StrCat("job ", id, " was cancelled"));
    default:
      return absl::AbortedError(absl::StrCat(
          "job ", id, " failed", job.error().empty() ? "" : absl::StrCat(": ", job.error())));
  }
}

// --- predictions ---------------------------------------------------------------

absl::StatusOr<kaizen::v1::PredictRequest> Commands::BasePredictRequest(
    const std::string& model_ref) const {
  std::string name;
  int64_t version = 0;
  RETURN_IF_ERROR(common::ParseModelRef(model_ref, &name, &version));
  if (options_.version < 0) return UsageError("--version must be >= 0");
  if (options_.version > 0) {
    if (version > 0 && version != options_.version) {
      return UsageError(
          absl::StrCat(model_ref, " and --version=", options_.version, " name different versions"));
    }
    version = options_.version;
  }
  kaizen::v1::PredictRequest request;
  request.set_model(name);
  request.set_version(version);
  if (options_.policy == "latest") {
    request.set_policy(kaizen::v1::VERSION_POLICY_LATEST);
  } else if (options_.policy == "best") {
    request.set_policy(kaizen::v1::VERSION_POLICY_BEST);
  } else if (!options_.policy.empty()) {
    return UsageError(
        absl::StrCat("--policy must be latest or best, not \"", options_.policy, "\""));
  }
  if (options_.top_k < 0) return UsageError("--top_k must be >= 0");
  request.set_top_k(options_.top_k);
  return request;
}

absl::Status Commands::Predict(const Args& args) {
  ASSIGN_OR_RETURN(kaizen::v1::PredictRequest request, BasePredictRequest(args[0]));
  const Args files(args.begin() + 1, args.end());
  for (const std::string& file : files) {
    if (options_.texts) {
      request.add_inputs()->set_text(file);
    } else {
      ASSIGN_OR_RETURN(*request.add_inputs()->mutable_encoded_image(), ReadRegularFile(file));
    }
  }
  ASSIGN_OR_RETURN(const kaizen::v1::PredictResponse response, client_->Predict(request));
  return Print(response, PredictionTable(response, files, options_.texts));
}

absl::Status Commands::BenchPredict(const Args& args) {
  ASSIGN_OR_RETURN(kaizen::v1::PredictRequest request, BasePredictRequest(args[0]));
  PredictBench::Options bench;
  if (options_.concurrency < 1 || options_.concurrency > 100000) {
    return UsageError("--concurrency must be between 1 and 100000");
  }
  bench.concurrency = options_.concurrency;
  ASSIGN_OR_RETURN(bench.duration, ParseSeconds("duration", options_.duration));
  ASSIGN_OR_RETURN(bench.warmup, ParseSeconds("warmup", options_.warmup));
  if (bench.duration <= absl::ZeroDuration()) {
    return UsageError("--duration must be > 0");
  }
  if (options_.timeout != absl::InfiniteDuration()) {
    bench.timeout = options_.timeout;
  }
  if (options_.batching != "on" && options_.batching != "off") {
    return UsageError(
        absl::StrCat("--batching must be on or off, not \"", options_.batching, "\""));
  }
  const bool batching = options_.batching == "on";
  request.set_disable_batching(!batching);
  const int n = options_.inputs_per_request;
  if (n < 1) return UsageError("--inputs_per_request must be >= 1");

  std::string input;
  if (!options_.image.empty()) {
    ASSIGN_OR_RETURN(const std::string bytes, ReadRegularFile(options_.image));
    for (int i = 0; i < n; ++i) {
      request.add_inputs()->set_encoded_image(bytes);
    }
    input = absl::StrCat("image ", std::filesystem::path(options_.image).filename().string());
  } else {
    ASSIGN_OR_RETURN(std::vector<int64_t> shape, ParseInts("input_shape", options_.input_shape));
    if (shape.empty()) {
      ASSIGN_OR_RETURN(const kaizen::v1::Model model,
                       client_->GetModel(request.model(), request.version()));
      shape.assign(model.input_shape().begin(), model.input_shape().end());
    }
    if (shape.size() != 3) {
      return absl::FailedPreconditionError(absl::StrCat("model ", request.model(),
                                                        " has no [C, H, W] input shape; give "
                                                        "--input_shape=C,H,W or --image=FILE"));
    }
    // Values of a normalised image; the same seed every run.
    absl::BitGen gen(std::seed_seq{7});
    const int64_t size = shape[0] * shape[1] * shape[2];
    for (int i = 0; i < n; ++i) {
      kaizen::v1::FloatTensor* tensor = request.add_inputs()->mutable_tensor();
      for (int64_t dim : shape) tensor->add_shape(dim);
      tensor->mutable_values()->Reserve(static_cast<int>(size));
      for (int64_t j = 0; j < size; ++j) {
        tensor->add_values(absl::Gaussian<float>(gen, 0.0f, 1.0f));
      }
    }
    input = absl::StrCat("random tensor ", absl::StrJoin(shape, "x"));
  }

  // One call first: a request that cannot succeed fails here at once instead
  // of for the whole run, and a version loaded on first use is loaded.
  RETURN_IF_ERROR(client_->Predict(request, bench.timeout).status());

  const PredictBench::Result result = PredictBench(client_, bench).Run(request);
  const std::string model = request.version() > 0
                                ? absl::StrCat(request.model(), ":", request.version())
                                : request.model();
  if (options_.output == OutputFormat::kJson) {
    *out_ << PredictBenchJson(result, model, batching, input);
  } else {
    *out_ << PredictBenchText(result, model, batching, input);
  }
  out_->flush();
  if (!*out_) return absl::InternalError("cannot write to standard output");
  if (result.failed_requests > 0) {
    return absl::Status(
        result.first_error_code,
        absl::StrCat(result.failed_requests, " calls failed; the first: ", result.first_error));
  }
  return absl::OkStatus();
}

absl::Status Commands::TokensAdd(const Args& args) {
  if (options_.tokens_file.empty()) return UsageError("tokens add needs --tokens_file=FILE");
  // Through a symbolic link to the file it names, keeping its mode (0600
  // for a new file).
  std::error_code ec;
  const std::filesystem::path resolved = std::filesystem::canonical(options_.tokens_file, ec);
  const std::string file = ec ? options_.tokens_file : resolved.string();
  const std::filesystem::perms mode =
      ec ? (std::filesystem::perms::owner_read | std::filesystem::perms::owner_write)
         : std::filesystem::status(file).permissions();
  const std::string& name = args[0];
  if (!auth::IsValidTokenName(name)) {
    return UsageError(absl::StrCat("token name \"", name, "\": use 1-64 of [A-Za-z0-9._@-]"));
  }
  absl::StatusOr<auth::Role> role = auth::ParseRole(args[1]);
  if (!role.ok()) return UsageError(std::string(role.status().message()));
  std::string text;
  if (std::filesystem::exists(file)) {
    RETURN_IF_ERROR(common::ReadFile(file, &text));
    // The file must be one the server would load, before and after.
    ASSIGN_OR_RETURN(const auth::TokenTable table, auth::ParseTokenFile(text, file));
    for (const auto& [hash, entry] : table) {
      if (entry.name == name) {
        return absl::AlreadyExistsError(absl::StrCat("token \"", name, "\" is already in ", file,
                                                     "; remove its line first to replace it"));
      }
    }
  }
  ASSIGN_OR_RETURN(const std::string token, auth::GenerateToken());
  if (!text.empty() && text.back() != '\n') text.push_back('\n');
  absl::StrAppend(&text, auth::TokenFileLine(name, *role, token), "\n");
  RETURN_IF_ERROR(auth::ParseTokenFile(text, file).status());
  RETURN_IF_ERROR(common::WriteFileAtomically(file, text));
  std::filesystem::permissions(file, mode, ec);
  if (ec) {
    return absl::InternalError(absl::StrCat("cannot set the mode of ", file, ": ", ec.message()));
  }
  if (options_.output == OutputFormat::kJson) {
    *out_ << "{\"name\": \"" << name << "\", \"role\": \"" << auth::RoleName(*role)
          << "\", \"token\": \"" << token << "\"}\n";
  } else {
    *out_ << token << "\n";
    std::cerr << "added token \"" << name << "\" (" << auth::RoleName(*role) << ") to " << file
              << "; send the server SIGHUP to load it. The token is shown only now.\n";
  }
  out_->flush();
  if (!*out_) return absl::InternalError("cannot write to standard output");
  return absl::OkStatus();
}

}  // namespace kaizen::cli
