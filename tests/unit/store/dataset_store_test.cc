#include "server/store/dataset_store.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "server/common/sha256.h"
#include "server/datasets/dataset_file.h"
#include "server/store/data_dir.h"
#include "server/store/metadata_store.h"
#include "tests/test_util/bytes.h"
#include "tests/test_util/image_fixtures.h"
#include "tests/test_util/temp_dir.h"

namespace kaizen::store {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

// Two classes of three PNGs each, as a tar.gz of class folders.
std::string PhotosArchive() {
  std::vector<test_util::ArchiveEntry> entries;
  for (const char* cls : {"cats", "dogs"}) {
    for (int i = 0; i < 3; ++i) {
      entries.push_back(
          {std::string(cls) + "/" + std::to_string(i) + ".png",
           test_util::EncodePng(16, 16, 3, static_cast<uint32_t>(i + (cls[0] == 'd') * 10))});
    }
  }
  return test_util::MakeArchive(entries, test_util::ArchiveKind::kTarGz);
}

kaizen::v1::UploadDatasetHeader Header(const std::string& name, const std::string& archive) {
  kaizen::v1::UploadDatasetHeader h;
  h.set_name(name);
  h.set_format(kaizen::v1::DATASET_FORMAT_IMAGE_FOLDER);
  kaizen::v1::UploadPart* part = h.add_parts();
  part->set_file_name("photos.tar.gz");
  part->set_size_bytes(static_cast<int64_t>(archive.size()));
  return h;
}

// An IDX upload's header: the images part, then the labels part.
kaizen::v1::UploadDatasetHeader IdxHeader(const std::string& name, int64_t images_bytes,
                                          int64_t labels_bytes) {
  kaizen::v1::UploadDatasetHeader h;
  h.set_name(name);
  h.set_format(kaizen::v1::DATASET_FORMAT_IDX);
  kaizen::v1::UploadPart* images = h.add_parts();
  images->set_file_name("train-images-idx3-ubyte");
  images->set_size_bytes(images_bytes);
  kaizen::v1::UploadPart* labels = h.add_parts();
  labels->set_file_name("train-labels-idx1-ubyte");
  labels->set_size_bytes(labels_bytes);
  return h;
}

int FilesUnder(const std::string& dir) {
  int n = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir)) n += e.is_regular_file();
  return n;
}

class DatasetStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(PrepareDataDir(dir_.path()).ok());
    absl::StatusOr<std::unique_ptr<MetadataStore>> metadata =
        MetadataStore::Open(dir_.File("kaizen.db"));
    ASSERT_TRUE(metadata.ok()) << metadata.status();
    metadata_ = *std::move(metadata);
    DatasetStore::Options o;
    o.data_dir = dir_.path();
    store_ = std::make_unique<DatasetStore>(o, metadata_.get());
  }
  absl::StatusOr<kaizen::v1::Dataset> Upload(const std::string& name, const std::string& bytes,
                                             const std::string& sha) {
    absl::StatusOr<std::unique_ptr<DatasetStore::Upload>> up =
        store_->BeginUpload(Header(name, bytes));
    if (!up.ok()) return up.status();
    if (absl::Status st = (*up)->Append(bytes); !st.ok()) return st;
    return (*up)->Finish(sha);
  }
  test_util::TempDir dir_;
  std::unique_ptr<MetadataStore> metadata_;
  std::unique_ptr<DatasetStore> store_;
};

TEST_F(DatasetStoreTest, AnUploadIsDecodedStoredAndCatalogued) {
  const std::string archive = PhotosArchive();
  absl::StatusOr<kaizen::v1::Dataset> d = Upload("pets", archive, common::Sha256Hex(archive));
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->name(), "pets");
  EXPECT_EQ(d->num_examples(), 6);
  ASSERT_EQ(d->classes_size(), 2);
  EXPECT_EQ(d->classes(0).class_name(), "cats");
  EXPECT_EQ(d->sha256(), common::Sha256Hex(archive));
  EXPECT_EQ(FilesUnder(dir_.File("datasets")), 1);
  EXPECT_TRUE(fs::is_empty(dir_.File("tmp")));

  absl::StatusOr<kaizen::v1::Dataset> got = store_->Get("pets");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->num_examples(), 6);
  absl::StatusOr<datasets::DecodedDataset> loaded = store_->Load("pets");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->records.size(), 6u);
  absl::StatusOr<kaizen::v1::ListDatasetsResponse> list = store_->List(10, "");
  ASSERT_TRUE(list.ok()) << list.status();
  ASSERT_EQ(list->datasets_size(), 1);
  EXPECT_EQ(list->datasets(0).name(), "pets");
}

