#include "tests/test_util/test_certs.h"

#include <cstdlib>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "server/common/atomic_file.h"

namespace kaizen::test_util {
namespace {

absl::Status Run(const std::string& command) {
  const std::string quiet = absl::StrCat(command, " >/dev/null 2>&1");
  if (std::system(quiet.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("failed: ", command));
  }
  return absl::OkStatus();
}

// A P-256 key and a certificate for `cn` signed by `ca` (or self-signed CA
// when `ca` is empty) with the given extensions.
absl::Status MakeCert(const std::string& dir, const std::string& name, const std::string& cn,
                      const std::string& ca, const std::string& extensions) {
  const std::string base = absl::StrCat(dir, "/", name);
  const std::string key_opts = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
  if (ca.empty()) {
    return Run(absl::StrCat("openssl req -x509 ", key_opts, " -days 2 -subj '/CN=", cn,
                            "' -keyout ", base, ".key -out ", base, ".crt"));
  }
  {
    std::ofstream ext(base + ".ext");
    ext << extensions;
    if (!ext) return absl::InternalError("cannot write " + base + ".ext");
  }
  const std::string ca_base = absl::StrCat(dir, "/", ca);
  if (absl::Status s = Run(absl::StrCat("openssl req ", key_opts, " -subj '/CN=", cn, "' -keyout ",
                                        base, ".key -out ", base, ".csr"));
      !s.ok()) {
    return s;
  }
  return Run(absl::StrCat("openssl x509 -req -in ", base, ".csr -CA ", ca_base, ".crt -CAkey ",
                          ca_base, ".key -CAcreateserial -days 2 -extfile ", base, ".ext -out ",
                          base, ".crt"));
}

}  // namespace

absl::StatusOr<TestCerts> MakeTestCerts(const std::string& dir) {
  const std::string server_ext =
      "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
      "extendedKeyUsage=serverAuth\n";
  const std::string client_ext = "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n";
  for (const auto& [name, cn, ca, ext] :
       {std::tuple<std::string, std::string, std::string, std::string>{"ca", "Kaizen Test CA", "",
                                                                       ""},
        {"server", "localhost", "ca", server_ext},
        {"client", "trainer-service", "ca", client_ext},
        {"other-ca", "Somebody Else CA", "", ""},
        {"other-client", "intruder", "other-ca", client_ext},
        {"other-server", "localhost", "other-ca", server_ext}}) {
    if (absl::Status s = MakeCert(dir, name, cn, ca, ext); !s.ok()) return s;
  }
  auto path = [&](const std::string& f) { return absl::StrCat(dir, "/", f); };
  return TestCerts{path("ca.crt"),           path("server.crt"),       path("server.key"),
                   path("client.crt"),       path("client.key"),       path("other-ca.crt"),
                   path("other-client.crt"), path("other-client.key"), path("other-server.crt"),
                   path("other-server.key")};
}

std::string ReadText(const std::string& path) {
  std::string text;
  return common::ReadFile(path, &text).ok() ? text : std::string();
}

}  // namespace kaizen::test_util
