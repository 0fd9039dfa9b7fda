// The catalogue of datasets and model versions in SQL (SQLite or PostgreSQL). Each row keeps the
// resource's proto (the API's view of it) next to the relative path of the
// blob file that holds its data. Rows and files are kept consistent by the
// stores above this class: files are committed before rows are inserted and
// deleted after rows are removed, and orphans are swept at start-up.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kaizen/v1/dataset_service.pb.h"
#include "kaizen/v1/model_service.pb.h"
#include "server/store/database.h"

namespace kaizen::store {

struct DatasetRow {
  std::string file;  // relative to the data directory
  kaizen::v1::Dataset dataset;
};

// The lease a job's run must hold for a version it writes to be stored:
// `owner` (a replica) on job `job_id`, live at `now_ms()`, read in the
// insertion's transaction.
struct JobLease {
  std::string job_id;
  std::string owner;
  std::function<int64_t()> now_ms;
};

struct ModelRow {
  std::string file;  // relative to the data directory
  kaizen::v1::Model model;
};

class MetadataStore {
 public:
  // Opens the database (an SQLite file, created if needed, or a PostgreSQL
  // URL; see Database::Open) and creates its schema if needed.
  static absl::StatusOr<std::unique_ptr<MetadataStore>> Open(const std::string& database);

  // ALREADY_EXISTS when the name is taken.
  absl::Status InsertDataset(const DatasetRow& row);
  // NOT_FOUND when absent.
  absl::StatusOr<DatasetRow> GetDataset(const std::string& name);
  absl::StatusOr<bool> DatasetExists(const std::string& name);
  // Datasets with name > `after`, in name order, at most `limit`.
  absl::StatusOr<std::vector<DatasetRow>> ListDatasets(const std::string& after, int limit);
  // Removes the row and returns it (so the caller can delete its file).
  absl::StatusOr<DatasetRow> DeleteDataset(const std::string& name);

  // ALREADY_EXISTS when (name, version) is taken. With
  // `unless_a_job_writes` (an upload; needs the job table, JobStore::Open),
  // also when an active job of any replica has the model as its output
  // (ActiveJobWriting), checked in the insertion's write transaction so that
  // a name goes to one upload or to one job (JobStore::Insert). With
  // `lease` (a job's version, replicas on one database), ABORTED unless the
  // lease is live in that transaction (LeaseIsLive), so that a replica that
  // stalled past its lease stores no version of a job another one runs.
  absl::Status InsertModel(const ModelRow& row, bool unless_a_job_writes = false,
                           const JobLease* lease = nullptr);
  // version 0: the newest. NOT_FOUND when absent.
  absl::StatusOr<ModelRow> GetModel(const std::string& name, int64_t version);
  absl::StatusOr<bool> ModelExists(const std::string& name);
  // Ascending versions of `name` (empty when none).
  absl::StatusOr<std::vector<int64_t>> ModelVersions(const std::string& name);
  // Model versions ordered by (name, version) strictly after
  // (after_name, after_version); with latest_only, one row per name (newest).
  // A non-empty `only_name` restricts the list to that model.
  absl::StatusOr<std::vector<ModelRow>> ListModels(const std::string& after_name,
                                                   int64_t after_version, int limit,
                                                   bool latest_only, const std::string& only_name);
  // version 0: every version. Returns the removed rows; NOT_FOUND if none.
  // With `only_sha256`, one version and only while it is still the file with
  // that digest (NOT_FOUND otherwise): a number is handed out again once its
  // version is deleted, so a version is withdrawn by its bytes, not its
  // number.
  absl::StatusOr<std::vector<ModelRow>> DeleteModel(const std::string& name, int64_t version,
                                                    absl::string_view only_sha256 = {});

  // Stores `evaluation` as the test_evaluation of one version (NOT_FOUND when
  // it does not exist; INVALID_ARGUMENT when the record would exceed
  // common::kMaxRecordBytes).
  absl::Status SetTestEvaluation(const std::string& name, int64_t version,
                                 const kaizen::v1::Evaluation& evaluation);

