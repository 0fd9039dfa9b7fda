// kaizenctl: the command-line client of the Kaizen fine-tuning service.
//
//   kaizenctl [--server=HOST:PORT] [--output=table|json] COMMAND ARGS...
//
// Exit status: 0 on success, 1 when a call fails (or a watched job does not
// succeed), 2 on a usage error.

#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "client/cli/commands.h"
#include "client/cli/finetune_request.h"
#include "client/cli/progress_bar.h"
#include "client/cli/usage.h"
#include "client/lib/kaizen_client.h"
#include "server/auth/listen_policy.h"
#include "server/common/atomic_file.h"

// Global.
ABSL_FLAG(std::string, server, kaizen::cli::DefaultServer(),
          "host:port of the server; $KAIZEN_SERVER sets the default");
ABSL_FLAG(std::string, token, "",
          "bearer token sent with every call (default: $KAIZEN_TOKEN; prefer the variable, "
          "command lines are visible to other users)");
ABSL_FLAG(bool, tls, false, "connect with TLS, verifying the server with the system's roots");
ABSL_FLAG(std::string, tls_ca, "", "PEM CA that verifies the server's certificate; implies --tls");
ABSL_FLAG(std::string, tls_cert, "", "PEM client certificate for mutual TLS; implies --tls");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, tokens_file, "", "tokens add: the server's tokens file");
ABSL_FLAG(bool, insecure, false,
          "send a bearer token over plaintext to a server that is not on loopback");
ABSL_FLAG(std::string, output, "table",
          "table (for people) or json (one document, proto3 JSON mapping)");
ABSL_FLAG(absl::Duration, timeout, absl::InfiniteDuration(),
          "deadline of each call, e.g. 30s or 10m; inf for none");
// datasets upload.
ABSL_FLAG(std::string, format, "auto",
          "datasets upload: auto, folder, idx, csv, tsv or jsonl (auto: from the path)");
ABSL_FLAG(std::string, text_field, "",
          "datasets upload (csv, tsv, jsonl): the column or field holding the text; default text");
ABSL_FLAG(std::string, label_field, "",
          "datasets upload (csv, tsv, jsonl): the column or field holding the label; default "
          "label");
ABSL_FLAG(std::string, labels, "",
          "datasets upload (IDX): the labels file; default: found beside the "
          "images file");
ABSL_FLAG(int32_t, max_stored_shorter_side, 0,
          "datasets upload (folders): store images whose shorter side is longer downscaled to "
          "it; 0: the server's --max_stored_shorter_side");
// Both uploads.
ABSL_FLAG(std::vector<std::string>, class_names, {}, "class names a,b,c (or @FILE, one a line)");
ABSL_FLAG(std::string, description, "", "free-text description");
// models upload / list.
ABSL_FLAG(std::string, input_shape, "",
          "models upload: C,H,W e.g. 3,224,224; bench predict: the shape of "
          "the random tensors (skips GetModel)");
ABSL_FLAG(std::string, mean, "", "models upload: per-channel mean, a,b,c");
ABSL_FLAG(std::string, std, "", "models upload: per-channel std, a,b,c");
ABSL_FLAG(std::string, head, "",
          "models upload: dotted path of the classification head, e.g. fc; "
          "finetune start: the new head, linear or mlp");
ABSL_FLAG(bool, all_versions, false, "models list: one row per version");
// finetune start: empty means "not given", i.e. the strategy's default.
ABSL_FLAG(std::string, base, "", "finetune start: base model, NAME[:VERSION]");
ABSL_FLAG(std::string, dataset, "", "finetune start: training dataset");
ABSL_FLAG(std::string, output_model, "",
          "finetune start: model the checkpoints become versions of");
ABSL_FLAG(std::string, strategy, "",
          "finetune start: feature_extraction, fine_tune, full, scratch, "
          "incremental, distill or masked_lm (text)");
ABSL_FLAG(std::string, max_length, "",
          "finetune start, text datasets: ids per text (default: the model's, 128 new)");
ABSL_FLAG(std::string, vocab_size, "",
          "finetune start, text datasets building transformer-small: tokenizer pieces "
          "(default 4000)");
