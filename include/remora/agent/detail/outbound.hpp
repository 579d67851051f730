#pragma once
// The typed call path: a call's arguments encoded into a frame on the caller's thread, its reply
// decoded into the Future's type. What the layers above the agent (RRefs, modules) use of it goes
// through AgentAccess; users never name either. Included by agent.hpp after Agent.
#include <chrono>
#include <cstdint>
#include <exception>
#include <memory>
#include <string_view>
#include <type_traits>
#include <utility>

#include "remora/agent/agent.hpp"
#include "remora/agent/detail/call_interceptor.hpp"
#include "remora/agent/detail/call_table.hpp"
#include "remora/agent/detail/registry.hpp"
#include "remora/agent/detail/reply_decoding.hpp"
#include "remora/agent/detail/services.hpp"
#include "remora/agent/detail/sync_wait.hpp"

namespace remora::detail {

struct AgentAccess {
  // Throws remora::Error naming the group when `name` is not in it.
  static REMORA_DECL std::uint32_t id_of(const Agent& agent, std::string_view name);
  static REMORA_DECL std::uint64_t next_request_id(Agent& agent);
  // Whether the connection to `peer` was lost (it will never answer again).
  static REMORA_DECL bool is_lost(const Agent& agent, std::uint32_t peer);
  // Whether `id` is a worker of the group (elastic: one this worker knows).
  static REMORA_DECL bool knows(const Agent& agent, std::uint32_t id);
  // Every worker id of the group is below this (its size, static; every id it may hand out, elastic).
  static REMORA_DECL std::uint32_t id_bound(const Agent& agent);
  // Agent::on_membership, but ending the subscription does not wait for a delivery in progress
  // (the callback may run once more after): for a callback that holds what it uses.
  static REMORA_DECL Subscription on_membership_unwaited(Agent& agent,
                                                         std::function<void(const MembershipEvent&)> callback);
  // `peer` left the elastic group (its last call to this worker).
  static REMORA_DECL void member_left(Agent& agent, std::uint32_t peer);
  // The device map replies to `peer` are encoded with (the inverse of its map to this worker;
  // empty when it set none).
  static REMORA_DECL const wire::DeviceMap& reply_device_map(const Agent& agent, std::uint32_t peer);

  // Sends `frame`, a call with `request_id`, to worker `to`; `complete` runs once, with the
  // reply or the error (Timeout, WorkerLost), usually on an I/O thread. Returns whether the
  // frame went out: false when the peer is known lost, in which case `complete` already ran.
  // `keep` is held until the call completed. Throws remora::Error once the agent has stopped.
  static REMORA_DECL bool submit(Agent& agent, std::uint32_t to, std::string_view function,
                                 std::uint64_t request_id, wire::OutFrame frame, std::chrono::milliseconds timeout,
                                 std::shared_ptr<const void> keep, Completion complete);
  // Sends the call `frame` as a notification (wire::kNoReply): nothing waits for an answer,
  // nothing times out, and a failure on the callee is not reported. With `with_next_call` it is
  // held to leave with the next call to `to` (or the next sweep, within 5 ms). False when `to`
  // is lost or the agent stopped (then nothing is sent).
  static REMORA_DECL bool notify(Agent& agent, std::uint32_t to, wire::OutFrame frame, bool with_next_call);
  // The exception an error frame from `peer` stands for (reply_decoding.hpp).
  static REMORA_DECL std::exception_ptr error_of(const Agent& agent, const wire::InFrame& reply,
                                                 std::uint32_t peer, std::string_view function);
  // The group's rendezvous store (prefixed), for what else rendezvouses through it (process groups).
  static REMORA_DECL c10::intrusive_ptr<c10d::Store> store(const Agent& agent);
  // Calls this agent served as part of a batch (inbound.hpp), for tests.
  static REMORA_DECL std::uint64_t calls_batched(const Agent& agent);
  // Calls from worker `peer` that `agent` received and has not answered yet.
  static REMORA_DECL std::uint64_t pending_from(const Agent& agent, std::uint32_t peer);
  // Runs a continuation of a call's future on the agent's pool, counted as work in flight.
  static REMORA_DECL void dispatch_to_pool(void* agent, UniqueFunction<void()> callback);
  // Runs `job` on the agent's decoder thread (a reply whose decoding may run user code).
  static REMORA_DECL void decode_off_io(Agent& agent, UniqueFunction<void()> job);
  // Registers the layer above that meets `agent`'s calls (call_interceptor.hpp); it must live as
  // long as the agent (a service of it). The first one stays: registering it again does nothing,
  // another one throws Error.
  static REMORA_DECL void intercept(Agent& agent, CallInterceptor* interceptor);

