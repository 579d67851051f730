#pragma once
// Schema matching: compiled in every translation unit (header-only) or once, in
// <remora/impl/src.hpp> (REMORA_SEPARATE_COMPILATION).
#include <sstream>

#include "remora/core/errors.hpp"
#include "remora/dynamic/detail/schema_match.hpp"

namespace remora::detail {

// An int where the schema wants a float (or an optional float) becomes that float, as Python's
// argument parser does; every other value must already have a subtype of the argument's type.
REMORA_DECL bool wants_float(const c10::TypePtr& t) {
  if (t->kind() == c10::TypeKind::FloatType) return true;
  if (auto o = t->cast<c10::OptionalType>()) return o->getElementType()->kind() == c10::TypeKind::FloatType;
  return false;
}

REMORA_DECL std::optional<std::string> fit_schema(const c10::FunctionSchema& schema, std::vector<c10::IValue>& stack,
                                                  const Kwargs* kwargs, bool complete) {
  if (schema.is_vararg()) return "takes a variable argument list (not callable by name)";
  const auto& params = schema.arguments();
  std::size_t positional = 0;
  while (positional < params.size() && (complete || !params[positional].kwarg_only())) ++positional;
  if (stack.size() > positional)
    return "takes " + std::to_string(positional) + " positional argument(s), " + std::to_string(stack.size()) +
           " given";
  std::size_t used_kwargs = 0;
  c10::TypeEnv bound;  // type variables ("t" in "t[] l") bound by the arguments so far
  for (std::size_t i = 0; i < params.size(); ++i) {
    const auto& p = params[i];
    if (i >= stack.size()) {
      const c10::IValue* named = nullptr;
      if (kwargs)
        for (const auto& [k, v] : kwargs->values)
          if (k == p.name()) named = &v;
      if (named) {
        stack.push_back(*named);
        ++used_kwargs;
      } else if (p.default_value()) {
        stack.push_back(*p.default_value());
        continue;  // a default fits by definition
      } else {
        return "argument '" + p.name() + "' is missing";
      }
    }
    auto& v = stack[i];
    if (v.isInt() && wants_float(p.type())) v = c10::IValue(static_cast<double>(v.toInt()));
    if (v.isTensor() && p.type()->kind() == c10::TypeKind::TensorType) continue;
    if (p.type()->hasFreeVariables()) {  // generic JIT operators: aten::len.t(t[] a), prim::min
      auto matched = c10::matchTypeVariables(p.type(), v.type(), bound);
      if (!matched.success()) return "argument '" + p.name() + "': " + matched.reason();
      continue;
    }
    if (!v.type()->isSubtypeOf(*p.type()))
      return "argument '" + p.name() + "' must be " + p.type()->repr_str() + ", not " + v.type()->repr_str();
  }
  if (kwargs && used_kwargs != kwargs->values.size()) {
    for (const auto& [k, v] : kwargs->values) {
      bool known = false;
      for (std::size_t i = 0; i < params.size(); ++i) known = known || params[i].name() == k;
      if (!known) return "has no argument named '" + k + "'";
    }
    return "got an argument both by position and by name";
  }
  return std::nullopt;
}

REMORA_DECL std::string describe_types(std::span<const c10::IValue> values, const Kwargs* kwargs) {
  std::string out;
  for (const auto& v : values) out += (out.empty() ? "" : ", ") + v.type()->repr_str();
  if (kwargs)
    for (const auto& [k, v] : kwargs->values) out += (out.empty() ? "" : ", ") + k + "=" + v.type()->repr_str();
  return out;
}

REMORA_DECL c10::TypePtr result_type(const c10::FunctionSchema& schema) {
  const auto& r = schema.returns();
  if (r.empty()) return c10::NoneType::get();
  if (r.size() == 1) return r[0].type();
  std::vector<c10::TypePtr> types;
  for (const auto& a : r) types.push_back(a.type());
  return c10::TupleType::create(std::move(types));
}

REMORA_DECL void check_result(const c10::FunctionSchema& schema, const c10::TypePtr& wanted,
                              std::string_view wanted_name) {
  if (!wanted) return;
  auto got = result_type(schema);
  if (got->hasFreeVariables()) return;  // bound by the arguments; the callee's result is converted then
  if (got->isSubtypeOf(*wanted) || wanted->isSubtypeOf(*got)) return;
  std::ostringstream s;
  s << schema;
  throw SchemaMismatch(qualified_name(schema), qualified_name(schema) + " returns " + got->repr_str() + ", not " +
                                                   std::string(wanted_name) + " (" + wanted->repr_str() +
                                                   "); schema: " + s.str());
}

REMORA_DECL std::string qualified_name(const c10::FunctionSchema& schema) {
  return schema.overload_name().empty() ? schema.name() : schema.name() + "." + schema.overload_name();
}

}  // namespace remora::detail
