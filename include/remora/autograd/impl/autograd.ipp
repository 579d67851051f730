// Distributed autograd's compiled part: the recorder the agent calls at its frame boundaries,
// the context tables, the backward pass and its messages, and Context.
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
using remora::detail::grad_scope;
using remora::detail::GradScopeGuard;

// ---- the tables ----

REMORA_DECL std::shared_ptr<GradContexts> grad_contexts(Agent& agent) {
  return AgentAccess::service<GradContexts>(agent);
}

REMORA_DECL std::shared_ptr<GradContext> GradContexts::create() {
  const std::uint64_t id = (std::uint64_t{agent_.self().id} + 1) << 48 | next_context_.fetch_add(1);
  auto ctx = std::make_shared<GradContext>(id);
  std::lock_guard lock(mu_);
  contexts_.emplace(id, ctx);
  return ctx;
}

REMORA_DECL std::shared_ptr<GradContext> GradContexts::find(std::uint64_t id) const {
  std::lock_guard lock(mu_);
  auto it = contexts_.find(id);
  return it == contexts_.end() ? nullptr : it->second;
}

REMORA_DECL std::shared_ptr<GradContext> GradContexts::join(std::uint64_t id, std::uint32_t from) {
  const std::uint32_t maker = maker_of(id);
  std::lock_guard lock(mu_);
  if (auto it = contexts_.find(id); it != contexts_.end()) return it->second;
  if (ended_.count(id) || maker == agent_.self().id || maker >= agent_.get_worker_infos().size() ||
      AgentAccess::is_lost(agent_, maker) || AgentAccess::is_lost(agent_, from))
    return nullptr;
  auto ctx = std::make_shared<GradContext>(id);
  contexts_.emplace(id, ctx);
  return ctx;
}

REMORA_DECL std::shared_ptr<GradContext> GradContexts::take(std::uint64_t id) {
  std::lock_guard lock(mu_);
  if (ended_.insert(id).second) {
    ended_order_.push_back(id);
    if (ended_order_.size() > kEndedKept) {
      ended_.erase(ended_order_.front());
      ended_order_.pop_front();
    }
  }
  auto it = contexts_.find(id);
  if (it == contexts_.end()) return nullptr;
  auto ctx = std::move(it->second);
  contexts_.erase(it);
  return ctx;
}

REMORA_DECL GradStats GradContexts::stats() const {
  GradStats s;
  std::lock_guard lock(mu_);
  s.contexts = contexts_.size();
  for (auto& [id, ctx] : contexts_) {
    std::lock_guard c(ctx->mu);
    s.send_functions += ctx->sends.size();
  }
  s.recv_functions = recv_live_->load();
  return s;
}

// A lost worker's contexts go: no release will come from it. (Dropped outside the lock: their
// graphs may be large.)
REMORA_DECL void GradContexts::on_peer_lost(std::uint32_t peer) {
  std::vector<std::shared_ptr<GradContext>> dropped;
  std::lock_guard lock(mu_);
  for (auto it = contexts_.begin(); it != contexts_.end();) {
    if (maker_of(it->first) == peer) {
      dropped.push_back(std::move(it->second));
      it = contexts_.erase(it);
    } else {
      ++it;
    }
  }
}

REMORA_DECL void GradContexts::on_stop() {
  std::unordered_map<std::uint64_t, std::shared_ptr<GradContext>> dropped;
  std::lock_guard lock(mu_);
  dropped.swap(contexts_);
}

REMORA_DECL torch::autograd::variable_list RecvBackward::apply(torch::autograd::variable_list&&) {
  throw Error("remora: backward() reached a tensor that came from another worker in autograd context " +
              std::to_string(context) + ": its gradient belongs to that worker; run remora::autograd::backward(ctx, "
              "{loss}) instead of loss.backward()");
}

// ---- the recorder ----

// The graph edge of each tensor of `frame` that is sent as requiring grad, in frame order.
REMORA_DECL torch::autograd::edge_list edges_of(wire::OutFrame& frame) {
  torch::autograd::edge_list edges;
  frame.for_each_descriptor([&](std::size_t i, wire::TensorDescriptor& d) {
    if (!(d.flags & wire::kRequiresGrad)) return;
    const auto& t = frame.tensors[i];
    edges.push_back(t.requires_grad() ? torch::autograd::impl::gradient_edge(t) : torch::autograd::Edge());
  });
  return edges;
}

// Records the send function of `frame` (if it has tensors that require grad) and appends the
// frame's record.
REMORA_DECL void record_send(GradContexts& table, GradContext& ctx, std::uint32_t to, wire::OutFrame& frame, bool always) {
  auto edges = edges_of(frame);
  wire::GradRecord record{ctx.id, 0};
  {
    std::lock_guard lock(ctx.mu);
    ctx.peers.insert(to);
    if (!edges.empty()) {
      record.message = table.next_message();
      ctx.sends.emplace(record.message, std::move(edges));
    }
  }
  if (always || record.message) wire::append_grad_record(frame, record);
}

class Recorder final : public remora::detail::GradRecorder {
 public:
  void call_sent(Agent& agent, std::uint32_t to, wire::OutFrame& frame) override {
    auto table = grad_contexts(agent);
    // A served call may outlive its context here (released meanwhile): its calls go out plain.
    if (auto ctx = table->find(grad_scope.context)) record_send(*table, *ctx, to, frame, true);
  }

