// Authentication and transport security on a real server: TLS and mutual TLS
// handshakes with certificates made in the test, every role against every
// method of every service, open health, reflection off by default, the
// tokens file reloaded on SIGHUP without dropping connections, and the
// refusal to listen openly without TLS or tokens.
#include <gmock/gmock.h>
#include <google/protobuf/descriptor.h>
#include <grpcpp/generic/generic_stub.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <fstream>
#include <map>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/lib/kaizen_client.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "inference/grpc_service.grpc.pb.h"
#include "kaizen/v1/dataset_service.grpc.pb.h"
#include "kaizen/v1/finetune_service.grpc.pb.h"
#include "kaizen/v1/inference_service.grpc.pb.h"
#include "kaizen/v1/model_service.grpc.pb.h"
#include "server/api/server.h"
#include "server/auth/roles.h"
#include "server/auth/token_file.h"
#include "tests/test_util/http_client.h"
#include "tests/test_util/python.h"
#include "tests/test_util/server_process.h"
#include "tests/test_util/temp_dir.h"
#include "tests/test_util/test_certs.h"

namespace kaizen {
namespace {

using test_util::ReadText;
using ::testing::HasSubstr;

const std::map<auth::Role, std::string> kTokens = {{auth::Role::kAdmin, "admin-secret-1"},
                                                   {auth::Role::kTrainer, "trainer-secret-2"},
                                                   {auth::Role::kPredictor, "predictor-secret-3"},
                                                   {auth::Role::kReader, "reader-secret-4"}};

void WriteTokens(const std::string& path,
                 const std::vector<std::tuple<std::string, auth::Role, std::string>>& tokens) {
  std::ofstream out(path, std::ios::trunc);
  out << "# test tokens\n";
  for (const auto& [name, role, token] : tokens) {
    out << auth::TokenFileLine(name, role, token) << "\n";
  }
  ASSERT_TRUE(out.good());
}

struct ClientTls {
  std::string ca;    // path; empty: plaintext channel
  std::string cert;  // client certificate, for mTLS
  std::string key;
};

std::shared_ptr<grpc::Channel> MakeChannel(int port, const ClientTls& tls) {
  grpc::ChannelArguments args;
  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
  if (!tls.ca.empty()) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = ReadText(tls.ca);
    if (!tls.cert.empty()) {
      ssl.pem_cert_chain = ReadText(tls.cert);
      ssl.pem_private_key = ReadText(tls.key);
    }
    creds = grpc::SslCredentials(ssl);
    // The server certificate names localhost and 127.0.0.1.
    args.SetSslTargetNameOverride("localhost");
  }
  return grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", port), creds, args);
}

// Calls `method` with one empty request message, as any kind of RPC (the
// wire is the same): sends it, half-closes, reads everything, returns the
// status. What the server makes of the empty request does not matter here.
grpc::Status CallRaw(grpc::Channel* channel, const std::string& method, const std::string& token,
                     std::string* first_response = nullptr, const std::string& request_bytes = "") {
  grpc::GenericStub stub(std::shared_ptr<grpc::Channel>(channel, [](grpc::Channel*) {}));
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
  if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
  grpc::CompletionQueue cq;
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call =
      stub.PrepareCall(&context, method, &cq);
  void* tag = nullptr;
  bool ok = false;
  call->StartCall(reinterpret_cast<void*>(1));
  cq.Next(&tag, &ok);
  grpc::Slice slice(request_bytes);
  grpc::ByteBuffer request(&slice, 1);
  call->Write(request, reinterpret_cast<void*>(2));
  cq.Next(&tag, &ok);
  call->WritesDone(reinterpret_cast<void*>(3));
  cq.Next(&tag, &ok);
  for (int i = 0;; ++i) {
    grpc::ByteBuffer response;
    call->Read(&response, reinterpret_cast<void*>(4));
    cq.Next(&tag, &ok);
    if (!ok) break;
    if (i == 0 && first_response != nullptr) {
      std::vector<grpc::Slice> slices;
      if (response.Dump(&slices).ok()) {
        for (const grpc::Slice& s : slices) {
          first_response->append(reinterpret_cast<const char*>(s.begin()), s.size());
        }
      }
    }
  }
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  cq.Next(&tag, &ok);
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  return status;
}

// Every method of the services the server exposes, from the descriptors, so
// that a new RPC without a row in the role table fails the table test.
std::vector<std::string> AllMethods() {
  std::vector<std::string> out;
  for (const char* service :
       {"kaizen.v1.DatasetService", "kaizen.v1.ModelService", "kaizen.v1.FineTuneService",
        "kaizen.v1.InferenceService", "inference.GRPCInferenceService"}) {
    const google::protobuf::ServiceDescriptor* d =
        google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(service);
    EXPECT_NE(d, nullptr) << service;
    if (d == nullptr) continue;
    for (int i = 0; i < d->method_count(); ++i) {
      out.push_back(absl::StrCat("/", service, "/", d->method(i)->name()));
    }
  }
  return out;
}

// GET /api/session over HTTPS with Python's http.client, trusting only `ca`
// (and with a client certificate when given): "STATUS BODY" or "ERROR ...".
std::string HttpsSession(int port, const ClientTls& tls, const std::string& token) {
  absl::StatusOr<std::string> out =
      test_util::RunPython({"-c", R"(
import http.client, ssl, sys
port, ca, cert, key, token = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
ctx = ssl.create_default_context(cafile=ca)
if cert:
    ctx.load_cert_chain(cert, key)
try:
    c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=20)
    c.request("GET", "/api/session", headers={"Authorization": "Bearer " + token})
    r = c.getresponse()
    print(r.status, r.read().decode(), end="")
except Exception as e:
    print("ERROR", type(e).__name__, e, end="")
)",
                            std::to_string(port), tls.ca, tls.cert, tls.key, token});
  return out.ok() ? *out : "python: " + out.status().ToString();
}

