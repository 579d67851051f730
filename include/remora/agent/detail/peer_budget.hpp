#pragma once
// What one peer's calls may hold on this worker: calls received from it and not yet answered,
// and the bytes of their frames. A call past either bound is answered at once with an
// `overloaded` error and its frame dropped, so a peer that floods a worker makes it hold a
// bounded amount, and only that peer's calls fail. Refusing rather than pausing the peer's reads
// cannot deadlock two workers that call each other (a paused read would also hold back the
// replies a nested call waits for).
//
// Cost: two relaxed atomic additions per call, on receipt and on release.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "remora/agent/detail/id_table.hpp"
#include "remora/wire/frame.hpp"

namespace remora::detail {

class PeerBudgets {
  struct Usage {
    std::atomic<std::uint64_t> calls{0};
    std::atomic<std::uint64_t> bytes{0};
  };

 public:
  PeerBudgets(std::uint64_t max_calls, std::uint64_t max_bytes) : max_calls_(max_calls), max_bytes_(max_bytes) {}

  // One admitted call's share; given back when destroyed (with the call's reply function).
  class Ticket {
   public:
    Ticket() = default;
    Ticket(Ticket&& o) noexcept : usage_(std::move(o.usage_)), bytes_(o.bytes_) {}
    Ticket& operator=(Ticket&& o) noexcept {
      if (this != &o) {
        release();
        usage_ = std::move(o.usage_);
        bytes_ = o.bytes_;
      }
      return *this;
    }
    ~Ticket() { release(); }

   private:
    friend class PeerBudgets;
    Ticket(std::shared_ptr<Usage> usage, std::uint64_t bytes) : usage_(std::move(usage)), bytes_(bytes) {}
    void release();
    // Shares the budgets' ownership: a ticket that outlives its agent (held by a late answer)
    // gives its share back to memory that still exists.
    std::shared_ptr<Usage> usage_;
    std::uint64_t bytes_ = 0;
  };

  // Called once the group is known, before any call arrives: peers may have ids below `limit`.
  void reserve(std::uint32_t limit) { usage_.reserve(limit); }
  // `peer` is a member: its calls count from now on (before any of them arrives).
  void add(std::uint32_t peer) { usage_.make(peer); }

  // A ticket for `frame` from `peer`, or the reason it is refused. A peer with nothing pending
  // is always admitted (any frame the limits let through can be a call).
  bool admit(std::uint32_t peer, const wire::InFrame& frame, Ticket& out, std::string& why) {
    auto* u = usage_.find(peer);
    if (!u) return true;  // not a group member's connection: the agent refuses it
    std::uint64_t bytes = frame.meta.size();
    for (const auto& t : frame.tensors) bytes += t.tensor.defined() ? t.tensor.nbytes() : 0;
    bytes -= std::min(bytes, frame.borrowed_bytes);  // lent views hold nothing here
    const auto calls = u->calls.fetch_add(1, std::memory_order_relaxed);
    const auto held = u->bytes.fetch_add(bytes, std::memory_order_relaxed);
    out = Ticket(usage_.share(peer), bytes);
    if (calls == 0) return true;
    if (calls >= max_calls_) {
      why = std::to_string(calls) + " calls from this worker are already pending there (Options::max_pending_calls_per_peer " +
            std::to_string(max_calls_) + ")";
    } else if (held + bytes > max_bytes_) {
      why = std::to_string(held) + " bytes of calls from this worker are already pending there and this call has " +
            std::to_string(bytes) + " (Options::max_pending_bytes_per_peer " + std::to_string(max_bytes_) + ")";
    } else {
      return true;
    }
    out = Ticket();
    return false;
  }

  // Calls from `peer` admitted and not yet released (tests).
  std::uint64_t pending_calls(std::uint32_t peer) const {
    const auto* u = usage_.find(peer);
    return u ? u->calls.load(std::memory_order_relaxed) : 0;
  }

 private:
  std::uint64_t max_calls_, max_bytes_;
  IdTable<Usage> usage_;  // by peer id; a ticket shares its block's ownership
};

inline void PeerBudgets::Ticket::release() {
  if (!usage_) return;
  usage_->calls.fetch_sub(1, std::memory_order_relaxed);
  usage_->bytes.fetch_sub(bytes_, std::memory_order_relaxed);
  usage_.reset();
}

}  // namespace remora::detail
