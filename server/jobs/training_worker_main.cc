// kaizen-worker: one rank of a data-parallel training job.
//
//   MASTER_ADDR=... MASTER_PORT=... WORLD_SIZE=W RANK=r kaizen-worker --spec=job.json
//
// The environment is Kubeflow PyTorchJob's contract (none of it: a group of
// one); the spec (TrainingWorkerSpec, proto3 JSON) is the same for every
// rank. Exits 0 when the rank finished, 1 with the reason on stderr
// otherwise (a peer that failed, a timeout, bad input).
#include <sys/prctl.h>

#include <csignal>
#include <cstdlib>
#include <iostream>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "server/jobs/training_worker.h"

ABSL_FLAG(std::string, spec, "", "The job's TrainingWorkerSpec (proto3 JSON).");
ABSL_FLAG(bool, record_digests, false,
          "Record a SHA-256 of the trainable parameters after every update in the report.");
ABSL_FLAG(bool, exit_with_parent, false,
          "Die with the process that started this one (the server's local launch).");

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  if (absl::GetFlag(FLAGS_exit_with_parent)) prctl(PR_SET_PDEATHSIG, SIGKILL);
  const std::string spec_path = absl::GetFlag(FLAGS_spec);
  if (spec_path.empty()) {
    std::cerr << "kaizen-worker: --spec is required\n";
    return 2;
  }
  absl::StatusOr<kaizen::internal::TrainingWorkerSpec> spec =
      kaizen::jobs::ReadTrainingWorkerSpec(spec_path);
  if (!spec.ok()) {
    std::cerr << "kaizen-worker: " << spec.status() << "\n";
    return 2;
  }
  const absl::Duration timeout =
      absl::Seconds(spec->timeout_seconds() > 0 ? spec->timeout_seconds() : 300);
  absl::StatusOr<kaizen::distributed::Rendezvous> rendezvous =
      kaizen::distributed::RendezvousFromEnvironment(&std::getenv, timeout);
  if (!rendezvous.ok()) {
    std::cerr << "kaizen-worker: " << rendezvous.status() << "\n";
    return 2;
  }
  std::unique_ptr<kaizen::distributed::Group> group;
  if (rendezvous->world_size > 1) {
    absl::StatusOr<std::unique_ptr<kaizen::distributed::Group>> joined =
        kaizen::distributed::Group::Join(*rendezvous);
    if (!joined.ok()) {
      std::cerr << "kaizen-worker: " << joined.status() << "\n";
      return 1;
    }
    group = std::move(*joined);
  }
  const size_t slash = spec_path.find_last_of('/');
  const std::string spec_dir = slash == std::string::npos ? "." : spec_path.substr(0, slash);
  kaizen::jobs::TrainingWorkerOptions options;
  options.record_digests = absl::GetFlag(FLAGS_record_digests);
  absl::StatusOr<kaizen::internal::TrainingWorkerReport> report =
      kaizen::jobs::RunTrainingWorker(*spec, spec_dir, group.get(), options);
  if (!report.ok()) {
    std::cerr << "kaizen-worker rank " << rendezvous->rank << ": " << report.status() << "\n";
    return 1;
  }
  std::cerr << "kaizen-worker rank " << report->rank() << " of " << report->world_size() << ": "
            << report->epochs_completed() << " epochs, " << report->steps() << " steps in "
            << report->seconds() << " s (collectives " << report->collective_seconds() << " s)\n";
  return 0;
}