class AuthE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<test_util::TestCerts> certs = test_util::MakeTestCerts(certs_dir_.path());
    ASSERT_TRUE(certs.ok()) << certs.status();
    certs_ = *certs;
    tokens_file_ = certs_dir_.File("tokens");
    std::vector<std::tuple<std::string, auth::Role, std::string>> tokens;
    for (const auto& [role, token] : kTokens) {
      tokens.emplace_back(absl::StrCat("svc-", auth::RoleName(role)), role, token);
    }
    WriteTokens(tokens_file_, tokens);
  }

  void Start(bool mutual_tls, bool reflection = false, bool http = false) {
    api::KaizenServer::Options o;
    if (http) o.http.port = 0;
    o.data_dir = data_.path();
    o.grpc_address = "127.0.0.1:0";
    o.metrics_host = "127.0.0.1";
    o.metrics_port = -1;
    o.threads = 1;
    o.tokens_file = tokens_file_;
    o.tls = {certs_.server_cert, certs_.server_key, mutual_tls ? certs_.ca_cert : ""};
    o.reflection = reflection;
    o.health_port = 0;
    absl::StatusOr<std::unique_ptr<api::KaizenServer>> server = api::KaizenServer::Start(o);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }

  ClientTls GoodClient() const { return {certs_.ca_cert, certs_.client_cert, certs_.client_key}; }

  test_util::TempDir data_;
  test_util::TempDir certs_dir_;
  test_util::TestCerts certs_;
  std::string tokens_file_;
  std::unique_ptr<api::KaizenServer> server_;
};

TEST_F(AuthE2E, MutualTlsAcceptsOurClientCertificateAndRefusesOthers) {
  Start(/*mutual_tls=*/true);
  const std::string admin = kTokens.at(auth::Role::kAdmin);
  const int port = server_->grpc_port();
  const std::string list = "/kaizen.v1.DatasetService/ListDatasets";

  EXPECT_TRUE(CallRaw(MakeChannel(port, GoodClient()).get(), list, admin).ok());

  // The client library's TLS options do the same handshake.
  client::KaizenClient::Options options;
  options.token = admin;
  options.tls_ca_pem = ReadText(certs_.ca_cert);
  options.tls_cert_pem = ReadText(certs_.client_cert);
  options.tls_key_pem = ReadText(certs_.client_key);
  std::unique_ptr<client::KaizenClient> lib =
      client::KaizenClient::Connect(absl::StrCat("localhost:", port), options);
  absl::StatusOr<v1::ListDatasetsResponse> listed = lib->ListDatasets();
  EXPECT_TRUE(listed.ok()) << listed.status();

  struct Refused {
    const char* what;
    ClientTls tls;
  };
  for (const Refused& r : {
           Refused{"no client certificate", {certs_.ca_cert, "", ""}},
           Refused{"client certificate from another CA",
                   {certs_.ca_cert, certs_.other_client_cert, certs_.other_client_key}},
           Refused{"server not trusted (wrong CA)",
                   {certs_.other_ca_cert, certs_.client_cert, certs_.client_key}},
           Refused{"plaintext", {"", "", ""}},
       }) {
    grpc::Status s = CallRaw(MakeChannel(port, r.tls).get(), list, admin);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << r.what << ": " << s.error_message();
  }
}

