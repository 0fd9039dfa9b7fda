// GzipReader: plain files, gzip written by zlib (one member and several),
// damage of every kind the reader names, and agreement with zlib on a few
// MB of image-like data read in odd-sized pieces.
#include "server/datasets/gzip_reader.h"

#include <zlib.h>

#include <cstring>
#include <random>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util/image_fixtures.h"
#include "tests/test_util/temp_dir.h"

namespace kaizen::datasets {
namespace {

using ::testing::HasSubstr;

// `data` deflated by zlib at `level`: window_bits 16 + 15 writes one gzip
// member, -15 raw deflate without a wrapper.
std::string Compress(const std::string& data, int level, int window_bits) {
  z_stream z{};
  EXPECT_EQ(deflateInit2(&z, level, Z_DEFLATED, window_bits, 8, Z_DEFAULT_STRATEGY), Z_OK);
  std::string out(deflateBound(&z, data.size()), '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  z.avail_in = static_cast<uInt>(data.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&z, Z_FINISH), Z_STREAM_END);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

std::string Gzip(const std::string& data, int level = Z_DEFAULT_COMPRESSION) {
  return Compress(data, level, 16 + 15);
}

// Bytes that compress like pixels: runs and noise.
std::string ImageLikeBytes(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string out(n, '\0');
  for (size_t i = 0; i < n; ++i) {
    out[i] = (i / 97) % 3 == 0 ? static_cast<char>(rng() % 256) : static_cast<char>(i / 784);
  }
  return out;
}

void AppendLittleEndian32(std::string* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>(v >> (8 * i)));
}

// One gzip member written field by field (RFC 1952): FLG as given, a file
// name when FNAME is set, the header's CRC-16 when FHCRC is set.
std::string Member(const std::string& data, uint8_t flags, const std::string& name = "") {
  std::string m = {'\x1f', '\x8b', '\x08', static_cast<char>(flags), 0, 0, 0, 0, 0, '\x03'};
  if (flags & 0x08) m += name + std::string(1, '\0');
  if (flags & 0x02) {
    const uLong crc = crc32(0, reinterpret_cast<const Bytef*>(m.data()), m.size());
    m.push_back(static_cast<char>(crc & 0xff));
    m.push_back(static_cast<char>((crc >> 8) & 0xff));
  }
  m += Compress(data, 6, -15);
  AppendLittleEndian32(&m, crc32(0, reinterpret_cast<const Bytef*>(data.data()), data.size()));
  AppendLittleEndian32(&m, static_cast<uint32_t>(data.size()));
  return m;
}

class GzipReaderTest : public ::testing::Test {
 protected:
  // Reads the whole file in pieces of `piece` bytes.
  absl::StatusOr<std::string> ReadAll(const std::string& bytes, size_t piece = 4096,
                                      bool* ended = nullptr, bool* compressed = nullptr) {
    test_util::WriteBinaryFile(dir_.File("f"), bytes);
    absl::StatusOr<std::unique_ptr<GzipReader>> reader = GzipReader::Open(dir_.File("f"), "f.gz");
    if (!reader.ok()) return reader.status();
    std::string out;
    std::string buffer(piece, '\0');
    while (true) {
      absl::StatusOr<size_t> n = (*reader)->Read(buffer.data(), piece);
      if (!n.ok()) return n.status();
      out.append(buffer, 0, *n);
      if (*n < piece) break;
    }
    if (ended != nullptr) *ended = (*reader)->Ended();
    if (compressed != nullptr) *compressed = (*reader)->compressed();
    return out;
  }

  test_util::TempDir dir_;
};

TEST_F(GzipReaderTest, PlainFilesPassThrough) {
  for (const std::string& data :
       {std::string("x"), std::string("\x1f"), ImageLikeBytes(700'000, 1)}) {
    bool ended = false, compressed = true;
    absl::StatusOr<std::string> read = ReadAll(data, 4096, &ended, &compressed);
    ASSERT_TRUE(read.ok()) << read.status();
    EXPECT_EQ(*read, data);
    EXPECT_TRUE(ended);
    EXPECT_FALSE(compressed);
  }
  absl::StatusOr<std::string> empty = ReadAll("");
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_EQ(*empty, "");
}

TEST_F(GzipReaderTest, AgreesWithZlibWhateverThePieceSize) {
  // Larger than the reader's 256 KiB input buffer, so refills happen inside
  // deflate blocks; levels 1 and 9 give different block layouts.
  const std::string data = ImageLikeBytes(3'000'000, 2);
  for (int level : {1, 9}) {
    const std::string gz = Gzip(data, level);
    for (size_t piece : {size_t{1} << 20, size_t{784}, size_t{7}, size_t{4'000'000}}) {
      SCOPED_TRACE(testing::Message() << "level " << level << ", piece " << piece);
      bool ended = false, compressed = false;
      absl::StatusOr<std::string> read = ReadAll(gz, piece, &ended, &compressed);
      ASSERT_TRUE(read.ok()) << read.status();
      EXPECT_TRUE(*read == data) << "content differs from what zlib compressed";
      EXPECT_TRUE(ended);
      EXPECT_TRUE(compressed);
    }
  }
}

TEST_F(GzipReaderTest, ReadsEveryMemberOfAConcatenation) {
  // gzip -c a b > ab writes two members; gunzip reads them as one stream.
  const std::string a = ImageLikeBytes(300'000, 3);
  const std::string b = "and the second member";
  absl::StatusOr<std::string> read = ReadAll(Gzip(a) + Gzip(b) + Gzip(""));
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_TRUE(*read == a + b);
}

TEST_F(GzipReaderTest, AHeaderWithItsCrcSplitAcrossTwoReadsOfTheFile) {
  // The reader takes the file 256 KiB at a time. The second member's header
  // (with FNAME and its CRC-16, FHCRC) starts `before` bytes ahead of that
  // boundary, so it arrives in two reads; its CRC must still cover it whole.
  constexpr size_t kBuffer = size_t{256} << 10;
  const std::string first = ImageLikeBytes(5000, 6);
  const std::string second = "the member after the boundary";
  const std::string probe = Member(first, 0x08, "x");
  for (size_t before : {size_t{1}, size_t{2}, size_t{5}, size_t{11}, size_t{20}}) {
    SCOPED_TRACE(before);
    // A file name long enough that the first member ends `before` bytes
    // short of the boundary.
    const std::string name(kBuffer - before - (probe.size() - 1), 'n');
    const std::string file = Member(first, 0x08, name) + Member(second, 0x08 | 0x02, "second");
    ASSERT_EQ(file.find("\x1f\x8b", kBuffer - before), kBuffer - before);
    bool ended = false;
    absl::StatusOr<std::string> read = ReadAll(file, 4096, &ended);
    ASSERT_TRUE(read.ok()) << read.status();
    EXPECT_TRUE(*read == first + second);
    EXPECT_TRUE(ended);
  }
}

TEST_F(GzipReaderTest, HeaderDamageIsNamed) {
  absl::StatusOr<std::string> reserved = ReadAll(Member("data", 0x20));
  ASSERT_TRUE(absl::IsInvalidArgument(reserved.status())) << reserved.status();
  EXPECT_THAT(reserved.status().message(), HasSubstr("f.gz: corrupt gzip data (the header sets "
                                                     "reserved flag bits)"));
  std::string bad_hcrc = Member("data", 0x02);
  bad_hcrc[10] ^= 0x01;  // the CRC-16 right after the 10 fixed bytes
  absl::StatusOr<std::string> hcrc = ReadAll(bad_hcrc);
  ASSERT_TRUE(absl::IsInvalidArgument(hcrc.status())) << hcrc.status();
  EXPECT_THAT(hcrc.status().message(), HasSubstr("the header's CRC-16 does not match"));
  // The same member with its CRC-16 intact reads.
  absl::StatusOr<std::string> good = ReadAll(Member("data", 0x02 | 0x08, "name"));
  ASSERT_TRUE(good.ok()) << good.status();
  EXPECT_EQ(*good, "data");
}

TEST_F(GzipReaderTest, ACutStreamReadsShortAndSaysItDidNotEnd) {
  const std::string data = ImageLikeBytes(500'000, 4);
  const std::string gz = Gzip(data);
  // Cut inside the deflate data, and cut only the 8-byte trailer.
  for (size_t keep : {gz.size() / 2, gz.size() - 8, gz.size() - 1}) {
    SCOPED_TRACE(keep);
    bool ended = true;
    absl::StatusOr<std::string> read = ReadAll(gz.substr(0, keep), 4096, &ended);
    ASSERT_TRUE(read.ok()) << read.status();
    EXPECT_LE(read->size(), data.size());
    EXPECT_TRUE(data.compare(0, read->size(), *read) == 0) << "the bytes read are not a prefix";
    EXPECT_FALSE(ended);
  }
}

TEST_F(GzipReaderTest, NamesEachKindOfDamage) {
  const std::string data = ImageLikeBytes(100'000, 5);
  const std::string gz = Gzip(data);

  std::string bad_crc = gz;
  bad_crc[bad_crc.size() - 6] ^= 0x55;  // inside the CRC-32
  absl::StatusOr<std::string> crc = ReadAll(bad_crc);
  ASSERT_TRUE(absl::IsInvalidArgument(crc.status())) << crc.status();
  EXPECT_THAT(crc.status().message(), HasSubstr("f.gz: corrupt gzip data (the CRC-32"));

  std::string bad_length = gz;
  bad_length[bad_length.size() - 2] ^= 0x01;  // inside ISIZE
  EXPECT_TRUE(absl::IsInvalidArgument(ReadAll(bad_length).status()));

  std::string bad_method = gz;
  bad_method[2] = 7;  // CM: only 8 (deflate) exists
  absl::StatusOr<std::string> method = ReadAll(bad_method);
  ASSERT_TRUE(absl::IsInvalidArgument(method.status())) << method.status();
  EXPECT_THAT(method.status().message(), HasSubstr("compression method other than deflate"));

  std::string bad_block = gz;
  bad_block[10] = static_cast<char>(0xff);  // the first block header: BTYPE 11 is reserved
  absl::StatusOr<std::string> block = ReadAll(bad_block);
  ASSERT_TRUE(absl::IsInvalidArgument(block.status())) << block.status();
  EXPECT_THAT(block.status().message(), HasSubstr("f.gz: corrupt gzip data"));

  absl::StatusOr<std::string> garbage = ReadAll(gz + "not gzip");
  ASSERT_TRUE(absl::IsInvalidArgument(garbage.status())) << garbage.status();
  EXPECT_THAT(garbage.status().message(),
              HasSubstr("the bytes after the end of the gzip data are not another gzip member"));
}

TEST_F(GzipReaderTest, AMissingFileIsNotFound) {
  absl::StatusOr<std::unique_ptr<GzipReader>> reader =
      GzipReader::Open(dir_.File("missing"), "labels.gz");
  ASSERT_TRUE(absl::IsNotFound(reader.status())) << reader.status();
  EXPECT_THAT(reader.status().message(), HasSubstr("labels.gz: cannot open"));
}

// A file that opens but cannot be read (here a directory: fopen takes it,
// fread fails with EISDIR) says where and why.
TEST_F(GzipReaderTest, AReadErrorSaysWhereAndWhy) {
  absl::StatusOr<std::unique_ptr<GzipReader>> reader = GzipReader::Open(dir_.path(), "images.gz");
  ASSERT_EQ(reader.status().code(), absl::StatusCode::kInternal) << reader.status();
  EXPECT_THAT(reader.status().message(),
              HasSubstr("images.gz: cannot read at byte 0: " + std::string(std::strerror(EISDIR))));
}

TEST_F(GzipReaderTest, AGrowingFileThatLagsBehindItsWriterIsAnErrorNotAHang) {
  test_util::WriteBinaryFile(dir_.File("part"), "abc");
  // The writer claims 10 bytes where the file holds 3 (a file cut by
  // something else): the read fails at once instead of spinning.
  absl::StatusOr<std::unique_ptr<GzipReader>> reader =
      GzipReader::Open(dir_.File("part"), "labels.gz",
                       [](int64_t have) -> absl::StatusOr<bool> { return have < 10; });
  ASSERT_TRUE(absl::IsInternal(reader.status())) << reader.status();
  EXPECT_THAT(reader.status().message(), HasSubstr("labels.gz: the file ends at 3 bytes"));
}

}  // namespace
}  // namespace kaizen::datasets
