#pragma once
// The callee's profiled events in the caller's trace, as PyTorch's RPC ships them: while the
// caller records with libtorch's legacy profiler (torch::autograd::profiler::RecordProfile,
// TLSLegacyProfilerGuard, Python's torch.autograd.profiler.profile), its calls carry kProfiled;
// the callee runs such a call under the legacy profiler on its pool thread and sends the events
// back in a control frame (profile_events) just before the reply; the caller adds them to its
// own profile (addEventList, under its thread-local state) as the answer arrives, each with the
// callee's worker id as its node id. Only the part of the call that runs before the function
// returns is recorded (a Future-returning function's later work is not). Times are the callee's
// clock: on one host the same monotonic clock as the caller's. Cost when nothing profiles: one
// check of the profiler's state per call.
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include <ATen/ThreadLocalState.h>
#include <torch/csrc/autograd/profiler_legacy.h>
#include <torch/csrc/profiler/orchestration/observer.h>

#include "remora/agent/detail/call_table.hpp"
#include "remora/agent/detail/protocol.hpp"
#include "remora/wire/format.hpp"
#include "remora/wire/ivalue_codec.hpp"
#include "remora/wire/value_codec.hpp"

namespace remora::detail {

// Whether this thread's calls are being recorded by the legacy profiler.
inline bool legacy_profiler_on() {
  namespace impl = torch::profiler::impl;
  return impl::profilerEnabled() && impl::profilerType() == impl::ActiveProfilerType::LEGACY;
}

inline void mark_profiled(wire::OutFrame& frame) {
  wire::FrameHeader h;
  std::memcpy(&h, frame.head.data(), sizeof h);
  h.flags |= wire::kProfiled;
  std::memcpy(frame.head.data(), &h, sizeof h);
}

// The caller's side: per profiled call in flight, the events its callee sent. Thread-safe.
class RemoteProfiles {
 public:
  using Events = std::vector<c10::IValue>;

  // `complete`, wrapped so that the events call `request_id`'s callee sends (see receive) join
  // this thread's legacy profile before the answer is handed over.
  Completion expect(std::uint64_t request_id, std::uint32_t callee, Completion complete) {
    {
      std::lock_guard lock(mu_);
      events_[request_id].callee = callee;
    }
    return [this, request_id, callee, state = at::ThreadLocalState(), complete = std::move(complete)](
               wire::InFrame* f, std::exception_ptr e) mutable {
      Events events;
      {
        std::lock_guard lock(mu_);
        if (auto it = events_.find(request_id); it != events_.end()) {
          events = std::move(it->second.events);
          events_.erase(it);
        }
      }
      if (!events.empty()) {
        at::ThreadLocalStateGuard guard(state);
        try {
          std::vector<torch::autograd::profiler::LegacyEvent> list;
          for (const auto& v : events) {
            list.push_back(torch::autograd::profiler::LegacyEvent::fromIValue(v));
            list.back().setNodeId(static_cast<int>(callee));
          }
          if (legacy_profiler_on()) torch::autograd::profiler::addEventList(std::move(list));
        } catch (const std::exception&) {  // a profile that ended meanwhile, or events this build cannot read
        }
      }
      complete(f, e);
    };
  }

  // The events of call `request_id` arrived from worker `from` (before its reply); dropped when
  // nobody expects them (the call ended meanwhile), or when that call went to another worker:
  // only its callee may add to the caller's profile. Returns false in that last case.
  bool receive(std::uint32_t from, std::uint64_t request_id, Events events) {
    std::lock_guard lock(mu_);
    auto it = events_.find(request_id);
    if (it == events_.end()) return true;
    if (it->second.callee != from) return false;
    it->second.events = std::move(events);
    return true;
  }

 private:
  struct Expected {
    std::uint32_t callee = UINT32_MAX;
    Events events;
  };
  std::mutex mu_;
  std::map<std::uint64_t, Expected> events_;
};

// The callee's side: runs `run` under the legacy profiler and returns its events (the profiler's
// own start and end markers included: they anchor the times), flattened across threads.
template <class Run>
std::vector<c10::IValue> profile_serving(Run&& run) {
  namespace prof = torch::autograd::profiler;
  prof::enableProfilerLegacy(torch::profiler::impl::ProfilerConfig(torch::profiler::impl::ProfilerState::CPU));
  struct Disable {
    std::optional<prof::thread_event_lists> lists;
    ~Disable() {
      if (!lists) prof::disableProfilerLegacy();
    }
  } disable;
  run();
  disable.lists = prof::disableProfilerLegacy();
  std::vector<c10::IValue> out;
  for (const auto& thread : *disable.lists)
    for (const auto& e : thread) out.push_back(e.toIValue());
  return out;
}

}  // namespace remora::detail
