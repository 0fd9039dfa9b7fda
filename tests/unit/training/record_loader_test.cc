#include "server/training/record_loader.h"

#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/imaging/normalizer.h"
#include "server/serving/preprocess.h"
#include "tests/test_util/image_fixtures.h"
#include "tests/test_util/temp_dir.h"

namespace kaizen::training {
namespace {

using ::testing::HasSubstr;

absl::Span<const uint8_t> Bytes(const std::string& s) {
  return absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

// `n` raw grey 6x5 images (record i filled with i, labelled i % 3), and the
// same as a DecodedDataset.
std::shared_ptr<const datasets::RecordFile> RawFile(const test_util::TempDir& dir, int n,
                                                    datasets::DecodedDataset* same) {
  same->class_names = {"a", "b", "c"};
  for (int i = 0; i < n; ++i) {
    same->records.push_back({i % 3, 6, 5, 1, static_cast<int64_t>(same->pixels.size())});
    same->pixels.insert(same->pixels.end(), 30, static_cast<uint8_t>(i));
  }
  const std::string path = dir.File("raw.krf");
  EXPECT_TRUE(datasets::WriteRawRecordFile(path, *same).ok());
  auto file = datasets::RecordFile::Open(path);
  EXPECT_TRUE(file.ok()) << file.status();
  return std::shared_ptr<const datasets::RecordFile>(std::move(*file));
}

RecordLoader::Options GreyOptions(int64_t batch) {
  RecordLoader::Options o;
  o.input_shape = {1, 6, 5};
  o.batch_size = batch;
  o.seed = 7;
  o.threads = 3;
  o.prefetch_batches = 2;
  return o;
}

// Records 0 .. n-1.
std::vector<int64_t> AllRecords(int64_t n) {
  std::vector<int64_t> all(static_cast<size_t>(n));
  std::iota(all.begin(), all.end(), 0);
  return all;
}

// Every batch of an epoch, stopping at the first error.
std::vector<ImageSet> Drain(RecordLoader& loader) {
  std::vector<ImageSet> out;
  while (true) {
    auto next = loader.Next();
    EXPECT_TRUE(next.ok()) << next.status();
    if (!next.ok() || !next->has_value()) return out;
    out.push_back(**next);
  }
}

TEST(RecordLoaderTest, EveryRecordOncePerEpochInTheSeededOrder) {
  test_util::TempDir dir;
  datasets::DecodedDataset same;
  auto file = RawFile(dir, 50, &same);
  // Records 0..49 except the held-out 10..19, as a training split.
  std::vector<int64_t> train;
  for (int64_t i = 0; i < 50; ++i) {
    if (i < 10 || i >= 20) train.push_back(i);
  }
  auto loader = RecordLoader::Create(file, train, GreyOptions(8));
  ASSERT_TRUE(loader.ok()) << loader.status();
  EXPECT_EQ((*loader)->batches_per_epoch(), 5);  // 40 images in batches of 8

  std::vector<std::vector<int64_t>> orders;
  for (int32_t epoch = 0; epoch < 3; ++epoch) {
    (*loader)->StartEpoch(epoch);
    const std::vector<std::vector<int64_t>> expected = (*loader)->EpochRecords(epoch);
    const std::vector<ImageSet> batches = Drain(**loader);
    ASSERT_EQ(batches.size(), expected.size());
    std::vector<int64_t> order;
    for (size_t b = 0; b < batches.size(); ++b) {
      ASSERT_EQ(batches[b].size(), static_cast<int64_t>(expected[b].size()));
      for (size_t k = 0; k < expected[b].size(); ++k) {
        const int64_t record = expected[b][k];
        // The pixels say which record it is; the label comes with it.
        EXPECT_EQ(batches[b].images[k].min().item<int>(), record);
        EXPECT_EQ(batches[b].images[k].max().item<int>(), record);
        EXPECT_EQ(batches[b].labels[k].item<int64_t>(), record % 3);
        order.push_back(record);
      }
    }
    std::set<int64_t> seen(order.begin(), order.end());
    EXPECT_EQ(seen, std::set<int64_t>(train.begin(), train.end())) << "epoch " << epoch;
    EXPECT_EQ(order.size(), train.size());
    orders.push_back(order);
  }
  EXPECT_NE(orders[0], orders[1]);  // reshuffled each epoch
  EXPECT_NE(orders[1], orders[2]);

  // The order is a function of the seed and the epoch (a resumed job sees
  // the same batches); another seed gives another.
  auto again = RecordLoader::Create(file, train, GreyOptions(8));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)->EpochRecords(1), (*loader)->EpochRecords(1));
  RecordLoader::Options other = GreyOptions(8);
  other.seed = 8;
  auto reseeded = RecordLoader::Create(file, train, other);
  ASSERT_TRUE(reseeded.ok());
  EXPECT_NE((*reseeded)->EpochRecords(1), (*loader)->EpochRecords(1));
}

TEST(RecordLoaderTest, APassOverGivenBatchesReturnsThemInOrder) {
  test_util::TempDir dir;
  datasets::DecodedDataset same;
  auto file = RawFile(dir, 30, &same);
  // Rows are positions in the loader's records: row k is record 29 - k.
  std::vector<int64_t> reversed;
  for (int64_t i = 29; i >= 0; --i) reversed.push_back(i);
  auto loader = RecordLoader::Create(file, reversed, GreyOptions(8));
  ASSERT_TRUE(loader.ok()) << loader.status();
  const std::vector<std::vector<int64_t>> rows = {{0, 1, 2}, {29}, {5, 5, 7, 3}};
  // A pass started over an epoch in progress replaces it.
  (*loader)->StartEpoch(0);
  (*loader)->Start(rows);
  const std::vector<ImageSet> batches = Drain(**loader);
  ASSERT_EQ(batches.size(), rows.size());
  // A byte cap below one batch still decodes one batch at a time.
  RecordLoader::Options capped = GreyOptions(8);
  capped.max_prefetch_bytes = 1;
  auto one_ahead = RecordLoader::Create(file, reversed, capped);
  ASSERT_TRUE(one_ahead.ok());
  (*one_ahead)->Start(rows);
  const std::vector<ImageSet> again = Drain(**one_ahead);
  ASSERT_EQ(again.size(), rows.size());
  for (size_t b = 0; b < rows.size(); ++b) {
    EXPECT_TRUE(torch::equal(again[b].images, batches[b].images)) << b;
  }
  for (size_t b = 0; b < rows.size(); ++b) {
    ASSERT_EQ(batches[b].size(), static_cast<int64_t>(rows[b].size()));
    for (size_t k = 0; k < rows[b].size(); ++k) {
      const int64_t record = 29 - rows[b][k];
      EXPECT_EQ(batches[b].images[k].max().item<int>(), record);
      EXPECT_EQ(batches[b].labels[k].item<int64_t>(), record % 3);
    }
  }
}

TEST(RecordLoaderTest, ARecordThatDecodesToAnotherShapeThanItsIndexSaysIsDataLoss) {
  test_util::TempDir dir;
  const std::string path = dir.File("shape.krf");
  {
    auto writer = datasets::RecordFileWriter::Create(path);
    ASSERT_TRUE(writer.ok());
    // A 8x8 JPEG indexed as 8x6 (fewer pixels), and one indexed as 16x16.
    const std::string jpeg = test_util::EncodeJpeg(8, 8, 3, 1);
    ASSERT_TRUE((*writer)->Append(0, 8, 6, 3, datasets::RecordEncoding::kJpeg, Bytes(jpeg)).ok());
    ASSERT_TRUE((*writer)->Append(0, 16, 16, 3, datasets::RecordEncoding::kJpeg, Bytes(jpeg)).ok());
    ASSERT_TRUE((*writer)->Finish({"x"}).ok());
  }
  auto opened = datasets::RecordFile::Open(path);
  ASSERT_TRUE(opened.ok());
  std::shared_ptr<const datasets::RecordFile> file(std::move(*opened));
  RecordLoader::Options o;
  o.input_shape = {3, 8, 8};
  o.batch_size = 1;
  auto loader = RecordLoader::Create(file, {0, 1}, o);
  ASSERT_TRUE(loader.ok());
  (*loader)->Start({{0}});
  auto first = (*loader)->Next();
  ASSERT_FALSE(first.ok());
  // More pixels than the index entry's are refused before the decode.
  EXPECT_EQ(first.status().code(), absl::StatusCode::kDataLoss) << first.status();
  EXPECT_THAT(std::string(first.status().message()), HasSubstr("record 0"));
  (*loader)->Start({{1}});
  auto second = (*loader)->Next();
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kDataLoss) << second.status();
  EXPECT_THAT(std::string(second.status().message()),
              HasSubstr("record 1 decodes to 8x8x3 but its index entry says 16x16x3"));
}

