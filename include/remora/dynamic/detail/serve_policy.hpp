#pragma once
// What a worker lets its peers run by name: the operators of Options::serve_operators and the
// model files below Options::model_dirs (docs/security.md). Checked on the callee, before the
// operator runs or the file is opened; a refusal is an UnknownFunction that names the option.
#include <string>
#include <string_view>
#include <vector>

#include "remora/agent/options.hpp"
#include "remora/config.hpp"

namespace remora::detail {

// Operators that read or write files or start programs: "*" leaves them out, naming one in
// Options::serve_operators serves it.
inline const std::vector<std::string_view>& operators_never_in_star() {
  static const std::vector<std::string_view> names{"aten::save", "aten::from_file"};
  return names;
}

// Whether `options` serves the operator `name` ("ns::name") with overload `overload` ("" for
// none) to peers.
REMORA_DECL bool serves_operator(const Options& options, std::string_view name, std::string_view overload);

// Throws UnknownFunction, naming the option on this worker that would allow it, unless the
// served call being run (serving_agent) may run the operator `op` ("ns::name.overload").
// Outside a served call, or in one this worker made on itself, everything is allowed.
REMORA_DECL void check_operator_served(std::string_view name, std::string_view overload);

// `path` resolved (symbolic links, "..", relative to the working directory), checked to lie below
// one of the serving worker's Options::model_dirs; throws UnknownFunction naming `what` (the
// loader) and the option otherwise. Outside a served call, or in one this worker made on itself,
// returns `path` unchanged.
REMORA_DECL std::string checked_model_path(const std::string& path, std::string_view what);

}  // namespace remora::detail

#if REMORA_HEADER_ONLY
#include "remora/dynamic/impl/serve_policy.ipp"
#endif
