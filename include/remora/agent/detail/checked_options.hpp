#pragma once
// Options as an agent uses them: what the program left unset filled in from the environment (or
// the defaults), every field checked. After this every optional setting holds a value.
#include <chrono>
#include <cstdlib>
#include <optional>
#include <string>

#include "remora/agent/options.hpp"
#include "remora/core/errors.hpp"

namespace remora::detail {

// Reads an environment variable (std::getenv; tests pass their own).
using GetEnv = const char* (*)(const char*);
inline const char* process_env(const char* name) { return std::getenv(name); }

// A microseconds setting the program left unset: from the environment variable `name`, else 200 us.
inline void microseconds_from_env(GetEnv getenv, const char* name, std::optional<std::chrono::microseconds>& setting) {
  if (setting) return;
  setting = std::chrono::microseconds(200);
  const char* w = getenv(name);
  if (!w || !*w) return;
  char* end = nullptr;
  const long us = std::strtol(w, &end, 10);
  if (*end != '\0' || us < 0 || us > 1'000'000)
    throw Error(std::string("remora: ") + name + " must be a number of microseconds (0 to 1000000), not '" + w + "'");
  setting = std::chrono::microseconds(us);
}

// Throws remora::Error naming the field or variable that is wrong.
inline Options checked_options(Options o, GetEnv getenv = &process_env) {
  if (o.rpc_timeout.count() <= 0) throw Error("remora: Options::rpc_timeout must be positive");
  if (o.hello_timeout.count() <= 0) throw Error("remora: Options::hello_timeout must be positive");
  if (o.max_pending_calls_per_peer == 0 || o.max_pending_bytes_per_peer == 0)
    throw Error("remora: Options::max_pending_calls_per_peer and max_pending_bytes_per_peer must be positive");
  if (o.link_timeout.count() != 0 && o.link_timeout < std::chrono::seconds(2))
    throw Error("remora: Options::link_timeout must be 0 (the kernel's defaults) or at least 2 s (keepalive "
                "probes are a second apart)");
  if (o.sync_watch && o.sync_watch->count() < 0) throw Error("remora: Options::sync_watch must not be negative");
  if (o.worker_watch && o.worker_watch->count() < 0) throw Error("remora: Options::worker_watch must not be negative");
  if (o.io_watch && o.io_watch->count() < 0) throw Error("remora: Options::io_watch must not be negative");
  if (const char* t = getenv("REMORA_TRANSPORT"); !o.transport && t && *t) {
    const std::string v = t;
    if (v == "auto") o.transport = Transport::automatic;
    else if (v == "tcp") o.transport = Transport::tcp;
    else if (v == "local") o.transport = Transport::local;
    else throw Error("remora: REMORA_TRANSPORT must be auto, tcp or local, not '" + v + "'");
  }
  if (!o.transport) o.transport = Transport::automatic;
  microseconds_from_env(getenv, "REMORA_SYNC_WATCH_US", o.sync_watch);
  microseconds_from_env(getenv, "REMORA_WORKER_WATCH_US", o.worker_watch);
  microseconds_from_env(getenv, "REMORA_IO_WATCH_US", o.io_watch);
  return o;
}

}  // namespace remora::detail
