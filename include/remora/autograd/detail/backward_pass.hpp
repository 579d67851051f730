#pragma once
// A backward pass through one worker's part of the graph, and the messages that carry gradients
// between workers and end contexts. The messages are ordinary remora calls (request ids,
// timeouts, WorkerLost), compiled once (autograd/impl/backward_pass.ipp).
//   gradients(context, batches, retain)  receiver -> sender  the gradients of what it sent
//   release(context)                     any -> peers        the context ended; forget it (a
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
REMORA_DECL void release(std::uint64_t context);
}  // namespace msg

// The gradients accumulated in context `context` on `agent`'s worker.
REMORA_DECL c10::Dict<torch::Tensor, torch::Tensor> gradients_in(Agent& agent, std::uint64_t context);

// Tells ctx's peers (but `except`) that it ended. Never throws.
REMORA_DECL void release_on_peers(Agent& agent, GradContext& ctx, std::uint32_t except);

}  // namespace remora::autograd::detail
