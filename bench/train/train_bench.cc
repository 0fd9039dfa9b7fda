// Training throughput of Kaizen's C++ trainer (training::Train) on
// Fashion-MNIST with a built-in model, one JSON line per epoch. With
// --save_model / --save_config it also writes the initial model (TorchScript)
// and the resolved hyperparameters, so that bench/train/train_bench.py trains the
// same architecture from the same weights with the same settings in Python.
//
// --engine=plain runs a minimal libtorch loop (forward, loss, backward, step;
// no trainer) on the same model and data: the difference to --engine=trainer
// is the trainer's own overhead. See bench/README.md.
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/profiler_legacy.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/util/json_util.h"
#include "server/common/status_macros.h"
#include "server/datasets/idx_ingestor.h"
#include "server/models/builtin_models.h"
#include "server/models/model_file.h"
#include "server/training/freezing.h"
#include "server/training/hyperparameters.h"
#include "server/training/trainer.h"

ABSL_FLAG(std::string, strategy, "full", "full | fine_tune | feature_extraction");
ABSL_FLAG(bool, channels_last, false,
          "The backbone's convolutions and image batches in the channels_last memory format "
          "(TrainerOptions::channels_last).");
ABSL_FLAG(bool, no_feature_cache, false,
          "Turn off the trainer's feature cache (FEATURE_EXTRACTION; "
          "TrainerOptions::use_feature_cache), so that it runs the frozen backbone on every "
          "batch of every epoch.");
ABSL_FLAG(int64_t, max_prefix_cache_mb, 1024,
          "The FINE_TUNE frozen-prefix cache's budget (TrainerOptions::max_prefix_cache_bytes); "
          "0 runs the whole model at every step.");
ABSL_FLAG(int, trainable_blocks, 0, "FINE_TUNE: the top blocks that train (0: the default).");
ABSL_FLAG(std::string, model, "resnet-small", "Built-in architecture: resnet-small | cnn-small");
ABSL_FLAG(int, images, 6000, "Training images: the first N of Fashion-MNIST's training set.");
ABSL_FLAG(int, epochs, 3, "Epochs.");
ABSL_FLAG(int, batch_size, 64, "Batch size.");
ABSL_FLAG(int, threads, 2, "Intra-op threads (at::set_num_threads).");
ABSL_FLAG(uint64_t, seed, 1, "Seed of the initial weights and of the job.");
ABSL_FLAG(std::string, data_dir, "/usr/share/datasets/fashion-mnist",
          "Folder with {train}-{images-idx3,labels-idx1}-ubyte.gz.");
ABSL_FLAG(std::string, save_model, "", "Write the initial model (TorchScript) here.");
ABSL_FLAG(std::string, load_model, "",
          "Train this TorchScript file (torch::jit::load) instead of the freshly built "
          "module; it must be the same architecture (e.g. written by --save_model).");
ABSL_FLAG(std::string, save_config, "",
          "Write the resolved hyperparameters and normalisation (JSON, for train_bench.py).");
ABSL_FLAG(bool, prepare_only, false, "Only write --save_model / --save_config, then exit.");
ABSL_FLAG(std::string, profile_trace, "",
          "Record every LibTorch op of the training run (legacy autograd profiler) as a Chrome "
          "trace here; bench/train/trace_summary.py ranks ops by self time. Slows the run down.");
ABSL_FLAG(bool, graph_executor_optimize, true,
          "false runs the training with TorchScript's graph-executor optimisation off "
          "(torch::jit::GraphOptimizerEnabledGuard): autograd records each op itself instead of "
          "TorchScript's symbolic differentiation. An experiment for the trainer; the Python "
          "loop does not get it.");
ABSL_FLAG(std::string, engine, "trainer",
          "trainer: training::Train. plain: a minimal libtorch loop on the same model and "
          "data (for locating trainer overhead; FULL only).");