  // Quarantine: model versions that failed or crashed the server while
  // loading for serving, so that they are skipped from then on (also after a
  // restart) instead of retried in a loop. DeleteModel clears them.
  absl::Status QuarantineModel(const std::string& name, int64_t version, const std::string& reason);
  // Removes the quarantine of a version if its reason starts with
  // `reason_prefix`, in one transaction; the reason removed, if it did.
  absl::StatusOr<std::optional<std::string>> LiftQuarantine(const std::string& name,
                                                            int64_t version,
                                                            const std::string& reason_prefix);
  // Quarantined versions of `name` and why.
  absl::StatusOr<std::map<int64_t, std::string>> QuarantinedVersions(const std::string& name);
  // A durable marker held by `owner` (a replica's id) while it loads a
  // version, leased for `lease_ms` by the database's clock: one left behind
  // at the owner's next start, or whose lease ran out (the owner renews the
  // markers of its loads in progress while it lives), means that the owner
  // died loading the version. Several owners may mark one version at once.
  // Every write of markers holds the database's write lock, so a marker is
  // never renewed between another replica's reading that it expired and
  // taking it.
  absl::Status MarkLoading(const std::string& name, int64_t version, const std::string& owner,
                           int64_t lease_ms);
  absl::Status ClearLoading(const std::string& name, int64_t version, const std::string& owner);
  // Extends to `lease_ms` from now the lease of `owner`'s markers of
  // `loading` (its loads in progress) and removes its other markers (one a
  // failed ClearLoading left).
  absl::Status RenewLoadingMarkers(const std::string& owner, int64_t lease_ms,
                                   const std::vector<std::pair<std::string, int64_t>>& loading);
  struct LoadingMarker {
    std::string name;
    int64_t version = 0;
    std::string owner;  // empty: a server from before markers had owners
    bool operator==(const LoadingMarker& o) const {
      return name == o.name && version == o.version && owner == o.owner;
    }
  };
  // Why a taken marker's version is quarantined.
  using MarkerReason = std::function<std::string(const LoadingMarker&)>;
  // Removes the markers `owner` left behind and those of other owners whose
  // lease ran out more than `grace_ms` ago, or, with `every_owner` (a lone
  // server), every marker, with those servers from before markers had
  // leases or owners left; and, in the same transaction, quarantines each
  // version taken that still exists, with `reason`. Returns the markers
  // taken, each version once, ordered by name and version.
  absl::StatusOr<std::vector<LoadingMarker>> TakeLoadingMarkers(const std::string& owner,
                                                                bool every_owner, int64_t grace_ms,
                                                                const MarkerReason& reason);
  // As TakeLoadingMarkers, for the markers whose lease ran out, whoever
  // left them; a read without the write lock when there are none.
  absl::StatusOr<std::vector<LoadingMarker>> TakeExpiredLoadingMarkers(const MarkerReason& reason);

  // The connection, shared with the JobStore (one database).
  Database* db() { return db_.get(); }

  // Every blob path referenced by a row, for sweeping orphan files.
  absl::StatusOr<std::vector<std::string>> AllFiles();

  // The catalogue's name: random, made when the database is first opened
  // and the same for every replica that shares it (the `catalogue` label of
  // the catalogue-wide metrics, so that dashboards count each catalogue's
  // jobs once however many replicas report them).
  const std::string& catalogue_id() const { return catalogue_id_; }

 private:
  explicit MetadataStore(std::unique_ptr<Database> db) : db_(std::move(db)) {}
  // Creates the tables and the catalogue's name where they are missing.
  absl::Status CreateSchema();
  // QuarantineModel's write, with the connection's lock held.
  absl::Status WriteQuarantine(const std::string& name, int64_t version, const std::string& reason);
  enum class Take { kEvery, kOwnAndExpired, kExpired };
  absl::StatusOr<std::vector<LoadingMarker>> TakeMarkers(Take which, const std::string& owner,
                                                         int64_t grace_ms,
                                                         const MarkerReason& reason);

  std::unique_ptr<Database> db_;
  std::string catalogue_id_;
};

}  // namespace kaizen::store
