// A real Prometheus (Debian's `prometheus` binary) scrapes a real Kaizen
// server on loopback every second, with deploy/prometheus/kaizen-alerts.yml
// loaded, while the server trains a job and answers Predict load. The
// training and serving series are then read back through Prometheus's HTTP
// query API and compared with what the test did; promtool lints a raw
// scrape; the dashboard's and alerts' metric names are checked against the
// scrape and the registry.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <set>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "client/lib/kaizen_client.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "server/api/server.h"
#include "server/metrics/metrics.h"
#include "tests/test_util/fashion_mnist.h"
#include "tests/test_util/http_get.h"
#include "tests/test_util/promql_names.h"
#include "tests/test_util/temp_dir.h"

namespace kaizen {
namespace {

using google::protobuf::Struct;
using google::protobuf::Value;

const std::string kAlerts = std::string(KAIZEN_SOURCE_DIR) + "/deploy/prometheus/kaizen-alerts.yml";
const std::string kDashboard =
    std::string(KAIZEN_SOURCE_DIR) + "/deploy/grafana/kaizen-dashboard.json";

// The executable `name` on PATH, or "".
std::string FindOnPath(const std::string& name) {
  const char* path = std::getenv("PATH");
  for (absl::string_view dir : absl::StrSplit(path ? path : "/usr/bin:/bin", ':')) {
    const std::string candidate = absl::StrCat(dir, "/", name);
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

// A port nothing listens on now (the kernel's choice for 127.0.0.1:0).
int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  socklen_t len = sizeof(addr);
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  close(fd);
  return port;
}

std::string UrlEncode(absl::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (absl::ascii_isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      absl::StrAppend(&out, "%", absl::Hex(c, absl::kZeroPad2));
    }
  }
  return out;
}

std::string Body(const std::string& response) {
  const size_t at = response.find("\r\n\r\n");
  return at == std::string::npos ? "" : response.substr(at + 4);
}

// One sample of an instant query's answer.
struct Sample {
  std::map<std::string, std::string> labels;
  double value = std::nan("");
};

// A Prometheus server process on 127.0.0.1 with its own configuration and
// storage; stopped with SIGTERM when destroyed.
class PrometheusProcess {
 public:
  PrometheusProcess(const std::string& binary, const std::string& dir, int port,
                    const std::string& config)
      : port_(port) {
    const std::string config_path = dir + "/prometheus.yml";
    std::ofstream(config_path) << config;
    std::vector<std::string> args = {
        binary, "--config.file=" + config_path, "--storage.tsdb.path=" + dir + "/data",
        absl::StrCat("--web.listen-address=127.0.0.1:", port), "--log.level=warn"};
    log_ = dir + "/prometheus.log";
    pid_ = fork();
    if (pid_ == 0) {
      std::vector<char*> argv;
      for (std::string& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      if (freopen(log_.c_str(), "a", stdout) == nullptr ||
          freopen(log_.c_str(), "a", stderr) == nullptr) {
        _exit(126);
      }
      execv(argv[0], argv.data());
      _exit(127);
    }
  }

  ~PrometheusProcess() {
    if (pid_ <= 0) return;
    kill(pid_, SIGTERM);
    for (int i = 0; i < 100; ++i) {
      if (waitpid(pid_, nullptr, WNOHANG) == pid_) return;
      absl::SleepFor(absl::Milliseconds(100));
    }
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }

  // Waits for /-/ready; false (with the log) if it never came.
  bool WaitReady(absl::Duration timeout, std::string* log) {
    const absl::Time deadline = absl::Now() + timeout;
    while (absl::Now() < deadline) {
      if (absl::StartsWith(test_util::HttpGet(port_, "/-/ready"), "HTTP/1.0 200")) return true;
      if (waitpid(pid_, nullptr, WNOHANG) == pid_) {
        pid_ = -1;
        break;
      }
      absl::SleepFor(absl::Milliseconds(200));
    }
    std::ifstream in(log_);
    log->assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    return false;
  }

  // GET `path` on the HTTP API, as JSON; status "success" or an error.
  absl::StatusOr<Struct> Api(const std::string& path) {
    const std::string body = Body(test_util::HttpGet(port_, path));
    Struct json;
    if (!google::protobuf::util::JsonStringToMessage(body, &json).ok()) {
      return absl::UnavailableError(absl::StrCat(path, " answered: ", body.substr(0, 500)));
    }
    if (json.fields().at("status").string_value() != "success") {
      return absl::InvalidArgumentError(absl::StrCat(path, " answered: ", body.substr(0, 500)));
    }
    return json;
  }

  // An instant query, evaluated now.
  absl::StatusOr<std::vector<Sample>> Query(const std::string& promql) {
    absl::StatusOr<Struct> json = Api("/api/v1/query?query=" + UrlEncode(promql));
    if (!json.ok()) return json.status();
    const Struct& data = json->fields().at("data").struct_value();
    std::vector<Sample> out;
    for (const Value& r : data.fields().at("result").list_value().values()) {
      Sample s;
      for (const auto& [k, v] : r.struct_value().fields().at("metric").struct_value().fields()) {
        s.labels[k] = v.string_value();
      }
      const std::string& text =
          r.struct_value().fields().at("value").list_value().values(1).string_value();
      if (!absl::SimpleAtod(text, &s.value)) s.value = std::nan("");
      out.push_back(std::move(s));
    }
    return out;
  }

  // Polls `promql` until `done` holds for its samples (each scrape is a
  // second apart); returns the last answer either way.
  std::vector<Sample> QueryUntil(const std::string& promql,
                                 const std::function<bool(const std::vector<Sample>&)>& done,
                                 absl::Duration timeout = absl::Seconds(30)) {
    const absl::Time deadline = absl::Now() + timeout;
    std::vector<Sample> last;
    while (true) {
      absl::StatusOr<std::vector<Sample>> got = Query(promql);
      EXPECT_TRUE(got.ok()) << got.status();
      if (got.ok()) {
        last = *std::move(got);
        if (done(last)) return last;
      }
      if (absl::Now() > deadline) {
        ADD_FAILURE() << "Prometheus never answered as expected to " << promql;
        return last;
      }
      absl::SleepFor(absl::Milliseconds(250));
    }
  }

  // The value of a query that answers one sample (NaN otherwise).
  double Scalar(const std::string& promql) {
    absl::StatusOr<std::vector<Sample>> got = Query(promql);
    EXPECT_TRUE(got.ok()) << got.status();
    if (!got.ok() || got->size() != 1) return std::nan("");
    return (*got)[0].value;
  }

 private:
  int port_;
  pid_t pid_ = -1;
  std::string log_;
};

// Waits until `promql` answers exactly one sample equal to `want`.
double AwaitValue(PrometheusProcess& prom, const std::string& promql, double want) {
  std::vector<Sample> s = prom.QueryUntil(
      promql, [&](const std::vector<Sample>& v) { return v.size() == 1 && v[0].value == want; });
  return s.size() == 1 ? s[0].value : std::nan("");
}

// Metric names in a text exposition: sample names and # TYPE families.
std::set<std::string> ScrapedNames(const std::string& body) {
  std::set<std::string> out;
  for (absl::string_view line : absl::StrSplit(body, '\n')) {
    if (line.empty()) continue;
    if (absl::ConsumePrefix(&line, "# TYPE ")) {
      out.insert(std::string(line.substr(0, line.find(' '))));
    } else if (line[0] != '#') {
      out.insert(std::string(line.substr(0, line.find_first_of("{ "))));
    }
  }
  return out;
}

class PrometheusE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    prometheus_ = FindOnPath("prometheus");
    promtool_ = FindOnPath("promtool");
    if (prometheus_.empty()) {
      GTEST_SKIP() << "the prometheus binary is not installed (scripts/setup.sh installs it)";
    }
    api::KaizenServer::Options o;
    o.data_dir = data_.path();
    o.grpc_address = "127.0.0.1:0";
    o.metrics_host = "127.0.0.1";
    o.metrics_port = 0;
    o.threads = 2;
    o.workers = 1;
    auto server = api::KaizenServer::Start(o);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->grpc_port()),
                                   grpc::InsecureChannelCredentials());
    client_ = std::make_unique<client::KaizenClient>(channel_);
  }

  std::string Scrape() { return Body(test_util::HttpGet(server_->metrics_port(), "/metrics")); }

  test_util::TempDir data_;
  test_util::TempDir files_;
  std::string prometheus_;
  std::string promtool_;
  std::unique_ptr<api::KaizenServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<client::KaizenClient> client_;
};

