#include "server/training/forward_cut.h"

#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>

#include <algorithm>
#include <functional>
#include <optional>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace kaizen::training {
namespace {

using torch::jit::Graph;
using torch::jit::Node;
using torch::jit::Value;

// The dotted path from `self` of a module value (`self.features.block3` is
// "features.block3", `self` is ""); nullopt when it is not a chain of
// attribute reads from `self`.
std::optional<std::string> PathFromSelf(const Graph& graph, const Value* value) {
  std::vector<std::string> names;
  while (value != graph.inputs()[0]) {
    const Node* node = value->node();
    if (node->kind() != c10::prim::GetAttr) return std::nullopt;
    names.push_back(node->s(c10::attr::name));
    value = node->input(0);
  }
  std::reverse(names.begin(), names.end());
  return absl::StrJoin(names, ".");
}

// Inlines, into `graph`'s top-level block, the method calls on `self` and
// on the modules that contain `child` (`features` for "features.block3"),
// until `child`'s own call is a top-level node.
absl::Status InlineDownTo(const torch::jit::Module& module, const std::string& child,
                          Graph* graph) {
  for (bool changed = true; changed;) {
    changed = false;
    for (Node* node : graph->nodes()) {
      if (node->kind() != c10::prim::CallMethod) continue;
      const std::optional<std::string> path = PathFromSelf(*graph, node->input(0));
      if (!path || !(path->empty() || absl::StartsWith(child, *path + "."))) continue;
      torch::jit::Module owner = module;
      for (absl::string_view name : absl::StrSplit(*path, '.', absl::SkipEmpty())) {
        owner = owner.attr(std::string(name)).toModule();
      }
      torch::jit::Function& callee = owner.get_method(node->s(c10::attr::name)).function();
      torch::jit::GraphFunction* graph_callee = torch::jit::tryToGraphFunction(callee);
      if (graph_callee == nullptr) {
        return absl::InvalidArgumentError(
            absl::StrCat("'", *path, "' calls a method that is not TorchScript"));
      }
      // Its graph as written (the optimised one has every call inlined).
      torch::jit::inlineCallTo(node, graph_callee, /*inline_optimized_graph=*/false);
      changed = true;
      break;  // the node list changed
    }
  }
  return absl::OkStatus();
}

// The nodes of `graph`'s top-level block that call `child`.forward, in order.
std::vector<Node*> CallsOf(Graph& graph, const std::string& child) {
  std::vector<Node*> calls;
  for (Node* node : graph.nodes()) {
    if (node->kind() != c10::prim::CallMethod || node->s(c10::attr::name) != "forward" ||
        node->inputs().empty()) {
      continue;
    }
    if (PathFromSelf(graph, node->input(0)) == child) calls.push_back(node);
  }
  return calls;
}

// Whether `child` is called from inside a nested block (an if or a loop),
// where the cut cannot see it.
bool CalledInNestedBlock(const Graph& graph, const torch::jit::Block* block,
                         const std::string& child, bool nested) {
  for (const Node* node : block->nodes()) {
    for (const torch::jit::Block* sub : node->blocks()) {
      if (CalledInNestedBlock(graph, sub, child, true)) return true;
    }
    if (nested && node->kind() == c10::prim::CallMethod && !node->inputs().empty() &&
        PathFromSelf(graph, node->input(0)) == child) {
      return true;
    }
  }
  return false;
}

// The position of `node` among its graph's top-level nodes.
size_t IndexOf(const Graph& graph, const Node* node) {
  size_t i = 0;
  for (const Node* n : graph.nodes()) {
    if (n == node) return i;
    ++i;
  }
  return i;
}

Node* NodeAt(Graph& graph, size_t index) {
  size_t i = 0;
  for (Node* n : graph.nodes()) {
    if (i++ == index) return n;
  }
  return nullptr;
}

// Whether a block reads `self.training` (self: the graph's first input).
bool ReadsTraining(const torch::jit::Block* block, const Value* self) {
  for (const Node* node : block->nodes()) {
    if (node->kind() == c10::prim::GetAttr && node->input(0) == self &&
        node->s(c10::attr::name) == "training") {
      return true;
    }
    for (const torch::jit::Block* sub : node->blocks()) {
      if (ReadsTraining(sub, self)) return true;
    }
  }
  return false;
}

}  // namespace

bool BehavesAsInEval(const torch::jit::Module& module) {
  for (const torch::jit::Module& m : module.modules()) {
    if (!m.is_training()) continue;
    for (const torch::jit::Method& method : m.get_methods()) {
      const std::shared_ptr<Graph> graph = method.graph();
      if (ReadsTraining(graph->block(), graph->inputs()[0])) return false;
    }
  }
  return true;
}

