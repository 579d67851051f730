#pragma once
// Where a layer above the agent meets its calls at the frame boundaries. An agent calls the one
// CallInterceptor registered on it (if any) as a call leaves, as a frame that carries a record
// arrives, around the handler of such a call and as its reply leaves; it knows nothing of what
// the interceptor records. Distributed autograd (remora/autograd) is the interceptor today: its
// record says which graph a frame's tensors hang from.
#include <atomic>
#include <cstdint>

#include "remora/wire/frame.hpp"

namespace remora {
class Agent;
}

namespace remora::detail {

// Registered per agent (AgentAccess::intercept), and lives as long as that agent. Its methods run
// on the threads named below, concurrently; they must not block.
class CallInterceptor {
 public:
  virtual ~CallInterceptor() = default;
  // A call leaves for worker `to` on this thread: appends a record to `frame` (and sets
  // wire::kInterceptorRecord) when this thread's work needs one. Cost when it does not: one
  // thread-local check.
  virtual void call_sent(std::uint32_t to, wire::OutFrame& frame) = 0;
  // A call or reply from `from` carries a record (wire::kInterceptorRecord): takes it off before
  // the body is decoded. For a call, returns the scope its handler runs in, which run_in and
  // reply_sent get. On an I/O thread. Throws ProtocolError when the record is bad.
  virtual std::uint64_t received(std::uint32_t from, wire::InFrame& frame) = 0;
  // Runs `handler(arg)` (the call received() took a record off) inside `scope`, on this thread.
  virtual void run_in(std::uint64_t scope, void (*handler)(void*), void* arg) = 0;
  // The reply to such a call leaves for `to`.
  virtual void reply_sent(std::uint32_t to, std::uint64_t scope, wire::OutFrame& reply) = 0;
};

// How the layer makes (or finds) its interceptor for an agent: set once by the layer's headers,
// so that an agent that receives a record before the layer was used on it still has one. Null in
// programs without such a layer; a record that reaches one is refused.
using InterceptorOf = CallInterceptor* (*)(Agent&);
inline std::atomic<InterceptorOf> interceptor_of{nullptr};

}  // namespace remora::detail