TEST(RecordLoaderTest, ConvertsAsTheInMemoryPipelineDoes) {
  test_util::TempDir dir;
  datasets::DecodedDataset same;
  auto file = RawFile(dir, 12, &same);
  const std::vector<int64_t> all = AllRecords(12);
  RecordLoader::Options o = GreyOptions(12);
  o.input_shape = {3, 9, 11};  // resized and grey repeated to RGB
  auto loader = RecordLoader::Create(file, all, o);
  ASSERT_TRUE(loader.ok());
  (*loader)->StartEpoch(0);
  const std::vector<ImageSet> batches = Drain(**loader);
  ASSERT_EQ(batches.size(), 1u);
  auto in_memory = ConvertDataset(same, {3, 9, 11});
  ASSERT_TRUE(in_memory.ok());
  const std::vector<int64_t> order = (*loader)->EpochRecords(0)[0];
  for (size_t k = 0; k < order.size(); ++k) {
    EXPECT_TRUE(torch::equal(batches[0].images[k], in_memory->images[order[k]])) << k;
  }
}

// Batches are pinned when asked and a GPU can pin them; on a machine without
// one the option is ignored and the batches are the same.
TEST(RecordLoaderTest, PinnedBatchesWhereAGpuIsPresent) {
  test_util::TempDir dir;
  datasets::DecodedDataset same;
  auto file = RawFile(dir, 8, &same);
  const std::vector<int64_t> all = AllRecords(8);
  std::vector<ImageSet> got[2];
  for (const bool pin : {false, true}) {
    RecordLoader::Options o = GreyOptions(4);
    o.pin_memory = pin;
    auto loader = RecordLoader::Create(file, all, o);
    ASSERT_TRUE(loader.ok());
    (*loader)->StartEpoch(0);
    got[pin] = Drain(**loader);
    ASSERT_EQ(got[pin].size(), 2u);
    for (const ImageSet& batch : got[pin]) {
      EXPECT_EQ(batch.images.is_pinned(), pin && torch::cuda::is_available());
      EXPECT_EQ(batch.labels.is_pinned(), pin && torch::cuda::is_available());
    }
  }
  for (size_t b = 0; b < 2; ++b) {
    EXPECT_TRUE(torch::equal(got[0][b].images, got[1][b].images));
    EXPECT_TRUE(torch::equal(got[0][b].labels, got[1][b].labels));
  }
}

