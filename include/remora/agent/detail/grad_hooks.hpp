#pragma once
// Where distributed autograd (remora/autograd) meets the agent: the agent calls a GradRecorder
// at its frame boundaries and knows nothing else about gradients. The autograd layer installs
// the recorder; a frame with an autograd record that reaches a program without it is refused.
#include <atomic>
#include <cstdint>

#include "remora/wire/grad_record.hpp"

namespace remora {
class Agent;
}

namespace remora::detail {

class GradRecorder {
 public:
  virtual ~GradRecorder() = default;
  // A call leaves `agent` for worker `to` on a thread inside one of agent's contexts
  // (grad_scope): records what the frame's tensors hang from and appends the record.
  virtual void call_sent(Agent& agent, std::uint32_t to, wire::OutFrame& frame) = 0;
  // A call or reply from `from` carried `record` (already taken off the frame): attaches the
  // frame's tensors that require grad to the sender's side of the graph.
  virtual void received(Agent& agent, std::uint32_t from, wire::InFrame& frame, const wire::GradRecord& record) = 0;
  // The reply to a call made in `context` leaves for `to`.
  virtual void reply_sent(Agent& agent, std::uint32_t to, std::uint64_t context, wire::OutFrame& reply) = 0;
};

// Set once by the autograd layer (a static of its headers); null in programs without it.
inline std::atomic<GradRecorder*> grad_recorder{nullptr};

// The autograd context the current thread works in, if any: set by remora::autograd::Context on
// a user's thread, and by the agent while it serves a call that carried a record.
struct GradScope {
  Agent* agent = nullptr;
  std::uint64_t context = 0;  // 0: none
};
inline thread_local GradScope grad_scope;

// Sets grad_scope for the current scope.
class GradScopeGuard {
 public:
  explicit GradScopeGuard(GradScope scope) : saved_(grad_scope) { grad_scope = scope; }
  ~GradScopeGuard() { grad_scope = saved_; }
  GradScopeGuard(const GradScopeGuard&) = delete;
  GradScopeGuard& operator=(const GradScopeGuard&) = delete;

 private:
  GradScope saved_;
};

}  // namespace remora::detail
