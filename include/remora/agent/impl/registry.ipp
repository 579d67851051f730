#pragma once
// The function registry's parts that are not templates: compiled in every translation unit
// (header-only) or once, in <remora/impl/src.hpp> (REMORA_SEPARATE_COMPILATION).
#include <cxxabi.h>

#include <cstdlib>
#include <memory>

#include "remora/agent/detail/registry.hpp"

namespace remora::detail {

REMORA_DECL Registry& Registry::global() {
  static Registry r;
  return r;
}

REMORA_DECL bool Registry::add(std::uint64_t id, std::string_view name, Handler h) {
  std::lock_guard lock(mu_);
  if (clashes_.count(id)) return true;
  auto [it, inserted] = functions_.try_emplace(id, name, h);
  if (!inserted && it->second.name != name) {
    clashes_.emplace(id, std::string(it->second.name) + " and " + std::string(name));
    functions_.erase(it);
    log_warning("functions " + clashes_[id] + " have the same id; neither can be called");
  }
  return true;
}

REMORA_DECL void Registry::check_no_clashes() const {
  std::lock_guard lock(mu_);
  if (clashes_.empty()) return;
  std::string names;
  for (const auto& [id, pair] : clashes_) names += (names.empty() ? "" : "; ") + pair;
  throw Error("remora: functions with the same id cannot be served (rename one of each pair): " + names);
}

REMORA_DECL std::string demangle(const char* name) {
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> out(abi::__cxa_demangle(name, nullptr, nullptr, &status), std::free);
  return status == 0 && out ? std::string(out.get()) : std::string(name);
}

REMORA_DECL wire::OutFrame error_frame(std::uint64_t request_id, ErrorCode code, const std::string& type,
                                       const std::string& message, const std::vector<std::string>& origin) {
  return wire::encode_frame(wire::FrameKind::error, request_id, static_cast<std::uint8_t>(code), type, message,
                            origin);
}

// The error reply for the exception in flight. A RemoteError raised here (a value this worker
// holds failed to be created, say) keeps naming the worker and function where it began.
REMORA_DECL wire::OutFrame current_exception_frame(std::uint64_t request_id) {
  try {
    throw;
  } catch (const ProtocolError& e) {
    return error_frame(request_id, ErrorCode::bad_request, "remora::ProtocolError", e.reason());
  } catch (const UnknownFunction& e) {
    // This worker refused (its serving policy, say): the caller gets an UnknownFunction too. One
    // that a call of this worker's met elsewhere names where it began.
    if (e.worker() == serving_worker_name())
      return error_frame(request_id, ErrorCode::unknown_function, "remora::UnknownFunction", e.reason(),
                         {e.worker(), e.function()});
    return error_frame(request_id, ErrorCode::forwarded, "remora::UnknownFunction", e.what(), {e.worker(), e.function()});
  } catch (const RemoteError& e) {
    return error_frame(request_id, ErrorCode::forwarded, e.remote_type(), e.remote_message(),
                       {e.worker(), e.function()});
  } catch (const std::exception& e) {
    return error_frame(request_id, ErrorCode::remote_exception, demangle(typeid(e).name()), e.what());
  } catch (...) {
    return error_frame(request_id, ErrorCode::remote_exception, "unknown exception", "(not a std::exception)");
  }
}

}  // namespace remora::detail
