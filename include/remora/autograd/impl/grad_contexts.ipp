// Distributed autograd's tables and the interceptor the agent calls at its frame boundaries
// (compiled once; see autograd/context.hpp).
#include <optional>

#include <torch/csrc/autograd/variable.h>

#include "remora/agent/detail/outbound.hpp"
#include "remora/autograd/context.hpp"
#include "remora/autograd/detail/backward_pass.hpp"
#include "remora/core/log.hpp"

namespace remora::autograd::detail {

using remora::detail::AgentAccess;

// ---- the tables ----

REMORA_DECL std::shared_ptr<GradContexts> grad_contexts(Agent& agent) {
  auto table = AgentAccess::service<GradContexts>(agent);
  AgentAccess::intercept(agent, table.get());  // the first time registers it; then a no-op
  return table;
}

REMORA_DECL std::shared_ptr<GradContext> GradContexts::create() {
  const std::uint64_t id = (std::uint64_t{agent_.self().id} + 1) << kMakerShift | next_context_.fetch_add(1);
  auto ctx = std::make_shared<GradContext>(id);
  std::lock_guard lock(mu_);
  contexts_.emplace(id, ctx);
  return ctx;
}

REMORA_DECL std::shared_ptr<GradContext> GradContexts::find(std::uint64_t id) const {
  std::lock_guard lock(mu_);
  auto it = contexts_.find(id);
  if (it == contexts_.end()) return nullptr;
  it->second->touch();
  return it->second;
}

REMORA_DECL std::shared_ptr<GradContext> GradContexts::join(std::uint64_t id, std::uint32_t from) {
  const std::uint32_t maker = maker_of(id);
  std::lock_guard lock(mu_);
  if (auto it = contexts_.find(id); it != contexts_.end()) {
    it->second->touch();
    return it->second;
  }
  if (ended_.count(id) || maker == agent_.self().id || maker >= AgentAccess::id_bound(agent_) ||
      AgentAccess::is_lost(agent_, maker) || AgentAccess::is_lost(agent_, from))
    return nullptr;
  auto ctx = std::make_shared<GradContext>(id);
  contexts_.emplace(id, ctx);
  return ctx;
}

REMORA_DECL void GradContexts::remember_ended(std::uint64_t id) {
  if (ended_.insert(id).second) {
    ended_order_.push_back(id);
    if (ended_order_.size() > kEndedKept) {
      ended_.erase(ended_order_.front());
      ended_order_.pop_front();
    }
  }
}

REMORA_DECL std::shared_ptr<GradContext> GradContexts::take(std::uint64_t id) {
  std::lock_guard lock(mu_);
  remember_ended(id);
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
  s.gradient_messages = gradient_messages_.load(std::memory_order_relaxed);
  s.releases_sent = releases_sent_.load(std::memory_order_relaxed);
  s.releases_received = releases_received_.load(std::memory_order_relaxed);
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

REMORA_DECL void GradContexts::on_tick() {
  const auto timeout = agent_.options().autograd_context_timeout;
  if (timeout.count() <= 0) return;
  const auto now = std::chrono::steady_clock::now().time_since_epoch();
  const auto limit = std::chrono::duration_cast<std::chrono::steady_clock::duration>(timeout).count();
  std::vector<std::shared_ptr<GradContext>> dropped;  // dropped outside the lock
  {
    std::lock_guard lock(mu_);
    for (auto it = contexts_.begin(); it != contexts_.end();) {
      const auto idle = now.count() - it->second->last_news_ns.load(std::memory_order_relaxed);
      if (maker_of(it->first) != agent_.self().id && idle > limit) {
        remember_ended(it->first);
        dropped.push_back(std::move(it->second));
        it = contexts_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (const auto& ctx : dropped)
    remora::detail::log_peer_warning(
        "worker '" + agent_.self().name + "': autograd context " + std::to_string(ctx->id) + " of worker '" +
        agent_.get_worker_info(maker_of(ctx->id)).name + "' ended here after " + std::to_string(timeout.count()) +
        " ms without news (Options::autograd_context_timeout): its release was lost, or it is idle that long");
  expired_.fetch_add(dropped.size(), std::memory_order_relaxed);
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

// Where the gradient of a tensor hanging from `edge` is due, if not at this worker: the worker
// it came from untouched (or where that one had it from), unless that is `to`.
REMORA_DECL std::optional<GradOrigin> origin_of(const torch::autograd::Edge& edge, std::uint64_t context, std::uint32_t to) {
  const auto* recv = dynamic_cast<const RecvBackward*>(edge.function.get());
  if (!recv || recv->context != context) return std::nullopt;
  if (edge.input_nr < recv->origins.size() && recv->origins[edge.input_nr].inputs != 0) {
    auto o = recv->origins[edge.input_nr];
    if (o.worker == to) return std::nullopt;
    return o;
  }
  if (recv->from == to) return std::nullopt;
  return GradOrigin{0, recv->from, recv->message, edge.input_nr, recv->num_inputs()};
}

// Records the send function of `frame` (if it has tensors that require grad) and appends the
// frame's record, with the origins of the tensors this worker only passes on.
REMORA_DECL void record_send(GradContexts& table, GradContext& ctx, std::uint32_t to, wire::OutFrame& frame, bool always) {
  auto edges = edges_of(frame);
  GradRecord record{ctx.id, 0, {}};
  for (std::size_t i = 0; i < edges.size(); ++i)
    if (auto o = origin_of(edges[i], ctx.id, to)) {
      o->slot = static_cast<std::uint32_t>(i);
      record.origins.push_back(*o);
    }
  {
    std::lock_guard lock(ctx.mu);
    ctx.peers.insert(to);
    if (!edges.empty()) {
      record.message = table.next_message();
      ctx.sends.emplace(record.message, std::move(edges));
    }
  }
  if (always || record.message) append_grad_record(frame, record);
}

// ---- the interceptor ----

REMORA_DECL void GradContexts::call_sent(std::uint32_t to, wire::OutFrame& frame) {
  if (!grad_scope.context || grad_scope.agent != &agent_) return;  // not a call made inside a context
  // A served call may outlive its context here (released meanwhile): its calls go out plain.
  if (auto ctx = find(grad_scope.context)) record_send(*this, *ctx, to, frame, true);
}

REMORA_DECL std::uint64_t GradContexts::received(std::uint32_t from, wire::InFrame& frame) {
  auto record = take_grad_record(frame);
  if (!record) throw ProtocolError("a frame flagged with an autograd record has none", agent_.get_worker_info(from).name);
  auto ctx = join(record->context, from);
  if (!ctx) return record->context;  // ended here (or its maker is gone): the tensors stay plain
  {
    std::lock_guard lock(ctx->mu);
    ctx->peers.insert(from);
  }
  if (!record->message) return record->context;
  std::shared_ptr<RecvBackward> node;
  for (auto& r : frame.tensors) {
    if (!r.tensor.requires_grad()) continue;
    if (!node) node = std::make_shared<RecvBackward>(ctx->id, from, record->message, recv_counter());
    r.tensor.requires_grad_(false);  // a leaf as the frame reader made it; now it hangs from the sender
    const auto input = node->add_input_metadata(r.tensor);
    torch::autograd::impl::set_gradient_edge(r.tensor, {node, input});
  }
  if (record->origins.empty()) return record->context;
  const auto workers = AgentAccess::id_bound(agent_);
  if (!node || record->origins.back().slot >= node->num_inputs())
    throw ProtocolError("autograd origin for a tensor the frame does not have", agent_.get_worker_info(from).name);
  node->origins.resize(node->num_inputs());
  for (const auto& o : record->origins) {
    if (o.worker >= workers) throw ProtocolError("autograd origin names no worker", agent_.get_worker_info(from).name);
    if (o.worker != agent_.self().id) node->origins[o.slot] = o;  // due here: the sender's route is as short
  }
  return record->context;
}

REMORA_DECL void GradContexts::run_in(std::uint64_t scope, void (*handler)(void*), void* arg) {
  GradScopeGuard in_context({&agent_, scope});
  handler(arg);
}

REMORA_DECL void GradContexts::reply_sent(std::uint32_t to, std::uint64_t scope, wire::OutFrame& reply) {
  if (auto ctx = find(scope)) record_send(*this, *ctx, to, reply, false);
}

// Lets an agent that receives a record before this layer was used on it make its table, and
// registers the messages, in every program that includes autograd.
[[maybe_unused]] inline const bool autograd_served = [] {
  remora::detail::interceptor_of.store([](Agent& agent) -> remora::detail::CallInterceptor* {
    return grad_contexts(agent).get();
  }, std::memory_order_release);
  return remora::detail::AutoRegister<&msg::gradients>::registered &&
         remora::detail::AutoRegister<&msg::release>::registered;
}();

}  // namespace remora::autograd::detail
