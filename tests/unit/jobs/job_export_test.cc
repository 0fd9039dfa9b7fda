#include "server/jobs/job_export.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "server/common/atomic_file.h"

namespace kaizen::jobs {
namespace {

PyTorchJobSubject Subject() {
  PyTorchJobSubject s;
  s.job_id = "ft-0123456789ab";
  s.folder = "ft-0123456789ab-a1b2c3";
  s.strategy = "STRATEGY_FULL";
  s.starts_from = "resnet:3";
  return s;
}

TEST(JobExportTest, UnsetFieldsTakeTheDefaultsAndTheJobsWorldSize) {
  absl::StatusOr<PyTorchJobShape> shape = ResolvePyTorchJobShape({}, /*job_world_size=*/3);
  ASSERT_TRUE(shape.ok()) << shape.status();
  EXPECT_EQ(shape->world_size, 3);
  EXPECT_EQ(shape->threads, 4);
  EXPECT_EQ(shape->image, "kaizen");
  EXPECT_EQ(shape->volume_claim, "kaizen-data");
  EXPECT_EQ(shape->memory_mb, 0) << "left for the server to compute";
  shape = ResolvePyTorchJobShape({}, /*job_world_size=*/0);
  ASSERT_TRUE(shape.ok());
  EXPECT_EQ(shape->world_size, 1);

  kaizen::v1::ExportJobRequest r;
  r.set_world_size(16);
  r.set_threads(8);
  r.set_image("registry.example.com:5000/ml/kaizen@sha256:abc");
  r.set_volume_claim("team.data-1");
  r.set_memory_mb(6000);
  shape = ResolvePyTorchJobShape(r, 2);
  ASSERT_TRUE(shape.ok()) << shape.status();
  EXPECT_EQ(shape->world_size, 16);
  EXPECT_EQ(shape->threads, 8);
  EXPECT_EQ(shape->image, r.image());
  EXPECT_EQ(shape->volume_claim, r.volume_claim());
  EXPECT_EQ(shape->memory_mb, 6000);
}

TEST(JobExportTest, TheDefaultMemoryIsTheBudgetsFourModelsAndTheRuntime) {
  constexpr int64_t kMiB = int64_t{1} << 20;
  // The server's defaults (2 GiB of images, 1 GiB of prefix cache) and a
  // model of 11.7 million float parameters (resnet18's 46.8 MB: 45 MiB up).
  EXPECT_EQ(ExportMemoryMb(2048 * kMiB, 1024 * kMiB, 11'700'000 * 4), 2048 + 1024 + 4 * 45 + 2048);
  // Rounded up to whole MiB, each term.
  EXPECT_EQ(ExportMemoryMb(1, 1, 1), 1 + 1 + 4 + kExportRuntimeMb);
  EXPECT_EQ(ExportMemoryMb(kMiB, 0, 0), 1 + kExportRuntimeMb);
  // A DISTILL teacher's weights count twice (loaded, and the trainer's
  // copy), without gradients or moments.
  EXPECT_EQ(ExportMemoryMb(0, 0, kMiB, 3 * kMiB + 1), 4 + 2 * 4 + kExportRuntimeMb);
  // Nothing below the runtime's share, and nothing past the cap, whatever
  // the flags say.
  EXPECT_EQ(ExportMemoryMb(-1, -kMiB, 0), kExportRuntimeMb);
  const int64_t huge = std::numeric_limits<int64_t>::max();
  EXPECT_EQ(ExportMemoryMb(huge, huge, huge, huge), kMaxExportMemoryMb);
  EXPECT_EQ(ExportMemoryMb(0, 0, (kMaxExportMemoryMb / 4) * kMiB), kMaxExportMemoryMb);
}

TEST(JobExportTest, FieldsOutOfRangeAreRefusedByName) {
  const auto message = [](const kaizen::v1::ExportJobRequest& r) {
    absl::StatusOr<PyTorchJobShape> shape = ResolvePyTorchJobShape(r, 1);
    EXPECT_EQ(shape.status().code(), absl::StatusCode::kInvalidArgument);
    return std::string(shape.status().message());
  };
  kaizen::v1::ExportJobRequest r;
  r.set_world_size(1025);
  EXPECT_EQ(message(r), "world_size is 1025; an export runs 1 to 1024 processes");
  r.set_world_size(-1);
  EXPECT_EQ(message(r), "world_size is -1; an export runs 1 to 1024 processes");
  r.clear_world_size();
  r.set_threads(257);
  EXPECT_EQ(message(r), "threads is 257; each process runs 1 to 256");
  r.clear_threads();
  for (const int32_t memory_mb : {255, -1, (1 << 20) + 1}) {
    r.set_memory_mb(memory_mb);
    EXPECT_EQ(message(r), absl::StrCat("memory_mb is ", memory_mb,
                                       "; each pod is given 256 to 1048576 MiB (0: computed)"));
  }
  r.clear_memory_mb();
  // Whatever could end the quoted scalar or start a new line of YAML.
  for (const std::string& image :
       {std::string("kaizen\"\n  x: y"), std::string("a b"), std::string("-leading"),
        std::string(256, 'a'), std::string("kai\0zen", 7)}) {
    r.set_image(image);
    EXPECT_EQ(message(r).rfind("image: not an image reference", 0), 0u) << image;
  }
  r.clear_image();
  for (const std::string& claim :
       {std::string("Upper"), std::string("under_score"), std::string("-x"), std::string("x-"),
        std::string(254, 'a'), std::string("a\"b")}) {
    r.set_volume_claim(claim);
    EXPECT_EQ(message(r).rfind("volume_claim: not a PersistentVolumeClaim name", 0), 0u) << claim;
  }
}

TEST(JobExportTest, TheManifestHasAMasterAndWorldSizeMinusOneWorkersOnTheJobsFolder) {
  PyTorchJobShape shape;
  shape.world_size = 4;
  shape.threads = 6;
  shape.image = "registry.local/kaizen:2";
  shape.volume_claim = "shared";
  shape.memory_mb = 5000;
  const std::string m = PyTorchJobManifest(shape, Subject());
  for (const std::string& part :
       {"apiVersion: kubeflow.org/v1\nkind: PyTorchJob\n",
        "  name: kaizen-ft-0123456789ab-a1b2c3\n",
        "# training operator): STRATEGY_FULL from resnet:3 in 4 process(es).\n",
        "    Master:\n      replicas: 1\n      restartPolicy: OnFailure\n      template:\n",
        "    Worker:\n      replicas: 3\n      restartPolicy: OnFailure\n      template:\n",
        "            - name: pytorch\n              image: \"registry.local/kaizen:2\"\n",
        "              command: [\"kaizen-worker\", \"--spec=/job/spec.json\"]\n",
        "              resources:\n                requests:\n                  cpu: \"6\"\n"
        "                  memory: \"5000Mi\"\n                limits:\n"
        "                  memory: \"5000Mi\"\n",
        "                  mountPath: /job\n                  subPath: "
        "exports/ft-0123456789ab-a1b2c3\n                  readOnly: true\n",
        "                  mountPath: /job/out\n                  subPath: "
        "exports/ft-0123456789ab-a1b2c3/out\n",
        "            fsGroupChangePolicy: OnRootMismatch\n",
        "spec:\n  runPolicy:\n    backoffLimit: 2\n  pytorchReplicaSpecs:\n",
        "            kaizen.dev/export: ft-0123456789ab-a1b2c3\n",
        "                claimName: \"shared\"\n",
        "            kaizen.dev/job: ft-0123456789ab\n"}) {
    EXPECT_NE(m.find(part), std::string::npos) << part << "\n--- in ---\n" << m;
  }
  // Both pod templates are the same, and the YAML is indented by spaces in
  // steps of two.
  const size_t master = m.find("    Master:"), worker = m.find("    Worker:");
  ASSERT_NE(worker, std::string::npos);
  const std::string master_pod =
      m.substr(m.find("      template:", master), worker - m.find("      template:", master));
  const std::string worker_pod = m.substr(m.find("      template:", worker));
  EXPECT_EQ(master_pod, worker_pod);
  // The NetworkPolicy comes first, so that it holds before any pod starts:
  // the export's pods reach each other and DNS only.
  const size_t policy = m.find("kind: NetworkPolicy\n");
  ASSERT_NE(m.find("---\napiVersion: kubeflow.org/v1\nkind: PyTorchJob\n"), std::string::npos);
  ASSERT_LT(policy, m.find("kind: PyTorchJob"));
  const std::string p = m.substr(policy, m.find("---\n") - policy);
  for (const std::string& part :
       {"kind: NetworkPolicy\n", "  name: kaizen-ft-0123456789ab-a1b2c3\n",
        "  podSelector:\n    matchLabels:\n      kaizen.dev/export: ft-0123456789ab-a1b2c3\n",
        "  policyTypes: [\"Ingress\", \"Egress\"]\n",
        "  ingress:\n    - from:\n        - podSelector:\n            matchLabels:\n"
        "              kaizen.dev/export: ft-0123456789ab-a1b2c3\n",
        "  egress:\n    - to:\n        - podSelector:\n            matchLabels:\n"
        "              kaizen.dev/export: ft-0123456789ab-a1b2c3\n",
        "    - ports:\n        - protocol: UDP\n          port: 53\n"}) {
    EXPECT_NE(p.find(part), std::string::npos) << part << "\n--- in ---\n" << p;
  }
  for (const absl::string_view line : absl::StrSplit(m, '\n')) {
    EXPECT_EQ(line.find('\t'), absl::string_view::npos) << line;
    const size_t indent = line.find_first_not_of(' ');
    if (indent != absl::string_view::npos) EXPECT_EQ(indent % 2, 0u) << line;
  }
}

// deploy/pytorchjob/exported.yaml, which the manifest test
// (deploy/k8s/test) checks against Kubernetes' schemas and field names, is
// this exactly. To refresh it, copy the file this test writes on failure.
TEST(JobExportTest, TheExampleInDeployIsWhatAnExportWrites) {
  PyTorchJobShape shape;
  shape.world_size = 4;
  // What the server's defaults give a FINE_TUNE job of a 1 MiB model.
  shape.memory_mb = ExportMemoryMb(int64_t{2} << 30, int64_t{1} << 30, int64_t{1} << 20);
  PyTorchJobSubject subject = Subject();
  subject.strategy = "STRATEGY_FINE_TUNE";
  subject.starts_from = "resnet-small";
  const std::string manifest = PyTorchJobManifest(shape, subject);
  const std::string example = std::string(KAIZEN_SOURCE_DIR) + "/deploy/pytorchjob/exported.yaml";
  std::string stored;
  if (!common::ReadFile(example, &stored).ok() || stored != manifest) {
    const std::string fresh = ::testing::TempDir() + "exported.yaml";
    ASSERT_TRUE(common::WriteFileAtomically(fresh, manifest).ok());
    FAIL() << example << " is not what an export writes now: see " << fresh;
  }
}

TEST(JobExportTest, AOneProcessJobHasAMasterAlone) {
  PyTorchJobShape shape;
  shape.world_size = 1;
  const std::string m = PyTorchJobManifest(shape, Subject());
  EXPECT_NE(m.find("    Master:\n      replicas: 1\n"), std::string::npos);
  EXPECT_EQ(m.find("Worker:"), std::string::npos) << m;
}

TEST(JobExportTest, WhatTheHeaderCommentQuotesStaysInTheComment) {
  PyTorchJobSubject subject = Subject();
  subject.starts_from = "evil\nkind: Secret";
  const std::string m = PyTorchJobManifest(PyTorchJobShape(), subject);
  EXPECT_EQ(m.find("\nkind: Secret"), std::string::npos);
  EXPECT_NE(m.find("evil?kind: Secret"), std::string::npos);
}

}  // namespace
}  // namespace kaizen::jobs
