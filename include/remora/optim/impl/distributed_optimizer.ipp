// DistributedOptimizer's compiled part: handing a context's gradients to the parameters.
#include "remora/optim/distributed_optimizer.hpp"

namespace remora::optim::detail {

REMORA_DECL void apply_context_grads(std::uint64_t context, const std::vector<torch::Tensor>& params) {
  Agent& agent = *remora::detail::serving_agent;
  auto ctx = autograd::detail::grad_contexts(agent)->find(context);
  if (!ctx)
    throw Error("remora: worker '" + agent.self().name + "' has no autograd context " + std::to_string(context) +
                " (it ended, or no backward pass reached this worker's parameters)");
  std::lock_guard lock(ctx->mu);
  for (auto p : params) {
    auto it = ctx->grads.find(p.unsafeGetTensorImpl());
    p.mutable_grad() = it == ctx->grads.end() ? torch::Tensor() : it->second.second;
  }
}

}  // namespace remora::optim::detail