ABSL_FLAG(std::string, epochs, "", "finetune start: number of epochs");
ABSL_FLAG(std::string, batch_size, "", "finetune start: batch size");
ABSL_FLAG(std::string, lr, "", "finetune start: learning rate");
ABSL_FLAG(std::string, backbone_lr_multiplier, "",
          "finetune start: learning-rate factor of pretrained layers");
ABSL_FLAG(std::string, trainable_blocks, "",
          "finetune start (fine_tune): how many top blocks train");
ABSL_FLAG(std::string, optimizer, "", "finetune start: sgd, adam or adamw");
ABSL_FLAG(std::string, momentum, "", "finetune start: SGD momentum");
ABSL_FLAG(bool, nesterov, false, "finetune start: Nesterov momentum (SGD)");
ABSL_FLAG(std::string, weight_decay, "", "finetune start: weight decay");
ABSL_FLAG(std::string, schedule, "",
          "finetune start: constant, step or cosine learning-rate schedule");
ABSL_FLAG(std::string, warmup_epochs, "",
          "finetune start: linear learning-rate warm-up, in epochs");
ABSL_FLAG(std::string, label_smoothing, "", "finetune start: e.g. 0.1");
ABSL_FLAG(std::string, early_stopping_patience, "",
          "finetune start: stop after N epochs without improvement");
ABSL_FLAG(std::string, clip_norm, "", "finetune start: clip the global gradient norm; 0 disables");
ABSL_FLAG(std::string, seed, "", "finetune start: random seed");
ABSL_FLAG(std::string, augment, "", "finetune start: on or off; not given: the strategy's default");
ABSL_FLAG(std::string, validation_split, "",
          "finetune start: fraction of the dataset held out, e.g. 0.1");
ABSL_FLAG(std::string, validation_dataset, "", "finetune start: separate validation dataset");
ABSL_FLAG(std::string, test_dataset, "",
          "finetune start: a dataset the final versions are evaluated on (never trained on)");
ABSL_FLAG(std::string, tune_trials, "",
          "finetune start: tune first: this many trials (successive halving; 1-64)");
ABSL_FLAG(std::string, tune_time_budget, "",
          "finetune start: no tuning trial starts after this many seconds (default 3600)");
ABSL_FLAG(std::string, tune_seed, "", "finetune start: seeds the tuning search (default: --seed)");
ABSL_FLAG(std::string, tune_reduction_factor, "",
          "finetune start: each tuning round keeps 1/N of its trials (default 3)");
ABSL_FLAG(std::string, head_warmup_epochs, "",
          "finetune start: epochs that train the new head alone first");
ABSL_FLAG(std::string, mixed_precision, "", "finetune start: off, bf16 or fp16");
ABSL_FLAG(std::string, priority, "", "finetune start: higher runs first (default 0)");
ABSL_FLAG(std::string, request_id, "",
          "finetune start: idempotency key; a repeat returns the first job");
ABSL_FLAG(std::string, keep_checkpoints, "",
          "finetune start: versions kept besides the best and the latest");
ABSL_FLAG(std::string, world_size, "",
          "finetune start: train as this many processes, data parallel (default: the server's)");
ABSL_FLAG(std::string, teacher, "", "finetune start (distill): teacher model, NAME[:VERSION]");
ABSL_FLAG(std::string, temperature, "",
          "finetune start (distill, incremental): softmax temperature, 1 to 100 (default 4 for "
          "distill, 2 for incremental)");
ABSL_FLAG(std::string, distill_alpha, "",
          "finetune start (distill): weight of the teacher's soft targets, (0, 1] (default 0.7)");
ABSL_FLAG(std::string, exemplars_per_class, "",
          "finetune start (incremental): rehearsal exemplars kept per class (default 50)");
ABSL_FLAG(std::string, max_exemplars, "",
          "finetune start (incremental): rehearsal exemplars kept in all (default 2000)");
ABSL_FLAG(std::string, exemplar_selection, "",
          "finetune start (incremental): herding (default) or random");
ABSL_FLAG(std::string, previous_datasets, "",
          "finetune start (incremental): comma-separated datasets the base was trained on, for a "
          "base without a rehearsal memory (default: its job's dataset)");
