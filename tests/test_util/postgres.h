// Fresh PostgreSQL databases for tests, on a private server that only listens
// on a Unix socket (tests/postgres/postgres.sh). Each test process starts its
// own server on first use (under a second) and stops it when it exits; a
// developer can point KAIZEN_TEST_POSTGRES_INFO at the info file of a server
// started by hand to share one.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace kaizen::test_util {

// Creates an empty database with a name of its own and returns its libpq
// URL (postgresql:///NAME?host=SOCKET_FOLDER&user=kaizen).
absl::StatusOr<std::string> FreshPostgresDatabase();

// The catalogue engines a store test runs against.
enum class Engine { kSqlite, kPostgres };
std::string EngineName(Engine engine);

// Where a store under test keeps its catalogue: `sqlite_path` for SQLite, a
// fresh PostgreSQL database otherwise.
absl::StatusOr<std::string> CatalogueFor(Engine engine, const std::string& sqlite_path);

}  // namespace kaizen::test_util
