#pragma once
// What a worker serves by name: compiled in every translation unit (header-only) or once, in
// <remora/impl/src.hpp> (REMORA_SEPARATE_COMPILATION).
#include <algorithm>
#include <filesystem>
#include <system_error>

#include "remora/agent/agent.hpp"
#include "remora/agent/detail/registry.hpp"
#include "remora/core/errors.hpp"
#include "remora/dynamic/detail/serve_policy.hpp"

namespace remora::detail {

// "ns::name" and its overload as one name: "ns::name.overload" ("ns::name" for none).
inline std::string operator_name(std::string_view name, std::string_view overload) {
  return overload.empty() ? std::string(name) : std::string(name) + "." + std::string(overload);
}

inline bool touches_files(std::string_view name) {
  const auto& never = operators_never_in_star();
  return std::find(never.begin(), never.end(), name) != never.end();
}

// Whether the call being served is one a peer asked for (not one this worker made on itself).
inline bool served_for_peer() {
  return serving_agent && serving_peer != UINT32_MAX && serving_peer != serving_agent->self().id;
}

REMORA_DECL bool serves_operator(const Options& options, std::string_view name, std::string_view overload) {
  const std::string full = operator_name(name, overload);
  bool star = false;
  for (const auto& entry : options.serve_operators) {
    if (entry == name || entry == full) return true;
    star = star || entry == "*";
  }
  return star && !touches_files(name);
}

REMORA_DECL void check_operator_served(std::string_view name, std::string_view overload) {
  if (!served_for_peer() || serves_operator(serving_agent->options(), name, overload)) return;
  throw UnknownFunction(serving_agent->self().name, operator_name(name, overload),
                        "it does not serve this operator by name; list \"" + std::string(name) +
                            "\" in Options::serve_operators on worker '" + serving_agent->self().name +
                            "' (remora-worker --operators)" +
                            (touches_files(name) ? " (it touches files, so \"*\" leaves it out)"
                                                 : " or \"*\" for every operator"));
}

REMORA_DECL std::string checked_model_path(const std::string& path, std::string_view what) {
  if (!served_for_peer()) return path;
  const auto& options = serving_agent->options();
  const std::string worker = serving_agent->self().name;
  // Every component resolved (canonical, not weakly_canonical: a missing component would leave
  // "x/../link" to be tidied as text, and the link followed later). A missing file is checked by
  // its resolved directory, so that the loader, not the policy, says it cannot be read.
  std::error_code ec;
  auto resolved = std::filesystem::canonical(path, ec);
  if (ec) {  // no such file: its directory resolved, so that the loader says it cannot read it
    const auto absolute = std::filesystem::absolute(path, ec);
    const auto name = absolute.filename();
    if (!ec && !name.empty() && name != "." && name != "..") {
      resolved = std::filesystem::canonical(absolute.parent_path(), ec) / name;
      if (!ec && std::filesystem::is_symlink(resolved)) ec = std::make_error_code(std::errc::too_many_symbolic_link_levels);
    }
  }
  if (!ec) {
    for (const auto& dir : options.model_dirs) {
      std::error_code dec;
      const auto root = std::filesystem::canonical(dir, dec);
      // Below `root`: every component of the (resolved) root starts the resolved path.
      if (!dec && std::mismatch(root.begin(), root.end(), resolved.begin(), resolved.end()).first == root.end())
        return resolved.string();
    }
  }
  throw UnknownFunction(worker, std::string(what),
                        "it loads no model file from '" + path + "'" +
                            (options.model_dirs.empty() ? std::string(" (it lists no Options::model_dirs)")
                                                        : std::string(" (not below its Options::model_dirs)")) +
                            "; add the file's directory to Options::model_dirs on worker '" + worker +
                            "' (remora-worker --model-dir)");
}

}  // namespace remora::detail
