// Where an IDX upload's time goes once its bytes are on the server: each
// stage of the ingest timed alone, in one process, on the same files, with
// the zlib stages the server used before ISA-L side by side. Prints the
// median over --rounds of each stage in ms and in MB/s of upload bytes (the
// .gz files as sent; 1 MB = 10^6 bytes), so that a stage's MB/s is the upload
// rate it alone would allow on one core.
//
//   kaizen_ingest_stages_bench --images=train-images-idx3-ubyte.gz \
//       --labels=train-labels-idx1-ubyte.gz --rounds=5 --out_dir=/tmp
#include <sys/stat.h>
#include <zlib.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_format.h"
#include "server/common/atomic_file.h"
#include "server/common/sha256.h"
#include "server/datasets/crc32.h"
#include "server/datasets/gzip_reader.h"
#include "server/datasets/idx_ingestor.h"
#include "server/datasets/record_file.h"

ABSL_FLAG(std::string, images, "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz",
          "IDX images file (plain or gzip)");
ABSL_FLAG(std::string, labels, "/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz",
          "IDX labels file (plain or gzip)");
ABSL_FLAG(int, rounds, 5, "rounds; each stage's median is printed");
ABSL_FLAG(std::string, out_dir, "/tmp", "folder for the record file the store stage writes");

namespace {

using Clock = std::chrono::steady_clock;

int64_t FileBytes(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 ? static_cast<int64_t>(st.st_size) : 0;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// Decompressed bytes of `path` through zlib's gzread (the server's reader
// before ISA-L), or -1 on error.
int64_t ZlibReadAll(const std::string& path, std::vector<unsigned char>* out) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (f == nullptr) return -1;
  gzbuffer(f, 1 << 18);
  int64_t got = 0;
  while (true) {
    if (out->size() < static_cast<size_t>(got) + (1 << 20)) out->resize(got + (8 << 20));
    const int n = gzread(f, out->data() + got, 1 << 20);
    if (n < 0) got = -1;
    if (n <= 0) break;
    got += n;
  }
  gzclose(f);
  return got;
}

int64_t IsalReadAll(const std::string& path, std::vector<unsigned char>* out) {
  auto reader = kaizen::datasets::GzipReader::Open(path, path);
  if (!reader.ok()) return -1;
  int64_t got = 0;
  while (true) {
    if (out->size() < static_cast<size_t>(got) + (1 << 20)) out->resize(got + (8 << 20));
    absl::StatusOr<size_t> n = (*reader)->Read(out->data() + got, 1 << 20);
    if (!n.ok()) return -1;
    got += static_cast<int64_t>(*n);
    if (*n < (1 << 20)) break;
  }
  return got;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const std::string images = absl::GetFlag(FLAGS_images);
  const std::string labels = absl::GetFlag(FLAGS_labels);
  const int rounds = std::max(1, absl::GetFlag(FLAGS_rounds));
  const std::string record_path = absl::GetFlag(FLAGS_out_dir) + "/ingest-stages-bench.krf";
  const int64_t upload_bytes = FileBytes(images) + FileBytes(labels);
  if (upload_bytes == 0) {
    std::fprintf(stderr, "ingest_stages_bench: cannot read %s or %s\n", images.c_str(),
                 labels.c_str());
    return 1;
  }
  std::string upload;
  for (const std::string& path : {images, labels}) {
    std::string bytes;
    if (!kaizen::common::ReadFile(path, &bytes).ok()) return 1;
    upload += bytes;
  }
  kaizen::datasets::IngestOptions options;
  absl::StatusOr<kaizen::datasets::IngestResult> decoded =
      kaizen::datasets::IngestIdx(images, labels, {}, "images", "labels", options);
  if (!decoded.ok()) {
    std::fprintf(stderr, "ingest_stages_bench: %s\n", decoded.status().ToString().c_str());
    return 1;
  }
  const kaizen::datasets::PixelBuffer& pixels = decoded->data.pixels;

  struct Stage {
    const char* name;
    const char* what;
    std::function<bool()> run;
  };
  std::vector<unsigned char> scratch;
  bool ok = true;
  const std::vector<Stage> stages = {
      {"sha256", "SHA-256 of the upload bytes (OpenSSL; the receiver's check)",
       [&] {
         kaizen::common::Sha256 h;
         h.Update(upload);
         return h.HexDigest().size() == 64;
       }},
      {"gunzip zlib", "images + labels through zlib's gzread (before)",
       [&] { return ZlibReadAll(images, &scratch) > 0 && ZlibReadAll(labels, &scratch) > 0; }},
      {"gunzip isa-l", "images + labels through GzipReader (ISA-L igzip, now)",
       [&] { return IsalReadAll(images, &scratch) > 0 && IsalReadAll(labels, &scratch) > 0; }},
      {"crc32 zlib", "CRC-32 of every record's pixels with zlib's crc32_z (before)",
       [&] {
         return crc32_z(0, pixels.data(), pixels.size()) != 1;  // the value is not the point
       }},
      {"crc32 isa-l", "the same with ISA-L's crc32_gzip_refl (now)",
       [&] { return kaizen::datasets::Crc32(0, pixels.data(), pixels.size()) != 1; }},
      {"decode+report", "IngestIdx: inflate, check, duplicate report, summary",
       [&] { return kaizen::datasets::IngestIdx(images, labels, {}, "i", "l", options).ok(); }},
      {"store", "WriteRawRecordFile: CRCs, 1 MiB writes, fsync, rename",
       [&] {
         const bool stored = kaizen::datasets::WriteRawRecordFile(record_path, decoded->data).ok();
         std::remove(record_path.c_str());
         return stored;
       }},
      {"decode+report+store",
       "IngestIdx writing the record file on a second thread while "
       "it reports duplicates (the server's path)",
       [&] {
         const bool stored =
             kaizen::datasets::IngestIdx(images, labels, {}, "i", "l", options, record_path).ok();
         std::remove(record_path.c_str());
         return stored;
       }},
  };
  std::vector<std::vector<double>> ms(stages.size());
  for (int r = 0; r < rounds; ++r) {
    for (size_t s = 0; s < stages.size(); ++s) {
      const auto t0 = Clock::now();
      ok = stages[s].run() && ok;
      ms[s].push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    }
  }
  std::printf("ingest stages: %s + %s, %.2f MB uploaded, %zu pixels bytes, %d round(s)\n\n",
              images.c_str(), labels.c_str(), upload_bytes / 1e6, pixels.size(), rounds);
  std::printf("%-24s %9s %10s  %s\n", "stage", "median ms", "MB/s up", "what");
  for (size_t s = 0; s < stages.size(); ++s) {
    const double m = Median(ms[s]);
    std::printf("%-24s %9.1f %10.1f  %s\n", stages[s].name, m, upload_bytes / 1e6 / (m / 1e3),
                stages[s].what);
  }
  if (!ok) {
    std::fprintf(stderr, "ingest_stages_bench: a stage failed\n");
    return 1;
  }
  return 0;
}
