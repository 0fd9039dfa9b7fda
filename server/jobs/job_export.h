// A job exported to run outside the server (FineTuneService.ExportJob): the
// Kubeflow PyTorchJob manifest of kaizen-worker pods that train from a
// folder of the shared data volume (written by WriteTrainingFolder).
#pragma once

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
};

inline constexpr int kMaxExportWorldSize = 1024;
inline constexpr int kMaxExportThreads = 256;

// `request`'s shape with defaults for what it leaves unset (`job_world_size`
// for world_size 0), or InvalidArgument naming the field that is out of
// range: world_size 1..1024, threads 1..256, an image reference (at most 255
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
// requested, and the server's pod hardening (non-root, read-only root, no
// capabilities, no recursive ownership change of the volume). The training
// operator sets MASTER_ADDR, MASTER_PORT, WORLD_SIZE and RANK.
std::string PyTorchJobManifest(const PyTorchJobShape& shape, const PyTorchJobSubject& subject);

}  // namespace kaizen::jobs
