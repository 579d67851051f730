#pragma once
// What spawn() sends: T made from its arguments on each point's worker, waited for together.
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "remora/core/when_all.hpp"
#include "remora/module/detail/module_shims.hpp"
#include "remora/module/remote_device.hpp"
#include "remora/rref/remote.hpp"

namespace remora::detail {

// True when M is a member function of T or of a base of T.
template <class T, auto M>
constexpr bool method_of() {
  using Tr = method_traits<decltype(M)>;
  if constexpr (Tr::is_method) return std::is_base_of_v<typename Tr::object, T>;
  else return false;
}

// What runs on each member's worker: T made from the arguments spawn was given.
template <class T, class... Ds>
struct SpawnFactory {
  static std::shared_ptr<T> make(Ds... args) { return std::make_shared<T>(std::move(args)...); }
};

// T(args...) on the worker of each of `points` ("worker/device"), all started before any is
// waited for; returns once all exist. Throws the first failure (RemoteError for a constructor
// that threw, naming its worker) once every one answered.
template <class T, class... As>
std::vector<RRef<T>> spawn_members(Agent& agent, const std::vector<std::string>& points, const As&... args) {
  using Factory = SpawnFactory<T, std::decay_t<As>...>;
  using Ready = ReadyShim<T>;
  (void)AutoRegisterAs<&Ready::call, Ready::identity>::registered;
  std::vector<RRef<T>> members;
  std::vector<Future<void>> made;
  for (const auto& point : points) {
    const auto owner = RemoteDevice::parse(point).worker_id(agent);
    members.push_back(remote<&Factory::make>(agent, agent.get_worker_info(owner).name, args...));
    made.push_back(call_as<&Ready::call>(agent, owner, Ready::identity, CallOptions{}, RRefAccess::core(members.back()).id));
  }
  auto all = when_all(std::move(made));
  AgentAccess::await_sync(agent, all, points.size());
  std::move(all).get();
  return members;
}

}  // namespace remora::detail