TEST_F(AuthE2E, TheHttpApiServesHttpsWithTheSameCertificatesAndClientCertificates) {
  Start(/*mutual_tls=*/true, /*reflection=*/false, /*http=*/true);
  const int port = server_->http_port();
  ASSERT_GT(port, 0);
  const std::string admin = kTokens.at(auth::Role::kAdmin);
  const std::string good = HttpsSession(port, GoodClient(), admin);
  EXPECT_THAT(good, ::testing::StartsWith("200 "));
  EXPECT_THAT(good, HasSubstr(R"("role":"admin")"));
  EXPECT_THAT(HttpsSession(port, {certs_.ca_cert, "", ""}, admin), ::testing::StartsWith("ERROR"));
  EXPECT_THAT(HttpsSession(
                  port, {certs_.ca_cert, certs_.other_client_cert, certs_.other_client_key}, admin),
              ::testing::StartsWith("ERROR"));
  EXPECT_THAT(HttpsSession(port, GoodClient(), "wrong-token"), ::testing::StartsWith("401 "));
  // No plaintext answer on the HTTPS port.
  EXPECT_EQ(test_util::HttpRequest(port, "GET", "/api/session").status, 0);
}

TEST_F(AuthE2E, ServerOnlyTlsNeedsNoClientCertificate) {
  Start(/*mutual_tls=*/false);
  const std::string admin = kTokens.at(auth::Role::kAdmin);
  const std::string list = "/kaizen.v1.DatasetService/ListDatasets";
  EXPECT_TRUE(
      CallRaw(MakeChannel(server_->grpc_port(), {certs_.ca_cert, "", ""}).get(), list, admin).ok());
  EXPECT_EQ(
      CallRaw(MakeChannel(server_->grpc_port(), {certs_.other_ca_cert, "", ""}).get(), list, admin)
          .error_code(),
      grpc::StatusCode::UNAVAILABLE);
}

