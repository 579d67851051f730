#pragma once
// Calls an agent receives: each is run on the worker pool by the handler registered under its
// function id, and answered through the connection it came on. A call to an id nobody registered
// is answered with an `unknown_function` error.
//
// Calls to cheap functions (RegisteredFunction::cheap) read from one connection in one go are
// collected until the read handler returns, then run one after another on one pool thread, and
// their replies leave in one write: one hand-off and one system call for the lot instead of one
// each. Other calls go to the pool one by one.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <asio/defer.hpp>
#include <asio/io_context.hpp>

#include "remora/agent/detail/call_interceptor.hpp"
#include "remora/agent/detail/id_table.hpp"
#include "remora/agent/detail/peer_budget.hpp"
#include "remora/agent/detail/profiling.hpp"
#include "remora/agent/detail/remote_profile.hpp"
#include "remora/agent/detail/registry.hpp"
#include "remora/agent/detail/worker_pool.hpp"
#include "remora/transport/connection.hpp"

namespace remora::detail {

class InboundCalls {
 public:
  using Link = std::shared_ptr<transport::Connection>;
  using Respond = UniqueFunction<void(wire::OutFrame)>;

  // `agent` is what served functions see as serving_agent; all references outlive this.
  // `interceptor` finds (or makes) the agent's CallInterceptor for a call that carries a record.
  InboundCalls(Agent* agent, WorkerPool& pool, asio::io_context& io, const wire::Limits& limits,
               std::uint64_t max_pending_calls, std::uint64_t max_pending_bytes,
               UniqueFunction<CallInterceptor*()> interceptor)
      : agent_(agent), pool_(pool), io_(io), limits_(limits), budgets_(max_pending_calls, max_pending_bytes),
        lifetime_(std::make_shared<ServeLifetime>(limits)), interceptor_(std::move(interceptor)) {}

  // From now on, answers given after their handler returned are dropped: the agent is stopping
  // and will soon be gone. Waits for such answers being given now.
  void end_late_answers() {
    std::unique_lock lock(lifetime_->mu);
    lifetime_->alive = false;
  }

  // Once the group is known, before any call arrives: its workers' names by id, this one's id,
  // and the ids there may be (an elastic group's grow: set_name adds each one met).
  void set_group(std::vector<std::string> names, std::uint32_t self, std::uint32_t id_limit = 0) {
    const auto limit = std::max<std::uint32_t>(id_limit, static_cast<std::uint32_t>(names.size()));
    budgets_.reserve(limit);
    names_.reserve(limit);
    for (std::uint32_t id = 0; id < names.size(); ++id) set_name(id, std::move(names[id]));
    self_ = self;
  }
  // A member's name, once it is known (before any of its calls arrive).
  void set_name(std::uint32_t id, std::string name) {
    budgets_.add(id);
    names_.make(id) = std::move(name);
  }
  // Calls from `peer` received and not yet answered.
  std::uint64_t pending_from(std::uint32_t peer) const { return budgets_.pending_calls(peer); }

  // A call frame read from `conn`, on the connection's strand. Throws ProtocolError for a call
  // frame without a function id.
  void receive(const Link& conn, wire::InFrame&& frame) {
    const auto* fn = function_of(frame);
    PeerBudgets::Ticket ticket;  // given back with the reply function, once the call is answered
    if (std::string why; !budgets_.admit(conn->peer_id, frame, ticket, why)) {
      if (frame.header.flags & wire::kNoReply) return;  // a notification hears nothing back
      return conn->send(error_frame(frame.request_id(), ErrorCode::overloaded, "remora::Overloaded", why));
    }
    if (!fn || !fn->cheap()) {
      auto respond = reply_to(conn, frame, std::move(ticket));
      if (!fn) return dispatch(conn->peer_id, std::move(frame), std::move(respond));  // "unknown function"
      return dispatch_known(*fn, conn->peer_id, std::move(frame), std::move(respond));
    }
    // This thread's open batch: read handlers run one at a time per thread, and the batch is
    // closed by a job deferred to this thread, which runs once the current handler returns.
    thread_local std::shared_ptr<CallBatch> open;
    const bool more = conn->more_buffered();
    if (open && open->conn == conn) {
      std::unique_lock lock(open->mu);
      if (!open->closed) {
        open->calls.push_back({fn, std::move(frame), std::move(ticket)});
        if (more && open->calls.size() < CallBatch::kMaxCalls) return;
        lock.unlock();  // the last call read (or a full batch): the batch starts now
        auto batch = std::move(open);
        return run_batch(batch);
      }
    }
    open.reset();
    if (!more) {  // a lone call
      auto respond = reply_to(conn, frame, std::move(ticket));
      return dispatch_known(*fn, conn->peer_id, std::move(frame), std::move(respond));
    }
    // The rest of what was read may end in a partial frame: then the job deferred here (it runs
    // once the read handler returns) starts the batch.
    open = std::make_shared<CallBatch>();
    open->conn = conn;
    open->calls.push_back({fn, std::move(frame), std::move(ticket)});
    asio::defer(io_, [this, batch = open] {
      if (open == batch) open.reset();
      run_batch(batch);
    });
  }

