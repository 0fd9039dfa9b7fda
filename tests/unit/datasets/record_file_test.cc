#include "server/datasets/record_file.h"

#include <dirent.h>
#include <sys/stat.h>
#include <zlib.h>

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/common/status_macros.h"
#include "server/datasets/image_decoder.h"
#include "tests/test_util/image_fixtures.h"
#include "tests/test_util/temp_dir.h"

namespace kaizen::datasets {
namespace {

using ::testing::HasSubstr;

absl::Span<const uint8_t> Bytes(const std::string& s) {
  return absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

std::string AsString(absl::Span<const uint8_t> bytes) {
  return std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

int64_t FileSize(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 ? st.st_size : -1;
}

std::vector<std::string> FilesIn(const std::string& dir) {
  std::vector<std::string> names;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return names;
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  ::closedir(d);
  return names;
}

// A file of a JPEG, a PNG and a raw 2x3 RGB image in three classes.
struct Written {
  std::string path;
  std::string jpeg;
  std::string png;
  std::string raw;
};

Written WriteMixed(const test_util::TempDir& dir) {
  Written w;
  w.path = dir.File("data.krf");
  w.jpeg = test_util::EncodeJpeg(16, 12, 3, 7);
  w.png = test_util::EncodePng(5, 4, 1, 9);
  for (int i = 0; i < 18; ++i) w.raw.push_back(static_cast<char>(i * 11));
  auto writer = RecordFileWriter::Create(w.path);
  EXPECT_TRUE(writer.ok()) << writer.status();
  EXPECT_EQ(*(*writer)->Append(2, 12, 16, 3, RecordEncoding::kJpeg, Bytes(w.jpeg)), 0u);
  EXPECT_EQ(*(*writer)->Append(0, 4, 5, 1, RecordEncoding::kPng, Bytes(w.png)), 1u);
  EXPECT_EQ(*(*writer)->Append(1, 2, 3, 3, RecordEncoding::kRaw, Bytes(w.raw)), 2u);
  const absl::StatusOr<int64_t> size = (*writer)->Finish({"cats", "dogs", "émus"});
  EXPECT_TRUE(size.ok()) << size.status();
  EXPECT_EQ(*size, FileSize(w.path));
  return w;
}

TEST(RecordFileTest, RoundTripsEncodedAndRawRecordsByIndex) {
  test_util::TempDir dir;
  const Written w = WriteMixed(dir);
  auto file = RecordFile::Open(w.path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->class_names(), (std::vector<std::string>{"cats", "dogs", "émus"}));
  ASSERT_EQ((*file)->size(), 3u);

  // Read out of order, as a shuffled loader does.
  for (uint64_t i : {2u, 0u, 1u}) {
    auto bytes = (*file)->Read(i);
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    EXPECT_EQ(AsString(*bytes), i == 0 ? w.jpeg : (i == 1 ? w.png : w.raw)) << i;
  }
  const RecordInfo& jpeg = (*file)->info(0);
  EXPECT_EQ(jpeg.encoding, RecordEncoding::kJpeg);
  EXPECT_EQ(jpeg.label, 2);
  EXPECT_EQ(jpeg.height, 12);
  EXPECT_EQ(jpeg.width, 16);
  EXPECT_EQ(jpeg.channels, 3);
  EXPECT_EQ((*file)->info(1).encoding, RecordEncoding::kPng);
  EXPECT_EQ((*file)->info(2).encoding, RecordEncoding::kRaw);

  // The stored JPEG is the uploaded file itself: it still decodes.
  auto decoded = DecodeImage(AsString(*(*file)->Read(0)), int64_t{1} << 20);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->width, 16);
  EXPECT_EQ(decoded->height, 12);

  EXPECT_EQ((*file)->Read(3).status().code(), absl::StatusCode::kOutOfRange);
}

TEST(RecordFileTest, RecordsStartAfterAHeaderPageAndTheIndexIsPageAligned) {
  test_util::TempDir dir;
  const Written w = WriteMixed(dir);
  auto file = RecordFile::Open(w.path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->info(0).offset, 4096u);
  EXPECT_EQ((*file)->info(1).offset, 4096u + w.jpeg.size());
  const std::string bytes = test_util::ReadBinaryFile(w.path);
  EXPECT_EQ(bytes.substr(0, 4), "KZRF");
  EXPECT_EQ(bytes.substr(bytes.size() - 48, 4), "KZRF");
  // The stored bytes are the records' plus at most two pages and the index.
  const size_t payload = w.jpeg.size() + w.png.size() + w.raw.size();
  EXPECT_LE(bytes.size(), payload + 2 * 4096 + 3 * 40 + 64);
}

TEST(RecordFileTest, WriterRefusesBadRecordsAndLabelsWithoutClassNames) {
  test_util::TempDir dir;
  auto writer = RecordFileWriter::Create(dir.File("bad.krf"));
  ASSERT_TRUE(writer.ok());
  const std::string four(4, 'x');
  EXPECT_THAT((*writer)->Append(0, 2, 3, 3, RecordEncoding::kRaw, Bytes(four)).status().message(),
              HasSubstr("raw record of 4 bytes for a 2x3x3 image (18 bytes)"));
  EXPECT_THAT((*writer)->Append(0, 0, 3, 3, RecordEncoding::kJpeg, Bytes(four)).status().message(),
              HasSubstr("bad shape 0x3x3"));
  EXPECT_THAT((*writer)->Append(-1, 1, 1, 1, RecordEncoding::kRaw, Bytes("x")).status().message(),
              HasSubstr("negative label"));
  EXPECT_THAT((*writer)->Append(0, 1, 1, 1, RecordEncoding::kJpeg, Bytes("")).status().message(),
              HasSubstr("empty encoded record"));
  EXPECT_THAT((*writer)
                  ->Append(0, INT32_MAX, INT32_MAX, 4, RecordEncoding::kJpeg, Bytes(four))
                  .status()
                  .message(),
              HasSubstr("overflows"));
  ASSERT_TRUE((*writer)->Append(5, 1, 1, 1, RecordEncoding::kRaw, Bytes("x")).ok());
  const auto finished = (*writer)->Finish({"a", "b"});
  EXPECT_EQ(finished.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(finished.status().message(), HasSubstr("label 5 has no class name (2 classes)"));
  // Nothing is left behind: no file, no temporary.
  EXPECT_TRUE(FilesIn(dir.path()).empty());
  EXPECT_EQ((*writer)->Finish({"a"}).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(RecordFileTest, AnUnfinishedWriterLeavesNothing) {
  test_util::TempDir dir;
  {
    auto writer = RecordFileWriter::Create(dir.File("cut.krf"));
    ASSERT_TRUE(writer.ok());
    ASSERT_TRUE((*writer)->Append(0, 1, 1, 1, RecordEncoding::kRaw, Bytes("x")).ok());
    EXPECT_FALSE(FilesIn(dir.path()).empty());  // the temporary, while it writes
  }
  EXPECT_TRUE(FilesIn(dir.path()).empty());
  EXPECT_EQ(RecordFile::Open(dir.File("cut.krf")).status().code(), absl::StatusCode::kNotFound);
}

TEST(RecordFileTest, EveryFlippedByteIsDataLossNeverACrash) {
  test_util::TempDir dir;
  const Written w = WriteMixed(dir);
  const std::string good = test_util::ReadBinaryFile(w.path);
  const std::string path = dir.File("flipped.krf");
  // Every byte of the header page's magic, the records, the index and the
  // trailer (the zero padding is not covered by a checksum).
  auto file = RecordFile::Open(w.path);
  ASSERT_TRUE(file.ok());
  std::vector<size_t> positions = {0, 3, 4};
  const size_t records_end = 4096 + w.jpeg.size() + w.png.size() + w.raw.size();
  const size_t index_offset = (records_end + 4095) / 4096 * 4096;
  for (size_t i = 4096; i < good.size(); ++i) {
    if (i < records_end || i >= index_offset) positions.push_back(i);
  }
  int detected_at_open = 0, detected_at_read = 0;
  for (size_t pos : positions) {
    std::string bad = good;
    bad[pos] = static_cast<char>(bad[pos] ^ 0x5a);
    test_util::WriteBinaryFile(path, bad);
    auto opened = RecordFile::Open(path);
    if (!opened.ok()) {
      EXPECT_EQ(opened.status().code(), absl::StatusCode::kDataLoss) << pos;
      ++detected_at_open;
      continue;
    }
    bool read_failed = false;
    for (uint64_t i = 0; i < (*opened)->size(); ++i) {
      const auto bytes = (*opened)->Read(i);
      if (!bytes.ok()) {
        EXPECT_EQ(bytes.status().code(), absl::StatusCode::kDataLoss) << pos;
        EXPECT_THAT(bytes.status().message(), HasSubstr("checksum mismatch"));
        read_failed = true;
      }
    }
    EXPECT_TRUE(read_failed) << "a flipped byte at " << pos << " went unnoticed";
    ++detected_at_read;
  }
  // Record bytes are found when read; the rest when the file opens.
  EXPECT_EQ(detected_at_read, static_cast<int>(w.jpeg.size() + w.png.size() + w.raw.size()));
  EXPECT_GT(detected_at_open, 100);
}

TEST(RecordFileTest, TruncatedFilesAndOtherFilesAreDataLoss) {
  test_util::TempDir dir;
  const Written w = WriteMixed(dir);
  const std::string good = test_util::ReadBinaryFile(w.path);
  const std::string path = dir.File("cut.krf");
  for (size_t keep : {size_t{0}, size_t{10}, size_t{4096}, good.size() / 2, good.size() - 1}) {
    test_util::WriteBinaryFile(path, good.substr(0, keep));
    const auto opened = RecordFile::Open(path);
    EXPECT_EQ(opened.status().code(), absl::StatusCode::kDataLoss) << keep;
  }
  test_util::WriteBinaryFile(path, "KZDS" + std::string(8000, '\0'));
  EXPECT_THAT(RecordFile::Open(path).status().message(), HasSubstr("not a Kaizen record file"));
}

// Rewrites the index of the file at `path` with `edit` applied to its bytes
// and recomputes the index and trailer checksums, as a hostile file would.
void EditIndex(const std::string& path, const std::function<void(std::string*)>& edit) {
  std::string bytes = test_util::ReadBinaryFile(path);
  auto u64 = [&](size_t at) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(bytes[at + i]);
    return v;
  };
  auto put32 = [&](size_t at, uint32_t v) {
    for (int i = 0; i < 4; ++i) bytes[at + i] = static_cast<char>((v >> (8 * i)) & 0xff);
  };
  const size_t t = bytes.size() - 48;
  const size_t index_offset = u64(t + 8), index_bytes = u64(t + 16);
  std::string index = bytes.substr(index_offset, index_bytes);
  edit(&index);
  ASSERT_EQ(index.size(), index_bytes);
  bytes.replace(index_offset, index_bytes, index);
  put32(t + 36, static_cast<uint32_t>(crc32(0, reinterpret_cast<const Bytef*>(index.data()),
                                            static_cast<uInt>(index.size()))));
  put32(t + 44,
        static_cast<uint32_t>(crc32(0, reinterpret_cast<const Bytef*>(bytes.data() + t), 44)));
  test_util::WriteBinaryFile(path, bytes);
}

TEST(RecordFileTest, RecordsThatShareBytesAreDataLoss) {
  // Many index entries naming one record would let a small file claim far
  // more bytes than it holds (a review found a 2.7 MB file asking ReadAllRaw
  // for 4 GiB).
  test_util::TempDir dir;
  const std::string path = dir.File("alias.krf");
  auto writer = RecordFileWriter::Create(path);
  ASSERT_TRUE(writer.ok());
  const std::string raw(64, 'r');
  ASSERT_TRUE((*writer)->Append(0, 8, 8, 1, RecordEncoding::kRaw, Bytes(raw)).ok());
  ASSERT_TRUE((*writer)->Append(0, 8, 8, 1, RecordEncoding::kRaw, Bytes(raw)).ok());
  ASSERT_TRUE((*writer)->Finish({"a"}).ok());
  ASSERT_TRUE(RecordFile::Open(path).ok());
  // Entry 1 (after the class name "a": 5 bytes) gets entry 0's offset.
  EditIndex(path, [](std::string* index) { index->replace(5 + 40, 8, index->substr(5, 8)); });
  const auto opened = RecordFile::Open(path);
  EXPECT_EQ(opened.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(opened.status().message(), HasSubstr("overlap"));
}

TEST(RecordFileTest, ANonZeroReservedFieldIsDataLoss) {
  test_util::TempDir dir;
  const Written w = WriteMixed(dir);
  std::string bytes = test_util::ReadBinaryFile(w.path);
  const size_t t = bytes.size() - 48;
  bytes[t + 40] = 1;
  const uint32_t crc =
      static_cast<uint32_t>(crc32(0, reinterpret_cast<const Bytef*>(bytes.data() + t), 44));
  for (int i = 0; i < 4; ++i) bytes[t + 44 + i] = static_cast<char>((crc >> (8 * i)) & 0xff);
  test_util::WriteBinaryFile(w.path, bytes);
  EXPECT_THAT(RecordFile::Open(w.path).status().message(), HasSubstr("reserved field"));
}

TEST(RecordFileTest, TheWriterRefusesWhatTheReaderWould) {
  test_util::TempDir dir;
  RecordFileLimits limits;
  limits.max_records = 2;
  limits.max_record_bytes = 10;
  limits.max_classes = 1;
  limits.max_class_name_bytes = 3;
  auto writer = RecordFileWriter::Create(dir.File("limited.krf"), limits);
  ASSERT_TRUE(writer.ok());
  EXPECT_EQ((*writer)
                ->Append(0, 4, 4, 1, RecordEncoding::kRaw, Bytes(std::string(16, 'x')))
                .status()
                .code(),
            absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE((*writer)->Append(0, 1, 1, 1, RecordEncoding::kRaw, Bytes("x")).ok());
  ASSERT_TRUE((*writer)->Append(0, 1, 1, 1, RecordEncoding::kRaw, Bytes("y")).ok());
  EXPECT_THAT((*writer)->Append(0, 1, 1, 1, RecordEncoding::kRaw, Bytes("z")).status().message(),
              HasSubstr("more than 2 records"));
  EXPECT_THAT((*writer)->Finish({"long"}).status().message(),
              HasSubstr("class name 0 is 4 bytes; the limit is 3"));
  EXPECT_TRUE(FilesIn(dir.path()).empty());

  auto too_many = RecordFileWriter::Create(dir.File("classes.krf"), limits);
  ASSERT_TRUE(too_many.ok());
  EXPECT_EQ((*too_many)->Finish({"a", "b"}).status().code(), absl::StatusCode::kResourceExhausted);
}

TEST(RecordFileTest, LimitsBoundWhatAFileMayDeclare) {
  test_util::TempDir dir;
  const Written w = WriteMixed(dir);
  RecordFileLimits few_records;
  few_records.max_records = 2;
  EXPECT_THAT(RecordFile::Open(w.path, few_records).status().message(),
              HasSubstr("3 records, more than the limit of 2"));
  RecordFileLimits few_classes;
  few_classes.max_classes = 2;
  EXPECT_THAT(RecordFile::Open(w.path, few_classes).status().message(),
              HasSubstr("3 classes, more than the limit of 2"));
  RecordFileLimits short_names;
  short_names.max_class_name_bytes = 3;
  EXPECT_THAT(RecordFile::Open(w.path, short_names).status().message(),
              HasSubstr("class name 0 of 4 bytes"));
  RecordFileLimits small_records;
  small_records.max_record_bytes = 100;
  EXPECT_THAT(RecordFile::Open(w.path, small_records).status().message(),
              HasSubstr("more than the limit of 100"));
}

// The resident mapped-file bytes of this process (RssFile), in bytes.
int64_t RssFileBytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("RssFile:", 0) == 0) return std::stoll(line.substr(8)) * 1024;
  }
  return -1;
}

// A record file at `path` of `records` raw RGB side x side images (record i
// from MakePixels(..., i), labelled i % 2), opened.
absl::StatusOr<std::unique_ptr<RecordFile>> RawRgbFile(const std::string& path, int records,
                                                       int side) {
  ASSIGN_OR_RETURN(std::unique_ptr<RecordFileWriter> writer, RecordFileWriter::Create(path));
  for (int i = 0; i < records; ++i) {
    const std::vector<uint8_t> pixels = test_util::MakePixels(side, side, 3, i);
    RETURN_IF_ERROR(writer->Append(i % 2, side, side, 3, RecordEncoding::kRaw, pixels).status());
  }
  RETURN_IF_ERROR(writer->Finish({"a", "b"}).status());
  return RecordFile::Open(path);
}

// A pass in random order that releases each record once read holds little
// of the file at any time, although a page fault maps the cached pages
// around the one it needs (up to a large folio of 2 MiB).
TEST(RecordFileTest, ARandomOrderPassThatReleasesAsItGoesStaysSmall) {
  test_util::TempDir dir;
  const std::string path = dir.File("pass.krf");
  constexpr int kRecords = 256;
  constexpr int kSide = 100;  // 30,000-byte raw RGB records: 7.3 MiB in all
  auto file = RawRgbFile(path, kRecords, kSide);
  ASSERT_TRUE(file.ok()) << file.status();
  std::vector<uint64_t> order(kRecords);
  for (uint64_t i = 0; i < kRecords; ++i)
    order[i] = (i * 97) % kRecords;  // 97 is odd: a permutation
  // Without releases the pass maps in more than the bound below.
  const int64_t start = RssFileBytes();
  for (const uint64_t i : order) ASSERT_TRUE((*file)->Read(i).ok());
  const int64_t file_bytes = int64_t{kRecords} * kSide * kSide * 3;
  EXPECT_GT(RssFileBytes() - start, int64_t{4} << 20) << "a pass maps the file in";
  for (uint64_t i = 0; i < kRecords; ++i) (*file)->Release(i);

  const int64_t before = RssFileBytes();
  int64_t most = 0;
  for (const uint64_t i : order) {
    ASSERT_TRUE((*file)->Read(i).ok());
    most = std::max(most, RssFileBytes() - before);
    (*file)->Release(i);
  }
  // One record's windows at most (2 MiB, 4 where it straddles two).
  EXPECT_LE(most, int64_t{4} << 20) << "of a " << file_bytes << "-byte file";
  EXPECT_LE(RssFileBytes() - before, int64_t{1} << 20) << "left mapped after the pass";
}

// Reading maps a record's pages into the process; Release drops them again,
// so that a pass over a file larger than memory does not grow the RSS to
// the file's size. The bytes stay readable.
TEST(RecordFileTest, ReleasedRecordsLeaveTheResidentSet) {
  test_util::TempDir dir;
  const std::string path = dir.File("big.krf");
  constexpr int kRecords = 64;
  constexpr int kSide = 256;  // 192 KiB raw RGB records: 12 MiB in all
  auto file = RawRgbFile(path, kRecords, kSide);
  ASSERT_TRUE(file.ok()) << file.status();
  const int64_t before = RssFileBytes();
  for (uint64_t i = 0; i < kRecords; ++i) ASSERT_TRUE((*file)->Read(i).ok());  // CRCs read it all
  const int64_t read = RssFileBytes();
  for (uint64_t i = 0; i < kRecords; ++i) (*file)->Release(i);
  (*file)->Release(kRecords);  // out of range: nothing
  const int64_t released = RssFileBytes();
  const int64_t file_bytes = int64_t{kRecords} * kSide * kSide * 3;
  EXPECT_GT(read - before, file_bytes * 9 / 10) << "reading maps the records in";
  EXPECT_LT(released - before, file_bytes / 10) << "releasing drops them";
  // Still readable, with the right bytes.
  auto again = (*file)->Read(5);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(std::vector<uint8_t>(again->begin(), again->end()),
            test_util::MakePixels(kSide, kSide, 3, 5));
}

TEST(RecordFileTest, MigratesADecodedDatasetAndReadsItBack) {
  test_util::TempDir dir;
  DecodedDataset data;
  data.class_names = {"a", "b"};
  data.records.push_back({1, 2, 2, 1, 0});
  data.records.push_back({0, 1, 3, 3, 4});
  for (int i = 0; i < 13; ++i) data.pixels.push_back(static_cast<uint8_t>(200 - i));
  const std::string path = dir.File("migrated.krf");
  const auto size = WriteRawRecordFile(path, data);
  ASSERT_TRUE(size.ok()) << size.status();
  auto file = RecordFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  const auto back = (*file)->ReadAll();
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->class_names, data.class_names);
  EXPECT_EQ(back->pixels, data.pixels);
  ASSERT_EQ(back->records.size(), 2u);
  EXPECT_EQ(back->records[1].label, 0);
  EXPECT_EQ(back->records[1].offset, 4);
  EXPECT_EQ(back->records[1].channels, 3);

  // A record whose pixels lie outside the dataset's is refused.
  data.records.push_back({0, 2, 2, 1, 12});
  EXPECT_THAT(WriteRawRecordFile(dir.File("bad.krf"), data).status().message(),
              HasSubstr("record 2: its pixels lie outside"));
}

TEST(RecordFileTest, ReadAllDecodesEncodedRecords) {
  test_util::TempDir dir;
  const Written w = WriteMixed(dir);
  auto file = RecordFile::Open(w.path);
  ASSERT_TRUE(file.ok()) << file.status();
  const auto all = (*file)->ReadAll();
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->records.size(), 3u);
  const std::vector<uint8_t> jpeg = DecodeImage(w.jpeg, 1 << 20)->pixels;
  const std::vector<uint8_t> png = DecodeImage(w.png, 1 << 20)->pixels;
  PixelBuffer want(jpeg.begin(), jpeg.end());
  want.insert(want.end(), png.begin(), png.end());
  want.insert(want.end(), w.raw.begin(), w.raw.end());
  EXPECT_EQ(all->pixels, want);
  EXPECT_EQ(all->records[1].offset, static_cast<int64_t>(jpeg.size()));
  EXPECT_EQ(all->records[2].offset, static_cast<int64_t>(jpeg.size() + png.size()));
  EXPECT_EQ(all->records[0].label, 2);

  // 16x12x3 + 5x4 + 18 = 614 bytes decoded: a budget of 613 refuses before
  // decoding anything.
  const auto over = (*file)->ReadAll({}, 613);
  EXPECT_EQ(over.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(over.status().message(), HasSubstr("3 images decode to more than 613 bytes"));
  EXPECT_TRUE((*file)->ReadAll({}, 614).ok());
}

TEST(RecordFileTest, ReadAllOnSeveralThreadsGivesTheSameDataAndTheFirstError) {
  test_util::TempDir dir;
  const std::string path = dir.File("many.krf");
  std::vector<std::string> jpegs;
  {
    auto writer = RecordFileWriter::Create(path);
    ASSERT_TRUE(writer.ok());
    for (int i = 0; i < 9; ++i) {
      jpegs.push_back(test_util::EncodeJpeg(16 + i, 12, 3, i));
      ASSERT_TRUE(
          (*writer)->Append(i % 2, 12, 16 + i, 3, RecordEncoding::kJpeg, Bytes(jpegs.back())).ok());
    }
    ASSERT_TRUE((*writer)->Finish({"a", "b"}).ok());
  }
  auto file = RecordFile::Open(path);
  ASSERT_TRUE(file.ok());
  const auto one = (*file)->ReadAll({}, uint64_t{1} << 30, 1);
  ASSERT_TRUE(one.ok()) << one.status();
  for (int threads : {2, 3, 16}) {
    const auto many = (*file)->ReadAll({}, uint64_t{1} << 30, threads);
    ASSERT_TRUE(many.ok()) << many.status();
    EXPECT_EQ(many->pixels, one->pixels) << threads;
    ASSERT_EQ(many->records.size(), 9u);
    EXPECT_EQ(many->records[8].offset, one->records[8].offset);
  }

  // Records 4 and 7 claim a shape their JPEG does not have: with the work
  // split over threads, the error still names record 4.
  const std::string bad = dir.File("bad.krf");
  {
    auto writer = RecordFileWriter::Create(bad);
    ASSERT_TRUE(writer.ok());
    for (int i = 0; i < 9; ++i) {
      const int channels = i == 4 || i == 7 ? 1 : 3;
      ASSERT_TRUE(
          (*writer)->Append(0, 12, 16 + i, channels, RecordEncoding::kJpeg, Bytes(jpegs[i])).ok());
    }
    ASSERT_TRUE((*writer)->Finish({"a"}).ok());
  }
  for (int threads : {1, 2, 3}) {
    const auto failed = (*RecordFile::Open(bad))->ReadAll({}, uint64_t{1} << 30, threads);
    EXPECT_EQ(failed.status().code(), absl::StatusCode::kDataLoss);
    EXPECT_THAT(failed.status().message(), HasSubstr("record 4 decodes to")) << threads;
  }
}

TEST(RecordFileTest, ARecordThatDecodesToAnotherShapeIsDataLoss) {
  test_util::TempDir dir;
  const std::string jpeg = test_util::EncodeJpeg(16, 12, 3, 7);
  const std::string path = dir.File("lying.krf");
  {
    auto writer = RecordFileWriter::Create(path);
    ASSERT_TRUE(writer.ok());
    // Fewer channels than the image has; then more pixels than it has,
    // which the decoder refuses from the header.
    ASSERT_TRUE((*writer)->Append(0, 12, 16, 1, RecordEncoding::kJpeg, Bytes(jpeg)).ok());
    ASSERT_TRUE((*writer)->Finish({"a"}).ok());
  }
  auto file = RecordFile::Open(path);
  ASSERT_TRUE(file.ok());
  const auto all = (*file)->ReadAll();
  EXPECT_EQ(all.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(all.status().message(),
              HasSubstr("record 0 decodes to 12x16x3 but its index entry says 12x16x1"));

  const std::string small = dir.File("small.krf");
  {
    auto writer = RecordFileWriter::Create(small);
    ASSERT_TRUE(writer.ok());
    ASSERT_TRUE((*writer)->Append(0, 6, 8, 3, RecordEncoding::kJpeg, Bytes(jpeg)).ok());
    ASSERT_TRUE((*writer)->Finish({"a"}).ok());
  }
  const auto refused = (*RecordFile::Open(small))->ReadAll();
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(refused.status().message(), HasSubstr("record 0 does not decode as stored"));
}

TEST(RecordFileTest, FinishWithPicksListsThemInTheirOrderWithTheirLabels) {
  test_util::TempDir dir;
  const std::string path = dir.File("picked.krf");
  auto writer = RecordFileWriter::Create(path);
  ASSERT_TRUE(writer.ok());
  for (int i = 0; i < 4; ++i) {
    const std::string pixels(6, static_cast<char>('a' + i));
    ASSERT_TRUE((*writer)->Append(0, 2, 3, 1, RecordEncoding::kRaw, Bytes(pixels)).ok());
  }
  const std::vector<RecordPick> picks = {{3, 1}, {0, 0}, {2, 1}};  // record 1 is left out
  ASSERT_TRUE((*writer)->Finish({"x", "y"}, picks).ok());
  auto file = RecordFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_EQ((*file)->size(), 3u);
  EXPECT_EQ(AsString(*(*file)->Read(0)), "dddddd");
  EXPECT_EQ((*file)->info(0).label, 1);
  EXPECT_EQ(AsString(*(*file)->Read(1)), "aaaaaa");
  EXPECT_EQ((*file)->info(1).label, 0);
  EXPECT_EQ(AsString(*(*file)->Read(2)), "cccccc");
  EXPECT_EQ((*file)->info(2).label, 1);
}

TEST(RecordFileTest, CompactingKeepsTheIndexedRecordsAndDropsTheRest) {
  test_util::TempDir dir;
  const std::string path = dir.File("gappy.krf");
  auto writer = RecordFileWriter::Create(path);
  ASSERT_TRUE(writer.ok());
  for (int i = 0; i < 4; ++i) {
    const std::string pixels(5000, static_cast<char>('a' + i));
    ASSERT_TRUE((*writer)->Append(0, 50, 100, 1, RecordEncoding::kRaw, Bytes(pixels)).ok());
  }
  const std::vector<RecordPick> picks = {{3, 1}, {1, 0}};
  const absl::StatusOr<int64_t> gappy = (*writer)->Finish({"x", "y"}, picks);
  ASSERT_TRUE(gappy.ok());
  const absl::StatusOr<int64_t> compact = CompactRecordFile(path);
  ASSERT_TRUE(compact.ok()) << compact.status();
  EXPECT_EQ(*compact, FileSize(path));
  EXPECT_LE(*compact, *gappy - 8192);  // two unused 5,000-byte records, page-padded
  auto file = RecordFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_EQ((*file)->size(), 2u);
  EXPECT_EQ((*file)->class_names(), (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(AsString(*(*file)->Read(0)), std::string(5000, 'd'));
  EXPECT_EQ((*file)->info(0).label, 1);
  EXPECT_EQ(AsString(*(*file)->Read(1)), std::string(5000, 'b'));
  EXPECT_EQ((*file)->info(1).label, 0);
  EXPECT_EQ(FilesIn(dir.path()), (std::vector<std::string>{"gappy.krf"}));
  EXPECT_TRUE(absl::IsNotFound(CompactRecordFile(dir.File("missing.krf")).status()));
}

TEST(RecordFileTest, FinishRefusesBadPicksAndLeavesNoFile) {
  const std::vector<std::pair<std::vector<RecordPick>, std::string>> cases = {
      {{{0, 0}, {2, 0}}, "record 1: picks record 2 of 2"},
      {{{1, 0}, {1, 1}}, "record 1: picks record 1 twice"},
      {{{0, 0}, {1, 2}}, "record 1: label 2 has no class name (2 classes)"},
      {{{0, -1}}, "record 0: label -1 has no class name"},
  };
  for (const auto& [picks, message] : cases) {
    test_util::TempDir dir;
    auto writer = RecordFileWriter::Create(dir.File("bad.krf"));
    ASSERT_TRUE(writer.ok());
    ASSERT_TRUE((*writer)->Append(0, 1, 1, 1, RecordEncoding::kRaw, Bytes("a")).ok());
    ASSERT_TRUE((*writer)->Append(0, 1, 1, 1, RecordEncoding::kRaw, Bytes("b")).ok());
    const absl::StatusOr<int64_t> done = (*writer)->Finish({"x", "y"}, picks);
    EXPECT_EQ(done.status().code(), absl::StatusCode::kInvalidArgument) << message;
    EXPECT_THAT(done.status().message(), HasSubstr(message));
    EXPECT_TRUE(FilesIn(dir.path()).empty()) << message;
  }
}

// fuzz/make_corpus.py writes its seed from the layout in record_file.h, in
// Python: the writer must produce the same bytes, and the reader read them.
TEST(RecordFileTest, TheLayoutMatchesAnIndependentWriter) {
  test_util::TempDir dir;
  const std::string path = dir.File("same.krf");
  auto writer = RecordFileWriter::Create(path);
  ASSERT_TRUE(writer.ok());
  const std::string raw = {1, 2, 3, 4};
  ASSERT_TRUE((*writer)->Append(1, 2, 2, 1, RecordEncoding::kRaw, Bytes(raw)).ok());
  ASSERT_TRUE((*writer)->Append(0, 1, 1, 3, RecordEncoding::kPng, Bytes("\x89PNG")).ok());
  ASSERT_TRUE((*writer)->Finish({"cats", "dogs"}).ok());
  const std::string seed =
      std::string(KAIZEN_SOURCE_DIR) + "/fuzz/corpus/record_file_reader/small.krf";
  EXPECT_EQ(test_util::ReadBinaryFile(path), test_util::ReadBinaryFile(seed));
  auto file = RecordFile::Open(seed);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(AsString(*(*file)->Read(1)), "\x89PNG");
}

TEST(RecordFileTest, AnEmptyDatasetRoundTrips) {
  test_util::TempDir dir;
  const std::string path = dir.File("empty.krf");
  auto writer = RecordFileWriter::Create(path);
  ASSERT_TRUE(writer.ok());
  ASSERT_TRUE((*writer)->Finish({}).ok());
  auto file = RecordFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->size(), 0u);
  EXPECT_TRUE((*file)->class_names().empty());
}

}  // namespace
}  // namespace kaizen::datasets
