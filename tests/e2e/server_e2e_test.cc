// End-to-end tests: the real KaizenServer on a loopback port with a temporary
// data directory, driven through the C++ client library and raw stubs.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "client/lib/kaizen_client.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "kaizen/v1/finetune_service.grpc.pb.h"
#include "kaizen/v1/inference_service.grpc.pb.h"
#include "server/api/server.h"
#include "server/common/atomic_file.h"
#include "server/common/sha256.h"
#include "server/models/torchscript_inspector.h"
#include "tests/test_util/fashion_mnist.h"
#include "tests/test_util/image_fixtures.h"
#include "tests/test_util/server/loopback_server.h"
#include "tests/test_util/temp_dir.h"

namespace kaizen {
namespace {

namespace fs = std::filesystem;
using test_util::ArchiveEntry;
using test_util::ArchiveKind;


std::vector<std::string> ListFiles(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_regular_file()) out.push_back(fs::relative(it->path(), dir).string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

class ServerE2E : public ::testing::Test {
 protected:
  void SetUp() override { StartServer(); }

  void StartServer(int64_t max_upload_bytes = int64_t{1} << 30, int64_t max_pixels = 25'000'000) {
    s_ = test_util::LoopbackServer();
    api::KaizenServer::Options o = test_util::LoopbackOptions(data_.path());
    o.threads = 1;
    o.max_upload_bytes = max_upload_bytes;
    o.max_image_pixels = max_pixels;
    auto s = test_util::StartLoopbackServer(o);
    ASSERT_TRUE(s.ok()) << s.status();
    s_ = *std::move(s);
  }

  std::string WriteArchive(const std::string& name, const std::vector<ArchiveEntry>& entries,
                           ArchiveKind kind = ArchiveKind::kTarGz) {
    const std::string path = files_.File(name);
    test_util::WriteBinaryFile(path, test_util::MakeArchive(entries, kind));
    return path;
  }

  absl::StatusOr<v1::Dataset> UploadFolder(const std::string& name, const std::string& archive) {
    v1::UploadDatasetHeader h;
    h.set_name(name);
    h.set_format(v1::DATASET_FORMAT_IMAGE_FOLDER);
    return s_.client->UploadDataset(h, {archive});
  }

  // Nothing of a failed upload may remain: no temporary file, no blob other
  // than those of the datasets that exist.
  void ExpectNoLeftovers(size_t datasets) {
    EXPECT_TRUE(ListFiles(data_.path() + "/tmp").empty());
    EXPECT_EQ(ListFiles(data_.path() + "/datasets").size(), datasets);
    auto list = s_.client->ListAllDatasets();
    ASSERT_TRUE(list.ok());
    EXPECT_EQ(static_cast<size_t>(list->datasets_size()), datasets);
  }

  static std::vector<ArchiveEntry> GoodFolder() {
    return {
        {"cats/a.jpg", test_util::EncodeJpeg(32, 24, 3, 1)},
        {"cats/b.jpg", test_util::EncodeJpeg(32, 24, 3, 2)},
        {"cats/c.png", test_util::EncodePng(32, 24, 3, 3)},
        {"dogs/a.png", test_util::EncodePng(32, 24, 3, 4)},
        {"dogs/b.jpeg", test_util::EncodeJpeg(32, 24, 3, 5)},
    };
  }

  test_util::TempDir data_;
  test_util::TempDir files_;
  test_util::LoopbackServer s_;
};

TEST_F(ServerE2E, UploadsFashionMnistTrainingSetWithPerClassCounts) {
  v1::UploadDatasetHeader h;
  h.set_name("fashion-train");
  h.set_format(v1::DATASET_FORMAT_IDX);
  const std::string images = absl::StrCat(test_util::kFashionDir, "/train-images-idx3-ubyte.gz");
  const std::string labels = absl::StrCat(test_util::kFashionDir, "/train-labels-idx1-ubyte.gz");
  auto d = s_.client->UploadDataset(h, {images, labels});
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->num_examples(), 60000);
  ASSERT_EQ(d->classes_size(), 10);
  for (const auto& c : d->classes()) EXPECT_EQ(c.count(), 6000) << c.class_name();
  EXPECT_EQ(std::vector<int64_t>(d->input_shape().begin(), d->input_shape().end()),
            (std::vector<int64_t>{1, 28, 28}));
  std::string a, b;
  ASSERT_TRUE(common::ReadFile(images, &a).ok());
  ASSERT_TRUE(common::ReadFile(labels, &b).ok());
  EXPECT_EQ(d->sha256(), common::Sha256Hex(a + b));
  EXPECT_EQ(d->upload_bytes(), static_cast<int64_t>(a.size() + b.size()));
  auto got = s_.client->GetDataset("fashion-train");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->num_examples(), 60000);
}

TEST_F(ServerE2E, UploadsImageFolderReportingCorruptDuplicateAndIgnoredFiles) {
  std::vector<ArchiveEntry> entries = GoodFolder();
  entries.push_back({"cats/broken.jpg", test_util::EncodeJpeg(32, 24, 3, 9).substr(0, 40)});
  entries.push_back({"dogs/copy.png", entries[3].data});  // same bytes as dogs/a.png
  entries.push_back({"dogs/.DS_Store", "junk"});
  entries.push_back({"README.txt", "hello"});
  auto d = UploadFolder("pets", WriteArchive("pets.tar.gz", entries));
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->num_examples(), 6);
  ASSERT_EQ(d->classes_size(), 2);
  EXPECT_EQ(d->classes(0).class_name(), "cats");
  EXPECT_EQ(d->classes(0).count(), 3);
  EXPECT_EQ(d->classes(1).class_name(), "dogs");
  EXPECT_EQ(d->classes(1).count(), 3);
  EXPECT_EQ(std::vector<int64_t>(d->input_shape().begin(), d->input_shape().end()),
            (std::vector<int64_t>{3, 24, 32}));
  const v1::DatasetReport& r = d->report();
  ASSERT_EQ(r.failed_files_size(), 1);
  EXPECT_EQ(r.failed_files(0).path(), "cats/broken.jpg");
  ASSERT_EQ(r.duplicates_size(), 1);
  EXPECT_EQ(r.duplicates(0).path(), "dogs/copy.png");
  EXPECT_EQ(r.duplicates(0).duplicate_of(), "dogs/a.png");
  EXPECT_GE(r.ignored_files_size(), 2);
  ExpectNoLeftovers(1);
}

