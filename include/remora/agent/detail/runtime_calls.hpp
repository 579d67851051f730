#pragma once
// AgentRuntime's outgoing calls: sending, matching replies to the table of calls in flight,
// deadlines, calls to self, and stopping (graceful or not).
#include "remora/agent/detail/group_shutdown.hpp"
#include "remora/agent/detail/profiling.hpp"
#include "remora/agent/detail/remote_profile.hpp"
#include "remora/agent/detail/runtime.hpp"

namespace remora::detail {

inline bool AgentRuntime::submit(std::uint32_t to, std::string_view function, std::uint64_t request_id,
                                 wire::OutFrame frame, std::chrono::milliseconds timeout,
                                 std::shared_ptr<const void> keep, Completion complete) {
  if (elastic && !meet(to)) {
    complete(nullptr, std::make_exception_ptr(WorkerLost("worker id " + std::to_string(to), std::string(function),
                                                         "no member of the elastic group has this id")));
    return false;
  }
  const std::string& worker = workers[to].name;
  if (state_.load() == State::stopped)
    throw Error("remora: worker '" + workers[self_id].name + "' has shut down; cannot call " +
                std::string(function) + " on '" + worker + "'");
  if (timeout.count() <= 0) timeout = options.rpc_timeout;
  if (auto lost = links.lost_reason(to); !lost.empty()) {
    complete(nullptr, std::make_exception_ptr(WorkerLost(worker, std::string(function), lost)));
    return false;
  }
  if (auto* i = interceptor.load(std::memory_order_acquire)) i->call_sent(to, frame);  // (autograd's record)
  complete = profiled_call(std::move(complete), function, workers[self_id].name, worker);
  // The callee's events join this thread's legacy profile (which registers a callback: when
  // none is registered, one flag check skips the thread-local lookup).
  if (to != self_id && at::hasCallbacks() && legacy_profiler_on()) {
    mark_profiled(frame);
    complete = remote_profiles.expect(request_id, to, std::move(complete));
  }
  calls.add(request_id, to, function, timeout, std::move(complete), std::move(keep));
  wake_sweep();  // its deadline needs the quick sweep
  // Lost between the check above and the add: whoever lost it took the calls it found, not this
  // one, and a connection dialed now would fail (or be refused) with no one to fail the call.
  if (auto lost = links.lost_reason(to); !lost.empty()) {
    fail_calls(calls.take_to(to), lost, false);
    return false;
  }
  if (to == self_id) {
    call_self(std::move(frame));
  } else if (auto held = held_.take(to); held.empty()) {
    link_to(to)->send(std::move(frame));
  } else {  // notifications held for this peer go first, in the same write
    held.push_back(std::move(frame));
    link_to(to)->send_batch(std::move(held));
  }
  return true;
}

inline bool AgentRuntime::notify(std::uint32_t to, wire::OutFrame frame, bool with_next_call) {
  if (state_.load() == State::stopped || (elastic && !meet(to)) || !links.lost_reason(to).empty()) return false;
  wire::FrameHeader h;
  std::memcpy(&h, frame.head.data(), sizeof h);
  h.flags |= wire::kNoReply;
  std::memcpy(frame.head.data(), &h, sizeof h);
  if (to == self_id)
    call_self(std::move(frame));
  else if (with_next_call)
    held_.hold(to, std::move(frame)), wake_sweep();  // held at most 5 ms
  else
    link_to(to)->send(std::move(frame));
  return true;
}

// What no call picked up: each peer's in one write (those of a lost peer are dropped).
inline void AgentRuntime::send_held() {
  for (auto& [peer, frames] : held_.take_all())
    if (links.lost_reason(peer).empty() && state_.load() != State::stopped) link_to(peer)->send_batch(std::move(frames));
}

// A frame to self read back as if it had crossed the network. GPU tensors are staged on the
// calling thread, after what its current stream still has queued.
inline wire::InFrame loop_copy(wire::OutFrame& f, const wire::Limits& limits) {
  f.stage_to_host();
  wire::FrameReader reader(limits);
  for (auto s : f.segments()) reader.feed(s);
  return reader.take();
}

// A call to self skips the network but not the serialization boundary: the callee gets copies,
// exactly as a remote callee would.
inline void AgentRuntime::call_self(wire::OutFrame frame) {
  frame.stage_to_host();  // here, on the caller's thread and stream
  pool_.post([this, f = std::move(frame)]() mutable {
    const std::uint64_t rid = f.header().request_id;
    try {
      inbound_.dispatch(self_id, loop_copy(f, options.limits), [this](wire::OutFrame reply) {
        on_reply(self_id, loop_copy(reply, options.limits));
      });
    } catch (...) {  // the call fails; nothing else does
      if (auto p = calls.take(rid)) finish(std::move(*p), nullptr, std::current_exception());
    }
  });
}

inline void AgentRuntime::on_reply(std::uint32_t from, wire::InFrame&& frame) {
  auto p = calls.take(frame.request_id());
  if (!p) {  // late (timed out) or unknown: dropped
    late_replies_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  if (p->peer != from) {
    log_peer_warning("worker '" + workers[self_id].name + "': reply for request " + std::to_string(frame.request_id()) +
                " came from the wrong worker");
    return finish(std::move(*p), nullptr,
                  std::make_exception_ptr(ProtocolError("reply from the wrong worker", workers[from].name)));
  }
  if (frame.header.flags & wire::kInterceptorRecord) {  // (autograd's: its tensors join this worker's graph)
    try {
      auto* i = interceptor_for_record();
      if (!i) throw ProtocolError("a reply with a record no layer of this program reads", workers[from].name);
      i->received(from, frame);
    } catch (...) {
      return finish(std::move(*p), nullptr, std::current_exception());
    }
  }
  finish(std::move(*p), &frame, nullptr);
}

// Completes the call's future here (an I/O thread, usually): waiters wake at once, and the
// future's continuations go to the worker pool (its Promise dispatches them there), so user code
// never runs on an I/O thread.
inline void AgentRuntime::finish(CallTable::Pending&& p, wire::InFrame* frame, std::exception_ptr error) {
  {
    WireScope scope(&agent, p.peer);
    p.complete(frame, error);
  }
  p.complete = Completion();  // what the completion captured is released before the call counts as finished
  calls.finished();
}

// Fails each call with Timeout (`timed_out`) or WorkerLost, saying `why`.
inline void AgentRuntime::fail_calls(std::vector<CallTable::Pending> failed, const std::string& why,
                                     bool timed_out) {
  for (auto& p : failed) {
    const std::string& worker = workers[p.peer].name;
    auto error = timed_out ? std::make_exception_ptr(Timeout(worker, std::string(p.function),
                                                             "no reply within " + std::to_string(p.timeout.count()) +
                                                                 " ms"))
                           : std::make_exception_ptr(WorkerLost(worker, std::string(p.function), why));
    finish(std::move(p), nullptr, error);
  }
}

// Timeouts have the sweep's resolution (5 ms): a call times out 0-5 ms after its deadline.
// Every 5 ms while calls are in flight or notifications are held (their deadlines, the 5 ms a
// held frame may wait); every 100 ms when there are none, until the next call wakes it
// (wake_sweep): an idle agent wakes 10 times a second, not 200, which is what lets hundreds of
// idle agents share a host. Silent connections are checked every 100 ms, services tick every
// second, either way. On the timer strand.
inline void AgentRuntime::arm_sweep() {
  sweep_timer_.expires_after(sweep_idle_.load() ? std::chrono::milliseconds(100) : std::chrono::milliseconds(5));
  sweep_timer_.async_wait([this](std::error_code ec) {
    if (ec || state_.load() == State::stopped) return;  // a stopped agent lets its I/O threads end
    fail_calls(calls.take_overdue(), "", true);
    send_held();
    const auto now = std::chrono::steady_clock::now();
    if (now - last_silent_check_ >= std::chrono::milliseconds(100)) {
      last_silent_check_ = now;
      close_silent_connections();
    }
    if (now - last_tick_ >= std::chrono::seconds(1)) {
      last_tick_ = now;
      pool_.post([this] {
        for (auto& s : services.snapshot()) s->on_tick();
      });
    }
    // Idle from here on, unless a call or a held frame came meanwhile: its wake_sweep may have
    // read the flag before it was set (hence the fences), so look again after setting it.
    sweep_idle_.store(true);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (calls.size() > 0 || !held_.empty()) sweep_idle_.store(false);
    arm_sweep();
  });
}

// A call or a held frame needs the quick sweep: if the sweep is idle, re-arm it at 5 ms now.
// Cost when it is not idle (while calls are in flight): one fence and one relaxed load.
inline void AgentRuntime::wake_sweep() {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (sweep_idle_.load(std::memory_order_relaxed) && sweep_idle_.exchange(false))
    asio::post(timer_strand_, [this] {
      if (state_.load() != State::stopped) arm_sweep();  // (replaces the idle wait, which is cancelled)
    });
}

// Accepted connections that never said `hello` within Options::hello_timeout.
inline void AgentRuntime::close_silent_connections() {
  for (auto& conn : links.silent_since(std::chrono::steady_clock::now() - options.hello_timeout)) {
    const std::string why = "no hello within " + std::to_string(options.hello_timeout.count()) + " ms";
    log_peer_warning("worker '" + workers[self_id].name + "': closing connection from " + conn->remote() + ": " + why);
    conn->close(why);
  }
}

inline void AgentRuntime::shutdown(bool graceful) {
  State expected = State::running;
  if (!state_.compare_exchange_strong(expected, State::stopping)) return;
  send_held();
  if (elastic) {
    unpublish();  // (a leave did already: deleting again is harmless)
  } else if (graceful) {
    try {
      wait_for_group_quiet(*store_, static_cast<int>(workers.size()), calls, services, options.shutdown_timeout);
    } catch (const c10::Error& e) {  // the store itself failed (its host is gone, say)
      log_warning("worker '" + workers[self_id].name + "': graceful shutdown failed (the rendezvous store: " +
                  e.what_without_backtrace() + "); stopping now");
    } catch (const std::exception& e) {
      log_warning("worker '" + workers[self_id].name + "': graceful shutdown failed (" + e.what() +
                  "); stopping now");
    }
  }
  stop_now("worker '" + workers[self_id].name + "' shut down");
}

inline void AgentRuntime::stop_now(const std::string& why) {
  state_.store(State::stopped);
  inbound_.end_late_answers();
  fail_calls(calls.take_to(CallTable::kAllPeers), "local agent stopped: " + why, false);
  asio::post(timer_strand_, [this] { sweep_timer_.cancel(); });
  asio::post(io_, [this] {
    std::error_code ignored;
    acceptor_.close(ignored);
    local_acceptor_.close(ignored);
    links.close_all("shutdown");
  });
  // I/O threads first: once they are gone no reply can arrive, so nothing posts a completion to
  // the pool after it drains. Then the pool runs every queued completion and handler.
  work_.reset();
  for (auto& t : io_threads_) t.join();
  io_threads_.clear();
  decoder_.join();  // before the pool: what it completes may post continuations there
  pool_.join();
  links.clear();
  for (auto& s : services.snapshot()) s->on_stop();
}

}  // namespace remora::detail
