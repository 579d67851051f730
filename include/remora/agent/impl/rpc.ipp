#pragma once
// The process-wide agent: compiled in every translation unit (header-only) or once, in
// <remora/impl/src.hpp> (REMORA_SEPARATE_COMPILATION).
#include <charconv>
#include <cstdlib>
#include <cstring>

#include "remora/agent/rpc.hpp"

namespace remora {

namespace detail {

REMORA_DECL std::unique_ptr<Agent>& global_agent() {
  static std::unique_ptr<Agent> agent;
  return agent;
}

// The value of the environment variable `name` as a non-negative int; an Error if it is not one.
REMORA_DECL int int_from_env(const char* name) {
  const char* text = std::getenv(name);
  if (!text || !*text) throw Error(std::string("remora: init_rpc without a rank needs RANK and WORLD_SIZE (") + name +
                                   " is not set)");
  int value = -1;
  const char* end = text + std::strlen(text);
  auto [p, ec] = std::from_chars(text, end, value);
  if (ec != std::errc() || p != end || value < 0)
    throw Error(std::string("remora: ") + name + "='" + text + "' is not a non-negative integer");
  return value;
}

}  // namespace detail

REMORA_DECL Agent& init_rpc(std::string name, int rank, int world_size, Options options) {
  auto& g = detail::global_agent();
  if (g && g->is_running()) throw Error("remora: init_rpc called twice (worker '" + g->self().name + "' is running)");
  g = std::make_unique<Agent>(std::move(name), rank, world_size, std::move(options));
  return *g;
}

REMORA_DECL Agent& init_rpc(std::string name, Options options) {
  if (options.elastic) {
    auto& g = detail::global_agent();
    if (g && g->is_running()) throw Error("remora: init_rpc called twice (worker '" + g->self().name + "' is running)");
    g = std::make_unique<Agent>(std::move(name), std::move(options));
    return *g;
  }
  const int rank = detail::int_from_env("RANK");
  const int world = detail::int_from_env("WORLD_SIZE");
  return init_rpc(std::move(name), rank, world, std::move(options));
}

REMORA_DECL Agent& current_agent() {
  if (detail::serving_agent) return *detail::serving_agent;
  auto& g = detail::global_agent();
  if (!g) throw Error("remora: no agent: call remora::init_rpc first");
  return *g;
}

REMORA_DECL void shutdown(bool graceful) {
  auto& g = detail::global_agent();
  if (g) g->shutdown(graceful);
}

}  // namespace remora
