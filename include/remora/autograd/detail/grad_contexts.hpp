#pragma once
// One worker's distributed autograd contexts, after PyTorch's DistAutogradContainer: per
// context, the send functions (what each message's tensors hang from in this worker's graph),
// the workers it touched (to release it there), and the gradients accumulated for this worker's
// leaves. Receive functions are nodes of the graph itself (RecvBackward).
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <deque>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include <torch/csrc/autograd/function.h>

#include "remora/agent/agent.hpp"
#include "remora/agent/detail/call_interceptor.hpp"
#include "remora/agent/detail/services.hpp"
#include "remora/autograd/detail/grad_record.hpp"
#include "remora/autograd/stats.hpp"

namespace remora::autograd::detail {

// Where tensors received in a context join the receiver's graph (PyTorch's RecvRpcBackward).
// Its inputs are the received tensors that required grad, in frame order; it has no next edges:
// the gradients reaching it belong to worker `from`, message `message`, and a backward pass sends
// them there (it captures them instead of running this node).
class RecvBackward final : public torch::autograd::Node {
 public:
  RecvBackward(std::uint64_t context_, std::uint32_t from_, std::uint64_t message_,
               std::shared_ptr<std::atomic<std::int64_t>> live)
      : context(context_), from(from_), message(message_), live_(std::move(live)) {
    live_->fetch_add(1, std::memory_order_relaxed);
  }
  ~RecvBackward() override { live_->fetch_sub(1, std::memory_order_relaxed); }

  // Runs only when a local backward() reaches a tensor that came from another worker: refused,
  // since its gradient belongs to that worker (use remora::autograd::backward).
  REMORA_DECL torch::autograd::variable_list apply(torch::autograd::variable_list&& grads) override;
  std::string name() const override { return "remora::autograd::RecvBackward"; }

  const std::uint64_t context;
  const std::uint32_t from;
  const std::uint64_t message;
  // Per input, where its gradient may go straight (`inputs` 0: nowhere but `from`): set when
  // `from` had only passed the tensor on, before the node joins the graph; read-only after.
  std::vector<GradOrigin> origins;

 private:
  std::shared_ptr<std::atomic<std::int64_t>> live_;
};

// A context on one worker. Held by the worker's table, by the Context object on its creator,
// and by passes running in it.
struct GradContext {
  explicit GradContext(std::uint64_t id_) : id(id_) { touch(); }
  const std::uint64_t id;

  // News of the context arrived (a message in it): it is not idle.
  void touch() {
    last_news_ns.store(std::chrono::steady_clock::now().time_since_epoch().count(), std::memory_order_relaxed);
  }
  std::atomic<std::int64_t> last_news_ns{0};  // steady_clock's count

  std::mutex mu;  // guards what follows
  // Per message this worker sent in the context: the edge of each tensor that required grad.
  std::unordered_map<std::uint64_t, torch::autograd::edge_list> sends;
  std::set<std::uint32_t> peers;  // workers messages went to or came from
  // Gradients accumulated for this worker's leaves: tensor -> gradient (keyed by identity).
  std::unordered_map<const c10::TensorImpl*, std::pair<torch::Tensor, torch::Tensor>> grads;

  std::mutex pass;  // one pass through this worker's graph at a time
};

using GradStats = remora::autograd::Stats;

// The autograd context the current thread works in, if any: set by remora::autograd::Context on
// a user's thread, and by the agent's interceptor (GradContexts::run_in) while it serves a call
// that carried a record. Only agents whose interceptor is registered ever read it.
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

// One agent's contexts, and the agent's CallInterceptor: registered on the agent when the table is
// made (grad_contexts), it records the calls made inside a context and joins received tensors to
// this worker's graph.
class GradContexts : public remora::detail::AgentService, public remora::detail::CallInterceptor {
 public:
  explicit GradContexts(Agent& agent) : agent_(agent) {}

  // CallInterceptor. A call made on a thread inside one of this agent's live contexts carries
  // the context's record; a received record joins the frame's tensors that require grad to the
  // sender's side of the graph, and a served call runs inside its context (the scope is its id).
  REMORA_DECL void call_sent(std::uint32_t to, wire::OutFrame& frame) override;
  REMORA_DECL std::uint64_t received(std::uint32_t from, wire::InFrame& frame) override;
  REMORA_DECL void run_in(std::uint64_t scope, void (*handler)(void*), void* arg) override;
  REMORA_DECL void reply_sent(std::uint32_t to, std::uint64_t scope, wire::OutFrame& reply) override;

