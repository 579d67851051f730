#pragma once
// The functions this process serves, by id. In an SPMD binary every function that is called
// with rpc_sync/rpc_async/remote is registered by the call site's template instantiation; a
// binary that only serves names its functions with REMORA_EXPOSE.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <typeinfo>
#include <unordered_map>
#include <vector>

#include "remora/agent/detail/function_traits.hpp"
#include "remora/agent/detail/protocol.hpp"
#include "remora/agent/detail/wire_context.hpp"
#include "remora/core/detail/unique_function.hpp"
#include "remora/core/errors.hpp"
#include "remora/core/log.hpp"
#include "remora/core/type_id.hpp"
#include "remora/wire/value_codec.hpp"

namespace remora::detail {

// A call as the callee sees it: the frame, who sent it, and how to answer it (exactly once).
// What a served call's late answer needs once its agent may be gone (a Future that completes
// after the agent stopped, or was destroyed): the agent's limits, and whether it is still there.
// A late completion holds `mu` shared while it answers; the agent takes it exclusively, once, as it
// stops (AgentRuntime::stop_now), and from then on late answers are dropped.
struct ServeLifetime {
  explicit ServeLifetime(const wire::Limits& l) : limits(l) {}
  std::shared_mutex mu;
  bool alive = true;  // under mu
  const wire::Limits limits;
};

struct IncomingCall {
  wire::InFrame frame;
  const wire::Limits* limits = nullptr;  // valid while the call runs (lifetime's, or the agent's)
  UniqueFunction<void(wire::OutFrame)> respond;
  Agent* agent = nullptr;
  std::uint32_t from = UINT32_MAX;
  std::shared_ptr<ServeLifetime> lifetime;  // for an answer given after the handler returned
};

// The agent whose worker pool runs the current thread's function, if any, and the worker whose
// call it is: lets a remote function make nested calls on the agent that serves it.
inline thread_local Agent* serving_agent = nullptr;
inline thread_local std::uint32_t serving_peer = UINT32_MAX;
// The name of serving_agent's worker, for messages ("?" outside a served call).
REMORA_DECL std::string serving_worker_name();

using Handler = void (*)(IncomingCall&&);

struct RegisteredFunction {
  RegisteredFunction(std::string_view n, Handler h) : name(n), handler(h) {}
  std::string_view name;
  Handler handler;
  // How long the handler has been running lately (a moving average, microseconds; unknown at
  // first). Calls of cheap functions that arrive together run together and answer in one write.
  mutable std::atomic<std::uint32_t> recent_us{kUnknownCost};
  static constexpr std::uint32_t kUnknownCost = UINT32_MAX;
  void record_cost(std::chrono::steady_clock::duration d) const {
    const auto us = static_cast<std::uint32_t>(
        std::min<std::int64_t>(std::chrono::duration_cast<std::chrono::microseconds>(d).count(), 1'000'000));
    const auto old = recent_us.load(std::memory_order_relaxed);
    recent_us.store(old == kUnknownCost ? us : (old * 3 + us) / 4, std::memory_order_relaxed);
  }
  bool cheap() const { return recent_us.load(std::memory_order_relaxed) <= 20; }
};

// The functions this process serves, by id. Two functions whose names hash to one id (FNV-1a of
// the whole name: rare, but possible) are served under neither: a call of that id is answered as
// unknown, and an agent refuses to start while there is a clash (check_no_clashes).
class Registry {
 public:
  REMORA_DECL static Registry& global();
  // Returns true, so that it can initialize the static members that register functions.
  REMORA_DECL bool add(std::uint64_t id, std::string_view name, Handler h);
  const RegisteredFunction* find(std::uint64_t id) const {
    std::lock_guard lock(mu_);
    auto it = functions_.find(id);
    return it == functions_.end() ? nullptr : &it->second;
  }
  // Throws remora::Error naming every pair of functions that share an id.
  REMORA_DECL void check_no_clashes() const;