TEST_F(PrometheusE2E, PrometheusReadsTrainingAndServingSeriesFromARealServer) {
  const absl::Time test_start = absl::Now();
  const int port = FreePort();
  ASSERT_GT(port, 0);
  PrometheusProcess prom(prometheus_, files_.path(), port,
                         absl::StrCat("global:\n"
                                      "  scrape_interval: 1s\n"
                                      "  scrape_timeout: 1s\n"
                                      "  evaluation_interval: 1s\n"
                                      "rule_files:\n"
                                      "  - ",
                                      kAlerts,
                                      "\n"
                                      "scrape_configs:\n"
                                      "  - job_name: kaizen\n"
                                      "    static_configs:\n"
                                      "      - targets: ['127.0.0.1:",
                                      server_->metrics_port(), "']\n"));
  std::string log;
  ASSERT_TRUE(prom.WaitReady(absl::Seconds(30), &log)) << log;

  // A job that runs far longer than this test: it is cancelled once
  // Prometheus has seen it train.
  const std::string images = files_.File("images"), labels = files_.File("labels");
  test_util::WriteFashionSubset("train", {0, 1}, 100, 0, images, labels);
  v1::UploadDatasetHeader h;
  h.set_name("pets");
  h.set_format(v1::DATASET_FORMAT_IDX);
  h.add_class_names("tshirt");
  h.add_class_names("trouser");
  ASSERT_TRUE(client_->UploadDataset(h, {images, labels}).ok());
  v1::StartFineTuneRequest r;
  r.set_base_model("cnn-small");
  r.set_dataset("pets");
  r.set_output_model("metrics-out");
  r.set_strategy(v1::STRATEGY_SCRATCH);
  r.mutable_hyperparameters()->set_epochs(500);
  r.mutable_hyperparameters()->set_seed(5);
  // With validation data every epoch has its checkpoint (without, a
  // 500-epoch run writes one every 50th).
  r.mutable_hyperparameters()->mutable_validation()->set_split(0.2);
  auto job = client_->StartFineTune(r);
  ASSERT_TRUE(job.ok()) << job.status();
  const std::string id = job->id();
  const std::string of_job = absl::StrCat("{job_id=\"", id, "\",strategy=\"scratch\"}");

  // While it trains: its own series, through Prometheus.
  prom.QueryUntil(
      "kaizen_training_epochs_total{strategy=\"scratch\"} >= 2",
      [](const std::vector<Sample>& v) { return v.size() == 1; }, absl::Minutes(3));
  prom.QueryUntil("kaizen_training_loss" + of_job,
                  [](const std::vector<Sample>& v) { return v.size() == 1; });
  const double loss = prom.Scalar("kaizen_training_loss" + of_job);
  EXPECT_GT(loss, 0);
  EXPECT_LT(loss, 5);  // cross-entropy of 2 classes starts near 0.69
  EXPECT_GT(prom.Scalar("kaizen_training_samples_per_second" + of_job), 0);
  EXPECT_GE(prom.Scalar("kaizen_training_epoch" + of_job), 1);
  EXPECT_EQ(prom.Scalar("kaizen_jobs{state=\"running\"}"), 1);
  // What the dashboard asks: each catalogue counted once, however many
  // replicas report it.
  EXPECT_EQ(prom.Scalar("sum by (state) (max by (catalogue, state) "
                        "(kaizen_jobs{state=\"running\",catalogue=~\"[0-9a-f]{16}\"}))"),
            1);
  EXPECT_EQ(prom.Scalar("kaizen_job_queue_depth"), 0);
  EXPECT_GE(prom.Scalar("kaizen_checkpoints_written_total"), 1);
  const std::string training_scrape = Scrape();
  ASSERT_NE(training_scrape.find("kaizen_training_loss{job_id=\"" + id), std::string::npos);

  // Cancelled: a final checkpoint, the job's series go, its outcome counts.
  ASSERT_TRUE(client_->CancelJob(id).ok());
  v1::Job end;
  for (int i = 0; i < 600; ++i) {
    auto j = client_->GetJob(id);
    ASSERT_TRUE(j.ok());
    end = *j;
    if (end.state() == v1::JOB_STATE_CANCELLED) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_EQ(end.state(), v1::JOB_STATE_CANCELLED) << end.error();
  AwaitValue(prom, "kaizen_jobs{state=\"cancelled\"}", 1);
  AwaitValue(prom, "kaizen_job_duration_seconds_count{state=\"cancelled\",strategy=\"scratch\"}",
             1);
  prom.QueryUntil("kaizen_training_loss" + of_job,
                  [](const std::vector<Sample>& v) { return v.empty(); });
  EXPECT_EQ(prom.Scalar("kaizen_jobs{state=\"running\"}"), 0);
  // Every epoch and checkpoint the job reports, no more, no fewer: one model
  // version per checkpoint.
  EXPECT_EQ(
      AwaitValue(prom, "kaizen_training_epochs_total{strategy=\"scratch\"}", end.history_size()),
      end.history_size());
  EXPECT_EQ(AwaitValue(prom, "kaizen_checkpoints_written_total",
                       static_cast<double>(end.latest_version())),
            end.latest_version());
  EXPECT_EQ(prom.Scalar("kaizen_checkpoint_write_seconds_count"), end.latest_version());
  const double duration =
      prom.Scalar("kaizen_job_duration_seconds_sum{state=\"cancelled\",strategy=\"scratch\"}");
  EXPECT_GT(duration, 0);
  EXPECT_LT(duration, absl::ToDoubleSeconds(absl::Now() - test_start));
  EXPECT_EQ(prom.Scalar("sum(kaizen_job_failures_total)"), 0);

  // Predict load on the newest checkpoint.
  v1::PredictRequest req;
  req.set_model("metrics-out");
  for (int i = 0; i < 2; ++i) {
    v1::FloatTensor* t = req.add_inputs()->mutable_tensor();
    for (int64_t d : {1, 28, 28}) t->add_shape(d);
    for (int k = 0; k < 784; ++k) t->add_values(static_cast<float>((k * (i + 3)) % 17) / 17.0f);
  }
  // Every successful call counts, also those answered by an older version
  // while the last checkpoint loads.
  std::atomic<int> ok{0};
  bool newest = false;
  for (int i = 0; i < 600 && !newest; ++i) {
    auto p = client_->Predict(req, absl::Seconds(30));
    if (p.ok()) ++ok;
    newest = p.ok() && p->version() == end.latest_version();
    if (!newest) absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_TRUE(newest) << "the last checkpoint never answered Predict";
  const int warmup = ok.load();
  std::vector<std::thread> clients;
  for (int c = 0; c < 4; ++c) {
    clients.emplace_back([&] {
      for (int n = 0; n < 30; ++n) {
        if (client_->Predict(req, absl::Seconds(30)).ok()) ++ok;
      }
    });
  }
  for (std::thread& t : clients) t.join();
  const int oks = ok.load();
  EXPECT_EQ(oks, warmup + 120);
  v1::PredictRequest empty;
  empty.set_model("metrics-out");
  EXPECT_EQ(client_->Predict(empty).status().code(), absl::StatusCode::kInvalidArgument);

  const std::string predict = "grpc_service=\"kaizen.v1.InferenceService\",grpc_method=\"Predict\"";
  // Counted at the edge, in go-grpc-prometheus's names, exactly.
  EXPECT_EQ(AwaitValue(prom, "grpc_server_handled_total{" + predict + ",grpc_code=\"OK\"}", oks),
            oks);
  EXPECT_EQ(AwaitValue(prom,
                       "grpc_server_handled_total{" + predict +
                           ",grpc_code=\"InvalidArgument\",grpc_type=\"unary\"}",
                       1),
            1);
  const double started = prom.Scalar("grpc_server_started_total{" + predict + "}");
  EXPECT_EQ(started, prom.Scalar("sum(grpc_server_handled_total{" + predict + "})"));
  // Every input of every successful request went through a batch.
  EXPECT_EQ(AwaitValue(prom, "kaizen_inference_batch_size_sum{model=\"metrics-out\"}", 2.0 * oks),
            2.0 * oks);
  const double batches = prom.Scalar("kaizen_inference_batch_size_count{model=\"metrics-out\"}");
  EXPECT_GE(batches, 1);
  EXPECT_LE(batches, oks);
  const double p99 = prom.Scalar(
      "histogram_quantile(0.99, sum by (le) (rate(grpc_server_handling_seconds_bucket{" + predict +
      "}[1m])))");
  EXPECT_GT(p99, 0);
  EXPECT_LT(p99, 30);
  EXPECT_EQ(prom.Scalar("kaizen_model_serving_version{model=\"metrics-out\"}"),
            end.latest_version());
  EXPECT_GE(prom.Scalar("kaizen_model_loads_total{model=\"metrics-out\",result=\"ok\"}"), 1);

  // The process and build series.
  EXPECT_GT(prom.Scalar("process_resident_memory_bytes"), 50e6);
  EXPECT_GT(prom.Scalar("process_cpu_seconds_total"), 1);
  EXPECT_GT(prom.Scalar("kaizen_process_threads"), 4);
  EXPECT_EQ(prom.Scalar("count(kaizen_build_info{device=~\"cpu|cuda\",libtorch=~\"[0-9.]+\"})"), 1);

  // Every alert rule loaded and evaluates without error on real series.
  absl::StatusOr<test_util::RuleExpressions> rules = test_util::ReadRuleExpressions(kAlerts);
  ASSERT_TRUE(rules.ok()) << rules.status();
  const absl::Time rules_deadline = absl::Now() + absl::Seconds(20);
  int healthy = 0;
  std::string unhealthy;
  while (absl::Now() < rules_deadline) {
    absl::StatusOr<Struct> api = prom.Api("/api/v1/rules");
    ASSERT_TRUE(api.ok()) << api.status();
    healthy = 0;
    unhealthy.clear();
    for (const Value& g :
         api->fields().at("data").struct_value().fields().at("groups").list_value().values()) {
      for (const Value& rule : g.struct_value().fields().at("rules").list_value().values()) {
        const auto& f = rule.struct_value().fields();
        if (f.at("health").string_value() == "ok") {
          ++healthy;
        } else {
          absl::StrAppend(&unhealthy, f.at("name").string_value(), ": ",
                          f.at("health").string_value(), " ",
                          f.count("lastError") ? f.at("lastError").string_value() : "", "\n");
        }
      }
    }
    if (healthy == rules->rules) break;
    absl::SleepFor(absl::Milliseconds(500));
  }
  EXPECT_EQ(healthy, rules->rules) << unhealthy;
  absl::StatusOr<std::vector<Sample>> alerts =
      prom.Query("ALERTS{alertname=~\"KaizenJobFailures|KaizenModelLoadFailed\"}");
  ASSERT_TRUE(alerts.ok()) << alerts.status();
  EXPECT_TRUE(alerts->empty()) << "no job failed and no model failed to load";

  // promtool lints the raw exposition taken while the job trained.
  if (!promtool_.empty()) {
    const std::string path = files_.File("scrape.txt"), report = files_.File("promtool.txt");
    std::ofstream(path) << training_scrape;
    const int rc = std::system(
        absl::StrCat(promtool_, " check metrics < ", path, " > ", report, " 2>&1").c_str());
    std::ifstream in(report);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_EQ(rc, 0) << text;
  }

  // The names: what a real scrape holds is what the registry says, and the
  // dashboard and alerts use nothing else.
  auto registry = metrics::Metrics::Create("127.0.0.1", -1);
  ASSERT_TRUE(registry.ok());
  const std::vector<std::string> registered_list = (*registry)->SampleNames();
  const std::set<std::string> registered(registered_list.begin(), registered_list.end());
  std::set<std::string> scraped = ScrapedNames(training_scrape);
  const std::set<std::string> final_names = ScrapedNames(Scrape());
  scraped.insert(final_names.begin(), final_names.end());
  for (const std::string& name : scraped) {
    // # TYPE lines name histogram families without their suffixes.
    const bool family = registered.count(name + "_bucket") > 0;
    EXPECT_TRUE(registered.count(name) > 0 || family) << name << " is scraped but not registered";
  }
  std::set<std::string> known = registered;
  known.insert(scraped.begin(), scraped.end());
  absl::StatusOr<test_util::DashboardExpressions> dashboard =
      test_util::ReadDashboardExpressions(kDashboard);
  ASSERT_TRUE(dashboard.ok()) << dashboard.status();
  std::vector<std::string> exprs = dashboard->exprs;
  exprs.insert(exprs.end(), rules->exprs.begin(), rules->exprs.end());
  for (const std::string& e : exprs) {
    EXPECT_TRUE(test_util::UnknownMetrics(test_util::PromqlMetricNames(e), known).empty()) << e;
  }
  // The names a scrape after training and Predict must hold.
  for (const char* name :
       {"kaizen_training_loss", "kaizen_training_epochs_total",
        "kaizen_checkpoint_write_seconds_bucket", "kaizen_job_duration_seconds_bucket",
        "grpc_server_handling_seconds_bucket", "kaizen_inference_batch_size_bucket",
        "kaizen_model_serving_version", "process_resident_memory_bytes", "kaizen_build_info"}) {
    EXPECT_EQ(scraped.count(name), 1u) << name;
  }
  std::cout << "prometheus e2e: " << oks << " Predicts, " << end.history_size() << " epochs, "
            << end.latest_version() << " checkpoints, last loss " << loss << ", "
            << absl::ToDoubleSeconds(absl::Now() - test_start) << " s\n";
}

}  // namespace
}  // namespace kaizen
