// kaizen-worker: one rank of a data-parallel training job.
//
//   MASTER_ADDR=... MASTER_PORT=... WORLD_SIZE=W RANK=r kaizen-worker --spec=job.json
//
// The environment is Kubeflow PyTorchJob's contract (none of it: a group of
// one); the spec (TrainingWorkerSpec, proto3 JSON) is the same for every
// rank. The server's own launch passes --store_file, --rank and --world_size
// instead (a FileStore in its scratch folder: nothing listens for the
// rendezvous) and --parent_pid. Exits 0 when the rank finished, 1 with the
// reason on stderr otherwise (a peer that failed, a timeout, bad input), 2
// on bad arguments.
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

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
ABSL_FLAG(int64_t, parent_pid, 0,
          "Die with this process, the one that started this one (the server's local launch).");
ABSL_FLAG(std::string, store_file, "",
          "Meet the other ranks through a c10d FileStore at this path (a group on one "
          "machine) instead of the environment's MASTER_ADDR:MASTER_PORT; needs --rank and "
          "--world_size.");
ABSL_FLAG(int, rank, -1, "With --store_file: this process's rank.");
ABSL_FLAG(int, world_size, 0, "With --store_file: the number of ranks.");

int main(int argc, char** argv) {
  // Nothing the launcher had open (another job's sockets, the server's
  // files) stays open here.
  syscall(SYS_close_range, 3U, ~0U, 0U);
  absl::ParseCommandLine(argc, argv);
  if (const int64_t parent = absl::GetFlag(FLAGS_parent_pid); parent > 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    // The parent may have died before prctl.
    if (getppid() != static_cast<pid_t>(parent)) return 1;
  }
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
  if (const std::string store = absl::GetFlag(FLAGS_store_file); !store.empty()) {
    const int world = absl::GetFlag(FLAGS_world_size), rank = absl::GetFlag(FLAGS_rank);
    if (world < 1 || rank < 0 || rank >= world) {
      std::cerr << "kaizen-worker: --store_file needs --world_size >= 1 and --rank in [0, "
                   "world_size)\n";
      return 2;
    }
    rendezvous = kaizen::distributed::Rendezvous();
    rendezvous->store_file = store;
    rendezvous->world_size = world;
    rendezvous->rank = rank;
    rendezvous->timeout = timeout;
  }
  if (!rendezvous.ok()) {
    std::cerr << "kaizen-worker: " << rendezvous.status() << "\n";
    return 2;
  }
  // Before waiting for a group this rank cannot be part of.
  if (absl::Status st = kaizen::jobs::CheckWorkerRank(*spec, rendezvous->rank); !st.ok()) {
    std::cerr << "kaizen-worker: " << st << "\n";
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