namespace kaizen::bench {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// CPU time of the whole process (all threads), seconds. On a shared machine
// it moves less with other people's load than wall time does.
double ProcessCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

const std::vector<std::string>& FashionMnistClasses() {
  static const auto* names =
      new std::vector<std::string>{"t-shirt", "trouser", "pullover", "dress", "coat",
                                   "sandal",  "shirt",   "sneaker",  "bag",   "ankle-boot"};
  return *names;
}

std::string OptimizerName(kaizen::v1::OptimizerKind kind) {
  switch (kind) {
    case kaizen::v1::OPTIMIZER_SGD:
      return "sgd";
    case kaizen::v1::OPTIMIZER_ADAM:
      return "adam";
    default:
      return "adamw";
  }
}

std::string ScheduleName(kaizen::v1::ScheduleKind kind) {
  switch (kind) {
    case kaizen::v1::SCHEDULE_STEP:
      return "step";
    case kaizen::v1::SCHEDULE_COSINE:
      return "cosine";
    default:
      return "constant";
  }
}

std::string JsonList(const google::protobuf::RepeatedField<float>& v) {
  return absl::StrCat("[", absl::StrJoin(v, ", "), "]");
}

// What train_bench.py needs to train exactly like the trainer.
// `trainable_backbone`: the backbone parameters the trainer trains for this
// strategy (training::TrainableBackboneParameters), so that the Python loop
// freezes exactly the same ones.
std::string ConfigJson(const std::string& strategy, int images, int threads,
                       const kaizen::v1::Hyperparameters& h, const kaizen::v1::Model& meta,
                       const std::vector<std::string>& trainable_backbone) {
  std::string hp_json;
  google::protobuf::util::JsonPrintOptions opts;
  opts.always_print_primitive_fields = true;
  (void)google::protobuf::util::MessageToJsonString(h, &hp_json, opts);
  const auto& o = h.optimizer();
  const auto& s = h.schedule();
  return absl::StrFormat(
      R"({"strategy": "%s", "images": %d, "epochs": %d, "batch_size": %d, "threads": %d, )"
      R"("seed": %d, "mean": %s, "std": %s, "learning_rate": %.17g, )"
      R"("backbone_lr_multiplier": %.17g, "optimizer": "%s", "beta1": %.17g, "beta2": %.17g, )"
      R"("weight_decay": %.17g, "momentum": %.17g, "nesterov": %s, "schedule": "%s", )"
      R"("warmup_epochs": %.17g, "min_lr_ratio": %.17g, "step_epochs": %d, )"
      R"("step_gamma": %.17g, "label_smoothing": %.17g, "drop_last_fraction": %.17g, )"
      R"("gradient_clip_norm": %.17g, "trainable_blocks": %d, "trainable_backbone": [%s], )"
      R"("hyperparameters": %s})",
      strategy, images, h.epochs(), h.batch_size(), threads, h.seed(),
      JsonList(meta.normalization().mean()), JsonList(meta.normalization().std()),
      h.learning_rate(), h.backbone_lr_multiplier(), OptimizerName(o.kind()), o.beta1(), o.beta2(),
      o.weight_decay(), o.momentum(), o.nesterov() ? "true" : "false", ScheduleName(s.kind()),
      s.warmup_epochs(), s.min_lr_ratio(), s.step_epochs(), s.step_gamma(), h.label_smoothing(),
      h.drop_last_fraction(), h.gradient_clip_norm(), h.trainable_blocks(),
      absl::StrJoin(trainable_backbone, ", ",
                    [](std::string* out, const std::string& name) {
                      absl::StrAppend(out, "\"", name, "\"");
                    }),
      hp_json);
}

absl::Status WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text << "\n";
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

// A minimal libtorch training loop over the whole classifier: what a user
// would write by hand in C++, the reference for the trainer's overhead.
absl::Status RunPlainLoop(torch::jit::Module module, const datasets::DecodedDataset& data,
                          const kaizen::v1::Hyperparameters& h, const kaizen::v1::Model& meta) {
  const int64_t n = static_cast<int64_t>(data.records.size());
  const int64_t side = meta.input_shape(1);
  torch::Tensor images = torch::empty({n, 1, side, side}, torch::kUInt8);
  torch::Tensor labels = torch::empty({n}, torch::kLong);
  for (int64_t i = 0; i < n; ++i) {
    std::memcpy(images.data_ptr<uint8_t>() + i * side * side,
                data.pixels.data() + data.records[i].offset, side * side);
    labels.data_ptr<int64_t>()[i] = data.records[i].label;
  }
  const float mean = meta.normalization().mean(0), stdev = meta.normalization().std(0);
  std::vector<torch::Tensor> head, backbone;
  for (const auto& p : module.named_parameters(/*recurse=*/true)) {
    (p.name.rfind("fc.", 0) == 0 ? head : backbone).push_back(p.value);
  }
  std::vector<torch::optim::OptimizerParamGroup> groups;
  const auto& o = h.optimizer();
  auto options = [&](double lr) {
    return std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(lr)
                                                            .betas({o.beta1(), o.beta2()})
                                                            .weight_decay(o.weight_decay()));
  };
  groups.emplace_back(head, options(h.learning_rate()));
  groups.emplace_back(backbone, options(h.learning_rate() * h.backbone_lr_multiplier()));
  torch::optim::AdamW optimizer(groups, *options(h.learning_rate()));
  module.train();
  const int64_t bs = h.batch_size();
  const int64_t full = n / bs, rest = n % bs;
  const int64_t steps =
      full + ((rest > 0 && (full == 0 || rest >= h.drop_last_fraction() * bs)) ? 1 : 0);
  for (int epoch = 0; epoch < h.epochs(); ++epoch) {
    const Clock::time_point start = Clock::now();
    const double cpu_start = ProcessCpuSeconds();
    const torch::Tensor order = torch::randperm(n, torch::kLong);
    double loss_sum = 0;
    int64_t correct = 0, seen = 0;
    // Wall seconds per phase of a step (CPU ops are synchronous).
    double t_data = 0, t_forward = 0, t_backward = 0, t_step = 0, t_rest = 0;
    Clock::time_point t = Clock::now();
    auto lap = [&t](double& acc) {
      const Clock::time_point now = Clock::now();
      acc += std::chrono::duration<double>(now - t).count();
      t = now;
    };
    for (int64_t b = 0; b < steps; ++b) {
      const torch::Tensor idx = order.narrow(0, b * bs, std::min(bs, n - b * bs));
      const torch::Tensor y = labels.index_select(0, idx);
      const torch::Tensor x =
          (images.index_select(0, idx).to(torch::kFloat).div_(255.0) - mean) / stdev;
      lap(t_data);
      const torch::Tensor logits = module.forward({x}).toTensor();
      const torch::Tensor loss = torch::nn::functional::cross_entropy(
          logits, y,
          torch::nn::functional::CrossEntropyFuncOptions().label_smoothing(h.label_smoothing()));
      lap(t_forward);
      optimizer.zero_grad();
      loss.backward();
      lap(t_backward);
      optimizer.step();
      lap(t_step);
      loss_sum += loss.item<double>() * static_cast<double>(idx.size(0));
      correct += logits.argmax(1).eq(y).sum().item<int64_t>();
      seen += idx.size(0);
      lap(t_rest);
    }
    const double seconds = SecondsSince(start);
    absl::PrintF(
        "{\"side\": \"cpp-plain\", \"epoch\": %d, \"seconds\": %.4f, \"images_per_second\": "
        "%.3f, \"cpu_seconds\": %.4f, \"train_loss\": %.5f, \"train_accuracy\": %.5f, "
        "\"phase_seconds\": {\"data\": %.4f, \"forward_loss\": %.4f, \"backward\": %.4f, "
        "\"optimizer\": %.4f, \"bookkeeping\": %.4f}}\n",
        epoch + 1, seconds, static_cast<double>(seen) / seconds, ProcessCpuSeconds() - cpu_start,
        loss_sum / static_cast<double>(seen),
        static_cast<double>(correct) / static_cast<double>(seen), t_data, t_forward, t_backward,
        t_step, t_rest);
    std::fflush(stdout);
  }
  return absl::OkStatus();
}

