#pragma once
// What a group (RemoteModuleGroup, RemoteGroup) does when a group call meets a lost member
// (on_failure):
//
//   g.on_failure([](const remora::MemberLost& lost) {
//     return remora::Recovery::await_restart(std::chrono::seconds(30));  // or replace_on("w9/cpu"), fail()
//   });
#include <chrono>
#include <cstddef>
#include <string>
#include <thread>

#include "remora/agent/agent.hpp"
#include "remora/agent/options.hpp"
#include "remora/core/errors.hpp"

namespace remora {

// A member of a group whose worker was lost during a group call.
struct MemberLost {
  std::size_t index = 0;  // its position in the group (the mesh's order)
  std::string device;     // its point: "worker/device"
  WorkerInfo worker;      // the incarnation that was lost
  std::string reason;     // what the WorkerLost said
};

class Recovery {
 public:
  enum class Kind { fail, replace_on, await_restart };

  // The group call fails with the member's WorkerLost (as without a policy).
  static Recovery fail() { return Recovery(Kind::fail, {}, {}); }
  // The member is made again on `device` ("worker/device") from create()'s arguments, with the
  // parameters and buffers of a healthy member, and the call runs there.
  static Recovery replace_on(std::string device) { return Recovery(Kind::replace_on, std::move(device), {}); }
  // Waits up to `timeout` for the lost worker's name to join again (an elastic group's next
  // incarnation), then makes the member again there as replace_on does; past it, fails.
  static Recovery await_restart(std::chrono::milliseconds timeout) { return Recovery(Kind::await_restart, {}, timeout); }

  Kind kind() const { return kind_; }
  const std::string& device() const { return device_; }
  std::chrono::milliseconds timeout() const { return timeout_; }

 private:
  Recovery(Kind kind, std::string device, std::chrono::milliseconds timeout)
      : kind_(kind), device_(std::move(device)), timeout_(timeout) {}
  Kind kind_;
  std::string device_;
  std::chrono::milliseconds timeout_;
};

namespace detail {
// Waits up to `timeout` for the worker `lost` names to join again as a newer incarnation (what
// Recovery::await_restart asks); throws Error naming `group`, the member and the worker past it.
inline void await_rejoin(Agent& agent, const MemberLost& lost, std::chrono::milliseconds timeout, const char* group) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    try {
      if (agent.get_worker_info(lost.worker.name).incarnation > lost.worker.incarnation) return;
    } catch (const Error&) {  // not there yet
    }
    if (std::chrono::steady_clock::now() >= deadline)
      throw Error(std::string("remora: ") + group + ": member " + std::to_string(lost.index) + " ('" + lost.device +
                  "') was lost and worker '" + lost.worker.name + "' did not join again within " +
                  std::to_string(timeout.count()) + " ms (" + lost.reason + ")");
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}
}  // namespace detail

}  // namespace remora
