#pragma once
// remote<&fn>(to, args...): runs fn on worker `to` and leaves the result there, returning an
// RRef to it at once (the owner creates it asynchronously; uses queue behind the creation).
#include "remora/agent/rpc.hpp"
#include "remora/rref/rref.hpp"

namespace remora {

template <auto F>
using remote_result_t = RRef<detail::rref_value_t<typename detail::fn_traits<decltype(F)>::result>>;

template <auto F, class... As>
remote_result_t<F> remote(Agent& agent, std::string_view to, As&&... args) {
  if constexpr (detail::first_is_call_options<As...>::value) {
    return [&]<class O, class... Rest>(O&& opts, Rest&&... rest) {
      detail::check_call<F, false, Rest...>();
      using V = detail::rref_value_t<typename detail::fn_traits<decltype(F)>::result>;
      static_assert(!std::is_void_v<V>, "remora: remote() of a function that returns void: use rpc_async()");
      using Shim = detail::CreateShim<F>;
      (void)detail::AutoRegisterAs<&Shim::call, Shim::identity>::registered;
      const auto owner = detail::AgentAccess::id_of(agent, to);
      return detail::start_remote<V>(agent, owner, [&](detail::RRefId id, detail::ForkId fork, bool has_fork) {
        return detail::call_as<&Shim::call>(agent, owner, Shim::identity, opts, id, fork, has_fork,
                                                   std::forward<Rest>(rest)...);
      });
    }(std::forward<As>(args)...);
  } else {
    return remote<F>(agent, to, CallOptions{}, std::forward<As>(args)...);
  }
}

template <auto F, class... As>
remote_result_t<F> remote(std::string_view to, As&&... args) {
  return remote<F>(current_agent(), to, std::forward<As>(args)...);
}

namespace detail {
template <auto F>
bool expose_remote_one() {
  using V = rref_value_t<typename fn_traits<decltype(F)>::result>;
  bool ok = AutoRegisterAs<&CreateShim<F>::call, CreateShim<F>::identity>::registered && expose<F>();
  if constexpr (Serializable<V>) ok = ok && AutoRegisterAs<&FetchShim<V>::call, FetchShim<V>::identity>::registered;
  return ok;
}
}  // namespace detail

// In a serve-only binary (one that never calls these itself): REMORA_EXPOSE_REMOTE(&make_table)
// lets callers remote() make_table here, rpc it, and to_here() its result.
template <auto... Fs>
bool expose_remote() {
  return (detail::expose_remote_one<Fs>() && ...);
}

// An RRef owned by this worker that holds `value`: return it from a remote function to hand out
// a reference to something that stays here (as PyTorch's RRef(value)).
template <class T>
RRef<std::remove_cvref_t<T>> local_rref(Agent& agent, T&& value) {
  using V = std::remove_cvref_t<T>;
  return detail::make_local_rref<V>(*detail::rref_context(agent), std::make_shared<V>(std::forward<T>(value)));
}
template <class T>
RRef<std::remove_cvref_t<T>> local_rref(T&& value) {
  return local_rref(current_agent(), std::forward<T>(value));
}

// Counts of this agent's RRef tables: values it owns, forks of them, references it holds.
inline RRefStats rref_stats(Agent& agent) { return detail::rref_context(agent)->stats(); }

}  // namespace remora

#define REMORA_EXPOSE_REMOTE(...)                                              \
  [[maybe_unused]] static const bool REMORA_DETAIL_CAT(remora_exposed_remote_, \
                                                       __LINE__) = ::remora::expose_remote<__VA_ARGS__>()
