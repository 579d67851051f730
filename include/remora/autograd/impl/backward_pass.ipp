// The backward pass through one worker's graph and the messages between workers (compiled once;
// see autograd/detail/backward_pass.hpp).
#include <algorithm>
#include <iterator>
#include <unordered_set>

#include <torch/csrc/autograd/engine.h>
#include <torch/csrc/autograd/functions/accumulate_grad.h>
#include <torch/csrc/autograd/variable.h>

#include "remora/agent/detail/outbound.hpp"
#include "remora/autograd/context.hpp"
#include "remora/autograd/detail/backward_pass.hpp"
#include "remora/core/when_all.hpp"

namespace remora::autograd::detail {

using remora::detail::AgentAccess;

// (Helpers of run_local_pass: REMORA_DECL like it, never in an anonymous namespace, which would
// give each translation unit of a header-only program its own copy under one inline function.)

// Adds `g`, the gradients of recv's inputs (undefined: none reached it), to what is due to other
// workers: each to the worker its tensor came from, or straight to the worker that one had it
// from untouched (its origin). Only gradients on the CPU take the short route: no device map
// need exist between this worker and the origin. Sums gradients due to the same input.
REMORA_DECL void add_due(GradsByWorker& due, const RecvBackward& recv, std::vector<torch::Tensor> g) {
  auto add = [&](std::uint32_t worker, std::uint64_t message, std::size_t inputs, std::size_t input,
                 torch::Tensor grad) {
    auto& batches = due[worker];
    auto it = std::find_if(batches.begin(), batches.end(), [&](const MessageGrads& b) { return b.first == message; });
    if (it == batches.end()) it = batches.insert(batches.end(), {message, std::vector<torch::Tensor>(inputs)});
    auto& slot = it->second[input];
    slot = slot.defined() ? slot + grad : std::move(grad);
  };
  for (std::size_t i = 0; i < g.size(); ++i) {
    if (!g[i].defined()) continue;
    const bool straight = i < recv.origins.size() && recv.origins[i].inputs != 0 && g[i].device().is_cpu();
    if (straight)
      add(recv.origins[i].worker, recv.origins[i].message, recv.origins[i].inputs, recv.origins[i].input,
          std::move(g[i]));
    else
      add(recv.from, recv.message, g.size(), i, std::move(g[i]));
  }
}

// The gradients `grads` of received tensors (`roots`, each an input of a RecvBackward), per
// sender and message, summed where one tensor was passed on more than once.
REMORA_DECL GradsByWorker route_to_senders(const torch::autograd::edge_list& roots, torch::autograd::variable_list grads) {
  std::map<const RecvBackward*, std::vector<torch::Tensor>> per_message;
  for (std::size_t i = 0; i < roots.size(); ++i) {
    const auto* recv = static_cast<const RecvBackward*>(roots[i].function.get());
    auto& g = per_message[recv];
    if (g.empty()) g.resize(recv->num_inputs());
    auto& slot = g[roots[i].input_nr];
    slot = slot.defined() ? slot + grads[i] : std::move(grads[i]);
  }
  GradsByWorker due;
  for (auto& [recv, g] : per_message) add_due(due, *recv, std::move(g));
  return due;
}

REMORA_DECL GradsByWorker run_local_pass(GradContext& ctx, const torch::autograd::edge_list& roots,
                                         std::vector<torch::Tensor> grads, bool retain_graph) {
  torch::autograd::edge_list from;
  torch::autograd::variable_list seeds;
  for (std::size_t i = 0; i < roots.size(); ++i) {
    if (!roots[i].is_valid() || !grads[i].defined()) continue;
    const auto& meta = roots[i].function->input_metadata(roots[i].input_nr);
    auto g = std::move(grads[i]);
    if (g.device() != meta.device() || g.dtype() != meta.options().dtype()) g = g.to(meta.options());
    from.push_back(roots[i]);
    seeds.push_back(std::move(g));
  }
  // Tensors this worker only passed on (received from one worker, sent to another) need no pass:
  // their gradients go straight back where they came from.
  const bool pass_through = !from.empty() && std::all_of(from.begin(), from.end(), [](const torch::autograd::Edge& e) {
    return dynamic_cast<const RecvBackward*>(e.function.get()) != nullptr;
  });
  if (pass_through) return route_to_senders(from, std::move(seeds));
  // What the pass stops at: this worker's leaves (their gradients go to the context, not to
  // .grad) and tensors that came from other workers (theirs go back). The engine captures the
  // gradient reaching each and runs only what leads to them.
  torch::autograd::edge_list outputs;
  std::vector<std::pair<std::size_t, torch::Tensor>> leaves;      // output index, the leaf
  std::vector<std::pair<const RecvBackward*, std::size_t>> recvs;  // and the first of its outputs
  std::unordered_set<const torch::autograd::Node*> seen;
  std::vector<const torch::autograd::Node*> stack;
  auto visit = [&](const std::shared_ptr<torch::autograd::Node>& fn) {
    if (!fn || !seen.insert(fn.get()).second) return;
    if (auto* acc = dynamic_cast<const torch::autograd::AccumulateGrad*>(fn.get())) {
      leaves.emplace_back(outputs.size(), acc->variable);
      outputs.emplace_back(fn, 0);
    } else if (auto* recv = dynamic_cast<const RecvBackward*>(fn.get())) {
      recvs.emplace_back(recv, outputs.size());
      for (std::uint32_t i = 0; i < recv->num_inputs(); ++i) outputs.emplace_back(fn, i);
    } else {
      stack.push_back(fn.get());
    }
  };
  for (const auto& e : from) visit(e.function);
  while (!stack.empty()) {
    const auto* node = stack.back();
    stack.pop_back();
    for (const auto& e : node->next_edges())
      if (e.is_valid()) visit(e.function);
  }
  if (outputs.empty()) return {};

  torch::autograd::variable_list out;
  {
    std::lock_guard pass(ctx.pass);
    out = torch::autograd::Engine::get_default_engine().execute(from, seeds, retain_graph, false, false, outputs);
  }
  {
    std::lock_guard lock(ctx.mu);
    for (const auto& [i, var] : leaves) {
      if (!out[i].defined()) continue;
      auto [it, fresh] = ctx.grads.try_emplace(var.unsafeGetTensorImpl(), var, out[i]);
      if (!fresh) it->second.second = it->second.second + out[i];
    }
  }
  GradsByWorker due;
  for (auto& [recv, first] : recvs)
    add_due(due, *recv,
            std::vector<torch::Tensor>(out.begin() + static_cast<std::ptrdiff_t>(first),
                                       out.begin() + static_cast<std::ptrdiff_t>(first + recv->num_inputs())));
  return due;
}

REMORA_DECL Future<void> send_gradients(Agent& agent, GradContext& ctx, GradsByWorker due, bool retain_graph) {
  using remora::detail::Direction;
  GradScopeGuard outside({});  // the gradients themselves are not part of the graph
  std::vector<Future<void>> done;
  constexpr auto& fn = function_identity<&msg::gradients>;
  for (auto& [worker, batches] : due) {
    // A gradient goes where its tensor came from: tensors that came in calls by the inverse of the
    // sender's map (as replies), those that came in replies by this worker's own map.
    const auto calls = remora::detail::encode_devices_for(&agent, worker, Direction::call);
    const auto replies = remora::detail::encode_devices_for(&agent, worker, Direction::reply);
    wire::DeviceMap both;
    for (const auto* m : {calls.map, replies.map})
      if (m) {
        both.identity = both.identity || m->identity;
        for (const auto& [a, b] : m->entries)
          if (!both.find(a)) both.entries.emplace_back(a, b);
      }
    const auto rid = AgentAccess::next_request_id(agent);
    wire::OutFrame frame;
    {
      remora::detail::WireScope scope(&agent, worker);
      frame = wire::encode_frame_to(wire::EncodeDevices{&both, calls.peer}, wire::FrameKind::call, rid,
                                    agent.options().limits, fn.id, ctx.id, batches, retain_graph);
      scope.commit();
    }
    // What waits for this call only counts down and answers (when_all, then a reply): it runs on
    // the I/O thread that reads the answer, not after a hop to the pool.
    done.push_back(remora::detail::start_call<void>(agent, worker, fn.name, rid, std::move(frame),
                                                    std::chrono::milliseconds(0), nullptr, nullptr,
                                                    remora::detail::Continuations::inline_on_io));
  }
  return when_all(std::move(done));
}

REMORA_DECL void release_on_peers(Agent& agent, GradContext& ctx, std::vector<std::uint32_t> told) {
  std::vector<std::uint32_t> targets;
  {
    std::lock_guard lock(ctx.mu);
    std::set_difference(ctx.peers.begin(), ctx.peers.end(), told.begin(), told.end(), std::back_inserter(targets));
  }
  std::erase(targets, agent.self().id);
  if (targets.empty()) return;
  // Whom this wave reaches (each receiver adds this worker itself: it never answers its sender).
  std::vector<std::uint32_t> reached;
  reached.reserve(told.size() + targets.size());
  std::set_union(told.begin(), told.end(), targets.begin(), targets.end(), std::back_inserter(reached));
  GradScopeGuard outside({});
  for (std::uint32_t p : targets) {
    try {
      // Held for the next call to `p` (the next step's, in a training loop): no write of its own.
      if (remora::detail::notify_as<&msg::release>(agent, p, function_identity<&msg::release>, true, ctx.id,
                                                   reached))
        grad_contexts(agent)->count_release_sent();
    } catch (...) {  // the agent stopped: every table goes with it
    }
  }
}

REMORA_DECL c10::Dict<torch::Tensor, torch::Tensor> gradients_in(Agent& agent, std::uint64_t context) {
  c10::Dict<torch::Tensor, torch::Tensor> out;
  auto state = grad_contexts(agent)->find(context);
  if (!state) return out;
  std::lock_guard lock(state->mu);
  for (const auto& [impl, entry] : state->grads) out.insert(entry.first, entry.second);
  return out;
}

namespace msg {

REMORA_DECL Future<void> gradients(std::uint64_t context, std::vector<MessageGrads> batches, bool retain_graph) {
  Agent& agent = *remora::detail::serving_agent;
  auto table = grad_contexts(agent);
  table->count_gradient_message();
  auto ctx = table->find(context);
  if (!ctx)
    throw Error("remora: worker '" + agent.self().name + "' has no autograd context " + std::to_string(context) +
                " (it ended)");
  torch::autograd::edge_list roots;
  std::vector<torch::Tensor> grads;
  {
    std::lock_guard lock(ctx->mu);
    for (auto& [message, g] : batches) {
      auto it = ctx->sends.find(message);
      if (it == ctx->sends.end() || it->second.size() != g.size())
        throw Error("remora: worker '" + agent.self().name + "' sent no message " + std::to_string(message) +
                    " with " + std::to_string(g.size()) + " tensors that require grad in autograd context " +
                    std::to_string(context));
      roots.insert(roots.end(), it->second.begin(), it->second.end());
      grads.insert(grads.end(), std::make_move_iterator(g.begin()), std::make_move_iterator(g.end()));
    }
  }
  auto due = run_local_pass(*ctx, roots, std::move(grads), retain_graph);
  if (due.empty()) return make_ready_future();
  return send_gradients(agent, *ctx, std::move(due), retain_graph);
}

REMORA_DECL void release(std::uint64_t context, std::vector<std::uint32_t> told) {
  Agent& agent = *remora::detail::serving_agent;
  auto table = grad_contexts(agent);
  struct Counted {  // once this release is handled, whatever it told others
    GradContexts& table;
    ~Counted() { table.count_release_received(); }
  } counted{*table};
  auto ctx = table->take(context);
  if (!ctx) return;
  // `told` comes from a peer: put it in order (and in it the peer) before it is searched.
  told.push_back(remora::detail::serving_peer);
  std::sort(told.begin(), told.end());
  told.erase(std::unique(told.begin(), told.end()), told.end());
  release_on_peers(agent, *ctx, std::move(told));
}

}  // namespace msg
}  // namespace remora::autograd::detail
