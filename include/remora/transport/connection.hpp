#pragma once
// What the agent sees of a connection to a peer, whatever carries it (TCP, or a unix socket with
// shared memory between processes of one host).
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "remora/transport/fault_plan.hpp"
#include "remora/wire/frame.hpp"

namespace remora::transport {

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  using FrameHandler = std::function<void(const std::shared_ptr<Connection>&, wire::InFrame&&)>;
  using CloseHandler = std::function<void(const std::shared_ptr<Connection>&, const std::string& reason)>;

  virtual ~Connection() = default;
  // Starts reading an accepted connection (a connecting one starts once it is up).
  virtual void start() = 0;
  // Queues a frame; thread-safe. Frames sent after close are dropped (the close handler has
  // already failed whatever waited on them).
  virtual void send(wire::OutFrame frame) = 0;
  // While the frame handler runs: whether bytes after this frame were read with it (more frames
  // may follow at once). Lets the agent batch calls that arrive together.
  virtual bool more_buffered() const { return false; }
  // Queues several frames, in order; a transport may write them together.
  virtual void send_batch(std::vector<wire::OutFrame> frames) {
    for (auto& f : frames) send(std::move(f));
  }
  // Closes the connection (idempotent); `reason` reaches the close handler.
  virtual void close(const std::string& reason) = 0;
  virtual std::string remote() const = 0;
  // "tcp", "tls" or "local".
  virtual const char* kind() const = 0;
  // Bytes of this side's shared memory that the peer still holds (tensors it received and keeps).
  virtual std::size_t shared_bytes_in_use() const { return 0; }
  // The worker name the peer proved with the group's secret (detail/handshake.hpp); empty
  // without a secret. Read on the connection's strand (in the frame handler).
  virtual std::string authenticated_name() const { return {}; }

  // The peer said who it is: frames after this one may use the full limits. Until then an
  // accepted connection reads frames under wire::Limits::before_identity(). On the strand (in the
  // frame handler).
  virtual void trust() {}

  // Faults to inject into what this connection sends (Options::test_hooks; tests). Before start().
  void set_faults(std::shared_ptr<remora::detail::FaultPlan> plan) { faults_ = std::move(plan); }
  // How long a TCP peer may acknowledge nothing before the connection fails (Options::
  // link_timeout; detail/link_watch.hpp); zero: the kernel's defaults. Before start() (a dialing
  // connection takes it in connect()). Unix sockets ignore it.
  void set_link_timeout(std::chrono::milliseconds timeout) { link_timeout_ = timeout; }

  // Set by the agent once the peer has introduced itself.
  std::uint32_t peer_id = UINT32_MAX;

  // Frames handed to send (counted before faults take any) and frames received, with their
  // bytes (header, body, descriptors and tensor bytes; a tensor in shared memory counts its
  // size). For get_debug_info; relaxed atomics.
  struct Traffic {
    std::atomic<std::uint64_t> frames_sent{0}, bytes_sent{0}, frames_received{0}, bytes_received{0};
  };
  const Traffic& traffic() const { return traffic_; }
  // Called by the agent for each frame it takes from this connection.
  void count_received(const wire::InFrame& frame) {
    std::uint64_t n = sizeof(wire::FrameHeader) + frame.meta.size();
    for (const auto& t : frame.tensors) n += t.tensor.defined() ? t.tensor.nbytes() : 0;
    traffic_.frames_received.fetch_add(1, std::memory_order_relaxed);
    traffic_.bytes_received.fetch_add(n, std::memory_order_relaxed);
  }

 protected:
  // Counts `frame` as sent and says whether an injected fault took it (dropped it, holds it for
  // later, or cut the connection); implementations call it first thing in send.
  bool faulted(wire::OutFrame& frame) {
    if (!releasing_delayed()) {
      traffic_.frames_sent.fetch_add(1, std::memory_order_relaxed);
      traffic_.bytes_sent.fetch_add(frame.total_bytes(), std::memory_order_relaxed);
    }
    if (!faults_ || releasing_delayed()) return false;
    auto rule = faults_->match(frame);
    if (!rule) return false;
    switch (rule->action) {
      case remora::detail::FaultPlan::Action::drop:
        return true;
      case remora::detail::FaultPlan::Action::kill:
        ::kill(::getpid(), SIGKILL);
        return true;
      case remora::detail::FaultPlan::Action::cut:
        close("injected fault: the connection was cut");
        return true;
      case remora::detail::FaultPlan::Action::delay:
        faults_->later(rule->delay, [weak = weak_from_this(), f = std::make_shared<wire::OutFrame>(std::move(frame))] {
          auto self = weak.lock();
          if (!self) return;
          releasing_delayed() = true;
          self->send(std::move(*f));
          releasing_delayed() = false;
        });
        return true;
    }
    return false;
  }

 private:
  static bool& releasing_delayed() {
    thread_local bool releasing = false;
    return releasing;
  }
  std::shared_ptr<remora::detail::FaultPlan> faults_;
  Traffic traffic_;

 protected:
  std::chrono::milliseconds link_timeout_{0};
};

}  // namespace remora::transport
