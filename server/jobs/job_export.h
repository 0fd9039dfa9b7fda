// A job exported to run outside the server (FineTuneService.ExportJob): the
// Kubeflow PyTorchJob manifest of kaizen-worker pods that train from a
// folder of the shared data volume (written by WriteTrainingFolder).
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kaizen/v1/finetune_service.pb.h"

namespace kaizen::jobs {

// The fields of ExportJobRequest that shape the pods, with their defaults
// applied (ResolvePyTorchJobShape).
struct PyTorchJobShape {
  int world_size = 1;
  int threads = 4;
  std::string image = "kaizen";
  std::string volume_claim = "kaizen-data";
  // Each pod's memory request and limit; 0 until the server resolves it
  // (ExportMemoryMb) when the request names none.
  int64_t memory_mb = 0;
};

inline constexpr int kMaxExportWorldSize = 1024;
inline constexpr int kMaxExportThreads = 256;
inline constexpr int64_t kMinExportMemoryMb = 256;
inline constexpr int64_t kMaxExportMemoryMb = int64_t{1} << 20;
// For a process's activations, the loader's prefetched batches (at most
// 256 MiB) and LibTorch itself: a FINE_TUNE job of resnet18 at 224x224,
// batch 32, peaked at 1.2-1.4 GB in all (bench/RESULTS.md, 2026-12-02).
inline constexpr int64_t kExportRuntimeMb = 2048;

// The memory, in MiB rounded up, that one kaizen-worker process of an export
// is given when the request names none: the budgets the server's flags give
// a job, which the spec passes on to the pods (`image_budget_bytes` of
// images held in memory, `prefix_cache_bytes` of frozen-prefix outputs),
// four times `parameter_bytes` (the model's weights, their gradients and
// Adam's two moments), twice `frozen_bytes` (a DISTILL teacher's weights:
// the module loaded and the trainer's own copy) and kExportRuntimeMb; at
// most kMaxExportMemoryMb.
int64_t ExportMemoryMb(int64_t image_budget_bytes, int64_t prefix_cache_bytes,
                       int64_t parameter_bytes, int64_t frozen_bytes = 0);

// `request`'s shape with defaults for what it leaves unset (`job_world_size`
// for world_size 0), or InvalidArgument naming the field that is out of
// range: world_size 1..1024, threads 1..256, memory_mb 256..1048576 (0 is
// left for the server to resolve), an image reference (at most 255
// characters of letters, digits and ._-/:@) and a volume claim (a DNS-1123
// subdomain). Nothing the manifest quotes can break out of its YAML.
absl::StatusOr<PyTorchJobShape> ResolvePyTorchJobShape(const kaizen::v1::ExportJobRequest& request,
                                                       int job_world_size);

// What the manifest says about the job besides its shape.
struct PyTorchJobSubject {
  // The exported job's id and the export's folder name under exports/ (the
  // PyTorchJob's name is "kaizen-" + folder).
  std::string job_id;
  std::string folder;
  // For the manifest's header comment.
  std::string strategy;
  std::string starts_from;
  // The group's restarts before the operator marks it failed (runPolicy's
  // backoffLimit), as the server's --max_job_attempts allows its own runs.
  int max_restarts = 2;
};

// Two YAML documents. First a NetworkPolicy that lets the export's pods
// reach each other and port 53 (DNS) only: not the server's API, nor
// anything else in the namespace, which the pods share with the claim. Then
// the PyTorchJob (kubeflow.org/v1) of `shape`: one Master and
// world_size - 1 Workers, each a "pytorch" container running
// `kaizen-worker --spec=/job/spec.json` with the claim's exports/<folder>
// mounted read-only at /job and its out/ writable at /job/out (nothing else
// of the volume: the record files are links to the server's), `threads` CPUs
// requested, `memory_mb` MiB requested and as the limit, and the server's pod
// hardening (non-root, read-only root, no
// capabilities, no recursive ownership change of the volume). The training
// operator sets MASTER_ADDR, MASTER_PORT, WORLD_SIZE and RANK.
std::string PyTorchJobManifest(const PyTorchJobShape& shape, const PyTorchJobSubject& subject);

}  // namespace kaizen::jobs