TEST(RecordLoaderTest, EncodedRecordsMatchServingPreprocessing) {
  test_util::TempDir dir;
  const std::string path = dir.File("mixed.krf");
  const std::vector<std::string> images = {test_util::EncodeJpeg(40, 30, 3, 1),
                                           test_util::EncodePng(17, 23, 1, 2),
                                           test_util::EncodeJpeg(28, 28, 1, 3)};
  {
    auto writer = datasets::RecordFileWriter::Create(path);
    ASSERT_TRUE(writer.ok());
    ASSERT_TRUE(
        (*writer)->Append(0, 30, 40, 3, datasets::RecordEncoding::kJpeg, Bytes(images[0])).ok());
    ASSERT_TRUE(
        (*writer)->Append(1, 23, 17, 1, datasets::RecordEncoding::kPng, Bytes(images[1])).ok());
    ASSERT_TRUE(
        (*writer)->Append(1, 28, 28, 1, datasets::RecordEncoding::kJpeg, Bytes(images[2])).ok());
    ASSERT_TRUE((*writer)->Finish({"x", "y"}).ok());
  }
  auto opened = datasets::RecordFile::Open(path);
  ASSERT_TRUE(opened.ok());
  std::shared_ptr<const datasets::RecordFile> file(std::move(*opened));
  kaizen::v1::Model model;
  model.add_input_shape(3);
  model.add_input_shape(24);
  model.add_input_shape(24);
  model.mutable_normalization()->add_mean(0.485);
  model.mutable_normalization()->add_mean(0.456);
  model.mutable_normalization()->add_mean(0.406);
  model.mutable_normalization()->add_std(0.229);
  model.mutable_normalization()->add_std(0.224);
  model.mutable_normalization()->add_std(0.225);
  RecordLoader::Options o;
  o.input_shape = {3, 24, 24};
  o.batch_size = 3;
  auto loader = RecordLoader::Create(file, {0, 1, 2}, o);
  ASSERT_TRUE(loader.ok());
  (*loader)->StartEpoch(0);
  const std::vector<ImageSet> batches = Drain(**loader);
  ASSERT_EQ(batches.size(), 1u);
  const imaging::Normalizer normalizer(model.normalization(), 3, torch::kCPU);
  const torch::Tensor trained =
      normalizer.Normalize(imaging::Normalizer::ToUnit(batches[0].images));
  const std::vector<int64_t> order = (*loader)->EpochRecords(0)[0];
  for (size_t k = 0; k < order.size(); ++k) {
    auto served = serving::PreprocessImage(images[order[k]], model, 1 << 20, "inputs[0]");
    ASSERT_TRUE(served.ok()) << served.status();
    EXPECT_TRUE(torch::equal(trained[k], *served)) << "record " << order[k];
  }
}