TEST_F(ServerE2E, ZipArchivesWork) {
  auto d = UploadFolder("pets-zip", WriteArchive("pets.zip", GoodFolder(), ArchiveKind::kZip));
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->num_examples(), 5);
}

// Every bad input gets its precise status, and leaves nothing behind.
TEST_F(ServerE2E, BadDatasetUploadsFailPreciselyAndLeaveNothingBehind) {
  ASSERT_TRUE(UploadFolder("good", WriteArchive("good.tgz", GoodFolder())).ok());
  const std::string good = WriteArchive("good2.tgz", GoodFolder());

  struct Case {
    std::string what;
    absl::StatusOr<v1::Dataset> result;
    absl::StatusCode code;
    std::string needle;
  };
  std::vector<Case> cases;
  cases.push_back({"bad name", UploadFolder("../evil", good), absl::StatusCode::kInvalidArgument,
                   "dataset name"});
  cases.push_back({"duplicate name", UploadFolder("good", good), absl::StatusCode::kAlreadyExists,
                   "already exists"});
  cases.push_back({"empty archive",
                   UploadFolder("empty", WriteArchive("empty.tar", {}, ArchiveKind::kTar)),
                   absl::StatusCode::kInvalidArgument, "empty"});
  cases.push_back(
      {"one class",
       UploadFolder("one",
                    WriteArchive("one.tgz", {{"cats/a.jpg", test_util::EncodeJpeg(8, 8, 3, 1)},
                                             {"cats/b.jpg", test_util::EncodeJpeg(8, 8, 3, 2)}})),
       absl::StatusCode::kInvalidArgument, "one class"});
  cases.push_back(
      {"unsupported image",
       UploadFolder("gif",
                    WriteArchive("gif.tgz", {{"cats/a.jpg", test_util::EncodeJpeg(8, 8, 3, 1)},
                                             {"dogs/x.jpg", "GIF89a\x01\x00\x01\x00"}})),
       absl::StatusCode::kInvalidArgument, "dogs/x.jpg"});
  const std::string not_archive = files_.File("plain.tar");
  test_util::WriteBinaryFile(not_archive, std::string(1000, 'z'));
  cases.push_back({"not an archive", UploadFolder("plain", not_archive),
                   absl::StatusCode::kInvalidArgument, "plain.tar"});
  for (const Case& c : cases) {
    EXPECT_EQ(c.result.status().code(), c.code) << c.what << ": " << c.result.status();
    EXPECT_NE(c.result.status().message().find(c.needle), absl::string_view::npos)
        << c.what << ": " << c.result.status();
  }
  ExpectNoLeftovers(1);
}