TEST_F(DatasetStoreTest, UploadsAreRecordFilesAndOlderKdsDatasetsStillLoad) {
  const std::string archive = PhotosArchive();
  ASSERT_TRUE(Upload("pets", archive, common::Sha256Hex(archive)).ok());
  const fs::path stored = fs::directory_iterator(dir_.File("datasets"))->path();
  EXPECT_EQ(stored.extension(), ".krf");
  EXPECT_EQ(test_util::ReadBinaryFile(stored.string()).substr(0, 4), "KZRF");
  absl::StatusOr<datasets::DecodedDataset> loaded = store_->Load("pets");
  ASSERT_TRUE(loaded.ok()) << loaded.status();

  // A data directory written before record files: its catalogue row names a
  // .kds file, which loads as it always did.
  DatasetRow old;
  old.file = "datasets/old-0000.kds";
  old.dataset.set_name("old");
  old.dataset.set_num_examples(static_cast<int64_t>(loaded->records.size()));
  ASSERT_TRUE(datasets::WriteDatasetFile(dir_.File(old.file), *loaded).ok());
  ASSERT_TRUE(metadata_->InsertDataset(old).ok());
  absl::StatusOr<datasets::DecodedDataset> from_kds = store_->Load("old");
  ASSERT_TRUE(from_kds.ok()) << from_kds.status();
  EXPECT_EQ(from_kds->class_names, loaded->class_names);
  EXPECT_EQ(from_kds->pixels, loaded->pixels);
  ASSERT_EQ(from_kds->records.size(), loaded->records.size());
  for (size_t i = 0; i < loaded->records.size(); ++i) {
    EXPECT_EQ(from_kds->records[i].label, loaded->records[i].label);
    EXPECT_EQ(from_kds->records[i].offset, loaded->records[i].offset);
  }

  // A damaged record file is DataLoss, not a crash or a partial dataset.
  std::string bytes = test_util::ReadBinaryFile(stored.string());
  bytes[4096 + 10] = static_cast<char>(bytes[4096 + 10] ^ 1);
  test_util::WriteBinaryFile(stored.string(), bytes);
  EXPECT_EQ(store_->Load("pets").status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(DatasetStoreTest, AChecksumMismatchLeavesNothingAndFreesTheName) {
  const std::string archive = PhotosArchive();
  absl::StatusOr<kaizen::v1::Dataset> bad = Upload("pets", archive, common::Sha256Hex("other"));
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("sha256 mismatch"));
  EXPECT_EQ(store_->Get("pets").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(FilesUnder(dir_.File("datasets")), 0);
  EXPECT_EQ(FilesUnder(dir_.File("tmp")), 0);
  EXPECT_TRUE(Upload("pets", archive, common::Sha256Hex(archive)).ok());
}

TEST_F(DatasetStoreTest, OneUploadPerNameAtATimeAndNamesAreUnique) {
  const std::string archive = PhotosArchive();
  {
    absl::StatusOr<std::unique_ptr<DatasetStore::Upload>> first =
        store_->BeginUpload(Header("pets", archive));
    ASSERT_TRUE(first.ok()) << first.status();
    absl::StatusOr<std::unique_ptr<DatasetStore::Upload>> second =
        store_->BeginUpload(Header("pets", archive));
    ASSERT_EQ(second.status().code(), absl::StatusCode::kAlreadyExists);
    EXPECT_THAT(second.status().message(), HasSubstr("already in progress"));
  }  // abandoned: the reservation goes with it
  ASSERT_TRUE(Upload("pets", archive, common::Sha256Hex(archive)).ok());
  absl::StatusOr<kaizen::v1::Dataset> again = Upload("pets", archive, common::Sha256Hex(archive));
  ASSERT_EQ(again.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(again.status().message(), HasSubstr("already exists"));
}

TEST_F(DatasetStoreTest, BadHeadersNameTheField) {
  kaizen::v1::UploadDatasetHeader h = Header("Bad Name", "x");
  EXPECT_EQ(store_->BeginUpload(h).status().code(), absl::StatusCode::kInvalidArgument);
  h = Header("pets", "x");
  h.set_format(kaizen::v1::DATASET_FORMAT_UNSPECIFIED);
  absl::StatusOr<std::unique_ptr<DatasetStore::Upload>> up = store_->BeginUpload(h);
  ASSERT_EQ(up.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(up.status().message(), HasSubstr("header.format"));
  h = Header("pets", "x");
  h.add_parts()->set_size_bytes(1);  // an image folder is one part
  EXPECT_EQ(store_->BeginUpload(h).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(DatasetStoreTest, TheStoredResolutionCapComesFromTheHeaderOrTheServerAndIsRecorded) {
  const std::string archive = PhotosArchive();  // 16x16 PNGs
  auto upload = [&](DatasetStore* store, const std::string& name, int32_t cap) {
    kaizen::v1::UploadDatasetHeader h = Header(name, archive);
    h.set_max_stored_shorter_side(cap);
    absl::StatusOr<std::unique_ptr<DatasetStore::Upload>> up = store->BeginUpload(h);
    if (!up.ok()) return absl::StatusOr<kaizen::v1::Dataset>(up.status());
    if (absl::Status st = (*up)->Append(archive); !st.ok()) {
      return absl::StatusOr<kaizen::v1::Dataset>(st);
    }
    return (*up)->Finish(common::Sha256Hex(archive));
  };
  // The header's cap, recorded with the dataset.
  ASSERT_TRUE(upload(store_.get(), "small", 8).ok());
  absl::StatusOr<kaizen::v1::Dataset> got = store_->Get("small");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->report().max_stored_shorter_side(), 8);
  EXPECT_EQ(got->report().downscaled_images(), 6);
  EXPECT_THAT(got->input_shape(), ::testing::ElementsAre(3, 8, 8));
  absl::StatusOr<datasets::DecodedDataset> loaded = store_->Load("small");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->records[0].height, 8);
  // The server's cap when the header sets none.
  DatasetStore::Options o;
  o.data_dir = dir_.path();
  o.max_stored_shorter_side = 12;
  DatasetStore capped(o, metadata_.get());
  absl::StatusOr<kaizen::v1::Dataset> twelve = upload(&capped, "twelve", 0);
  ASSERT_TRUE(twelve.ok()) << twelve.status();
  EXPECT_EQ(twelve->report().max_stored_shorter_side(), 12);
  EXPECT_THAT(twelve->input_shape(), ::testing::ElementsAre(3, 12, 12));
  // Without either, images are stored as uploaded.
  absl::StatusOr<kaizen::v1::Dataset> plain = upload(store_.get(), "plain", 0);
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(plain->report().max_stored_shorter_side(), 0);
  EXPECT_THAT(plain->input_shape(), ::testing::ElementsAre(3, 16, 16));

  // A negative cap, or one on an IDX upload, is refused by name.
  absl::StatusOr<kaizen::v1::Dataset> negative = upload(store_.get(), "negative", -1);
  EXPECT_EQ(negative.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(negative.status().message(), HasSubstr("header.max_stored_shorter_side"));
  kaizen::v1::UploadDatasetHeader idx;
  idx.set_name("digits");
  idx.set_format(kaizen::v1::DATASET_FORMAT_IDX);
  idx.add_parts()->set_size_bytes(16);
  idx.add_parts()->set_size_bytes(8);
  idx.set_max_stored_shorter_side(8);
  const absl::Status idx_status = store_->BeginUpload(idx).status();
  EXPECT_EQ(idx_status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(idx_status.message(), HasSubstr("IMAGE_FOLDER only"));
}

TEST_F(DatasetStoreTest, DeleteWaitsForJobsThenRemovesRowAndFile) {
  const std::string archive = PhotosArchive();
  ASSERT_TRUE(Upload("pets", archive, common::Sha256Hex(archive)).ok());
  bool used = true;
  store_->set_in_use_check([&used](const std::string&) -> absl::StatusOr<bool> { return used; });
  absl::Status refused = store_->Delete("pets");
  ASSERT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(refused.message(), HasSubstr("queued or running job"));
  EXPECT_TRUE(store_->Get("pets").ok());
  used = false;
  ASSERT_TRUE(store_->Delete("pets").ok());
  EXPECT_EQ(store_->Get("pets").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(FilesUnder(dir_.File("datasets")), 0);
  EXPECT_EQ(store_->Delete("pets").code(), absl::StatusCode::kNotFound);
}

// An IDX upload is decoded on its own thread while its bytes arrive, and
// stored only once the whole stream and its checksum are verified.
TEST_F(DatasetStoreTest, AnIdxUploadDecodesWhileItArrivesAndStoresOnlyWhenVerified) {
  std::vector<uint8_t> label_values(300);
  for (size_t i = 0; i < label_values.size(); ++i) label_values[i] = static_cast<uint8_t>(i % 3);
  const std::string images = test_util::IdxImages(300, 28, 28);
  const std::string labels = test_util::IdxLabels(label_values);
  const std::string bytes = images + labels;
  const auto begin = [&](const std::string& name) {
    absl::StatusOr<std::unique_ptr<DatasetStore::Upload>> up =
        store_->BeginUpload(IdxHeader(name, images.size(), labels.size()));
    EXPECT_TRUE(up.ok()) << up.status();
    return up.ok() ? *std::move(up) : nullptr;
  };
  const auto send = [&](DatasetStore::Upload& up, size_t from, size_t to) {
    for (size_t at = from; at < to; at += 10'000) {
      ASSERT_TRUE(up.Append(bytes.substr(at, std::min<size_t>(10'000, to - at))).ok());
    }
  };

  std::unique_ptr<DatasetStore::Upload> good = begin("fashion");
  ASSERT_NE(good, nullptr);
  send(*good, 0, bytes.size());
  absl::StatusOr<kaizen::v1::Dataset> stored = good->Finish(common::Sha256Hex(bytes));
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(stored->num_examples(), 300);
  EXPECT_EQ(stored->classes_size(), 3);
  EXPECT_EQ(stored->upload_bytes(), static_cast<int64_t>(bytes.size()));
  EXPECT_EQ(FilesUnder(dir_.File("datasets")), 1);
  good.reset();
  EXPECT_TRUE(fs::is_empty(dir_.File("tmp")));
  absl::StatusOr<datasets::DecodedDataset> loaded = store_->Load("fashion");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_TRUE(std::string(loaded->pixels.begin(), loaded->pixels.end()) == images.substr(16));
  EXPECT_EQ(loaded->records[299].label, 299 % 3);

  // Every byte decoded, then a checksum that does not match: nothing stays.
  std::unique_ptr<DatasetStore::Upload> mismatch = begin("mismatch");
  ASSERT_NE(mismatch, nullptr);
  send(*mismatch, 0, bytes.size());
  // Time for the decoder to finish and reach the verdict, where it must wait.
  absl::SleepFor(absl::Milliseconds(300));
  absl::StatusOr<kaizen::v1::Dataset> refused = mismatch->Finish(common::Sha256Hex("other"));
  EXPECT_THAT(refused.status().message(), HasSubstr("sha256 mismatch"));
  EXPECT_EQ(FilesUnder(dir_.File("datasets")), 1) << "stored before the verdict";
  mismatch.reset();
  EXPECT_EQ(FilesUnder(dir_.File("datasets")), 1) << "stored after a refused verdict";
  EXPECT_EQ(store_->Get("mismatch").status().code(), absl::StatusCode::kNotFound);

  // Dropped halfway through the images (the client went away): the decoding
  // thread stops, nothing stays, and the name is free again.
  std::unique_ptr<DatasetStore::Upload> dropped = begin("dropped");
  ASSERT_NE(dropped, nullptr);
  send(*dropped, 0, images.size() / 2);
  dropped.reset();
  EXPECT_EQ(FilesUnder(dir_.File("datasets")), 1);
  EXPECT_TRUE(fs::is_empty(dir_.File("tmp")));
  EXPECT_NE(begin("dropped"), nullptr);
}

TEST_F(DatasetStoreTest, AnIdxUploadWhoseImagesAreRefusedFailsBeforeItsLastByte) {
  std::string images = test_util::IdxImages(10, 28, 28);
  images[3] = 0x01;  // a labels file's magic: the files are swapped
  const std::string labels(int64_t{16} << 20, '\0');
  absl::StatusOr<std::unique_ptr<DatasetStore::Upload>> up =
      store_->BeginUpload(IdxHeader("swapped", images.size(), labels.size()));
  ASSERT_TRUE(up.ok()) << up.status();
  ASSERT_TRUE((*up)->Append(images).ok());
  // The labels trickle in (over 40 s at most); the images were refused
  // meanwhile, and the next chunk hears it, long before the last one.
  absl::Status st;
  size_t sent = 0;
  while (st.ok() && sent < labels.size()) {
    st = (*up)->Append(labels.substr(sent, 4096));
    sent += 4096;
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_TRUE(absl::IsInvalidArgument(st)) << st;
  EXPECT_THAT(st.message(), HasSubstr("train-images-idx3-ubyte: not an IDX images file"));
  EXPECT_THAT(st.message(), HasSubstr("swapped"));
  EXPECT_LT(sent, labels.size());
  up->reset();
  EXPECT_EQ(FilesUnder(dir_.File("datasets")), 0);
  EXPECT_TRUE(fs::is_empty(dir_.File("tmp")));
}

}  // namespace
}  // namespace kaizen::store
