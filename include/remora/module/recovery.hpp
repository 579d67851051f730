#pragma once
// What a group (RemoteModuleGroup, RemoteGroup) does when a group call meets a lost member
// (on_failure):
//
//   g.on_failure([](const remora::MemberLost& lost) {
//     return remora::Recovery::await_restart(std::chrono::seconds(30));  // or replace_on("w9/cpu"), fail()
//   });
#include <chrono>
#include <cstddef>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

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

// The MemberLost that member i's failed call stands for: its future holds a WorkerLost and the
// member's own worker is lost (`own_lost()`); nothing otherwise (a WorkerLost about another
// worker, an argument's owner say, is the call's own failure).
template <class F, class OwnLost>
std::optional<MemberLost> member_lost(const F& future, std::size_t i, const std::string& point, const WorkerInfo& worker,
                                      const OwnLost& own_lost) {
  const auto error = future.exception();
  if (!error) return std::nullopt;
  try {
    std::rethrow_exception(error);
  } catch (const WorkerLost& e) {
    if (!own_lost()) return std::nullopt;
    return MemberLost{i, point, worker, e.what()};
  } catch (...) {
    return std::nullopt;
  }
}

// A group call's recovery, shared by the groups: for each member i whose future failed because
// its own worker was lost (`lost_of(i)` says so, and how), `recover(lost)` makes it again unless
// the policy says fail (false), then `again(i)` calls the new member; at most three recoveries per
// member and call, one at a time. A member someone else already made again (`current(i)` is not
// `members[i]`) is just called.
template <class Member, class F, class LostOf, class Current, class Recover, class Again>
void recover_members(std::vector<Member>& members, std::vector<F>& futures, std::mutex& one_at_a_time,
                     const LostOf& lost_of, const Current& current, const Recover& recover, const Again& again) {
  for (std::size_t i = 0; i < futures.size(); ++i)
    for (int attempt = 0; attempt < 3; ++attempt) {
      futures[i].wait();
      std::optional<MemberLost> lost = lost_of(i);
      if (!lost) break;
      {
        std::lock_guard lock(one_at_a_time);
        if (current(i) == members[i] && !recover(*lost)) break;
      }
      members[i] = current(i);
      futures[i] = again(i);
    }
}
}  // namespace detail

}  // namespace remora
