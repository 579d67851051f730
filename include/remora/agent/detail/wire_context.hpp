#pragma once
// Who is on the other side of the message being encoded or decoded on this thread. Values that
// are references to remote state (RRefs) need it: sending one forks a reference for the peer,
// receiving one registers it with the right agent. Plain values ignore it.
#include <cstdint>
#include <functional>
#include <vector>

#include "remora/config.hpp"
#include "remora/wire/device_map.hpp"

namespace remora {
class Agent;
}

namespace remora::detail {

struct WireContext {
  Agent* agent = nullptr;
  std::uint32_t peer = UINT32_MAX;
  wire::EncodeDevices devices;  // for frames to `peer` (wire::encode_frame_to)
  // Undo actions of values encoded into a frame that is not sent after all (encoding failed).
  std::vector<std::function<void()>>* undo = nullptr;
};

inline thread_local WireContext wire_context;

// Which way a frame goes: calls use the caller's device map to the callee, replies its inverse.
enum class Direction { call, reply };
// The device map and peer name for frames `agent` sends to `peer` (agent/impl/agent.ipp).
REMORA_DECL wire::EncodeDevices encode_devices_for(Agent* agent, std::uint32_t peer, Direction direction);

// Sets the wire context for the current scope. For encoding: call commit() once the frame is
// complete; a scope left without commit (an exception) runs the recorded undo actions.
class WireScope {
 public:
  WireScope(Agent* agent, std::uint32_t peer, Direction direction = Direction::call)
      : saved_(wire_context) {
    wire_context = {agent, peer, agent ? encode_devices_for(agent, peer, direction) : wire::EncodeDevices{}, &undo_};
  }
  ~WireScope() {
    wire_context = saved_;
    if (!committed_)
      for (auto& u : undo_) u();
  }
  WireScope(const WireScope&) = delete;
  WireScope& operator=(const WireScope&) = delete;
  void commit() { committed_ = true; }

 private:
  WireContext saved_;
  std::vector<std::function<void()>> undo_;
  bool committed_ = false;
};

}  // namespace remora::detail
