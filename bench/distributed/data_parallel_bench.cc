// Data-parallel scaling on this machine: the same job (built-in model,
// synthetic images, the same global batch) as 1 kaizen-worker process and as
// W Gloo ranks on loopback, each rank with --threads intra-op threads, and
// as 1 process with W x --threads threads (the cores the W ranks use),
// alternating, `repeats` rounds. Prints per round and the medians: training
// images/s (epochs after the first), the W/1 ratio, rank 0's share of wall
// time in collectives, and the W ranks against one process on their cores.
// Markdown on stdout.
//
//   kaizen_data_parallel_bench --worker=build/kaizen-worker --world_size=2
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "server/datasets/record_file.h"
#include "server/jobs/training_worker.h"
#include "server/models/builtin_models.h"
#include "server/models/model_file.h"
#include "server/sandbox/subprocess.h"

ABSL_FLAG(std::string, worker, "build/kaizen-worker", "The kaizen-worker binary.");
ABSL_FLAG(std::string, model, "resnet-small", "Built-in architecture.");
ABSL_FLAG(std::string, strategy, "FULL", "SCRATCH, FULL, FINE_TUNE or FEATURE_EXTRACTION.");
ABSL_FLAG(int, world_size, 2, "Ranks of the data-parallel runs.");
ABSL_FLAG(int, threads, 1, "Intra-op threads per rank (and of the one-process run).");
ABSL_FLAG(int, images, 4000, "Synthetic 28x28 grey images (10 classes).");
ABSL_FLAG(int, epochs, 3, "Epochs per run (the first is not counted).");
ABSL_FLAG(int, batch, 64, "Global batch size.");
ABSL_FLAG(int, repeats, 3, "Rounds of (1 process, W ranks).");
ABSL_FLAG(std::string, work_dir, "", "Scratch folder (default: a new one under /tmp).");

extern char** environ;

namespace {

using kaizen::internal::TrainingWorkerReport;

pid_t Spawn(const std::string& worker, const std::string& spec, int world, int rank, int port,
            const std::string& log) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) env.emplace_back(*e);
  if (world > 1) {
    env.push_back("MASTER_ADDR=127.0.0.1");
    env.push_back(absl::StrCat("MASTER_PORT=", port));
    env.push_back(absl::StrCat("WORLD_SIZE=", world));
    env.push_back(absl::StrCat("RANK=", rank));
  }
  absl::StatusOr<pid_t> pid = kaizen::sandbox::StartProcess(worker, {"--spec=" + spec}, env, log);
  if (!pid.ok()) {
    std::fprintf(stderr, "%s\n", pid.status().ToString().c_str());
    std::exit(1);
  }
  return *pid;
}

int FreePort(int round) { return 29500 + (getpid() % 2000) + round; }

struct Run {
  double images_per_second = 0;
  double collective_share = 0;
  double seconds = 0;
  double final_loss = 0;
};

