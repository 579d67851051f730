#pragma once
// Graceful shutdown of a whole group, through the rendezvous store: the workers count their work
// in rounds until the group stands still (nothing in flight anywhere, and no call started since
// the previous round). Then the services release what they hold for others (RRef deletions,
// which start calls of their own), and rounds go on until the group is still again. A last
// barrier lets every worker stop together.
#include <chrono>
#include <cstdint>
#include <string>

#include <torch/csrc/distributed/c10d/Store.hpp>

#include "remora/agent/detail/call_table.hpp"
#include "remora/agent/detail/services.hpp"
#include "remora/agent/rendezvous.hpp"
#include "remora/core/errors.hpp"

namespace remora::detail {

// Returns once every worker of the group got here with nothing left to do. Throws remora::Error
// when this worker's calls do not finish, or a round does not complete, within `timeout`.
inline void wait_for_group_quiet(c10d::Store& store, int world, CallTable& calls, const ServiceSet& services,
                                 std::chrono::milliseconds timeout) {
  std::int64_t previous_started = -1;
  bool released = false;
  for (int round = 0;; ++round) {
    const auto mine = calls.wait_quiet(timeout);
    if (!mine) throw Error("calls still pending after " + std::to_string(timeout.count()) + " ms");
    auto totals = sum_over_workers(store, "join/" + std::to_string(round), world, {mine->outstanding, mine->started},
                                   timeout);
    if (totals[0] == 0 && totals[1] == previous_started) {
      if (released) break;
      released = true;
      for (auto& s : services.snapshot()) s->on_group_quiet();
      previous_started = -1;
      continue;
    }
    previous_started = totals[1];
  }
  sum_over_workers(store, "stop", world, {0}, timeout);
}

}  // namespace remora::detail