  // Calls run as part of a batch so far (tests check that batching happens).
  std::uint64_t calls_batched() const { return calls_batched_.load(std::memory_order_relaxed); }

  // Runs the call `frame` from worker `from` on the pool; `respond` gets its reply (exactly once).
  void dispatch(std::uint32_t from, wire::InFrame&& frame, Respond respond) {
    const auto* fn = function_of(frame);
    if (!fn) {
      std::uint64_t fid;
      std::memcpy(&fid, frame.body().data(), sizeof fid);
      char hex[19];
      std::snprintf(hex, sizeof hex, "0x%016llx", static_cast<unsigned long long>(fid));
      return respond(error_frame(frame.request_id(), ErrorCode::unknown_function, "",
                                 std::string("no function with id ") + hex +
                                     " is registered (call it from this binary or REMORA_EXPOSE it)"));
    }
    dispatch_known(*fn, from, std::move(frame), std::move(respond));
  }

 private:
  struct CallBatch {
    // Bounds what a batch and its replies hold: a batch this size already shares its hop to the
    // pool widely, and larger ones (a 64 KiB read holds some 600 small calls) make the heap grow
    // and shrink with every burst.
    static constexpr std::size_t kMaxCalls = 64;
    Link conn;
    std::mutex mu;        // with several I/O threads, the batch may start on another thread
    bool closed = false;  // started: later calls go to a new batch
    struct Call {
      const RegisteredFunction* fn;
      wire::InFrame frame;
      PeerBudgets::Ticket ticket;
    };
    std::vector<Call> calls;
  };

  // Sends a call's reply on `conn`; the call's share of its peer's budget goes with this function.
  // Answers `frame` through `conn`; a notification (wire::kNoReply) gets no answer at all.
  // Holds the connection weakly: a closed connection is dropped from the agent's links (its
  // answer has nowhere to go), and a reply function kept past the agent's end (a late Future)
  // must not be what destroys a connection after its io_context.
  static Respond reply_to(const Link& conn, const wire::InFrame& frame, PeerBudgets::Ticket ticket) {
    if (frame.header.flags & wire::kNoReply) return [ticket = std::move(ticket)](wire::OutFrame) {};
    return [conn = std::weak_ptr<transport::Connection>(conn), ticket = std::move(ticket)](wire::OutFrame reply) {
      if (auto c = conn.lock()) c->send(std::move(reply));
    };
  }

  static const RegisteredFunction* function_of(const wire::InFrame& frame) {
    std::uint64_t fid;
    if (frame.body().size() < sizeof fid) throw ProtocolError("call without a function id");
    std::memcpy(&fid, frame.body().data(), sizeof fid);
    return Registry::global().find(fid);
  }

  void dispatch_known(const RegisteredFunction& fn, std::uint32_t from, wire::InFrame&& frame, Respond respond) {
    pool_.post([this, &fn, call = IncomingCall{std::move(frame), &limits_, std::move(respond), agent_, from,
                                               lifetime_}]() mutable {
      run_handler(fn, std::move(call));
    });
  }

  void run_batch(const std::shared_ptr<CallBatch>& batch) {
    {
      std::lock_guard lock(batch->mu);
      if (batch->closed) return;  // started already
      batch->closed = true;
    }
    if (batch->calls.size() == 1) {
      auto& c = batch->calls.front();
      auto respond = reply_to(batch->conn, c.frame, std::move(c.ticket));
      return dispatch_known(*c.fn, batch->conn->peer_id, std::move(c.frame), std::move(respond));
    }
    pool_.post([this, batch] { run_together(*batch); });
  }

  // On a pool thread. Replies given while the batch runs are collected and sent with one write;
  // later ones (a function that answers through a Future) are sent on their own.
  void run_together(CallBatch& batch) {
    struct Sink {
      std::mutex mu;
      bool open = true;
      std::vector<wire::OutFrame> replies;
    };
    auto sink = std::make_shared<Sink>();
    const Link& conn = batch.conn;
    const std::weak_ptr<transport::Connection> weak_conn = conn;  // for late answers (reply_to says why)
    auto flush = [&] {
      std::vector<wire::OutFrame> out;
      {
        std::lock_guard lock(sink->mu);
        out.swap(sink->replies);
      }
      if (!out.empty()) conn->send_batch(std::move(out));
    };
    calls_batched_.fetch_add(batch.calls.size(), std::memory_order_relaxed);
    const auto start = std::chrono::steady_clock::now();
    for (auto& c : batch.calls) {
      const bool no_reply = c.frame.header.flags & wire::kNoReply;
      IncomingCall call{std::move(c.frame), &limits_,
                        [sink, weak_conn, no_reply, ticket = std::move(c.ticket)](wire::OutFrame reply) {
                          if (no_reply) return;
                          {
                            std::lock_guard lock(sink->mu);
                            if (sink->open) return sink->replies.push_back(std::move(reply));
                          }
                          if (auto c = weak_conn.lock()) c->send(std::move(reply));
                        },
                        agent_, conn->peer_id, lifetime_};
      run_handler(*c.fn, std::move(call));
      // A batch that turned out slow does not hold finished replies back.
      if (std::chrono::steady_clock::now() - start > std::chrono::microseconds(100)) flush();
    }
    {
      std::lock_guard lock(sink->mu);
      sink->open = false;
    }
    flush();
  }