absl::StatusOr<ForwardCut> ForwardCut::Before(const torch::jit::Module& module,
                                              const std::string& child) {
  const auto refuse = [&](const std::string& why) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot cut forward before '", child, "': ", why));
  };
  std::shared_ptr<Graph> graph = module.get_method("forward").graph()->copy();
  if (graph->inputs().size() != 2) return refuse("forward does not take exactly one input");
  if (absl::Status inlined = InlineDownTo(module, child, graph.get()); !inlined.ok()) {
    return refuse(std::string(inlined.message()));
  }
  const std::vector<Node*> calls = CallsOf(*graph, child);
  if (calls.size() != 1 || CalledInNestedBlock(*graph, graph->block(), child, false)) {
    return refuse(absl::StrCat("forward calls it ", calls.size(),
                               " times outside conditionals and loops; the cut needs exactly one"));
  }
  if (calls[0]->inputs().size() != 2) return refuse("its forward does not take exactly one input");
  const size_t at = IndexOf(*graph, calls[0]);

  // The prefix: the child's input, and only what it depends on. Module
  // calls count as side effects, which dead-code elimination keeps: the
  // call and everything after it go first.
  std::shared_ptr<Graph> prefix = graph->copy();
  Node* prefix_call = NodeAt(*prefix, at);
  Value* cut_input = prefix_call->input(1);
  if (!cut_input->type()->isSubtypeOf(*c10::TensorType::get())) {
    return refuse("its input is not a tensor");
  }
  while (!prefix->outputs().empty()) prefix->eraseOutput(0);
  prefix->registerOutput(cut_input);
  std::vector<Node*> after;
  for (Node* node = prefix_call; node != prefix->return_node(); node = node->next()) {
    after.push_back(node);
  }
  for (auto it = after.rbegin(); it != after.rend(); ++it) (*it)->destroy();
  torch::jit::EliminateDeadCode(prefix);

  // The suffix: the child's input becomes the argument in place of the
  // image; what only fed it is dead.
  std::shared_ptr<Graph> suffix = graph->copy();
  Node* call = NodeAt(*suffix, at);
  Value* input = call->input(1);
  Value* argument = suffix->addInput("prefix_output")->setType(input->type());
  const std::vector<torch::jit::Use> uses = input->uses();
  for (const torch::jit::Use& use : uses) {
    if (use.user == call || use.user->isAfter(call)) {
      use.user->replaceInput(use.offset, argument);
    }
  }
  // What only fed the child's input is dead, module calls included.
  std::vector<Node*> before;
  for (Node* node = call->prev(); node != suffix->param_node(); node = node->prev()) {
    before.push_back(node);
  }
  for (Node* node : before) {
    const bool used = std::any_of(node->outputs().begin(), node->outputs().end(),
                                  [](const Value* v) { return v->hasUses(); });
    if (!used) node->destroy();
  }
  torch::jit::EliminateDeadCode(suffix);
  // Anything else still computed before the call is read after it: only
  // module attributes and constants may cross the cut.
  for (const Node* node : suffix->nodes()) {
    if (node == call) break;
    if (node->kind() != c10::prim::GetAttr && node->kind() != c10::prim::Constant) {
      return refuse(absl::StrCat("the layers from it on read a value computed before it (",
                                 node->kind().toQualString(), ")"));
    }
  }
  if (suffix->inputs()[1]->hasUses()) {
    return refuse("the layers from it on read forward's input too");
  }
  suffix->eraseInput(1);

  ForwardCut cut;
  cut.module_ = module;
  // Modules the prefix calls, and those whose `training` flag it reads
  // itself ("" for the module).
  // Nested blocks (conditionals, loops) included; a call on a module that
  // is not an attribute path from self cannot be checked, so is refused.
  bool untraced = false;
  const std::function<void(const torch::jit::Block*)> collect = [&](const torch::jit::Block* b) {
    for (const Node* node : b->nodes()) {
      for (const torch::jit::Block* nested : node->blocks()) collect(nested);
      const bool reads_mode =
          node->kind() == c10::prim::GetAttr && node->s(c10::attr::name) == "training";
      if (node->kind() != c10::prim::CallMethod && !reads_mode) continue;
      const std::optional<std::string> path = PathFromSelf(*prefix, node->input(0));
      if (!path) untraced = true;
      if (path && (reads_mode || !path->empty()) &&
          std::find(cut.prefix_modules_.begin(), cut.prefix_modules_.end(), *path) ==
              cut.prefix_modules_.end()) {
        cut.prefix_modules_.push_back(*path);
      }
    }
  };
  collect(prefix->block());
  if (untraced) return refuse("the layers below it call a module that is not an attribute of self");
  cut.prefix_ = std::make_shared<torch::jit::GraphFunction>(absl::StrCat("forward_before_", child),
                                                            std::move(prefix), nullptr);
  cut.suffix_ = std::make_shared<torch::jit::GraphFunction>(absl::StrCat("forward_from_", child),
                                                            std::move(suffix), nullptr);
  return cut;
}

torch::Tensor ForwardCut::Prefix(const torch::Tensor& x) const {
  return (*prefix_)({module_._ivalue(), x}).toTensor();
}

torch::Tensor ForwardCut::Suffix(const torch::Tensor& h) const {
  return (*suffix_)({module_._ivalue(), h}).toTensor();
}

}  // namespace kaizen::training
