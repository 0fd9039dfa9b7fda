#include "tests/test_util/postgres.h"

#include <libpq-fe.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "tests/test_util/python.h"

namespace kaizen::test_util {
namespace {

std::string Script() { return std::string(KAIZEN_SOURCE_DIR) + "/tests/postgres/postgres.sh"; }

// The server this process started, stopped at exit.
struct OwnServer {
  std::string info_file;
  ~OwnServer() {
    if (!info_file.empty()) RunProgram({"bash", Script(), "stop", info_file}).IgnoreError();
  }
};

absl::StatusOr<std::string> ReadSocketFolder(const std::string& info_file) {
  std::ifstream in(info_file);
  std::string folder;
  if (!in || !std::getline(in, folder) || folder.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("no PostgreSQL server is described by ", info_file));
  }
  return std::string(absl::StripAsciiWhitespace(folder));
}

absl::StatusOr<std::string> SocketFolder() {
  static absl::Mutex mu(absl::kConstInit);
  static std::string* folder = nullptr;
  static OwnServer own;
  absl::MutexLock lock(&mu);
  if (folder) return *folder;
  std::string info;
  if (const char* env = std::getenv("KAIZEN_TEST_POSTGRES_INFO"); env && *env) {
    info = env;
  } else {
    info = absl::StrCat("/tmp/kaizen-pg-info-", getpid());
    absl::StatusOr<std::string> started = RunProgram({"bash", Script(), "start", info});
    if (!started.ok()) return started.status();
    own.info_file = info;
  }
  absl::StatusOr<std::string> read = ReadSocketFolder(info);
  if (!read.ok()) return read.status();
  folder = new std::string(*read);
  return *folder;
}

}  // namespace

absl::StatusOr<std::string> FreshPostgresDatabase() {
  absl::StatusOr<std::string> folder = SocketFolder();
  if (!folder.ok()) return folder.status();
  static std::atomic<int> counter{0};
  const std::string name = absl::StrCat("kz_", getpid(), "_", counter++, "_", std::rand() % 100000);
  const std::string admin = absl::StrCat("host=", *folder, " user=kaizen dbname=postgres");
  std::unique_ptr<PGconn, void (*)(PGconn*)> conn(PQconnectdb(admin.c_str()), PQfinish);
  if (PQstatus(conn.get()) != CONNECTION_OK) {
    return absl::UnavailableError(
        absl::StrCat("test PostgreSQL at ", *folder, ": ", PQerrorMessage(conn.get())));
  }
  PGresult* r = PQexec(conn.get(), absl::StrCat("CREATE DATABASE ", name).c_str());
  const bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
  const std::string error = ok ? "" : PQresultErrorMessage(r);
  PQclear(r);
  if (!ok) return absl::InternalError(absl::StrCat("CREATE DATABASE ", name, ": ", error));
  return absl::StrCat("postgresql:///", name, "?host=", *folder, "&user=kaizen");
}

std::string EngineName(Engine engine) {
  return engine == Engine::kSqlite ? "SQLite" : "PostgreSQL";
}

absl::StatusOr<std::string> CatalogueFor(Engine engine, const std::string& sqlite_path) {
  if (engine == Engine::kSqlite) return sqlite_path;
  return FreshPostgresDatabase();
}

}  // namespace kaizen::test_util