TEST_F(ServerE2E, ImageOverPixelLimitAndUploadOverSizeLimitAreRejected) {
  StartServer(/*max_upload_bytes=*/64 * 1024, /*max_pixels=*/40 * 40);
  auto big_image =
      UploadFolder("big", WriteArchive("big.tgz", {{"a/x.png", test_util::EncodePng(64, 64, 1, 1)},
                                                   {"b/y.png", test_util::EncodePng(8, 8, 1, 2)}}));
  EXPECT_EQ(big_image.status().code(), absl::StatusCode::kInvalidArgument) << big_image.status();
  EXPECT_NE(big_image.status().message().find("a/x.png"), absl::string_view::npos)
      << big_image.status();

  std::vector<ArchiveEntry> many;
  for (int i = 0; i < 60; ++i) {
    many.push_back(
        {absl::StrCat(i % 2 ? "a/" : "b/", i, ".png"), test_util::EncodePng(32, 32, 3, i)});
  }
  const std::string path = WriteArchive("many.tar", many, ArchiveKind::kTar);
  ASSERT_GT(fs::file_size(path), 64u * 1024);
  auto too_big = UploadFolder("many", path);
  EXPECT_EQ(too_big.status().code(), absl::StatusCode::kResourceExhausted) << too_big.status();
  ExpectNoLeftovers(0);
}

TEST_F(ServerE2E, HostileUploadsAreRefusedByHeaderChecksAndDecodeBudgets) {
  ASSERT_TRUE(UploadFolder("good", WriteArchive("good.tgz", GoodFolder())).ok());
  auto upload_idx = [&](const std::string& name, const std::string& images, char num_labels) {
    const std::string images_path = files_.File(name + "-images-idx3-ubyte");
    const std::string labels_path = files_.File(name + "-labels-idx1-ubyte");
    test_util::WriteBinaryFile(images_path, images);
    std::string labels("\x00\x00\x08\x01", 4);
    labels += std::string("\x00\x00\x00", 3) + num_labels;
    for (char i = 0; i < num_labels; ++i) labels.push_back(static_cast<char>(i % 2));
    test_util::WriteBinaryFile(labels_path, labels);
    v1::UploadDatasetHeader h;
    h.set_name(name);
    h.set_format(v1::DATASET_FORMAT_IDX);
    return s_.client->UploadDataset(h, {images_path, labels_path});
  };
  auto idx_header = [](uint32_t n, uint32_t rows, uint32_t cols, const std::string& payload) {
    std::string out("\x00\x00\x08\x03", 4);
    for (uint32_t v : {n, rows, cols}) {
      for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>(v >> shift));
    }
    return out + payload;
  };
  // 2 x 2147549185 x 4294836226 wraps to the 4 bytes this file holds.
  auto wrapped = upload_idx("wrapped", idx_header(2, 2147549185u, 4294836226u, "abcd"), 2);
  EXPECT_EQ(wrapped.status().code(), absl::StatusCode::kInvalidArgument) << wrapped.status();
  EXPECT_NE(wrapped.status().message().find("(rows) is 2147549185"), absl::string_view::npos)
      << wrapped.status();
  // 8 images of 4000 x 4000 (128 MB) declared by a 32-byte file: over the
  // budget's allowance, refused from the header before anything is read.
  auto declared = upload_idx("declared", idx_header(8, 4000, 4000, std::string(16, 'x')), 8);
  EXPECT_EQ(declared.status().code(), absl::StatusCode::kResourceExhausted) << declared.status();
  // A tar.gz whose ignored member inflates 300 MB from ~300 KB.
  std::vector<ArchiveEntry> bomb = GoodFolder();
  bomb.push_back({"notes/zeros.bin", std::string(300 << 20, '\0')});
  auto inflated = UploadFolder("bomb", WriteArchive("bomb.tgz", bomb));
  EXPECT_EQ(inflated.status().code(), absl::StatusCode::kResourceExhausted) << inflated.status();
  EXPECT_NE(inflated.status().message().find("notes/zeros.bin"), absl::string_view::npos)
      << inflated.status();
  ExpectNoLeftovers(1);
  EXPECT_TRUE(UploadFolder("good2", WriteArchive("good2.tgz", GoodFolder())).ok());
}