 private:
  mutable std::mutex mu_;
  std::unordered_map<std::uint64_t, RegisteredFunction> functions_;
  std::map<std::uint64_t, std::string> clashes_;  // id -> the names that share it
};

REMORA_DECL std::string demangle(const char* name);

REMORA_DECL wire::OutFrame error_frame(std::uint64_t request_id, ErrorCode code, const std::string& type,
                                       const std::string& message, const std::vector<std::string>& origin = {});

// The error reply for the exception in flight. A RemoteError raised here (a value this worker
// holds failed to be created, say) keeps naming the worker and function where it began.
REMORA_DECL wire::OutFrame current_exception_frame(std::uint64_t request_id);

// Encodes a function's result as the reply to `request_id` for worker `to`.
template <class T>
wire::OutFrame value_reply_frame(std::uint64_t request_id, const wire::Limits& limits, const T& value,
                                 Agent* agent = nullptr, std::uint32_t to = UINT32_MAX) {
  try {
    WireScope scope(agent, to, Direction::reply);
    auto frame = wire::encode_frame_to(wire_context.devices, wire::FrameKind::reply, request_id, limits, value);
    scope.commit();
    return frame;
  } catch (...) {
    return current_exception_frame(request_id);
  }
}

// Encodes a function's outcome (value or error) as the reply to `request_id` for worker `to`.
template <class T>
wire::OutFrame reply_frame(std::uint64_t request_id, const wire::Limits& limits, const Future<T>& outcome,
                           Agent* agent = nullptr, std::uint32_t to = UINT32_MAX) {
  try {
    if constexpr (std::is_void_v<T>) {
      outcome.get();
      return wire::encode_frame(wire::FrameKind::reply, request_id, limits);
    } else {
      return value_reply_frame(request_id, limits, outcome.get(), agent, to);
    }
  } catch (...) {
    return current_exception_frame(request_id);
  }
}

// Gives `reply` to `respond`. When that throws (the reply could not be sent: a tensor that cannot
// be staged, say), the caller gets that error instead of waiting for its deadline; when even the
// error cannot be sent, it is logged. Never throws: it runs on pool threads and in continuations.
inline void answer(UniqueFunction<void(wire::OutFrame)>& respond, std::uint64_t request_id,
                   wire::OutFrame reply) noexcept {
  wire::OutFrame error;
  try {
    return respond(std::move(reply));
  } catch (...) {
    error = current_exception_frame(request_id);  // while the exception is in flight
  }
  try {
    respond(std::move(error));
  } catch (...) {
    log_current_exception("sending a call's answer");
  }
}

// Runs F for an incoming call: decodes the arguments, calls F, answers with its result; a
// function returning a Future or Task answers when it completes, holding no thread meanwhile.
//
// The arguments, and the received frame's tensors, are gone before the reply is sent. A tensor
// that views the caller's shared-memory arena then sends its release ahead of the reply, so the
// caller's next call finds that range free again instead of touching fresh pages (which costs a
// page fault per 4 KiB, expensive on virtual machines).
template <auto F>
void handle_call(IncomingCall&& call) {
  using Tr = fn_traits<decltype(F)>;
  const std::uint64_t rid = call.frame.request_id();
  std::optional<typename Tr::args> args(std::in_place);
  try {
    WireScope scope(call.agent, call.from);
    std::uint64_t fid;
    std::apply([&](auto&... a) { wire::decode_into(call.frame, *call.limits, fid, a...); }, *args);
  } catch (...) {
    return answer(call.respond, rid, current_exception_frame(rid));
  }
  call.frame.tensors.clear();
  using R = typename Tr::raw_result;
  using T = typename Tr::result;
  if constexpr (is_future_v<R>) {
    Future<T> outcome;
    try {
      outcome = std::apply(F, std::move(*args));
    } catch (...) {
      outcome = make_exceptional_future<T>(std::current_exception());
    }
    args.reset();
    if (outcome.is_ready()) {  // answered at once: no stored continuation
      auto reply = reply_frame(rid, *call.limits, outcome, call.agent, call.from);
      outcome = Future<T>();
      return answer(call.respond, rid, std::move(reply));
    }
    // Later, on whichever thread completes it: maybe after the agent stopped, when the agent,
    // its limits and its connections are gone.
    outcome.on_ready([outcome, rid, life = std::move(call.lifetime), respond = std::move(call.respond),
                      agent = call.agent, from = call.from]() mutable {
      std::shared_lock lock(life->mu);
      if (!life->alive) return;  // its agent stopped: nobody to answer through
      answer(respond, rid, reply_frame(rid, life->limits, outcome, agent, from));
    });
  } else {
    // A plain result is answered at once, without a future in between.
    wire::OutFrame reply;
    try {
      if constexpr (std::is_void_v<R>) {
        std::apply(F, std::move(*args));
        reply = wire::encode_frame(wire::FrameKind::reply, rid, *call.limits);
      } else {
        reply = value_reply_frame(rid, *call.limits, std::apply(F, std::move(*args)), call.agent, call.from);
      }
    } catch (...) {
      reply = current_exception_frame(rid);
    }
    args.reset();
    answer(call.respond, rid, std::move(reply));
  }
}

template <auto F>
struct AutoRegister {
  static inline const bool registered =
      Registry::global().add(function_identity<F>.id, function_identity<F>.name, &handle_call<F>);
};

// Registers F under an explicit identity (the library's own messages, whose template names
// would not be spelled alike by every compiler).
template <auto F, const Identity& Id>
struct AutoRegisterAs {
  static inline const bool registered = Registry::global().add(Id.id, Id.name, &handle_call<F>);
};

template <auto... Fs>
bool expose() {
  return (AutoRegister<Fs>::registered && ...);
}

}  // namespace remora::detail

#define REMORA_DETAIL_CAT2(a, b) a##b
#define REMORA_DETAIL_CAT(a, b) REMORA_DETAIL_CAT2(a, b)
// Declares the functions a serve-only binary exposes: REMORA_EXPOSE(&add, &scale);
// (an SPMD binary that calls a function registers it without this line).
#define REMORA_EXPOSE(...) \
  [[maybe_unused]] static const bool REMORA_DETAIL_CAT(remora_exposed_, __LINE__) = ::remora::detail::expose<__VA_ARGS__>()

#if REMORA_HEADER_ONLY
#include "remora/agent/impl/registry.ipp"
#endif
