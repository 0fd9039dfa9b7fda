#include "server/training/image_source.h"

#include <stdexcept>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util/temp_dir.h"
#include "tests/unit/training/training_test_util.h"

namespace kaizen::training {
namespace {

class ImageSourceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    data_ = fixtures::SyntheticDataset(3, 7, 12, 1, 4);  // 21 images
    ASSERT_TRUE(datasets::WriteRawRecordFile(dir_.File("d.krf"), data_).ok());
    auto file = datasets::RecordFile::Open(dir_.File("d.krf"));
    ASSERT_TRUE(file.ok()) << file.status();
    file_ = std::move(*file);
    options_.input_shape = {3, 10, 10};  // resized, grey to RGB
    options_.threads = 2;
    options_.prefetch_batches = 2;
  }

  test_util::TempDir dir_;
  datasets::DecodedDataset data_;
  std::shared_ptr<const datasets::RecordFile> file_;
  RecordLoader::Options options_;
};

TEST_F(ImageSourceTest, LoadedAndStreamedRowsEqualTheConvertedDataset) {
  auto converted = ConvertDataset(data_, {3, 10, 10});
  ASSERT_TRUE(converted.ok());
  // Rows are positions in `records`: a subset, out of file order.
  const std::vector<int64_t> records = {20, 3, 4, 11, 0, 7};
  const ImageSet expected = Subset(*converted, records);
  auto loaded = ImageSource::Load(file_, records, options_, torch::kCPU);
  auto streamed = ImageSource::Streamed(file_, records, options_, torch::kCPU);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_TRUE(streamed.ok()) << streamed.status();
  EXPECT_FALSE(loaded->streamed());
  EXPECT_TRUE(streamed->streamed());
  ASSERT_NE(loaded->in_memory(), nullptr);
  EXPECT_EQ(streamed->in_memory(), nullptr);
  for (ImageSource* s : {&*loaded, &*streamed}) {
    EXPECT_EQ(s->size(), 6);
    EXPECT_TRUE(torch::equal(s->labels(), expected.labels));
    s->BeginRanges(4);
    EXPECT_TRUE(torch::equal(s->Range(0, 4), expected.images.narrow(0, 0, 4)));
    EXPECT_TRUE(torch::equal(s->Range(4, 2), expected.images.narrow(0, 4, 2)));
    s->Begin({{5, 1}, {2}});
    EXPECT_TRUE(torch::equal(s->Rows({5, 1}), Subset(expected, {5, 1}).images));
    EXPECT_TRUE(torch::equal(s->Rows({2}), Subset(expected, {2}).images));
  }
}

TEST_F(ImageSourceTest, AStreamedSourceAnswersOnlyThePassItWasGiven) {
  auto streamed = ImageSource::Streamed(file_, {0, 1, 2, 3}, options_, torch::kCPU);
  ASSERT_TRUE(streamed.ok());
  streamed->Begin({{0, 1}, {2, 3}});
  EXPECT_THROW(streamed->Rows({2, 3}), std::logic_error);  // out of order
  // A new pass replaces the old one.
  streamed->Begin({{3}});
  EXPECT_EQ(streamed->Rows({3}).size(0), 1);
  EXPECT_THROW(streamed->Rows({0}), std::logic_error);  // past its end
  // In memory, any rows at any time.
  auto loaded = ImageSource::Load(file_, {0, 1, 2, 3}, options_, torch::kCPU);
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ(loaded->Rows({3, 0, 3}).size(0), 3);
}

TEST_F(ImageSourceTest, BadRecordsAndIndicesArePreciseErrors) {
  EXPECT_EQ(ImageSource::Streamed(file_, {0, 21}, options_, torch::kCPU).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ImageSource::Load(file_, {-1}, options_, torch::kCPU).status().code(),
            absl::StatusCode::kInvalidArgument);
  // A record that does not decode: the load fails, and a streamed pass
  // throws the loader's status.
  const std::string jpeg_path = dir_.File("j.krf");
  {
    auto writer = datasets::RecordFileWriter::Create(jpeg_path);
    ASSERT_TRUE(writer.ok());
    const std::string not_jpeg = "not a jpeg";
    ASSERT_TRUE((*writer)
                    ->Append(0, 4, 4, 3, datasets::RecordEncoding::kJpeg,
                             absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(not_jpeg.data()),
                                                 not_jpeg.size()))
                    .ok());
    ASSERT_TRUE((*writer)->Finish({"x"}).ok());
  }
  auto opened = datasets::RecordFile::Open(jpeg_path);
  ASSERT_TRUE(opened.ok());
  std::shared_ptr<const datasets::RecordFile> bad(std::move(*opened));
  auto loaded = ImageSource::Load(bad, {0}, options_, torch::kCPU);
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(loaded.status().message()), ::testing::HasSubstr("record 0"));
  auto streamed = ImageSource::Streamed(bad, {0}, options_, torch::kCPU);
  ASSERT_TRUE(streamed.ok());
  streamed->BeginRanges(1);
  try {
    streamed->Range(0, 1);
    ADD_FAILURE() << "no error";
  } catch (const ImageSourceError& e) {
    EXPECT_EQ(e.status().code(), loaded.status().code());
    EXPECT_THAT(std::string(e.status().message()), ::testing::HasSubstr("record 0"));
  }
}

}  // namespace
}  // namespace kaizen::training