// One run of `world` ranks; exits the program on failure.
Run RunOnce(const std::string& dir, const kaizen::internal::TrainingWorkerSpec& base, int world,
            int round, int threads) {
  const std::string name = absl::StrCat("w", world, "-t", threads, "-r", round);
  kaizen::internal::TrainingWorkerSpec spec = base;
  spec.set_threads(threads);
  spec.set_output_dir(name);
  std::filesystem::create_directories(dir + "/" + name);
  const std::string spec_path = dir + "/" + name + ".json";
  if (!kaizen::jobs::WriteTrainingWorkerSpec(spec, spec_path).ok()) std::exit(1);
  std::vector<pid_t> pids;
  const int port = FreePort(round * 8 + world);
  for (int rank = 0; rank < world; ++rank) {
    pids.push_back(Spawn(absl::GetFlag(FLAGS_worker), spec_path, world, rank, port,
                         absl::StrCat(dir, "/", name, "-rank", rank, ".log")));
  }
  for (pid_t pid : pids) {
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      std::fprintf(stderr, "a worker of %s failed; see %s/%s-rank*.log\n", name.c_str(),
                   dir.c_str(), name.c_str());
      std::exit(1);
    }
  }
  absl::StatusOr<TrainingWorkerReport> report =
      kaizen::jobs::ReadTrainingWorkerReport(kaizen::jobs::WorkerReportPath(dir + "/" + name, 0));
  if (!report.ok()) {
    std::fprintf(stderr, "%s\n", report.status().ToString().c_str());
    std::exit(1);
  }
  Run r;
  double images = 0, seconds = 0;
  for (int e = 1; e < report->epochs_size(); ++e) {  // the first warms up
    seconds += report->epochs(e).seconds();
    images += report->epochs(e).seconds() * report->epochs(e).samples_per_second();
  }
  r.images_per_second = seconds > 0 ? images / seconds : 0;
  r.seconds = report->seconds();
  r.collective_share = report->seconds() > 0 ? report->collective_seconds() / report->seconds() : 0;
  r.final_loss = report->epochs(report->epochs_size() - 1).train_loss();
  return r;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n == 0 ? 0 : n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  std::string dir = absl::GetFlag(FLAGS_work_dir);
  if (dir.empty()) {
    char tmpl[] = "/tmp/kaizen-dp-bench-XXXXXX";
    dir = mkdtemp(tmpl);
  }
  std::filesystem::create_directories(dir);
  const int world = absl::GetFlag(FLAGS_world_size);
  const int images = absl::GetFlag(FLAGS_images);

  // Synthetic 28x28 grey images, 10 classes: a bright square whose place
  // depends on the class, on noise.
  kaizen::datasets::DecodedDataset data;
  std::mt19937_64 rng(1);
  for (int c = 0; c < 10; ++c) data.class_names.push_back(absl::StrCat("class", c));
  for (int i = 0; i < images; ++i) {
    kaizen::datasets::DecodedDataset::Record r;
    r.label = i % 10;
    r.height = r.width = 28;
    r.channels = 1;
    r.offset = static_cast<int64_t>(data.pixels.size());
    const int top = 2 + (r.label % 5) * 4, left = 2 + (r.label / 5) * 12;
    for (int y = 0; y < 28; ++y) {
      for (int x = 0; x < 28; ++x) {
        const bool in = y >= top && y < top + 8 && x >= left && x < left + 8;
        data.pixels.push_back(static_cast<uint8_t>((in ? 180 : 30) + rng() % 60));
      }
    }
    data.records.push_back(r);
  }
  if (!kaizen::datasets::WriteRawRecordFile(dir + "/train.krec", data).ok()) return 1;
  kaizen::models::BuiltinOptions bo;
  bo.in_channels = 1;
  bo.input_size = 28;
  bo.num_classes = 10;
  bo.seed = 3;
  const std::string model = absl::GetFlag(FLAGS_model);
  absl::StatusOr<torch::jit::Module> module = kaizen::models::CreateBuiltinModel(model, bo);
  absl::StatusOr<kaizen::v1::Model> meta = kaizen::models::DescribeBuiltinModel(model, bo);
  if (!module.ok() || !meta.ok() ||
      !kaizen::models::SaveModelFile(*module, *meta, dir + "/base.pt").ok()) {
    std::fprintf(stderr, "cannot build %s\n", model.c_str());
    return 1;
  }

  kaizen::internal::TrainingWorkerSpec spec;
  kaizen::v1::Strategy strategy = kaizen::v1::STRATEGY_UNSPECIFIED;
  if (!kaizen::v1::Strategy_Parse("STRATEGY_" + absl::GetFlag(FLAGS_strategy), &strategy)) {
    std::fprintf(stderr, "unknown --strategy\n");
    return 2;
  }
  spec.set_strategy(strategy);
  kaizen::v1::Hyperparameters& hp = *spec.mutable_hyperparameters();
  hp.set_epochs(absl::GetFlag(FLAGS_epochs));
  hp.set_batch_size(absl::GetFlag(FLAGS_batch));
  hp.set_learning_rate(1e-3);
  hp.set_backbone_lr_multiplier(0.1);
  hp.set_trainable_blocks(1);
  hp.mutable_optimizer()->set_kind(kaizen::v1::OPTIMIZER_ADAM);
  hp.mutable_schedule()->set_kind(kaizen::v1::SCHEDULE_CONSTANT);
  hp.set_seed(7);
  hp.mutable_validation()->set_split(0);
  hp.mutable_head()->set_kind(kaizen::v1::HEAD_KIND_LINEAR);
  hp.set_drop_last_fraction(0.5);
  spec.set_base_model(dir + "/base.pt");
  spec.set_train_records(dir + "/train.krec");
  spec.set_timeout_seconds(120);

  const int threads = absl::GetFlag(FLAGS_threads);
  std::vector<double> one, many, share, wide;
  std::printf(
      "| round | 1 process (img/s) | %d ranks (img/s) | ratio | all-reduce share | "
      "final loss 1 / %d | 1 process, %d threads (img/s) | %d ranks / it |\n"
      "|---|---|---|---|---|---|---|---|\n",
      world, world, threads * world, world);
  for (int round = 0; round < absl::GetFlag(FLAGS_repeats); ++round) {
    const Run a = RunOnce(dir, spec, 1, round, threads);
    const Run b = RunOnce(dir, spec, world, round, threads);
    const Run c = RunOnce(dir, spec, 1, round, threads * world);
    one.push_back(a.images_per_second);
    many.push_back(b.images_per_second);
    share.push_back(b.collective_share);
    wide.push_back(c.images_per_second);
    std::printf("| %d | %.0f | %.0f | %.2fx | %.1f%% | %.4f / %.4f | %.0f | %.2fx |\n", round + 1,
                a.images_per_second, b.images_per_second, b.images_per_second / a.images_per_second,
                100 * b.collective_share, a.final_loss, b.final_loss, c.images_per_second,
                b.images_per_second / c.images_per_second);
    std::fflush(stdout);
  }
  std::printf(
      "\n%s %s, %d images 28x28, global batch %d, %d thread(s) per rank: median "
      "%.0f img/s in 1 process, %.0f img/s in %d ranks, scaling %.2fx (ideal %dx); "
      "rank 0 in collectives %.1f%% of its wall time; 1 process with %d threads "
      "%.0f img/s (%d ranks / it: %.2fx)\n",
      absl::GetFlag(FLAGS_strategy).c_str(), model.c_str(), images, absl::GetFlag(FLAGS_batch),
      threads, Median(one), Median(many), world, Median(many) / Median(one), world,
      100 * Median(share), threads * world, Median(wide), world, Median(many) / Median(wide));
  if (absl::GetFlag(FLAGS_work_dir).empty()) std::filesystem::remove_all(dir);
  return 0;
}