ABSL_FLAG(std::string, distill_weight, "",
          "finetune start (incremental): weight of the distillation loss on old classes "
          "(default 1)");
ABSL_FLAG(bool, no_rehearsal, false, "finetune start (incremental): no rehearsal memory");
ABSL_FLAG(bool, no_distillation, false,
          "finetune start (incremental): no distillation from the previous model");
ABSL_FLAG(bool, watch, false, "finetune start: follow the job to its end, like jobs watch");
ABSL_FLAG(bool, dry_run, false,
          "finetune start: check the request and print the job it would queue (the resolved "
          "hyperparameters) without queuing it");
// jobs list / watch.
ABSL_FLAG(std::string, state, "", "jobs list: only these states, e.g. queued,running,paused");
ABSL_FLAG(int64_t, after_sequence, 0, "jobs watch: replay only the events after this sequence");
// jobs export (and --world_size).
ABSL_FLAG(bool, from_checkpoint, false,
          "jobs export: continue from the job's newest checkpoint, not its base model");
ABSL_FLAG(int32_t, threads, 0, "jobs export: intra-op threads (and CPUs requested) per pod (4)");
ABSL_FLAG(std::string, worker_image, "", "jobs export: the pods' image (default kaizen)");
ABSL_FLAG(int32_t, memory_mb, 0,
          "jobs export: each pod's memory request and limit in MiB (default: computed by the "
          "server from its budgets and the model)");
ABSL_FLAG(std::string, volume_claim, "",
          "jobs export: the PersistentVolumeClaim of the server's data directory (default "
          "kaizen-data)");
// predict / bench predict. --version=V is taken out of argv before Abseil
// sees it (see TakeVersionFlag).
ABSL_FLAG(int32_t, top_k, 0,
          "predict, bench predict: classes per input (0: the server's "
          "default, 1); models evaluate: k of the top-k accuracy (0: 5)");
ABSL_FLAG(bool, texts, false,
          "predict: the arguments after MODEL are texts to classify, not image files");
ABSL_FLAG(std::string, policy, "",
          "predict, bench predict: latest or best (default: the server's, "
          "latest)");
ABSL_FLAG(int32_t, concurrency, 1, "bench predict: calls in flight");
ABSL_FLAG(std::string, duration, "10",
          "bench predict: measured seconds (or a duration, e.g. 500ms)");
ABSL_FLAG(std::string, warmup, "2", "bench predict: seconds of unmeasured load first");
ABSL_FLAG(std::string, batching, "on", "bench predict: off sets disable_batching on every call");
ABSL_FLAG(std::string, image, "", "bench predict: send this JPEG/PNG instead of random tensors");
ABSL_FLAG(int32_t, inputs_per_request, 1, "bench predict: inputs per call");

