#pragma once
// What the agent sees of a connection to a peer, whatever carries it (TCP, or a unix socket with
// shared memory between processes of one host).
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

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

  // Set by the agent once the peer has introduced itself.
  std::uint32_t peer_id = UINT32_MAX;
};

}  // namespace remora::transport