TEST(RecordLoaderTest, ABadRecordEndsTheEpochWithAPreciseError) {
  test_util::TempDir dir;
  const std::string path = dir.File("bad.krf");
  const std::string jpeg = test_util::EncodeJpeg(8, 8, 3, 1);
  {
    auto writer = datasets::RecordFileWriter::Create(path);
    ASSERT_TRUE(writer.ok());
    for (int i = 0; i < 6; ++i) {
      // Record 4 claims to be a JPEG but is not one (its checksum is fine).
      const std::string bytes = i == 4 ? std::string("not a jpeg") : jpeg;
      ASSERT_TRUE(
          (*writer)->Append(0, 8, 8, 3, datasets::RecordEncoding::kJpeg, Bytes(bytes)).ok());
    }
    ASSERT_TRUE((*writer)->Finish({"x"}).ok());
  }
  auto opened = datasets::RecordFile::Open(path);
  ASSERT_TRUE(opened.ok());
  std::shared_ptr<const datasets::RecordFile> file(std::move(*opened));
  RecordLoader::Options o;
  o.input_shape = {3, 8, 8};
  o.batch_size = 1;
  auto loader = RecordLoader::Create(file, {0, 1, 2, 3, 4, 5}, o);
  ASSERT_TRUE(loader.ok());
  (*loader)->StartEpoch(0);
  absl::Status error;
  int good = 0;
  while (true) {
    auto next = (*loader)->Next();
    if (!next.ok()) {
      error = next.status();
      break;
    }
    if (!next->has_value()) break;
    ++good;
  }
  // The server checked every record it stored: one that no longer decodes
  // is damaged data.
  EXPECT_EQ(error.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(error.message()), HasSubstr("bad.krf: record 4 does not decode"));
  EXPECT_LT(good, 6);
  // The epoch is over; a new one starts cleanly.
  auto after = (*loader)->Next();
  ASSERT_TRUE(after.ok());
  EXPECT_FALSE(after->has_value());
}

