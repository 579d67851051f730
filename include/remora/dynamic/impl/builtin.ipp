#pragma once
// Builtin operators by name: compiled in every translation unit (header-only) or once, in
// <remora/impl/src.hpp> (REMORA_SEPARATE_COMPILATION). A program that includes this answers calls
// of operators by name, and runs those its Options::serve_operators lists (serve_policy.hpp).
#include <memory>
#include <mutex>
#include <sstream>
#include <unordered_map>

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/jit/runtime/operator.h>

#include "remora/dynamic/builtin.hpp"
#include "remora/dynamic/detail/serve_policy.hpp"

namespace remora::detail {

// "aten::add.Tensor" -> {"aten::add", "Tensor"}; no overload: {"aten::add", ""}.
REMORA_DECL c10::OperatorName split_operator_name(std::string_view op) {
  const auto ns = op.find("::");
  const auto dot = op.find('.', ns == std::string_view::npos ? 0 : ns + 2);
  if (dot == std::string_view::npos) return {std::string(op), ""};
  return {std::string(op.substr(0, dot)), std::string(op.substr(dot + 1))};
}

// Whether `op` can run outside a TorchScript graph: operators of the c10 dispatcher, and the
// JIT's own (prim::min, aten::len.t, aten::add.int) unless they take a variable argument list or
// are special-cased by the interpreter (those are built from a graph node and need one).
REMORA_DECL bool callable_by_name(const torch::jit::Operator& op) {
  if (op.isC10Op()) return true;
  const auto& schema = op.schema();
  return !schema.is_vararg() && !schema.is_varret() &&
         schema.aliasAnalysis() != c10::AliasAnalysisKind::INTERNAL_SPECIAL_CASE;
}

// The overloads of an operator that can be called by name, as this process's registry lists
// them. Cached: the registry's lookup takes a lock and copies.
REMORA_DECL const std::vector<std::shared_ptr<torch::jit::Operator>>& builtin_overloads(const std::string& name) {
  static std::mutex mu;
  static std::unordered_map<std::string, std::vector<std::shared_ptr<torch::jit::Operator>>> cache;
  std::lock_guard lock(mu);
  if (auto it = cache.find(name); it != cache.end()) return it->second;
  std::vector<std::shared_ptr<torch::jit::Operator>> ops;
  if (name.find("::") != std::string::npos && name.find("::") > 0) {
    for (const auto& op : torch::jit::getAllOperatorsFor(c10::Symbol::fromQualString(name)))
      if (callable_by_name(*op)) ops.push_back(op);
  }
  // Not cached when empty: a library loaded later may register it.
  if (ops.empty()) {
    static const std::vector<std::shared_ptr<torch::jit::Operator>> none;
    return none;
  }
  return cache.emplace(name, std::move(ops)).first->second;
}

REMORA_DECL BuiltinCall match_builtin(Agent& agent, std::string_view to, std::string_view op,
                                      std::vector<c10::IValue> args, const Kwargs* kwargs,
                                      const c10::TypePtr& wanted, std::string_view wanted_name) {
  const auto name = split_operator_name(op);
  const auto& overloads = builtin_overloads(name.name);
  std::string refusals;
  const c10::FunctionSchema* chosen = nullptr;
  std::vector<c10::IValue> stack;
  int tried = 0;
  for (const auto& candidate : overloads) {
    const auto& schema = candidate->schema();
    if (!name.overload_name.empty() && schema.overload_name() != name.overload_name) continue;
    ++tried;
    stack = args;
    auto why = fit_schema(schema, stack, kwargs);
    if (!why) {
      chosen = &schema;
      break;
    }
    std::ostringstream s;
    s << schema;
    refusals += "\n  " + s.str() + ": " + *why;
  }
  if (tried == 0)
    throw UnknownFunction(std::string(to), std::string(op),
                          "no operator of this name is registered with the dispatcher of this process");
  if (!chosen)
    throw SchemaMismatch(std::string(op), "no overload of " + std::string(op) + " accepts (" +
                                              describe_types(args, kwargs) + ") for worker '" + std::string(to) +
                                              "':" + refusals);
  check_result(*chosen, wanted, wanted_name);
  BuiltinCall call;
  call.to = AgentAccess::id_of(agent, to);
  // The schema lives as long as the operator's registration: its name outlives the call.
  call.fn = Identity{function_identity<&run_builtin>.id, chosen->name()};
  call.op = qualified_name(*chosen);
  call.stack = std::move(stack);
  return call;
}

REMORA_DECL Future<c10::IValue> send_builtin(Agent& agent, BuiltinCall call, CallOptions opts) {
  (void)AutoRegister<&run_builtin>::registered;
  return call_as<&run_builtin>(agent, call.to, call.fn, opts, std::move(call.op), std::move(call.stack));
}

// The operator `name` ("ns::name" and its overload) of this process's registry, or null.
REMORA_DECL std::shared_ptr<torch::jit::Operator> find_builtin(const c10::OperatorName& name) {
  for (const auto& candidate : builtin_overloads(name.name))
    if (candidate->schema().overload_name() == name.overload_name) return candidate;
  return nullptr;
}

REMORA_DECL c10::IValue run_builtin(std::string op, std::vector<c10::IValue> stack) {
  const auto name = split_operator_name(op);
  check_operator_served(name.name, name.overload_name);
  auto found = find_builtin(name);
  if (!found)
    throw UnknownFunction(serving_worker_name(), op, "no operator of this name is registered here");
  const auto& schema = found->schema();
  // The stack came from the network: it must be the schema's full argument list, each of its type.
  if (stack.size() != schema.arguments().size())
    throw SchemaMismatch(op, op + " takes " + std::to_string(schema.arguments().size()) + " arguments, " +
                                 std::to_string(stack.size()) + " arrived");
  if (auto why = fit_schema(schema, stack, nullptr, /*complete=*/true)) throw SchemaMismatch(op, op + ": " + *why);
  // A dispatcher operator's Operation calls it boxed; a JIT operator's runs on the stack as the
  // interpreter would.
  found->getOperation()(stack);
  if (stack.size() == 1) return std::move(stack[0]);
  if (stack.empty()) return c10::IValue();
  return c10::ivalue::Tuple::create(std::move(stack));
}

// Served by every program that can call operators by name, stock workers included: results
// as RRefs of the two types a program that never names them may still be asked for.
[[maybe_unused]] inline const bool builtins_served = AutoRegister<&run_builtin>::registered &&
                                                     expose_remote<&run_builtin_as<at::Tensor>>() &&
                                                     expose_remote<&run_builtin_as<c10::IValue>>();

}  // namespace remora::detail
