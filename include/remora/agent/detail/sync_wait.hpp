#pragma once
// How a thread waits for the answer to its sync call. Sleeping on the future and being woken
// costs a large part of a small call's round trip (benchmarks/handoff_floor.cpp measures each
// way of handing work between threads), so a caller whose call is the only one its agent has in flight
// first watches the future for a while: its answer comes back through one chain of threads,
// which the watching does not slow down. Calls that overlap others sleep at once, leaving the
// CPU to the threads that answer them.
#include <chrono>

#include "remora/agent/detail/watch_rate.hpp"
#include "remora/core/future.hpp"

namespace remora::detail {

// Per thread: how often its watches were answered in time (a moving average). A thread whose
// answers mostly take longer than the watch stops watching, except every 16th call, which
// checks whether that has changed.
class SyncWaitPolicy {
 public:
  static SyncWaitPolicy& mine() {
    thread_local SyncWaitPolicy policy;
    return policy;
  }

  template <class T>
  void watch(const Future<T>& f, std::chrono::microseconds budget) {
    if (rate_.should_try()) rate_.record(spin_until_ready(f, budget));
  }

 private:
  WatchRate rate_{0.75};
};

}  // namespace remora::detail
