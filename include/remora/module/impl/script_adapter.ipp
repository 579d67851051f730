#pragma once
// The interface check of RemoteModule<I>::load: compiled in every translation unit (header-only)
// or once, in <remora/impl/src.hpp> (REMORA_SEPARATE_COMPILATION).
#include <sstream>

#include "remora/module/detail/script_adapter.hpp"

namespace remora::detail {

REMORA_DECL void check_forward_fits(const c10::FunctionSchema& schema, const std::vector<c10::TypePtr>& params,
                                    const c10::TypePtr& result, std::string_view interface, const std::string& path) {
  std::string why;
  const auto& args = schema.arguments();
  if (params.size() > args.size()) {
    why = "it takes " + std::to_string(args.size()) + " arguments, the interface passes " +
          std::to_string(params.size());
  }
  for (std::size_t i = 0; why.empty() && i < args.size(); ++i) {
    if (i >= params.size()) {
      if (!args[i].default_value()) why = "argument '" + args[i].name() + "' has no default and the interface does not pass it";
      continue;
    }
    const bool widened = params[i]->kind() == c10::TypeKind::IntType && wants_float(args[i].type());
    if (!widened && !params[i]->isSubtypeOf(*args[i].type()))
      why = "argument '" + args[i].name() + "' is " + args[i].type()->repr_str() + ", the interface passes " +
            params[i]->repr_str();
  }
  if (why.empty() && result) {
    auto got = result_type(schema);
    if (!got->isSubtypeOf(*result) && !result->isSubtypeOf(*got))
      why = "it returns " + got->repr_str() + ", the interface wants " + result->repr_str();
  }
  if (why.empty()) return;
  std::string cxx;
  for (const auto& p : params) cxx += (cxx.empty() ? "" : ", ") + p->repr_str();
  std::ostringstream s;
  s << schema;
  throw SchemaMismatch(path, "the module loaded from '" + path + "' does not fit " + std::string(interface) +
                                 ": its method " + s.str() + " against " + std::string(interface) + "::forward(" +
                                 cxx + ") -> " + (result ? result->repr_str() : std::string("void")) + ": " + why);
}

}  // namespace remora::detail
