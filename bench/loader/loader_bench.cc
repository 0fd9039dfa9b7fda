// The streaming input pipeline's decode rate (issue 17): an image folder
// (class_name/*.jpg|png) is written once as a record file of the encoded
// files as they are (datasets/record_file.h; not timed), then
// training::RecordLoader reads, decodes and converts every record to
// --size x --size RGB for --epochs epochs with each --threads count. One
// JSON line per thread count: images/s, images/s per thread, peak RSS, and
// the process's proportional set size (PSS) just before the loader starts
// and at its peak while it runs (sampled every 50 ms), as
// folder_train_pytorch.py measures the DataLoader with its workers.
// bench/loader/loader_bench.sh runs it beside PIL on the same files.
#include <sys/resource.h>
#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_split.h"
#include "server/datasets/image_decoder.h"
#include "server/datasets/record_file.h"
#include "server/training/record_loader.h"

ABSL_FLAG(std::string, folder, "", "Image folder: class_name/*.jpg|jpeg|png.");
ABSL_FLAG(std::string, record_file, "/tmp/kaizen-loader-bench.krf", "The record file to write.");
ABSL_FLAG(std::string, existing_record_file, "",
          "Read this record file (e.g. one the server stored) instead of writing one from "
          "--folder; it is left in place.");
ABSL_FLAG(int64_t, max_images, 0,
          "Load only this many records, evenly spread over the file (0 = all).");
ABSL_FLAG(int, size, 224, "Output height and width (3 channels).");
ABSL_FLAG(int, batch_size, 32, "Batch size.");
ABSL_FLAG(int, epochs, 2, "Epochs per thread count.");
ABSL_FLAG(std::string, threads, "1,2", "Decoding thread counts, comma-separated.");
ABSL_FLAG(int, prefetch_batches, 4,
          "Batches decoded ahead (the server's --prefetch_batches; its default).");

namespace {

namespace fs = std::filesystem;
using kaizen::datasets::RecordEncoding;

[[noreturn]] void Fail(const std::string& what) {
  std::fprintf(stderr, "loader_bench: %s\n", what.c_str());
  std::exit(1);
}

long PeakRssKb() {  // NOLINT(runtime/int): getrusage's type
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss;
}

// This process's PSS in kB (/proc/self/smaps_rollup).
int64_t PssKb() {
  std::ifstream in("/proc/self/smaps_rollup");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("Pss:", 0) == 0) return std::stoll(line.substr(4));
  }
  return 0;
}

