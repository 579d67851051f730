#pragma once
// State a layer above the agent keeps per agent (the RRef tables, say), made on first use and
// told about the agent's life events. AgentAccess::service<S>(agent) finds or makes it.
#include <cstdint>
#include <map>
#include <string>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

namespace remora::detail {

class AgentService {
 public:
  virtual ~AgentService() = default;
  // A peer's connection was lost: it will never answer again. Runs on a pool thread.
  virtual void on_peer_lost(std::uint32_t) {}
  // Graceful shutdown, once no worker has work in flight: release what is held for others.
  virtual void on_group_quiet() {}
  // The agent stopped: its threads are gone; drop everything.
  virtual void on_stop() {}
  // About once a second while the agent runs, on a pool thread: for what expires.
  virtual void on_tick() {}
  // Adds this layer's counts to Agent::debug_info's (`counters`, by name).
  virtual void add_debug_info(std::map<std::string, std::int64_t>& counters) const {}
};

// One address per service type: the key it is found under.
template <class S>
inline constexpr char service_key = 0;

// An agent's services. The agent keeps this as its last member, so services go first, while
// everything they refer to still exists.
class ServiceSet {
 public:
  template <class Make>
  std::shared_ptr<AgentService> find_or_add(const void* key, Make&& make) {
    std::lock_guard lock(mu_);
    for (auto& [k, s] : services_)
      if (k == key) return s;
    auto s = make();
    services_.emplace_back(key, s);
    return s;
  }
  // A copy, so that callbacks run without the lock (they may make services of their own).
  std::vector<std::shared_ptr<AgentService>> snapshot() const {
    std::lock_guard lock(mu_);
    std::vector<std::shared_ptr<AgentService>> out;
    for (auto& [key, s] : services_) out.push_back(s);
    return out;
  }

 private:
  mutable std::mutex mu_;
  std::vector<std::pair<const void*, std::shared_ptr<AgentService>>> services_;
};

}  // namespace remora::detail