// Raw stub: streams that end early, carry a wrong checksum, or lie about sizes.
TEST_F(ServerE2E, TruncatedStreamsAndWrongChecksumsAreInvalidArgument) {
  auto stub = v1::DatasetService::NewStub(s_.channel);
  const std::string bytes = test_util::MakeArchive(GoodFolder(), ArchiveKind::kTarGz);
  auto send = [&](size_t send_bytes, const std::string* sha, bool trailer) {
    grpc::ClientContext ctx;
    v1::Dataset out;
    auto writer = stub->UploadDataset(&ctx, &out);
    v1::UploadDatasetRequest req;
    auto* h = req.mutable_header();
    h->set_name("raw");
    h->set_format(v1::DATASET_FORMAT_IMAGE_FOLDER);
    auto* part = h->add_parts();
    part->set_file_name("raw.tgz");
    part->set_size_bytes(static_cast<int64_t>(bytes.size()));
    writer->Write(req);
    req.set_chunk(bytes.substr(0, send_bytes));
    writer->Write(req);
    if (trailer) {
      req.set_sha256(sha ? *sha : common::Sha256Hex(bytes.substr(0, send_bytes)));
      writer->Write(req);
    }
    writer->WritesDone();
    return writer->Finish();
  };
  grpc::Status truncated = send(bytes.size() / 2, nullptr, true);
  EXPECT_EQ(truncated.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(truncated.error_message().find("truncated"), std::string::npos)
      << truncated.error_message();
  grpc::Status no_trailer = send(bytes.size(), nullptr, false);
  EXPECT_EQ(no_trailer.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(no_trailer.error_message().find("sha256 trailer"), std::string::npos);
  const std::string wrong = common::Sha256Hex("something else");
  grpc::Status bad_sha = send(bytes.size(), &wrong, true);
  EXPECT_EQ(bad_sha.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(bad_sha.error_message().find("sha256 mismatch"), std::string::npos);
  ExpectNoLeftovers(0);
  // The server is still healthy: a good upload of the same name works.
  EXPECT_TRUE(send(bytes.size(), nullptr, true).ok());
}

TEST_F(ServerE2E, RestartKeepsDatasetsAndModels) {
  ASSERT_TRUE(UploadFolder("pets", WriteArchive("pets.tgz", GoodFolder())).ok());
  v1::UploadModelHeader mh;
  mh.set_name("r18");
  ASSERT_TRUE(s_.client->UploadModel(mh, absl::StrCat(KAIZEN_FIXTURE_DIR, "/resnet18.pt")).ok());
  StartServer();
  auto d = s_.client->GetDataset("pets");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->num_examples(), 5);
  auto m = s_.client->GetModel("r18");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->parameter_count(), 11689512);
  ExpectNoLeftovers(1);
}

TEST_F(ServerE2E, OrphanFilesFromACrashAreSweptAtStartup) {
  ASSERT_TRUE(UploadFolder("pets", WriteArchive("pets.tgz", GoodFolder())).ok());
  test_util::WriteBinaryFile(data_.path() + "/datasets/ghost-1234.kds", "orphan");
  test_util::WriteBinaryFile(data_.path() + "/tmp/upload-dead-0", "partial");
  StartServer();
  ExpectNoLeftovers(1);
}

TEST_F(ServerE2E, UploadsTorchvisionResnet18AndDetectsItsHead) {
  const std::string fixture = absl::StrCat(KAIZEN_FIXTURE_DIR, "/resnet18.pt");
  v1::UploadModelHeader h;
  h.set_name("resnet18");
  h.set_description("torchvision resnet18, random weights");
  auto m = s_.client->UploadModel(h, fixture);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->source(), v1::MODEL_SOURCE_UPLOADED);
  EXPECT_EQ(m->version(), 1);
  EXPECT_EQ(m->head().module_path(), "fc");
  EXPECT_EQ(m->head().in_features(), 512);
  EXPECT_EQ(m->head().out_features(), 1000);
  EXPECT_EQ(m->parameter_count(), 11689512);
  EXPECT_EQ(std::vector<int64_t>(m->input_shape().begin(), m->input_shape().end()),
            (std::vector<int64_t>{3, 224, 224}));
  EXPECT_EQ(m->normalization().mean_size(), 3);

  const std::string out = files_.File("downloaded.pt");
  auto d = s_.client->DownloadModel("resnet18", 0, out);
  ASSERT_TRUE(d.ok()) << d.status();
  std::string original, downloaded;
  ASSERT_TRUE(common::ReadFile(fixture, &original).ok());
  ASSERT_TRUE(common::ReadFile(out, &downloaded).ok());
  EXPECT_EQ(common::Sha256Hex(original), common::Sha256Hex(downloaded));

  EXPECT_EQ(s_.client->UploadModel(h, fixture).status().code(), absl::StatusCode::kAlreadyExists);
}