TEST(RecordLoaderTest, RefusesBadOptionsAndRecordIndices) {
  test_util::TempDir dir;
  datasets::DecodedDataset same;
  auto file = RawFile(dir, 4, &same);
  EXPECT_THAT(RecordLoader::Create(file, {0, 4}, GreyOptions(2)).status().message(),
              HasSubstr("record 4 is not in"));
  EXPECT_EQ(RecordLoader::Create(file, {0}, GreyOptions(0)).status().code(),
            absl::StatusCode::kInvalidArgument);
  RecordLoader::Options two_channels = GreyOptions(2);
  two_channels.input_shape = {2, 6, 5};
  EXPECT_EQ(RecordLoader::Create(file, {0}, two_channels).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(RecordLoaderTest, AnAbandonedEpochAndTheDestructorDoNotHang) {
  test_util::TempDir dir;
  datasets::DecodedDataset same;
  auto file = RawFile(dir, 200, &same);
  const std::vector<int64_t> all = AllRecords(200);
  auto loader = RecordLoader::Create(file, all, GreyOptions(4));
  ASSERT_TRUE(loader.ok());
  (*loader)->StartEpoch(0);
  ASSERT_TRUE((*loader)->Next().ok());
  (*loader)->StartEpoch(1);  // abandons epoch 0 with batches in flight
  const std::vector<ImageSet> batches = Drain(**loader);
  EXPECT_EQ(batches.size(), 50u);
  (*loader)->StartEpoch(2);
  ASSERT_TRUE((*loader)->Next().ok());
  loader->reset();  // workers stop with the epoch half read
}

// A batch's memory is the loader's to reuse once the batch is dropped, and
// stays with a batch that outlives its loader: batches held across epochs
// and past the loader keep their own pixels.
TEST(RecordLoaderTest, BatchesKeepTheirPixelsWhileHeldEvenPastTheirLoader) {
  test_util::TempDir dir;
  datasets::DecodedDataset same;
  auto file = RawFile(dir, 64, &same);
  const std::vector<int64_t> all = AllRecords(64);
  auto loader = RecordLoader::Create(file, all, GreyOptions(4));
  ASSERT_TRUE(loader.ok());
  std::vector<ImageSet> kept;
  std::vector<std::vector<int64_t>> kept_records;
  for (int32_t epoch = 0; epoch < 3; ++epoch) {
    (*loader)->StartEpoch(epoch);
    const std::vector<std::vector<int64_t>> records = (*loader)->EpochRecords(epoch);
    for (size_t b = 0;; ++b) {
      auto next = (*loader)->Next();
      ASSERT_TRUE(next.ok()) << next.status();
      if (!next->has_value()) break;
      // Every third batch is held; the others go back at once.
      if (b % 3 == 0) {
        kept.push_back(**next);
        kept_records.push_back(records[b]);
      }
    }
  }
  loader->reset();
  ASSERT_EQ(kept.size(), 18u);  // 6 of the 16 batches of each epoch
  for (size_t b = 0; b < kept.size(); ++b) {
    for (size_t k = 0; k < kept_records[b].size(); ++k) {
      EXPECT_EQ(kept[b].images[static_cast<int64_t>(k)].min().item<int>(), kept_records[b][k]);
      EXPECT_EQ(kept[b].images[static_cast<int64_t>(k)].max().item<int>(), kept_records[b][k]);
    }
  }
}

}  // namespace
}  // namespace kaizen::training