  // This agent's instance of service S (made on first use as S(Agent&)); it lives as long as the
  // agent.
  template <class S>
  static std::shared_ptr<S> service(Agent& agent) {
    return std::static_pointer_cast<S>(
        find_or_add_service(agent, &service_key<S>, [](Agent& a) -> std::shared_ptr<AgentService> {
          return std::make_shared<S>(a);
        }));
  }

  // Waits for `f`, the answer to a sync call made through `agent` (or to `calls` calls made at
  // once, `f` completing when all have). When they are all the calls in flight and no other
  // thread is waiting for one, the caller watches `f` for a while before it sleeps
  // (sync_wait.hpp).
  template <class T>
  static void await_sync(const Agent& agent, const Future<T>& f, std::size_t calls = 1) {
    if (f.is_ready()) return;
    struct Waiting {
      std::atomic<int>& n;
      const bool alone = n.fetch_add(1, std::memory_order_relaxed) == 0;
      ~Waiting() { n.fetch_sub(1, std::memory_order_relaxed); }
    } waiting{agent.sync_waiters_};
    const auto watch = agent.options().sync_watch.value_or(std::chrono::microseconds(0));
    if (watch.count() > 0 && waiting.alone && only_calls_in_flight(agent, calls)) SyncWaitPolicy::mine().watch(f, watch);
    f.wait();
  }

