#pragma once
// Distributed autograd: training through remote calls, after PyTorch's torch.distributed.autograd
// (FAST mode).
//
//   {
//     remora::autograd::Context ctx;                      // like `with dist_autograd.context()`
//     torch::Tensor y = m.forward(x, 1.0);                // calls made in ctx record send/recv
//     remora::autograd::backward(ctx, {torch::mse_loss(y, target)});  // every worker it touched
//     auto grads = remora::autograd::get_gradients(ctx);  // this worker's: tensor -> gradient
//   }                                                     // released on every worker
//
// Every call made on the Context's thread while it lives (and every call the callee makes while
// serving it, on its thread) carries the context: tensors that require grad hang the receiver's
// result from the sender's graph. backward() runs the pass on this worker, sends each worker the
// gradients of what it sent, and returns when every worker is done. Gradients accumulate in the
// context on the worker that owns each leaf, never in `.grad`.
//
// As in PyTorch's FAST mode, a worker runs its graph from the messages it sent once per batch of
// gradients it receives, so a part of its graph reached by two batches (from two workers, or in
// two rounds) is traversed twice: that needs retain_graph, exactly as two local backward calls.
#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

#include <ATen/core/Dict.h>
#include <torch/types.h>

#include "remora/agent/agent.hpp"
#include "remora/autograd/detail/grad_contexts.hpp"
#include "remora/autograd/stats.hpp"

namespace remora::autograd {

class Context {
 public:
  // A new context on the current thread, for calls made through `agent` (by default the process's
  // agent: remora::current_agent()). Throws remora::Error if this thread is in a context already.
  REMORA_DECL Context();
  REMORA_DECL explicit Context(Agent& agent);
  // Leaves the context and releases it on every worker that took part (asynchronously: their
  // tables empty shortly after). Never throws.
  REMORA_DECL ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  // Unique in the group: the worker's id + 1 in the top 24 bits, a counter below.
  std::uint64_t id() const { return state_->id; }
  Agent& agent() const { return *agent_; }

 private:
  Agent* agent_;
  std::shared_ptr<detail::GradContext> state_;
  detail::GradScope saved_;
};

// Runs the backward pass of `roots` (tensors of one element each: losses) through this worker's
// graph and every worker the context's calls touched. Returns when all are done. Throws
// RemoteError (the worker and cause) when a pass failed elsewhere, WorkerLost or Timeout when a
// worker did not finish it. `retain_graph` keeps every worker's graph for another pass.
REMORA_DECL void backward(const Context& ctx, const std::vector<torch::Tensor>& roots, bool retain_graph = false);

// The gradients accumulated in `ctx` on this worker, for its leaves: tensor -> gradient.
REMORA_DECL c10::Dict<torch::Tensor, torch::Tensor> get_gradients(const Context& ctx);

// The gradients accumulated on this worker in the context `context_id` (a Context's id() passed
// along): in a served call, of the agent serving it, elsewhere of current_agent(). Empty if this
// worker does not know the context.
REMORA_DECL c10::Dict<torch::Tensor, torch::Tensor> get_gradients(std::uint64_t context_id);

// Counts of `agent`'s autograd tables (contexts, send and receive functions), for leak checks.
REMORA_DECL Stats stats(Agent& agent);

}  // namespace remora::autograd

#if REMORA_HEADER_ONLY
#include "remora/autograd/impl/grad_contexts.ipp"
#include "remora/autograd/impl/backward_pass.ipp"
#include "remora/autograd/impl/context.ipp"
#endif