// The PSS now (the baseline) and the largest seen every 50 ms until the
// sampler is destroyed or Peak() is read.
class PssSampler {
 public:
  PssSampler() : baseline_kb_(PssKb()), peak_kb_(baseline_kb_) {
    thread_ = std::thread([this] {
      while (!done_) {
        Note();
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    });
  }
  ~PssSampler() { Stop(); }
  int64_t baseline_kb() const { return baseline_kb_; }
  int64_t Peak() {
    Stop();
    return peak_kb_;
  }

 private:
  void Note() {
    const int64_t now = PssKb();
    int64_t seen = peak_kb_;
    while (now > seen && !peak_kb_.compare_exchange_weak(seen, now)) {
    }
  }
  void Stop() {
    if (!thread_.joinable()) return;
    done_ = true;
    thread_.join();
    Note();
  }
  const int64_t baseline_kb_;
  std::atomic<int64_t> peak_kb_;
  std::atomic<bool> done_{false};
  std::thread thread_;
};

// Writes every image of the folder as an encoded record; returns the bytes
// of the image files.
int64_t WriteRecords(const std::string& folder, const std::string& path, int64_t* images) {
  std::map<std::string, std::vector<fs::path>> by_class;
  for (const auto& cls : fs::directory_iterator(folder)) {
    if (!cls.is_directory()) continue;
    for (const auto& f : fs::directory_iterator(cls.path())) {
      if (f.is_regular_file()) by_class[cls.path().filename().string()].push_back(f.path());
    }
  }
  auto writer = kaizen::datasets::RecordFileWriter::Create(path);
  if (!writer.ok()) Fail(writer.status().ToString());
  std::vector<std::string> class_names;
  int64_t input_bytes = 0;
  for (auto& [name, files] : by_class) {
    std::sort(files.begin(), files.end());
    const auto label = static_cast<int32_t>(class_names.size());
    class_names.push_back(name);
    for (const fs::path& file : files) {
      std::ifstream in(file, std::ios::binary);
      const std::string bytes((std::istreambuf_iterator<char>(in)),
                              std::istreambuf_iterator<char>());
      auto image = kaizen::datasets::DecodeImage(bytes, int64_t{100'000'000});
      if (!image.ok()) Fail(file.string() + ": " + image.status().ToString());
      const RecordEncoding encoding =
          kaizen::datasets::SniffImageFormat(bytes) == kaizen::datasets::ImageFormat::kPng
              ? RecordEncoding::kPng
              : RecordEncoding::kJpeg;
      auto added = (*writer)->Append(
          label, image->height, image->width, image->channels, encoding,
          absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
      if (!added.ok()) Fail(added.status().ToString());
      input_bytes += static_cast<int64_t>(bytes.size());
      ++*images;
    }
  }
  auto finished = (*writer)->Finish(class_names);
  if (!finished.ok()) Fail(finished.status().ToString());
  return input_bytes;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const std::string folder = absl::GetFlag(FLAGS_folder);
  const std::string existing = absl::GetFlag(FLAGS_existing_record_file);
  if (folder.empty() == existing.empty()) {
    Fail("give exactly one of --folder and --existing_record_file");
  }
  at::set_num_threads(1);
  const std::string path = existing.empty() ? absl::GetFlag(FLAGS_record_file) : existing;
  int64_t images = 0;
  const int64_t input_bytes = existing.empty() ? WriteRecords(folder, path, &images) : 0;
  auto opened = kaizen::datasets::RecordFile::Open(path);
  if (!opened.ok()) Fail(opened.status().ToString());
  std::shared_ptr<const kaizen::datasets::RecordFile> file(std::move(*opened));
  if (existing.empty()) {
    std::printf(
        "{\"what\":\"store\",\"images\":%lld,\"image_bytes\":%lld,\"record_file_bytes\":%llu,"
        "\"ratio\":%.4f}\n",
        static_cast<long long>(images), static_cast<long long>(input_bytes),  // NOLINT
        static_cast<unsigned long long>(file->file_bytes()),                  // NOLINT
        static_cast<double>(file->file_bytes()) / static_cast<double>(input_bytes));
  }
  const auto total = static_cast<int64_t>(file->size());
  const int64_t max_images = absl::GetFlag(FLAGS_max_images);
  const int64_t count = max_images > 0 && max_images < total ? max_images : total;
  std::vector<int64_t> all(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) all[static_cast<size_t>(i)] = i * total / count;
  for (absl::string_view t : absl::StrSplit(absl::GetFlag(FLAGS_threads), ',')) {
    kaizen::training::RecordLoader::Options o;
    const int size = absl::GetFlag(FLAGS_size);
    o.input_shape = {3, size, size};
    o.batch_size = absl::GetFlag(FLAGS_batch_size);
    o.drop_last_fraction = 0;
    o.threads = std::stoi(std::string(t));
    o.prefetch_batches = absl::GetFlag(FLAGS_prefetch_batches);
    PssSampler pss;
    auto loader = kaizen::training::RecordLoader::Create(file, all, o);
    if (!loader.ok()) Fail(loader.status().ToString());
    int64_t loaded = 0;
    const auto start = std::chrono::steady_clock::now();
    for (int epoch = 0; epoch < absl::GetFlag(FLAGS_epochs); ++epoch) {
      (*loader)->StartEpoch(epoch);
      while (true) {
        auto batch = (*loader)->Next();
        if (!batch.ok()) Fail(batch.status().ToString());
        if (!batch->has_value()) break;
        loaded += (*batch)->size();
      }
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const int64_t pss_peak_kb = pss.Peak();
    std::printf(
        "{\"what\":\"kaizen\",\"threads\":%d,\"images\":%lld,\"seconds\":%.3f,"
        "\"images_per_s\":%.1f,\"per_thread\":%.1f,\"peak_rss_mb\":%.1f,"
        "\"pss_baseline_mb\":%.1f,\"pss_peak_mb\":%.1f,\"pss_growth_mb\":%.1f}\n",
        o.threads, static_cast<long long>(loaded), seconds,  // NOLINT
        static_cast<double>(loaded) / seconds, static_cast<double>(loaded) / seconds / o.threads,
        static_cast<double>(PeakRssKb()) / 1024.0, static_cast<double>(pss.baseline_kb()) / 1024.0,
        static_cast<double>(pss_peak_kb) / 1024.0,
        static_cast<double>(pss_peak_kb - pss.baseline_kb()) / 1024.0);
    std::fflush(stdout);
  }
  if (existing.empty()) std::remove(path.c_str());
  return 0;
}
