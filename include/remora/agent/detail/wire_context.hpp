#pragma once
// Who is on the other side of the message being encoded or decoded on this thread. Values that
// are references to remote state (RRefs) need it: sending one forks a reference for the peer,
// receiving one registers it with the right agent. Plain values ignore it.
#include <cstdint>
#include <functional>
#include <vector>

#include "remora/wire/device_map.hpp"

namespace remora {
class Agent;
}

namespace remora::detail {

struct WireContext {
  Agent* agent = nullptr;
  std::uint32_t peer = UINT32_MAX;
  // Undo actions of values encoded into a frame that is not sent after all (encoding failed).
  std::vector<std::function<void()>>* undo = nullptr;
};

inline thread_local WireContext wire_context;

// Which way a frame goes: calls use the caller's device map to the callee, replies its inverse.
enum class Direction { call, reply };
// The device map and peer name for frames `agent` sends to `peer` (defined with the Agent).
wire::EncodeDevices encode_devices_for(Agent* agent, std::uint32_t peer, Direction direction);

// Sets the wire context for the current scope. For encoding: call commit() once the frame is
// complete; a scope left without commit (an exception) runs the recorded undo actions.
class WireScope {
 public:
  WireScope(Agent* agent, std::uint32_t peer, Direction direction = Direction::call)
      : saved_(wire_context), saved_devices_(wire::encode_devices) {
    wire_context = {agent, peer, &undo_};
    wire::encode_devices = agent ? encode_devices_for(agent, peer, direction) : wire::EncodeDevices{};
  }
  ~WireScope() {
    wire_context = saved_;
    wire::encode_devices = saved_devices_;
    if (!committed_)
      for (auto& u : undo_) u();
  }
  WireScope(const WireScope&) = delete;
  WireScope& operator=(const WireScope&) = delete;
  void commit() { committed_ = true; }

 private:
  WireContext saved_;
  wire::EncodeDevices saved_devices_;
  std::vector<std::function<void()>> undo_;
  bool committed_ = false;
};

}  // namespace remora::detail
