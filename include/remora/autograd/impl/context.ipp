// Context, backward and get_gradients (compiled once; see autograd/context.hpp).
#include <atomic>

#include "remora/agent/detail/outbound.hpp"
#include "remora/autograd/context.hpp"
#include "remora/autograd/detail/backward_pass.hpp"
#include "remora/core/log.hpp"

namespace remora::autograd {

REMORA_DECL Context::Context() : Context(current_agent()) {}

REMORA_DECL Context::Context(Agent& agent) : agent_(&agent) {
  auto table = detail::grad_contexts(agent);
  auto& scope = detail::grad_scope;
  // A scope whose context has ended is not a context this thread is in: a Context destroyed on
  // another thread (after a co_await resumed there) could not restore this thread's scope.
  if (scope.context && scope.agent == &agent && table->find(scope.context))
    throw Error("remora: this thread is in autograd context " + std::to_string(scope.context) +
                " already; contexts do not nest");
  state_ = table->create();
  saved_ = scope.agent == &agent ? detail::GradScope{} : scope;  // (this agent's: none, or an ended one)
  scope = {&agent, state_->id};
}

REMORA_DECL Context::~Context() {
  // Restores the scope only on a thread that is in this context: a coroutine may end the
  // Context on another thread than the one it began on, whose scope is not this one's.
  if (detail::grad_scope.agent == agent_ && detail::grad_scope.context == state_->id) {
    detail::grad_scope = saved_;
  } else {
    static std::atomic<bool> told{false};
    if (!told.exchange(true))
      remora::detail::log_warning(
          "remora: autograd context " + std::to_string(state_->id) +
          " ended on another thread than the one it began on (a coroutine that resumed elsewhere?): calls made on "
          "the new thread were not recorded in it, and those of the first thread were until it ended. A Context "
          "belongs to one thread: end it before a co_await (docs/autograd.md)");
  }
  try {
    detail::grad_contexts(*agent_)->take(state_->id);
    detail::release_on_peers(*agent_, *state_, {});
  } catch (...) {
  }
}

REMORA_DECL void backward(const Context& ctx, const std::vector<torch::Tensor>& roots, bool retain_graph) {
  if (roots.empty()) throw Error("remora::autograd::backward: no roots");
  torch::autograd::edge_list edges;
  std::vector<torch::Tensor> seeds;
  for (std::size_t i = 0; i < roots.size(); ++i) {
    const auto& r = roots[i];
    if (!r.defined() || !r.requires_grad())
      throw Error("remora::autograd::backward: root " + std::to_string(i) + " does not require grad");
    if (r.numel() != 1)
      throw Error("remora::autograd::backward: root " + std::to_string(i) + " has " + std::to_string(r.numel()) +
                  " elements; a root is a loss, with one");
    edges.push_back(torch::autograd::impl::gradient_edge(r));
    seeds.push_back(torch::ones_like(r));
  }
  auto state = detail::grad_contexts(ctx.agent())->find(ctx.id());
  if (!state) throw Error("remora::autograd::backward: context " + std::to_string(ctx.id()) + " has ended");
  auto due = detail::run_local_pass(*state, edges, std::move(seeds), retain_graph);
  if (due.empty()) return;
  auto done = detail::send_gradients(ctx.agent(), *state, std::move(due), retain_graph);
  remora::detail::AgentAccess::await_sync(ctx.agent(), done);
  done.get();
}

REMORA_DECL c10::Dict<torch::Tensor, torch::Tensor> get_gradients(const Context& ctx) {
  return detail::gradients_in(ctx.agent(), ctx.id());
}

REMORA_DECL c10::Dict<torch::Tensor, torch::Tensor> get_gradients(std::uint64_t context_id) {
  return detail::gradients_in(remora::detail::serving_agent ? *remora::detail::serving_agent : current_agent(),
                              context_id);
}

REMORA_DECL Stats stats(Agent& agent) { return detail::grad_contexts(agent)->stats(); }

}  // namespace remora::autograd
