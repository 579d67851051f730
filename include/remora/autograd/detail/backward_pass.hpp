#pragma once
// A backward pass through one worker's part of the graph, and the messages that carry gradients
// between workers and end contexts. The messages are ordinary remora calls (request ids,
// timeouts, WorkerLost), compiled once (autograd/impl/backward_pass.ipp).
//   gradients(context, batches, retain)  receiver -> sender  the gradients of what it sent
//   release(context, told)               any -> peers        the context ended; forget it, and tell
//                                                            your peers not in `told` (a
//                                                            notification, held for the next call)
#include <cstdint>
#include <map>
#include <utility>
#include <vector>

#include <ATen/core/Dict.h>
#include <torch/csrc/autograd/edge.h>
#include <torch/types.h>

#include "remora/autograd/detail/grad_contexts.hpp"
#include "remora/core/future.hpp"

namespace remora::autograd::detail {

// The gradients of one message's tensors that required grad, in frame order (undefined: none
// reached it).
using MessageGrads = std::pair<std::uint64_t, std::vector<torch::Tensor>>;
// Per worker, the gradients due to it.
using GradsByWorker = std::map<std::uint32_t, std::vector<MessageGrads>>;

// Runs the graph from `roots`, seeded with `grads`, on this thread: gradients of this worker's
// leaves accumulate in `ctx`; returns those of tensors that came from other workers.
REMORA_DECL GradsByWorker run_local_pass(GradContext& ctx, const torch::autograd::edge_list& roots,
                                         std::vector<torch::Tensor> grads, bool retain_graph);

// Sends each worker its gradients; completes when every worker finished its part (and the parts
// those set off), with the first failure if one did not.
REMORA_DECL Future<void> send_gradients(Agent& agent, GradContext& ctx, GradsByWorker due, bool retain_graph);

namespace msg {
REMORA_DECL Future<void> gradients(std::uint64_t context, std::vector<MessageGrads> batches, bool retain_graph);
REMORA_DECL void release(std::uint64_t context, std::vector<std::uint32_t> told);
}  // namespace msg

// The gradients accumulated in context `context` on `agent`'s worker.
REMORA_DECL c10::Dict<torch::Tensor, torch::Tensor> gradients_in(Agent& agent, std::uint64_t context);

// Tells ctx's peers that it ended, but those in `told` (sorted), which hear of it already. Each
// is also told whom this wave reaches, so that it passes the news on only to the workers it
// alone knows: a context that spanned a trainer and two stages ends with two messages, not four.
// Never throws.
REMORA_DECL void release_on_peers(Agent& agent, GradContext& ctx, std::vector<std::uint32_t> told);

}  // namespace remora::autograd::detail
