// The Grafana dashboard and the Prometheus alert rules in deploy/ may only
// reference metrics that the server registers: a renamed or misspelt metric
// there would be a silent empty panel or an alert that can never fire.
// (PrometheusE2E checks the same references against a real scrape.)
#include <fstream>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/metrics/metrics.h"
#include "tests/test_util/promql_names.h"
#include "tests/test_util/temp_dir.h"

namespace kaizen::metrics {
namespace {

using test_util::DashboardExpressions;
using test_util::PromqlMetricNames;
using test_util::ReadDashboardExpressions;
using test_util::ReadRuleExpressions;
using test_util::RuleExpressions;
using test_util::TempDir;
using test_util::UnknownMetrics;

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::UnorderedElementsAre;

const std::string kAlerts = std::string(KAIZEN_SOURCE_DIR) + "/deploy/prometheus/kaizen-alerts.yml";
const std::string kDashboard =
    std::string(KAIZEN_SOURCE_DIR) + "/deploy/grafana/kaizen-dashboard.json";

std::set<std::string> RegisteredSampleNames() {
  auto m = Metrics::Create("127.0.0.1", -1);
  EXPECT_TRUE(m.ok()) << m.status();
  const std::vector<std::string> names = (*m)->SampleNames();
  return std::set<std::string>(names.begin(), names.end());
}

TEST(PromqlMetricNamesTest, FindsMetricsAndSkipsLabelsFunctionsAndKeywords) {
  EXPECT_THAT(PromqlMetricNames(
                  "histogram_quantile(0.99, sum by (le, grpc_method) (rate(grpc_server_handling_"
                  "seconds_bucket{instance=~\"$instance\",grpc_method=~\"Predict|ModelInfer\"}"
                  "[$__rate_interval])))"),
              ElementsAre("grpc_server_handling_seconds_bucket"));
  EXPECT_THAT(PromqlMetricNames("max by (instance) (a_seconds) > 7200\nor on (instance)\n"
                                "max by (instance) (b_depth) > 10"),
              UnorderedElementsAre("a_seconds", "b_depth"));
  EXPECT_THAT(PromqlMetricNames("x{result=\"failed\"} unless x{result=\"failed\"} offset 15m"),
              ElementsAre("x"));
  EXPECT_THAT(PromqlMetricNames("time() - max by (instance) (process_start_time_seconds) > 3600"),
              ElementsAre("process_start_time_seconds"));
  EXPECT_THAT(PromqlMetricNames("label_values(kaizen_build_info, instance)"),
              ElementsAre("kaizen_build_info"));
  EXPECT_THAT(PromqlMetricNames("sum(rate(foo_total[5m])) * 60 / 1048576 + 1e3"),
              ElementsAre("foo_total"));
  EXPECT_THAT(PromqlMetricNames("count_values(\"version\", build_info) and ignoring (a) "
                                "group_left (b) y or sum without (job) (z) # comment w"),
              UnorderedElementsAre("build_info", "y", "z"));
  EXPECT_THAT(PromqlMetricNames("up{job=\"kaizen\"} == 0"), ElementsAre("up"));
  EXPECT_THAT(PromqlMetricNames("${var} + sum(rate(q[${__range}]))"), ElementsAre("q"));
}

TEST(DeployReferencesTest, TheFilesAreReadWhole) {
  absl::StatusOr<RuleExpressions> rules = ReadRuleExpressions(kAlerts);
  ASSERT_TRUE(rules.ok()) << rules.status();
  EXPECT_GE(rules->rules, 7);
  EXPECT_EQ(static_cast<int>(rules->exprs.size()), rules->rules);
  for (const std::string& e : rules->exprs) EXPECT_FALSE(PromqlMetricNames(e).empty()) << e;
  absl::StatusOr<DashboardExpressions> dashboard = ReadDashboardExpressions(kDashboard);
  ASSERT_TRUE(dashboard.ok()) << dashboard.status();
  EXPECT_GE(dashboard->targets, 20);
  EXPECT_GE(static_cast<int>(dashboard->exprs.size()), dashboard->targets);
}

TEST(DeployReferencesTest, EveryMetricTheDashboardAndAlertsUseIsRegistered) {
  const std::set<std::string> exported = RegisteredSampleNames();
  absl::StatusOr<RuleExpressions> rules = ReadRuleExpressions(kAlerts);
  ASSERT_TRUE(rules.ok()) << rules.status();
  for (const std::string& e : rules->exprs) {
    EXPECT_THAT(UnknownMetrics(PromqlMetricNames(e), exported), IsEmpty()) << "alert rule: " << e;
  }
  absl::StatusOr<DashboardExpressions> dashboard = ReadDashboardExpressions(kDashboard);
  ASSERT_TRUE(dashboard.ok()) << dashboard.status();
  std::set<std::string> used;
  for (const std::string& e : dashboard->exprs) {
    const std::set<std::string> names = PromqlMetricNames(e);
    used.insert(names.begin(), names.end());
    EXPECT_THAT(UnknownMetrics(names, exported), IsEmpty()) << "dashboard: " << e;
  }
  // The dashboard shows each area: jobs, training, serving, errors, process.
  for (const char* name :
       {"kaizen_jobs", "kaizen_job_queue_depth", "kaizen_training_loss",
        "kaizen_training_samples_per_second", "kaizen_training_epoch",
        "kaizen_checkpoints_written_total", "grpc_server_handling_seconds_bucket",
        "kaizen_inference_batch_size_bucket", "grpc_server_handled_total",
        "process_resident_memory_bytes", "process_cpu_seconds_total"}) {
    EXPECT_EQ(used.count(name), 1u) << name << " is on no panel";
  }
}

TEST(DeployReferencesTest, AReferenceToAMissingMetricIsCaught) {
  const std::set<std::string> exported = RegisteredSampleNames();
  EXPECT_THAT(UnknownMetrics({"kaizen_jobs", "kaizen_no_such_total", "up"}, exported),
              ElementsAre("kaizen_no_such_total"));
  // The old names are gone for good.
  EXPECT_THAT(UnknownMetrics({"kaizen_grpc_requests_total"}, exported),
              ElementsAre("kaizen_grpc_requests_total"));
  // A rule file with a misspelt metric fails the check.
  TempDir dir;
  const std::string path = dir.File("alerts.yml");
  {
    std::ifstream in(kAlerts);
    std::ofstream out(path);
    out << in.rdbuf()
        << "      - alert: Misspelt\n"
           "        expr: |\n"
           "          sum(rate(kaizen_job_failure_total[5m])) > 0\n"
           "        for: 5m\n";
  }
  absl::StatusOr<RuleExpressions> rules = ReadRuleExpressions(path);
  ASSERT_TRUE(rules.ok()) << rules.status();
  std::vector<std::string> unknown;
  for (const std::string& e : rules->exprs) {
    for (const std::string& n : UnknownMetrics(PromqlMetricNames(e), exported)) {
      unknown.push_back(n);
    }
  }
  EXPECT_THAT(unknown, ElementsAre("kaizen_job_failure_total"));
}

}  // namespace
}  // namespace kaizen::metrics
