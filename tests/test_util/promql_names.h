// The metric names that PromQL expressions in deploy/ (Grafana dashboard,
// Prometheus alert rules) reference, so that tests can check each against
// what the server exports.
#pragma once

#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kaizen::test_util {

// Metric names in one PromQL expression: identifiers that are not functions,
// aggregation operators, keywords, label names (inside {...}, by/without/
// on/ignoring/group_left/group_right lists), strings, durations, numbers or
// Grafana variables ($x, ${x}). Grafana's label_values(metric, label) yields
// the metric only.
std::set<std::string> PromqlMetricNames(absl::string_view expr);

// The `expr:` of every rule in a Prometheus rule file (inline or a YAML
// block scalar `|` / `>`), and how many rules (`- alert:` / `- record:`)
// the file declares.
struct RuleExpressions {
  std::vector<std::string> exprs;
  int rules = 0;
};
absl::StatusOr<RuleExpressions> ReadRuleExpressions(const std::string& path);

// Every "expr", "query" and "definition" string in a Grafana dashboard
// JSON file (panel targets and templating variables), and how many panel
// targets it has.
struct DashboardExpressions {
  std::vector<std::string> exprs;
  int targets = 0;
};
absl::StatusOr<DashboardExpressions> ReadDashboardExpressions(const std::string& path);

// Names in `referenced` that `exported` lacks; Prometheus's own `up` is
// always known.
std::vector<std::string> UnknownMetrics(const std::set<std::string>& referenced,
                                        const std::set<std::string>& exported);

}  // namespace kaizen::test_util