TEST_F(AuthE2E, EveryRoleAgainstEveryMethod) {
  Start(/*mutual_tls=*/true);
  std::shared_ptr<grpc::Channel> channel = MakeChannel(server_->grpc_port(), GoodClient());
  const std::vector<std::string> methods = AllMethods();
  ASSERT_GE(methods.size(), 21u);
  const std::vector<std::string> table = auth::MethodsInTable();
  const std::set<std::string> in_table(table.begin(), table.end());
  const std::set<std::string> in_protos(methods.begin(), methods.end());
  for (const std::string& row : table) {
    EXPECT_EQ(in_protos.count(row), 1u) << "the role table names " << row << ", no such RPC";
  }
  for (const std::string& method : methods) {
    EXPECT_EQ(in_table.count(method), 1u) << method << " has no row in the role table";

    // No token, or an unknown one: UNAUTHENTICATED whatever the method.
    EXPECT_EQ(CallRaw(channel.get(), method, "").error_code(), grpc::StatusCode::UNAUTHENTICATED)
        << method;
    EXPECT_EQ(CallRaw(channel.get(), method, "forged-token").error_code(),
              grpc::StatusCode::UNAUTHENTICATED)
        << method;

    for (const auto& [role, token] : kTokens) {
      grpc::Status s = CallRaw(channel.get(), method, token);
      const std::string where = absl::StrCat(auth::RoleName(role), " -> ", method, ": ",
                                             s.error_code(), " ", s.error_message());
      if (auth::RoleAllows(role, method)) {
        // Past the gate: the empty request meets the handler, which may well
        // refuse it for what it is, but not for who sent it.
        EXPECT_NE(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << where;
        EXPECT_NE(s.error_code(), grpc::StatusCode::UNAUTHENTICATED) << where;
        EXPECT_NE(s.error_code(), grpc::StatusCode::UNIMPLEMENTED) << where;
      } else {
        ASSERT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << where;
        EXPECT_THAT(s.error_message(), HasSubstr(absl::StrCat("role \"", auth::RoleName(role))))
            << where;
        EXPECT_THAT(s.error_message(), HasSubstr(method)) << where;
      }
    }
  }
}

TEST_F(AuthE2E, HealthIsOpenOnBothListenersAndOnlyHealthOnThePlaintextOne) {
  Start(/*mutual_tls=*/true);
  const absl::Time give_up = absl::Now() + absl::Seconds(60);
  while (!server_->ready() && absl::Now() < give_up) absl::SleepFor(absl::Milliseconds(50));
  ASSERT_TRUE(server_->ready());
  ASSERT_GT(server_->health_port(), 0);
  for (std::shared_ptr<grpc::Channel> channel :
       {MakeChannel(server_->grpc_port(), GoodClient()),
        MakeChannel(server_->health_port(), {"", "", ""})}) {
    auto health = grpc::health::v1::Health::NewStub(channel);
    grpc::ClientContext context;  // no token
    grpc::health::v1::HealthCheckRequest request;
    request.set_service("kaizen.v1.InferenceService");
    grpc::health::v1::HealthCheckResponse response;
    grpc::Status s = health->Check(&context, request, &response);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(response.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  }
  EXPECT_EQ(CallRaw(MakeChannel(server_->health_port(), {"", "", ""}).get(),
                    "/kaizen.v1.DatasetService/ListDatasets", kTokens.at(auth::Role::kAdmin))
                .error_code(),
            grpc::StatusCode::UNIMPLEMENTED);
}

// ServerReflectionRequest{list_services: "*"} (field 7).
const std::string kListServices = std::string("\x3a\x01*", 3);
constexpr char kReflection[] = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";

TEST_F(AuthE2E, ReflectionIsOffUnlessAskedFor) {
  Start(/*mutual_tls=*/true);
  EXPECT_EQ(CallRaw(MakeChannel(server_->grpc_port(), GoodClient()).get(), kReflection,
                    kTokens.at(auth::Role::kAdmin), nullptr, kListServices)
                .error_code(),
            grpc::StatusCode::UNIMPLEMENTED);
}

TEST_F(AuthE2E, ReflectionListsTheServicesWhenEnabled) {
  Start(/*mutual_tls=*/true, /*reflection=*/true);
  std::string response;
  grpc::Status s = CallRaw(MakeChannel(server_->grpc_port(), GoodClient()).get(), kReflection,
                           kTokens.at(auth::Role::kAdmin), &response, kListServices);
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_THAT(response, HasSubstr("kaizen.v1.FineTuneService"));
  // Reflection is not offered on the health-only listener.
  EXPECT_EQ(CallRaw(MakeChannel(server_->health_port(), {"", "", ""}).get(), kReflection, "",
                    nullptr, kListServices)
                .error_code(),
            grpc::StatusCode::UNIMPLEMENTED);
}

void CopyFile(const std::string& from, const std::string& to) {
  std::ofstream(to, std::ios::trunc | std::ios::binary) << ReadText(from);
}

TEST_F(AuthE2E, RotatedCertificatesApplyAndABrokenRotationKeepsTheOldOnes) {
  // The operator's files, rotated in place.
  const std::string cert = certs_dir_.File("live.crt");
  const std::string key = certs_dir_.File("live.key");
  CopyFile(certs_.server_cert, cert);
  CopyFile(certs_.server_key, key);
  api::KaizenServer::Options o;
  o.data_dir = data_.path();
  o.grpc_address = "127.0.0.1:0";
  o.metrics_port = -1;
  o.threads = 1;
  o.tokens_file = tokens_file_;
  o.tls = {cert, key, ""};
  o.tls_reload_seconds = 1;
  o.http.port = 0;  // HTTPS rotates with gRPC
  absl::StatusOr<std::unique_ptr<api::KaizenServer>> server = api::KaizenServer::Start(o);
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->grpc_port();
  const std::string admin = kTokens.at(auth::Role::kAdmin);
  const std::string list = "/kaizen.v1.DatasetService/ListDatasets";
  auto works_with = [&](const std::string& ca) {
    return CallRaw(MakeChannel(port, {ca, "", ""}).get(), list, admin).ok();
  };
  ASSERT_TRUE(works_with(certs_.ca_cert));

  // Mid-copy states: an empty key (gRPC itself would abort on it), then a
  // key that does not match the certificate. Neither reaches gRPC.
  { std::ofstream(key, std::ios::trunc); }
  absl::SleepFor(absl::Seconds(3));
  EXPECT_TRUE(works_with(certs_.ca_cert));
  CopyFile(certs_.other_server_key, key);
  absl::SleepFor(absl::Seconds(3));
  EXPECT_TRUE(works_with(certs_.ca_cert));
  EXPECT_FALSE(works_with(certs_.other_ca_cert));

  // The rotation completes: the new certificate (another CA) is served.
  CopyFile(certs_.other_server_cert, cert);
  const absl::Time give_up = absl::Now() + absl::Seconds(15);
  while (!works_with(certs_.other_ca_cert) && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(200));
  }
  EXPECT_TRUE(works_with(certs_.other_ca_cert));
  EXPECT_FALSE(works_with(certs_.ca_cert));
  const int http = (*server)->http_port();
  EXPECT_THAT(HttpsSession(http, {certs_.other_ca_cert, "", ""}, admin),
              ::testing::StartsWith("200 "));
  EXPECT_THAT(HttpsSession(http, {certs_.ca_cert, "", ""}, admin), ::testing::StartsWith("ERROR"));
}

TEST_F(AuthE2E, BadTlsFilesStopStartUpNamingTheFile) {
  api::KaizenServer::Options o;
  o.data_dir = data_.path();
  o.grpc_address = "127.0.0.1:0";
  o.metrics_port = -1;
  o.tls = {certs_.server_cert, certs_.client_key, ""};
  absl::StatusOr<std::unique_ptr<api::KaizenServer>> server = api::KaizenServer::Start(o);
  ASSERT_FALSE(server.ok());
  EXPECT_THAT(server.status().message(), HasSubstr(certs_.client_key));
}

TEST_F(AuthE2E, TlsAloneOrTokensAloneDoNotOpenAnAddress) {
  for (bool tls : {true, false}) {
    api::KaizenServer::Options o;
    o.data_dir = data_.path();
    o.grpc_address = "0.0.0.0:0";
    o.metrics_port = -1;
    if (tls) {
      o.tls = {certs_.server_cert, certs_.server_key, ""};  // no tokens, no client CA
    } else {
      o.tokens_file = tokens_file_;  // tokens in clear text
    }
    absl::StatusOr<std::unique_ptr<api::KaizenServer>> server = api::KaizenServer::Start(o);
    ASSERT_EQ(server.status().code(), absl::StatusCode::kFailedPrecondition) << tls;
    EXPECT_THAT(server.status().message(), HasSubstr(tls ? "lets anyone call" : "clear text"));
  }
}

TEST_F(AuthE2E, OpenAddressWithoutTlsOrTokensIsRefused) {
  api::KaizenServer::Options o;
  o.data_dir = data_.path();
  o.grpc_address = "0.0.0.0:0";
  o.metrics_port = -1;
  absl::StatusOr<std::unique_ptr<api::KaizenServer>> server = api::KaizenServer::Start(o);
  ASSERT_EQ(server.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(server.status().message(), HasSubstr("--insecure"));
}

// The real binary: flags, the signal thread, the log.
class AuthProcessE2E : public ::testing::Test {
 protected:
  std::string Log() const { return ReadText(data_.path() + "/server.log"); }

  test_util::TempDir data_;
  test_util::TempDir files_;
};

grpc::StatusCode ListWith(grpc::Channel* channel, const std::string& token) {
  return CallRaw(channel, "/kaizen.v1.DatasetService/ListDatasets", token).error_code();
}

TEST_F(AuthProcessE2E, SighupReloadsTokensWithoutDroppingTheConnection) {
  const std::string tokens = files_.File("tokens");
  WriteTokens(tokens, {{"old-admin", auth::Role::kAdmin, "old-token-aaaa"}});
  const int port = test_util::FreeLoopbackPort();
  test_util::ServerProcess server(KAIZEN_BINARY_DIR, data_.path(), port,
                                  {absl::StrCat("--tokens_file=", tokens)});
  std::shared_ptr<grpc::Channel> channel = MakeChannel(port, {"", "", ""});
  const absl::Time give_up = absl::Now() + absl::Seconds(60);
  while (ListWith(channel.get(), "old-token-aaaa") != grpc::StatusCode::OK &&
         absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_EQ(ListWith(channel.get(), "old-token-aaaa"), grpc::StatusCode::OK) << Log();
  ASSERT_EQ(channel->GetState(false), GRPC_CHANNEL_READY);

  // Rotate: the old token goes, a new one (a reader) comes.
  WriteTokens(tokens, {{"new-reader", auth::Role::kReader, "new-token-bbbb"}});
  ASSERT_EQ(kill(server.pid(), SIGHUP), 0);
  const absl::Time reload_by = absl::Now() + absl::Seconds(20);
  while (ListWith(channel.get(), "new-token-bbbb") != grpc::StatusCode::OK &&
         absl::Now() < reload_by) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_EQ(ListWith(channel.get(), "new-token-bbbb"), grpc::StatusCode::OK) << Log();
  EXPECT_EQ(ListWith(channel.get(), "old-token-aaaa"), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(CallRaw(channel.get(), "/kaizen.v1.DatasetService/DeleteDataset", "new-token-bbbb")
                .error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  // Same connection all along: the channel never left READY.
  EXPECT_EQ(channel->GetState(false), GRPC_CHANNEL_READY);

  // A broken file on SIGHUP: logged, and the tokens in force stay.
  { std::ofstream(tokens, std::ios::trunc) << "new-reader reader not-a-hash\n"; }
  ASSERT_EQ(kill(server.pid(), SIGHUP), 0);
  const absl::Time logged_by = absl::Now() + absl::Seconds(20);
  while (!absl::StrContains(Log(), "tokens not reloaded") && absl::Now() < logged_by) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_THAT(Log(), HasSubstr("tokens not reloaded"));
  EXPECT_EQ(ListWith(channel.get(), "new-token-bbbb"), grpc::StatusCode::OK);
  EXPECT_EQ(waitpid(server.pid(), nullptr, WNOHANG), 0) << "the server must still run";

  // The request log names the token, never the token itself.
  const std::string log = Log();
  EXPECT_THAT(log, HasSubstr("\"caller\":\"new-reader\""));
  EXPECT_THAT(log, HasSubstr("\"caller\":\"old-admin\""));
  EXPECT_THAT(log, ::testing::Not(HasSubstr("old-token-aaaa")));
  EXPECT_THAT(log, ::testing::Not(HasSubstr("new-token-bbbb")));
}

TEST_F(AuthProcessE2E, RefusesAnOpenAddressWithoutTlsOrTokensUnlessInsecure) {
  test_util::ServerProcess refused(KAIZEN_BINARY_DIR, data_.path(), test_util::FreeLoopbackPort(),
                                   {"--host=0.0.0.0"});
  const int status = refused.Wait();
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 2);
  EXPECT_THAT(Log(), HasSubstr("--insecure"));

  // The operator's explicit choice is honoured, with a warning.
  const int port = test_util::FreeLoopbackPort();
  test_util::ServerProcess open(KAIZEN_BINARY_DIR, data_.path(), port,
                                {"--host=0.0.0.0", "--insecure"});
  std::shared_ptr<grpc::Channel> channel = MakeChannel(port, {"", "", ""});
  const absl::Time give_up = absl::Now() + absl::Seconds(60);
  while (ListWith(channel.get(), "") != grpc::StatusCode::OK && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_EQ(ListWith(channel.get(), ""), grpc::StatusCode::OK);
  EXPECT_THAT(Log(), HasSubstr("listening off loopback on an unprotected port"));
}

TEST_F(AuthProcessE2E, SaysItListensOnLoopbackOnlyWithoutTlsOrTokens) {
  const int port = test_util::FreeLoopbackPort();
  {
    test_util::ServerProcess server(KAIZEN_BINARY_DIR, data_.path(), port, {"--host="});
    std::shared_ptr<grpc::Channel> channel = MakeChannel(port, {"", "", ""});
    const absl::Time give_up = absl::Now() + absl::Seconds(60);
    while (ListWith(channel.get(), "") != grpc::StatusCode::OK && absl::Now() < give_up) {
      absl::SleepFor(absl::Milliseconds(100));
    }
    EXPECT_EQ(ListWith(channel.get(), ""), grpc::StatusCode::OK);
  }
  EXPECT_THAT(Log(), HasSubstr("listening on loopback only"));
  EXPECT_THAT(Log(), HasSubstr("\"grpc_address\":\"127.0.0.1:"));
}

}  // namespace
}  // namespace kaizen