absl::Status Run() {
  const std::string strategy_flag = absl::GetFlag(FLAGS_strategy);
  kaizen::v1::Strategy strategy;
  if (strategy_flag == "full") {
    strategy = kaizen::v1::STRATEGY_FULL;
  } else if (strategy_flag == "fine_tune") {
    strategy = kaizen::v1::STRATEGY_FINE_TUNE;
  } else if (strategy_flag == "feature_extraction") {
    strategy = kaizen::v1::STRATEGY_FEATURE_EXTRACTION;
  } else {
    return absl::InvalidArgumentError("--strategy must be full, fine_tune or feature_extraction");
  }
  const int threads = absl::GetFlag(FLAGS_threads);
  const int images = absl::GetFlag(FLAGS_images);
  if (threads < 1 || images < 2) {
    return absl::InvalidArgumentError("--threads must be >= 1 and --images >= 2");
  }
  // at::get_num_threads() starts at 1 on these machines (DESIGN.md).
  at::set_num_threads(threads);

  const std::string dir = absl::GetFlag(FLAGS_data_dir);
  const Clock::time_point load_start = Clock::now();
  ASSIGN_OR_RETURN(datasets::IngestResult ingested,
                   datasets::IngestIdx(dir + "/train-images-idx3-ubyte.gz",
                                       dir + "/train-labels-idx1-ubyte.gz", FashionMnistClasses(),
                                       "train-images", "train-labels", datasets::IngestOptions{}));
  datasets::DecodedDataset& data = ingested.data;
  if (static_cast<int64_t>(data.records.size()) > images) data.records.resize(images);
  const double load_seconds = SecondsSince(load_start);

  const std::string model_name = absl::GetFlag(FLAGS_model);
  models::BuiltinOptions builtin;
  builtin.in_channels = 1;
  builtin.input_size = 28;
  builtin.num_classes = static_cast<int64_t>(data.class_names.size());
  builtin.seed = absl::GetFlag(FLAGS_seed);
  ASSIGN_OR_RETURN(kaizen::v1::Model metadata, models::DescribeBuiltinModel(model_name, builtin));
  metadata.set_name(absl::StrCat("bench-", model_name));
  ASSIGN_OR_RETURN(torch::jit::Module base, models::CreateBuiltinModel(model_name, builtin));
  if (!absl::GetFlag(FLAGS_load_model).empty()) {
    try {
      base = torch::jit::load(absl::GetFlag(FLAGS_load_model));
    } catch (const std::exception& e) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot load ", absl::GetFlag(FLAGS_load_model), ": ", e.what()));
    }
    base.train();
    for (const auto& p : base.named_parameters(/*recurse=*/true)) {
      torch::Tensor t = p.value;
      t.set_requires_grad(true);
    }
  }

  kaizen::v1::Hyperparameters requested;
  requested.set_epochs(absl::GetFlag(FLAGS_epochs));
  requested.set_batch_size(absl::GetFlag(FLAGS_batch_size));
  requested.set_seed(absl::GetFlag(FLAGS_seed));
  requested.mutable_validation()->set_split(0.0);                    // no validation: training only
  kaizen::v1::Augmentation* aug = requested.mutable_augmentation();  // set: taken as given
  aug->set_enabled(false);
  requested.set_trainable_blocks(absl::GetFlag(FLAGS_trainable_blocks));
  const bool no_cache = absl::GetFlag(FLAGS_no_feature_cache);
  ASSIGN_OR_RETURN(kaizen::v1::Hyperparameters hp,
                   training::ResolveHyperparameters(strategy, requested, images));

  // The built-in model's head is `fc` (the trainer's SplitClassifier replaces
  // it with an identity, so the backbone's parameter names are the model's).
  const std::vector<std::string> trainable_backbone =
      training::TrainableBackboneParameters(base, "fc", strategy, hp.trainable_blocks());
  const std::string config =
      ConfigJson(strategy_flag, images, threads, hp, metadata, trainable_backbone);
  if (!absl::GetFlag(FLAGS_save_model).empty()) {
    RETURN_IF_ERROR(models::SaveModelFile(base, metadata, absl::GetFlag(FLAGS_save_model)));
  }
  if (!absl::GetFlag(FLAGS_save_config).empty()) {
    RETURN_IF_ERROR(WriteText(absl::GetFlag(FLAGS_save_config), config));
  }
  absl::PrintF(
      "{\"side\": \"cpp\", \"event\": \"setup\", \"engine\": \"%s\", \"feature_cache\": %s, "
      "\"graph_executor_optimize\": %s, \"torch_threads\": %d, \"load_seconds\": %.3f, "
      "\"config\": %s}\n",
      absl::GetFlag(FLAGS_engine), no_cache ? "false" : "true",
      absl::GetFlag(FLAGS_graph_executor_optimize) ? "true" : "false", at::get_num_threads(),
      load_seconds, config);
  std::fflush(stdout);
  if (absl::GetFlag(FLAGS_prepare_only)) return absl::OkStatus();
  torch::jit::GraphOptimizerEnabledGuard optimize(absl::GetFlag(FLAGS_graph_executor_optimize));
  std::unique_ptr<torch::autograd::profiler::RecordProfile> profile;
  if (!absl::GetFlag(FLAGS_profile_trace).empty()) {
    profile = std::make_unique<torch::autograd::profiler::RecordProfile>(
        absl::GetFlag(FLAGS_profile_trace));
  }

  if (absl::GetFlag(FLAGS_engine) == "plain") {
    if (strategy != kaizen::v1::STRATEGY_FULL) {
      return absl::InvalidArgumentError("--engine=plain supports --strategy=full only");
    }
    return RunPlainLoop(base, data, hp, metadata);
  }

  training::TrainerOptions options;
  options.strategy = strategy;
  options.hyperparameters = hp;
  options.base = base;
  options.base_metadata = metadata;
  options.use_feature_cache = !no_cache;
  options.channels_last = absl::GetFlag(FLAGS_channels_last);
  options.max_prefix_cache_bytes = absl::GetFlag(FLAGS_max_prefix_cache_mb) << 20;
  training::TrainingData training_data;
  training_data.train = &data;
  training::Callbacks callbacks;
  Clock::time_point last = Clock::now();
  double last_cpu = ProcessCpuSeconds();
  callbacks.on_epoch = [&](const kaizen::v1::EpochMetrics& m) {
    // wall_seconds: since the previous epoch's report (or since Train() was
    // called), so it also counts setup, evaluation and the checkpoint the
    // trainer builds after every epoch.
    const double wall = SecondsSince(last);
    const double cpu = ProcessCpuSeconds();
    absl::PrintF(
        "{\"side\": \"cpp\", \"epoch\": %d, \"seconds\": %.4f, \"images_per_second\": %.3f, "
        "\"wall_seconds\": %.4f, \"cpu_seconds\": %.4f, \"train_loss\": %.5f, "
        "\"train_accuracy\": %.5f}\n",
        m.epoch(), m.seconds(), m.samples_per_second(), wall, cpu - last_cpu, m.train_loss(),
        m.train_accuracy());
    std::fflush(stdout);
    last = Clock::now();
    last_cpu = ProcessCpuSeconds();
  };
  callbacks.on_checkpoint = [&](const training::Checkpoint&) {
    // Checkpoint building (after on_epoch) counts towards the next epoch's
    // wall_seconds; storing it is the job layer's business, not measured.
    return absl::OkStatus();
  };
  const Clock::time_point train_start = Clock::now();
  last = train_start;
  last_cpu = ProcessCpuSeconds();
  ASSIGN_OR_RETURN(training::TrainResult result,
                   training::Train(options, training_data, callbacks));
  absl::PrintF(
      "{\"side\": \"cpp\", \"event\": \"done\", \"epochs\": %d, \"total_seconds\": %.4f, "
      "\"backbone_forward_batches\": %lld}\n",
      result.epochs_completed, SecondsSince(train_start),
      static_cast<long long>(result.backbone_forward_batches));
  std::fflush(stdout);
  return absl::OkStatus();
}

}  // namespace
}  // namespace kaizen::bench

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const absl::Status status = kaizen::bench::Run();
  if (!status.ok()) {
    std::fprintf(stderr, "kaizen_train_bench: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