TEST_F(ServerE2E, BadModelUploadsAreRejectedAndLeaveNothingBehind) {
  const std::string garbage = files_.File("garbage.pt");
  test_util::WriteBinaryFile(garbage, std::string(4096, 'x'));
  v1::UploadModelHeader h;
  h.set_name("garbage");
  auto m = s_.client->UploadModel(h, garbage);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument) << m.status();
  EXPECT_NE(m.status().message().find("garbage.pt"), absl::string_view::npos) << m.status();

  h.set_name("r18");
  h.set_head_module("nope");
  m = s_.client->UploadModel(h, absl::StrCat(KAIZEN_FIXTURE_DIR, "/resnet18.pt"));
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument) << m.status();
  EXPECT_NE(m.status().message().find("nope"), absl::string_view::npos) << m.status();
  h.clear_head_module();
  h.add_class_names("only-one");
  m = s_.client->UploadModel(h, absl::StrCat(KAIZEN_FIXTURE_DIR, "/resnet18.pt"));
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument) << m.status();

  EXPECT_TRUE(ListFiles(data_.path() + "/tmp").empty());
  EXPECT_TRUE(ListFiles(data_.path() + "/models").empty());
  EXPECT_EQ(s_.client->GetModel("r18").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(ServerE2E, BuiltinModelsAreListedDownloadableAndUndeletable) {
  auto list = s_.client->ListAllModels();
  ASSERT_TRUE(list.ok()) << list.status();
  std::vector<std::string> builtin;
  for (const auto& m : list->models()) {
    if (m.source() == v1::MODEL_SOURCE_BUILTIN) builtin.push_back(m.name());
  }
  EXPECT_EQ(builtin, (std::vector<std::string>{"cnn-small", "resnet-small"}));
  EXPECT_EQ(s_.client->DeleteModel("resnet-small").code(), absl::StatusCode::kFailedPrecondition);

  const std::string out = files_.File("resnet-small.pt");
  ASSERT_TRUE(s_.client->DownloadModel("resnet-small", 0, out).ok());
  auto inspected = models::InspectTorchScriptFile(out, {});
  ASSERT_TRUE(inspected.ok()) << inspected.status();
  EXPECT_EQ(inspected->head().module_path(), "fc");
  EXPECT_TRUE(ListFiles(data_.path() + "/tmp").empty());
}

TEST_F(ServerE2E, ListsPageThroughDatasets) {
  for (const char* n : {"c", "a", "b"}) {
    ASSERT_TRUE(UploadFolder(n, WriteArchive(absl::StrCat(n, ".tgz"), GoodFolder())).ok());
  }
  std::vector<std::string> names;
  std::string token;
  int pages = 0;
  do {
    auto page = s_.client->ListDatasets(1, token);
    ASSERT_TRUE(page.ok()) << page.status();
    for (const auto& d : page->datasets()) names.push_back(d.name());
    token = page->next_page_token();
    ++pages;
  } while (!token.empty() && pages < 10);
  EXPECT_EQ(names, (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(pages, 3);
  EXPECT_EQ(s_.client->ListDatasets(1, "bogus").status().code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(s_.client->DeleteDataset("b").ok());
  EXPECT_EQ(s_.client->DeleteDataset("b").code(), absl::StatusCode::kNotFound);
  ExpectNoLeftovers(2);
}

TEST_F(ServerE2E, EmptyRequestsAreInvalidArgumentNotFakeSuccess) {
  auto ft = v1::FineTuneService::NewStub(s_.channel);
  grpc::ClientContext c1;
  v1::Job job;
  EXPECT_EQ(ft->StartFineTune(&c1, v1::StartFineTuneRequest(), &job).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  auto inf = v1::InferenceService::NewStub(s_.channel);
  grpc::ClientContext c2;
  v1::PredictResponse resp;
  EXPECT_EQ(inf->Predict(&c2, v1::PredictRequest(), &resp).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(ServerE2E, MetricsCountRequestsByMethodAndCode) {
  ASSERT_TRUE(s_.client->ListDatasets().ok());
  EXPECT_FALSE(s_.client->GetDataset("missing").ok());
  ASSERT_GT(s_.server->metrics_port(), 0);
  const std::string body = s_.Metrics();
  // go-grpc-prometheus's names, labels and code spelling.
  const std::string list =
      "grpc_method=\"ListDatasets\",grpc_service=\"kaizen.v1.DatasetService\","
      "grpc_type=\"unary\"";
  const std::string get =
      "grpc_method=\"GetDataset\",grpc_service=\"kaizen.v1.DatasetService\","
      "grpc_type=\"unary\"";
  EXPECT_NE(body.find("grpc_server_started_total{" + list + "} 1\n"), std::string::npos)
      << body.substr(0, 4000);
  EXPECT_NE(body.find("grpc_server_handled_total{grpc_code=\"OK\"," + list + "} 1\n"),
            std::string::npos);
  EXPECT_NE(body.find("grpc_server_handled_total{grpc_code=\"NotFound\"," + get + "} 1\n"),
            std::string::npos);
  EXPECT_NE(body.find("grpc_server_handling_seconds_count{" + get + "} 1\n"), std::string::npos);
  // Every method exists from the start, streams typed as such.
  EXPECT_NE(
      body.find("grpc_server_started_total{grpc_method=\"UploadDataset\",grpc_service=\"kaizen."
                "v1.DatasetService\",grpc_type=\"client_stream\"} 0\n"),
      std::string::npos);
  EXPECT_NE(
      body.find("grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"WatchJob\","
                "grpc_service=\"kaizen.v1.FineTuneService\",grpc_type=\"server_stream\"} 0\n"),
      std::string::npos);
  EXPECT_NE(body.find("grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"ModelInfer\","
                      "grpc_service=\"inference.GRPCInferenceService\",grpc_type=\"unary\"} 0\n"),
            std::string::npos);
  EXPECT_EQ(body.find("kaizen_grpc_"), std::string::npos);
}

TEST_F(ServerE2E, HealthReportsServingForEachService) {
  for (int i = 0; i < 500 && !s_.server->ready(); ++i) absl::SleepFor(absl::Milliseconds(10));
  ASSERT_TRUE(s_.server->ready());
  auto health = grpc::health::v1::Health::NewStub(s_.channel);
  for (const char* service : {"", "kaizen.v1.DatasetService", "kaizen.v1.ModelService",
                              "kaizen.v1.FineTuneService", "kaizen.v1.InferenceService"}) {
    grpc::ClientContext ctx;
    grpc::health::v1::HealthCheckRequest req;
    req.set_service(service);
    grpc::health::v1::HealthCheckResponse resp;
    ASSERT_TRUE(health->Check(&ctx, req, &resp).ok()) << service;
    EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING) << service;
  }
  grpc::ClientContext ctx;
  grpc::health::v1::HealthCheckRequest req;
  req.set_service("no.such.Service");
  grpc::health::v1::HealthCheckResponse resp;
  EXPECT_EQ(health->Check(&ctx, req, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
}

}  // namespace
}  // namespace kaizen