  void received(Agent& agent, std::uint32_t from, wire::InFrame& frame, const wire::GradRecord& record) override {
    auto table = grad_contexts(agent);
    auto ctx = table->join(record.context, from);
    if (!ctx) return;  // ended here (or its maker is gone): the tensors stay plain
    {
      std::lock_guard lock(ctx->mu);
      ctx->peers.insert(from);
    }
    if (!record.message) return;
    std::shared_ptr<RecvBackward> node;
    for (auto& r : frame.tensors) {
      if (!r.tensor.requires_grad()) continue;
      if (!node) node = std::make_shared<RecvBackward>(ctx->id, from, record.message, table->recv_counter());
      r.tensor.requires_grad_(false);  // a leaf as the frame reader made it; now it hangs from the sender
      const auto input = node->add_input_metadata(r.tensor);
      torch::autograd::impl::set_gradient_edge(r.tensor, {node, input});
    }
  }

  void reply_sent(Agent& agent, std::uint32_t to, std::uint64_t context, wire::OutFrame& reply) override {
    auto table = grad_contexts(agent);
    if (auto ctx = table->find(context)) record_send(*table, *ctx, to, reply, false);
  }
};

// Installs the recorder and registers the messages in every program that includes autograd.
[[maybe_unused]] inline const bool autograd_served = [] {
  static Recorder recorder;
  remora::detail::grad_recorder.store(&recorder, std::memory_order_release);
  return remora::detail::AutoRegister<&msg::gradients>::registered &&
         remora::detail::AutoRegister<&msg::release>::registered;
}();

// ---- the backward pass ----

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
  // What the pass stops at: this worker's leaves (their gradients go to the context, not to
  // .grad) and tensors that came from other workers (theirs go back). The engine captures the
  // gradient reaching each and runs only what leads to them.
  torch::autograd::edge_list outputs;
  std::vector<torch::Tensor> leaves;
  std::vector<std::pair<const RecvBackward*, std::size_t>> recvs;  // and the first of its outputs
  std::unordered_set<const torch::autograd::Node*> seen;
  std::vector<const torch::autograd::Node*> stack;
  auto visit = [&](const std::shared_ptr<torch::autograd::Node>& fn) {
    if (!fn || !seen.insert(fn.get()).second) return;
    if (auto* acc = dynamic_cast<const torch::autograd::AccumulateGrad*>(fn.get())) {
      outputs.emplace_back(fn, 0);
      leaves.push_back(acc->variable);
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
  // Leaves come first in `outputs` only where visited first: map them by position.
  GradsByWorker due;
  std::size_t leaf = 0;
  std::vector<bool> is_recv(outputs.size(), false);
  for (auto& [recv, first] : recvs)
    for (std::size_t i = 0; i < recv->num_inputs(); ++i) is_recv[first + i] = true;
  {
    std::lock_guard lock(ctx.mu);
    for (std::size_t i = 0; i < outputs.size(); ++i) {
      if (is_recv[i]) continue;
      const auto& var = leaves[leaf++];
      if (!out[i].defined()) continue;
      auto [it, fresh] = ctx.grads.try_emplace(var.unsafeGetTensorImpl(), var, out[i]);
      if (!fresh) it->second.second = it->second.second + out[i];
    }
  }
  for (auto& [recv, first] : recvs) {
    std::vector<torch::Tensor> g(out.begin() + static_cast<std::ptrdiff_t>(first),
                                 out.begin() + static_cast<std::ptrdiff_t>(first + recv->num_inputs()));
    bool any = false;
    for (const auto& t : g) any = any || t.defined();
    if (any) due[recv->from].emplace_back(recv->message, std::move(g));
  }
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
    done.push_back(remora::detail::start_call<void>(agent, worker, fn.name, rid, std::move(frame),
                                                    std::chrono::milliseconds(0)));
  }
  return when_all(std::move(done));
}

REMORA_DECL void release_on_peers(Agent& agent, GradContext& ctx, std::uint32_t except) {
  std::set<std::uint32_t> peers;
  {
    std::lock_guard lock(ctx.mu);
    peers = ctx.peers;
  }
  GradScopeGuard outside({});
  for (std::uint32_t p : peers) {
    if (p == except || p == agent.self().id) continue;
    try {
      (void)remora::detail::call_as<&msg::release>(agent, p, function_identity<&msg::release>, CallOptions{}, ctx.id);
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
  auto ctx = grad_contexts(agent)->find(context);
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
  return send_gradients(agent, *ctx, std::move(due), retain_graph).then([ctx](const Future<void>& f) { f.get(); });
}

REMORA_DECL void release(std::uint64_t context) {
  Agent& agent = *remora::detail::serving_agent;
  if (auto ctx = grad_contexts(agent)->take(context)) release_on_peers(agent, *ctx, remora::detail::serving_peer);
}

}  // namespace msg
}  // namespace remora::autograd::detail

namespace remora::autograd {

REMORA_DECL Context::Context() : Context(current_agent()) {}

REMORA_DECL Context::Context(Agent& agent) : agent_(&agent) {
  if (remora::detail::grad_scope.context && remora::detail::grad_scope.agent == &agent)
    throw Error("remora: this thread is in autograd context " + std::to_string(remora::detail::grad_scope.context) +
                " already; contexts do not nest");
  state_ = detail::grad_contexts(agent)->create();
  saved_ = remora::detail::grad_scope;
  remora::detail::grad_scope = {&agent, state_->id};
}

REMORA_DECL Context::~Context() {
  remora::detail::grad_scope = saved_;
  try {
    detail::grad_contexts(*agent_)->take(state_->id);
    detail::release_on_peers(*agent_, *state_, UINT32_MAX);
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

REMORA_DECL detail::GradStats stats(Agent& agent) { return detail::grad_contexts(agent)->stats(); }

}  // namespace remora::autograd