 private:
  static REMORA_DECL bool only_calls_in_flight(const Agent& agent, std::size_t calls);
  static REMORA_DECL std::shared_ptr<AgentService> find_or_add_service(
      Agent& agent, const void* key, std::shared_ptr<AgentService> (*make)(Agent&));
};

// Where the continuations of a call's future run. User code gets on_pool: its continuations may
// block or take long, and the I/O thread must not. inline_on_io is for the library's own
// continuations that are short and never block (they save a hand-off to the pool).
enum class Continuations { on_pool, inline_on_io };

// Whether a reply may hold GPU copies still running (CUDA IPC); without CUDA the test is not compiled.
inline constexpr bool kGpuCopiesInReplies = REMORA_CUDA_IPC;

// Sets `promise` to the value `reply` holds, or to why it does not decode.
template <class T>
void decode_reply(Promise<T>& promise, wire::InFrame& reply, const wire::Limits& limits) {
  try {
    if constexpr (std::is_void_v<T>) {
      wire::decode_into(reply, limits);
      promise.set_value();
    } else {
      T value;
      wire::decode_into(reply, limits, value);
      promise.set_value(std::move(value));
    }
  } catch (...) {
    promise.set_exception(std::current_exception());
  }
}

// Starts a call whose reply decodes as T. `*sent` says whether the frame went to the peer: a
// ready future does not say it did not, since the reply may already be back.
template <class T>
Future<T> start_call(Agent& agent, std::uint32_t to, std::string_view function, std::uint64_t request_id,
                     wire::OutFrame frame, std::chrono::milliseconds timeout, std::shared_ptr<const void> keep = nullptr,
                     bool* sent = nullptr, Continuations continuations = Continuations::on_pool) {
  Promise<T> promise;
  if (continuations == Continuations::on_pool) promise.set_dispatch(&AgentAccess::dispatch_to_pool, &agent);
  Future<T> future = promise.get_future();
  // Small enough to live inside the Completion (no allocation).
  Completion complete = [promise = std::move(promise), function, agent = &agent, to](
                            wire::InFrame* reply, std::exception_ptr error) mutable {
    if (error) return promise.set_exception(error);
    try {
      if (reply->kind() == wire::FrameKind::error)
        return promise.set_exception(AgentAccess::error_of(*agent, *reply, to, function));
      // Decoding that may run user code (reply_decoding.hpp), and GPU copies still running
      // (wire::InFrame::before_use), are waited for on the decoder thread, off this I/O thread
      // (and off the pool, whose threads may all wait in sync calls for such replies).
      if constexpr (!decodes_without_user_code<T> || kGpuCopiesInReplies) {
        if (!decodes_without_user_code<T> || !reply->before_use.empty()) {
          return AgentAccess::decode_off_io(*agent, [promise = std::move(promise), agent, to,
                                                       frame = std::move(*reply)]() mutable {
            try {
              for (auto& wait_for_copy : frame.before_use) wait_for_copy();
            } catch (...) {
              return promise.set_exception(std::current_exception());
            }
            WireScope scope(agent, to);  // as AgentRuntime::finish gives the I/O thread's decoding
            decode_reply(promise, frame, agent->options().limits);
          });
        }
      }
      decode_reply(promise, *reply, agent->options().limits);
    } catch (...) {
      promise.set_exception(std::current_exception());
    }
  };
  const bool went =
      AgentAccess::submit(agent, to, function, request_id, std::move(frame), timeout, std::move(keep), std::move(complete));
  if (sent) *sent = went;
  return future;
}

// The call frame of `fn` with `args` as F's parameter types, under request `rid`. Inside the
// WireScope of its peer, which decides the device map and records forked RRefs.
template <auto F, class... As>
wire::OutFrame encode_call(Agent& agent, std::uint64_t rid, const Identity& fn, As&&... args) {
  return std::apply(
      [&](const auto&... typed) {
        return wire::encode_frame_to(wire_context.devices, wire::FrameKind::call, rid, agent.options().limits, fn.id,
                                     typed...);
      },
      typename fn_traits<decltype(F)>::args(std::forward<As>(args)...));
}

// Calls the handler registered as `fn` on worker `to`, with F's parameter and result types,
// holding `keep` until the call completed.
template <auto F, class... As>
auto call_keeping(Agent& agent, std::shared_ptr<const void> keep, std::uint32_t to, const Identity& fn,
                  CallOptions opts, As&&... args) {
  using Tr = fn_traits<decltype(F)>;
  const auto rid = AgentAccess::next_request_id(agent);
  // Values that fork references for the peer (RRefs) record undo actions: they run if the frame
  // is never sent, or the peer is already known to be lost.
  WireScope scope(&agent, to);
  auto frame = encode_call<F>(agent, rid, fn, std::forward<As>(args)...);
  bool sent = false;
  auto future = start_call<typename Tr::result>(agent, to, fn.name, rid, std::move(frame), opts.timeout,
                                                std::move(keep), &sent);
  if (sent) scope.commit();
  return future;
}

template <auto F, class... As>
auto call_as(Agent& agent, std::uint32_t to, const Identity& fn, CallOptions opts, As&&... args) {
  return call_keeping<F>(agent, nullptr, to, fn, opts, std::forward<As>(args)...);
}

// Runs the void function registered as `fn` on worker `to` without waiting for it or hearing
// back (AgentAccess::notify): for the library's own messages whose only answer would be "done",
// such as an autograd context's release. Cost: one frame, held for the next call to `to` when
// `with_next_call`; no entry in the call table, no reply. False when not sent.
template <auto F, class... As>
bool notify_as(Agent& agent, std::uint32_t to, const Identity& fn, bool with_next_call, As&&... args) {
  using Tr = fn_traits<decltype(F)>;
  static_assert(std::is_void_v<typename Tr::result>, "remora: only a function returning void can be a notification");
  (void)AutoRegister<F>::registered;
  WireScope scope(&agent, to);
  auto frame = encode_call<F>(agent, AgentAccess::next_request_id(agent), fn, std::forward<As>(args)...);
  const bool sent = AgentAccess::notify(agent, to, std::move(frame), with_next_call);
  if (sent) scope.commit();
  return sent;
}

template <class... As>
struct first_is_call_options : std::false_type {};
template <class A, class... As>
struct first_is_call_options<A, As...> : std::is_same<std::remove_cvref_t<A>, CallOptions> {};

}  // namespace remora::detail

namespace remora {

template <auto F, class... As>
auto Agent::rpc_async(std::string_view to, As&&... args) {
  if constexpr (detail::first_is_call_options<As...>::value) {
    return [&]<class O, class... Rest>(O&& opts, Rest&&... rest) {
      detail::check_callable<F, Rest...>();
      (void)detail::AutoRegister<F>::registered;
      return detail::call_as<F>(*this, detail::AgentAccess::id_of(*this, to), function_identity<F>, opts,
                                std::forward<Rest>(rest)...);
    }(std::forward<As>(args)...);
  } else {
    return rpc_async<F>(to, CallOptions{}, std::forward<As>(args)...);
  }
}

template <auto F, class... As>
auto Agent::rpc_sync(std::string_view to, As&&... args) {
  auto f = rpc_async<F>(to, std::forward<As>(args)...);
  detail::AgentAccess::await_sync(*this, f);
  return std::move(f).get();
}

}  // namespace remora

#if REMORA_HEADER_ONLY
#include "remora/agent/impl/agent.ipp"
#endif