  Agent& agent() const { return agent_; }

  // A new context made by this worker.
  REMORA_DECL std::shared_ptr<GradContext> create();
  // Context `id`, or null if this worker does not know it (never did, or released it).
  REMORA_DECL std::shared_ptr<GradContext> find(std::uint64_t id) const;
  // Context `id`, which a message from `from` belongs to: made on its first news here, unless
  // it ended here already (a message that overtook the release on the way: the release of an
  // RRef made in the context, say), this worker made it, or its maker is lost (then nothing
  // would release it).
  REMORA_DECL std::shared_ptr<GradContext> join(std::uint64_t id, std::uint32_t from);
  // Forgets context `id` (and remembers that it ended); returns it (null if unknown).
  REMORA_DECL std::shared_ptr<GradContext> take(std::uint64_t id);
  // Contexts that ended here because they had no news for too long (on_tick), ever.
  std::uint64_t expired() const { return expired_.load(std::memory_order_relaxed); }

  std::uint64_t next_message() { return next_message_.fetch_add(1, std::memory_order_relaxed); }
  void count_gradient_message() { gradient_messages_.fetch_add(1, std::memory_order_relaxed); }
  void count_release_sent() { releases_sent_.fetch_add(1, std::memory_order_relaxed); }
  void count_release_received() { releases_received_.fetch_add(1, std::memory_order_relaxed); }
  const std::shared_ptr<std::atomic<std::int64_t>>& recv_counter() const { return recv_live_; }
  REMORA_DECL GradStats stats() const;

  // Ids say which worker made the context: its id + 1 in the top 24 bits (an elastic group's ids
  // reach 2^20), a count of the contexts it made in the low 40.
  static constexpr int kMakerShift = 40;
  static std::uint32_t maker_of(std::uint64_t id) { return static_cast<std::uint32_t>((id >> kMakerShift) - 1); }

  REMORA_DECL void on_peer_lost(std::uint32_t peer) override;
  // Ends the contexts other workers made that had no news for Options::autograd_context_timeout.
  REMORA_DECL void on_tick() override;
  REMORA_DECL void on_stop() override;
  void add_debug_info(std::map<std::string, std::int64_t>& counters) const override {
    const auto s = stats();
    counters["autograd.contexts"] = static_cast<std::int64_t>(s.contexts);
    counters["autograd.send_functions"] = static_cast<std::int64_t>(s.send_functions);
    counters["autograd.recv_functions"] = s.recv_functions;
    counters["autograd.gradient_messages"] = static_cast<std::int64_t>(s.gradient_messages);
    counters["autograd.releases_sent"] = static_cast<std::int64_t>(s.releases_sent);
    counters["autograd.releases_received"] = static_cast<std::int64_t>(s.releases_received);
    counters["autograd.contexts_expired"] = static_cast<std::int64_t>(expired());
  }

 private:
  Agent& agent_;
  mutable std::mutex mu_;
  std::unordered_map<std::uint64_t, std::shared_ptr<GradContext>> contexts_;
  // The last contexts that ended here, oldest first, so that late messages do not revive them.
  static constexpr std::size_t kEndedKept = 4096;
  std::deque<std::uint64_t> ended_order_;
  std::unordered_set<std::uint64_t> ended_;
  std::atomic<std::uint64_t> next_context_{1};
  std::atomic<std::uint64_t> next_message_{1};
  std::atomic<std::uint64_t> gradient_messages_{0};
  std::atomic<std::uint64_t> releases_sent_{0}, releases_received_{0};
  std::atomic<std::uint64_t> expired_{0};
  REMORA_DECL void remember_ended(std::uint64_t id);  // under mu_
  std::shared_ptr<std::atomic<std::int64_t>> recv_live_ = std::make_shared<std::atomic<std::int64_t>>(0);
};

// The agent's contexts, made on first use (and then registered as its interceptor).
REMORA_DECL std::shared_ptr<GradContexts> grad_contexts(Agent& agent);

}  // namespace remora::autograd::detail