namespace {

int Fail(const absl::Status& status) {
  if (kaizen::cli::IsUsageError(status)) {
    std::cerr << "kaizenctl: " << status.message() << "\nRun 'kaizenctl --help' for usage.\n";
    return 2;
  }
  std::cerr << "kaizenctl: " << absl::StatusCodeToString(status.code()) << ": " << status.message()
            << "\n";
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  using kaizen::cli::Commands;
  absl::SetProgramUsageMessage(Commands::Usage());
  if (kaizen::cli::WantsHelp(argc, argv)) {
    std::cout << Commands::Usage();
    return 0;
  }
  int64_t model_version = 0;
  if (absl::Status version = kaizen::cli::TakeVersionFlag(&argc, argv, &model_version);
      !version.ok()) {
    return Fail(version);
  }
  if (absl::Status flags = kaizen::cli::CheckFlags(argc, argv); !flags.ok()) {
    return Fail(flags);
  }
  const std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  const std::vector<std::string> args(positional.begin() + 1, positional.end());
  if (args.empty()) {
    std::cout << Commands::Usage();
    return 2;
  }

  kaizen::cli::CommandOptions options;
  const std::string output = absl::GetFlag(FLAGS_output);
  if (output == "json") {
    options.output = kaizen::cli::OutputFormat::kJson;
  } else if (output != "table") {
    return Fail(kaizen::cli::UsageError("--output must be table or json, not \"" + output + "\""));
  }
  options.show_progress = kaizen::cli::ProgressBar::StderrIsTerminal();
  options.dataset_format = absl::GetFlag(FLAGS_format);
  options.labels = absl::GetFlag(FLAGS_labels);
  options.text_field = absl::GetFlag(FLAGS_text_field);
  options.label_field = absl::GetFlag(FLAGS_label_field);
  options.max_stored_shorter_side = absl::GetFlag(FLAGS_max_stored_shorter_side);
  options.class_names = absl::GetFlag(FLAGS_class_names);
  options.description = absl::GetFlag(FLAGS_description);
  options.input_shape = absl::GetFlag(FLAGS_input_shape);
  options.mean = absl::GetFlag(FLAGS_mean);
  options.std = absl::GetFlag(FLAGS_std);
  options.head = absl::GetFlag(FLAGS_head);
  options.all_versions = absl::GetFlag(FLAGS_all_versions);
  kaizen::cli::FineTuneFlags& ft = options.finetune;
  ft.base = absl::GetFlag(FLAGS_base);
  ft.dataset = absl::GetFlag(FLAGS_dataset);
  ft.output_model = absl::GetFlag(FLAGS_output_model);
  ft.strategy = absl::GetFlag(FLAGS_strategy);
  ft.epochs = absl::GetFlag(FLAGS_epochs);
  ft.batch_size = absl::GetFlag(FLAGS_batch_size);
  ft.lr = absl::GetFlag(FLAGS_lr);
  ft.backbone_lr_multiplier = absl::GetFlag(FLAGS_backbone_lr_multiplier);
  ft.trainable_blocks = absl::GetFlag(FLAGS_trainable_blocks);
  ft.optimizer = absl::GetFlag(FLAGS_optimizer);
  ft.momentum = absl::GetFlag(FLAGS_momentum);
  ft.nesterov = absl::GetFlag(FLAGS_nesterov);
  ft.weight_decay = absl::GetFlag(FLAGS_weight_decay);
  ft.schedule = absl::GetFlag(FLAGS_schedule);
  ft.warmup_epochs = absl::GetFlag(FLAGS_warmup_epochs);
  ft.label_smoothing = absl::GetFlag(FLAGS_label_smoothing);
  ft.early_stopping_patience = absl::GetFlag(FLAGS_early_stopping_patience);
  ft.clip_norm = absl::GetFlag(FLAGS_clip_norm);
  ft.seed = absl::GetFlag(FLAGS_seed);
  ft.max_length = absl::GetFlag(FLAGS_max_length);
  ft.vocab_size = absl::GetFlag(FLAGS_vocab_size);
  ft.augment = absl::GetFlag(FLAGS_augment);
  ft.validation_split = absl::GetFlag(FLAGS_validation_split);
  ft.validation_dataset = absl::GetFlag(FLAGS_validation_dataset);
  ft.test_dataset = absl::GetFlag(FLAGS_test_dataset);
  ft.head = absl::GetFlag(FLAGS_head);
  ft.head_warmup_epochs = absl::GetFlag(FLAGS_head_warmup_epochs);
  ft.mixed_precision = absl::GetFlag(FLAGS_mixed_precision);
  ft.priority = absl::GetFlag(FLAGS_priority);
  ft.request_id = absl::GetFlag(FLAGS_request_id);
  ft.dry_run = absl::GetFlag(FLAGS_dry_run);
  ft.keep_checkpoints = absl::GetFlag(FLAGS_keep_checkpoints);
  ft.world_size = absl::GetFlag(FLAGS_world_size);
  ft.tune_trials = absl::GetFlag(FLAGS_tune_trials);
  ft.tune_time_budget = absl::GetFlag(FLAGS_tune_time_budget);
  ft.tune_seed = absl::GetFlag(FLAGS_tune_seed);
  ft.tune_reduction_factor = absl::GetFlag(FLAGS_tune_reduction_factor);
  ft.teacher = absl::GetFlag(FLAGS_teacher);
  ft.temperature = absl::GetFlag(FLAGS_temperature);
  ft.distill_alpha = absl::GetFlag(FLAGS_distill_alpha);
  ft.exemplars_per_class = absl::GetFlag(FLAGS_exemplars_per_class);
  ft.max_exemplars = absl::GetFlag(FLAGS_max_exemplars);
  ft.exemplar_selection = absl::GetFlag(FLAGS_exemplar_selection);
  ft.previous_datasets = absl::GetFlag(FLAGS_previous_datasets);
  ft.distill_weight = absl::GetFlag(FLAGS_distill_weight);
  ft.no_rehearsal = absl::GetFlag(FLAGS_no_rehearsal);
  ft.no_distillation = absl::GetFlag(FLAGS_no_distillation);
  options.watch = absl::GetFlag(FLAGS_watch);
  options.states = absl::GetFlag(FLAGS_state);
  options.after_sequence = absl::GetFlag(FLAGS_after_sequence);
  options.from_checkpoint = absl::GetFlag(FLAGS_from_checkpoint);
  options.threads = absl::GetFlag(FLAGS_threads);
  options.worker_image = absl::GetFlag(FLAGS_worker_image);
  options.memory_mb = absl::GetFlag(FLAGS_memory_mb);
  options.volume_claim = absl::GetFlag(FLAGS_volume_claim);
  options.version = model_version;
  options.policy = absl::GetFlag(FLAGS_policy);
  options.top_k = absl::GetFlag(FLAGS_top_k);
  options.texts = absl::GetFlag(FLAGS_texts);
  options.concurrency = absl::GetFlag(FLAGS_concurrency);
  options.duration = absl::GetFlag(FLAGS_duration);
  options.warmup = absl::GetFlag(FLAGS_warmup);
  options.batching = absl::GetFlag(FLAGS_batching);
  options.image = absl::GetFlag(FLAGS_image);
  options.inputs_per_request = absl::GetFlag(FLAGS_inputs_per_request);
  options.timeout = absl::GetFlag(FLAGS_timeout);

  options.tokens_file = absl::GetFlag(FLAGS_tokens_file);

  kaizen::client::KaizenClient::Options client_options;
  client_options.timeout = absl::GetFlag(FLAGS_timeout);
  client_options.token = absl::GetFlag(FLAGS_token);
  if (client_options.token.empty()) {
    const char* env = std::getenv("KAIZEN_TOKEN");
    if (env != nullptr) client_options.token = env;
  }
  client_options.tls = absl::GetFlag(FLAGS_tls);
  const std::pair<std::string, std::string*> pems[] = {
      {absl::GetFlag(FLAGS_tls_ca), &client_options.tls_ca_pem},
      {absl::GetFlag(FLAGS_tls_cert), &client_options.tls_cert_pem},
      {absl::GetFlag(FLAGS_tls_key), &client_options.tls_key_pem}};
  for (const auto& [path, pem] : pems) {
    if (path.empty()) continue;
    if (absl::Status read = kaizen::common::ReadFile(path, pem); !read.ok()) return Fail(read);
    client_options.tls = true;
  }
  if (client_options.tls_cert_pem.empty() != client_options.tls_key_pem.empty()) {
    return Fail(kaizen::cli::UsageError("--tls_cert and --tls_key go together"));
  }
  // A token over plaintext is readable by anyone on the path.
  const std::string server = absl::GetFlag(FLAGS_server);
  if (!client_options.token.empty() && !client_options.tls && !absl::GetFlag(FLAGS_insecure) &&
      !kaizen::auth::IsLoopbackHost(kaizen::auth::HostOfAddress(server))) {
    return Fail(kaizen::cli::UsageError(
        "refusing to send a bearer token in clear text to " + server +
        ": use --tls or --tls_ca=FILE, or --insecure if the network is trusted"));
  }
  std::unique_ptr<kaizen::client::KaizenClient> client =
      kaizen::client::KaizenClient::Connect(absl::GetFlag(FLAGS_server), client_options);
  Commands commands(client.get(), std::move(options), &std::cout);
  const absl::Status status = commands.Run(args);
  return status.ok() ? 0 : Fail(status);
}
