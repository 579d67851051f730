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

REMORA_DECL bool serves_operator(const Options& options, std::string_view name, std::string_view overload) {
  const std::string full = overload.empty() ? std::string(name) : std::string(name) + "." + std::string(overload);
  bool star = false;
  for (const auto& entry : options.serve_operators) {
    if (entry == name || entry == full) return true;
    star = star || entry == "*";
  }
  if (!star) return false;
  const auto& never = operators_never_in_star();
  return std::find(never.begin(), never.end(), name) == never.end();
}

namespace serve_policy {
// Whether the call being served is one a peer asked for (not one this worker made on itself).
inline bool from_peer() {
  return serving_agent && serving_peer != UINT32_MAX && serving_peer != serving_agent->self().id;
}
}  // namespace serve_policy

REMORA_DECL void check_operator_served(std::string_view name, std::string_view overload) {
  if (!serve_policy::from_peer() || serves_operator(serving_agent->options(), name, overload)) return;
  const std::string full = overload.empty() ? std::string(name) : std::string(name) + "." + std::string(overload);
  const auto& never = operators_never_in_star();
  const bool dangerous = std::find(never.begin(), never.end(), name) != never.end();
  throw UnknownFunction(serving_agent->self().name, full,
                        "it does not serve this operator by name; list \"" + std::string(name) +
                            "\" in Options::serve_operators on worker '" + serving_agent->self().name +
                            "' (remora-worker --operators)" +
                            (dangerous ? " (it touches files, so \"*\" leaves it out)" : " or \"*\" for every operator"));
}

REMORA_DECL std::string checked_model_path(const std::string& path, std::string_view what) {
  if (!serve_policy::from_peer()) return path;
  const auto& options = serving_agent->options();
  const std::string worker = serving_agent->self().name;
  // Every component resolved (canonical, not weakly_canonical: a missing component would leave
  // "x/../link" to be tidied as text, and the link followed later). A file that does not exist
  // is refused as well: it could not be loaded anyway.
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
      if (dec || root.empty()) continue;
      // Below `root`: every component of root starts resolved.
      auto r = root.begin();
      auto p = resolved.begin();
      for (; r != root.end() && p != resolved.end() && *r == *p; ++r, ++p) {
      }
      // A trailing empty component ("/srv/models/") matches anything below.
      if (r == root.end() || (std::next(r) == root.end() && r->empty())) return resolved.string();
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
