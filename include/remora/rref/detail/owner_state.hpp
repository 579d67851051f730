#pragma once
// A value held by its owner on behalf of RRefs, and a user's (or the owner's own) reference to it.
#include <atomic>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <string_view>

#include "remora/config.hpp"
#include "remora/core/future.hpp"
#include "remora/rref/detail/ids.hpp"

namespace remora::detail {

class RRefContext;

// The value of one RRef on its owner. It exists from the first news of the RRef (its creation,
// or a use that overtook the creation on the way) and holds the value once created.
struct OwnerState {
  OwnerState(RRefId id_, std::weak_ptr<RRefContext> ctx_, std::shared_ptr<std::atomic<std::int64_t>> live_)
      : id(id_), ctx(std::move(ctx_)), live(std::move(live_)) {
    ++*live;
  }
  REMORA_DECL ~OwnerState();
  OwnerState(const OwnerState&) = delete;
  OwnerState& operator=(const OwnerState&) = delete;

  // Completes the value: `type` is type_identity_of<T>.id of what `value` points to.
  void set_value(std::uint64_t type_id, std::string_view type_name, std::shared_ptr<void> value) {
    type.store(type_id);
    name = type_name;
    promise.try_set_value(std::move(value));
  }
  void set_error(std::exception_ptr e) { promise.try_set_exception(std::move(e)); }

  const RRefId id;
  std::atomic<std::uint64_t> type{0};
  std::string_view name;
  Promise<std::shared_ptr<void>> promise;
  const Future<std::shared_ptr<void>> value = promise.get_future();
  std::weak_ptr<RRefContext> ctx;
  std::shared_ptr<std::atomic<std::int64_t>> live;  // the owner's count of live values
};

// One worker's handle on an RRef; every RRef<T> copy in the process shares it. A user's core,
// when the last copy goes, tells the owner its fork is gone.
struct RRefCore {
  RRefId id;
  ForkId fork;                          // users only
  std::uint32_t owner = 0;
  std::uint64_t type = 0;
  std::shared_ptr<OwnerState> owned;    // set on the owner
  std::weak_ptr<RRefContext> ctx;
  std::atomic<bool> confirmed{false};   // the owner knows this fork
  std::atomic<bool> released{false};    // the owner was told (or cannot be told) it is gone

  std::mutex mu;
  std::exception_ptr failure;           // the RRef can never be used (its creation never reached the owner)

  REMORA_DECL ~RRefCore();
  std::exception_ptr failed() {
    std::lock_guard lock(mu);
    return failure;
  }
  void fail(std::exception_ptr e) {
    std::lock_guard lock(mu);
    if (!failure) failure = std::move(e);
  }
};

}  // namespace remora::detail