  void run_handler(const RegisteredFunction& fn, IncomingCall&& call) {
    for (auto& wait_for_arguments : call.frame.before_use) wait_for_arguments();  // on this thread's streams
    call.frame.before_use.clear();
    if (call.frame.header.flags & wire::kProfiled) return run_profiled(fn, std::move(call));
    if (call.frame.header.flags & wire::kInterceptorRecord) return run_intercepted(fn, std::move(call));
    serving_agent = agent_;
    serving_peer = call.from;
    const auto start = std::chrono::steady_clock::now();
    ServeSpan span(fn.name, name_of(call.from), name_of(self_));
    fn.handler(std::move(call));
    fn.record_cost(std::chrono::steady_clock::now() - start);
    serving_agent = nullptr;
    serving_peer = UINT32_MAX;
  }

  // A call whose caller is profiling (remote_profile.hpp): it runs under the legacy profiler, and
  // its events leave just before its reply (a reply sent while it runs is held until then).
  void run_profiled(const RegisteredFunction& fn, IncomingCall&& call) {
    call.frame.header.flags &= static_cast<std::uint8_t>(~wire::kProfiled);
    if (legacy_profiler_on()) return run_handler(fn, std::move(call));  // this thread already records
    const std::uint64_t rid = call.frame.request_id();
    struct Held {
      std::mutex mu;
      bool open = true;
      std::optional<wire::OutFrame> reply;
    };
    auto held = std::make_shared<Held>();
    auto inner = std::make_shared<UniqueFunction<void(wire::OutFrame)>>(std::move(call.respond));
    call.respond = [held, inner](wire::OutFrame reply) {
      {
        std::lock_guard lock(held->mu);
        if (held->open) return void(held->reply = std::move(reply));
      }
      (*inner)(std::move(reply));
    };
    std::vector<c10::IValue> events;
    try {
      events = profile_serving([&] { run_handler(fn, std::move(call)); });
    } catch (const std::exception&) {  // the profiler refused: the call ran (or runs) unrecorded
    }
    if (!events.empty()) {
      try {
        (*inner)(wire::encode_frame(wire::FrameKind::control, rid, limits_,
                                    static_cast<std::uint8_t>(ControlType::profile_events), events));
      } catch (const std::exception&) {  // more events than a frame may carry: the caller gets none
      }
    }
    std::optional<wire::OutFrame> reply;
    {
      std::lock_guard lock(held->mu);
      held->open = false;
      reply = std::move(held->reply);
    }
    if (reply) (*inner)(std::move(*reply));
  }

  // A call that carries a record of the layer above (distributed autograd's: the call was made
  // inside a context): the agent's CallInterceptor takes the record off, the handler runs inside
  // the scope it returns (so do the calls it makes on this thread), and the interceptor sees the
  // reply as it leaves.
  void run_intercepted(const RegisteredFunction& fn, IncomingCall&& call) {
    const std::uint64_t rid = call.frame.request_id();
    CallInterceptor* interceptor = nullptr;
    std::uint64_t scope = 0;
    try {
      interceptor = interceptor_();
      if (!interceptor) {
        serving_agent = agent_;
        std::string name = serving_worker_name();
        serving_agent = nullptr;
        throw Error("remora: worker '" + name +
                    "' was built without distributed autograd (include <remora/autograd.hpp>)");
      }
      scope = interceptor->received(call.from, call.frame);
    } catch (...) {
      return answer(call.respond, rid, current_exception_frame(rid));
    }
    call.respond = [interceptor, to = call.from, scope, inner = std::move(call.respond)](wire::OutFrame reply) mutable {
      if (reply.header().kind == static_cast<std::uint8_t>(wire::FrameKind::reply)) {
        try {
          interceptor->reply_sent(to, scope, reply);
        } catch (...) {
          reply = current_exception_frame(reply.header().request_id);
        }
      }
      inner(std::move(reply));
    };
    struct Run {
      InboundCalls* self;
      const RegisteredFunction* fn;
      IncomingCall* call;
    } run{this, &fn, &call};
    interceptor->run_in(scope, [](void* p) {
      auto* r = static_cast<Run*>(p);
      r->self->run_handler(*r->fn, std::move(*r->call));  // the record is off: it runs as any call
    }, &run);
  }

  Agent* agent_;
  WorkerPool& pool_;
  asio::io_context& io_;
  const wire::Limits& limits_;
  PeerBudgets budgets_;
  std::shared_ptr<ServeLifetime> lifetime_;
  IdTable<std::string> names_;  // by worker id, for profiler spans
  std::uint32_t self_ = 0;
  std::string_view name_of(std::uint32_t id) const {
    const auto* name = names_.find(id);
    return name && !name->empty() ? std::string_view(*name) : "?";
  }
  std::atomic<std::uint64_t> calls_batched_{0};
  UniqueFunction<CallInterceptor*()> interceptor_;
};

}  // namespace remora::detail
