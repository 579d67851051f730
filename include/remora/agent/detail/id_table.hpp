#pragma once
// Per-worker-id storage whose entries never move once made, for state that threads read by id
// without a lock (a peer's name, address, device maps, call budget). A static group makes its N
// entries at once; an elastic group hands out a new id at every join, so its table reaches ids in
// blocks as members are met, and pays only for the blocks its ids fall in.
//
// Thread safety: make() may run beside readers of other entries (it takes the table's mutex only
// to add a block). An entry is written before its id is handed to any reader, and not written
// again while readers may look at it: the caller's protocol (register once, then publish) says so.
// Cost: a lookup is two dependent loads; a block holds up to 256 entries.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <utility>

namespace remora::detail {

template <class T>
class IdTable {
 public:
  IdTable() = default;
  IdTable(const IdTable&) = delete;
  IdTable& operator=(const IdTable&) = delete;

  // Ids below `limit` may be made from now on. Called once, before any other thread uses the
  // table. Blocks are as small as `limit` allows (a group of 4 holds 4 entries, not 256).
  void reserve(std::uint32_t limit) {
    shift_ = 0;
    while ((std::uint32_t{1} << shift_) < std::min<std::uint32_t>(limit, kMaxBlock)) ++shift_;
    const std::uint32_t blocks = limit == 0 ? 0 : ((limit - 1) >> shift_) + 1;
    blocks_ = std::make_unique<std::atomic<T*>[]>(blocks);
    owners_ = std::make_unique<std::shared_ptr<T[]>[]>(blocks);
    for (std::uint32_t b = 0; b < blocks; ++b) blocks_[b].store(nullptr, std::memory_order_relaxed);
    limit_ = limit;
  }
  // One more than the highest id made so far: every id that exists is below it (some below it
  // may not exist, in an elastic group).
  std::uint32_t size() const { return size_.load(std::memory_order_acquire); }

  // The entry of `id`, made (default-constructed, with its block) if it was not. `id` is below
  // reserve's limit.
  T& make(std::uint32_t id) {
    T* block = blocks_[id >> shift_].load(std::memory_order_acquire);
    if (!block) {
      std::lock_guard lock(grow_mu_);
      block = blocks_[id >> shift_].load(std::memory_order_relaxed);
      if (!block) {
        owners_[id >> shift_] = std::shared_ptr<T[]>(new T[std::size_t{1} << shift_]);
        block = owners_[id >> shift_].get();
        blocks_[id >> shift_].store(block, std::memory_order_release);
      }
    }
    std::uint32_t seen = size_.load(std::memory_order_relaxed);
    while (seen <= id && !size_.compare_exchange_weak(seen, id + 1, std::memory_order_acq_rel)) {
    }
    return block[id & mask()];
  }
  // The entry of `id`, or null where its block was never made (or `id` is past the limit).
  const T* find(std::uint32_t id) const {
    if (id >= limit_) return nullptr;
    const T* block = blocks_[id >> shift_].load(std::memory_order_acquire);
    return block ? &block[id & mask()] : nullptr;
  }
  T* find(std::uint32_t id) { return const_cast<T*>(std::as_const(*this).find(id)); }
  // The entry of `id`; a default value where none was made (a name not met reads as "").
  const T& operator[](std::uint32_t id) const {
    static const T none{};
    const T* e = find(id);
    return e ? *e : none;
  }
  // Shares ownership of `id`'s block (made): the entry outlives the table while this is held.
  std::shared_ptr<T> share(std::uint32_t id) {
    T& e = make(id);
    return std::shared_ptr<T>(owners_[id >> shift_], &e);
  }

  // The made entries with ids below size(), in id order.
  template <class F>
  void for_each(F&& f) const {
    const std::uint32_t n = size();
    for (std::uint32_t id = 0; id < n; ++id)
      if (const T* e = find(id)) f(id, *e);
  }

 private:
  static constexpr std::uint32_t kMaxBlock = 256;
  std::uint32_t mask() const { return (std::uint32_t{1} << shift_) - 1; }

  std::uint32_t shift_ = 0, limit_ = 0;
  std::unique_ptr<std::atomic<T*>[]> blocks_;     // by id >> shift_: null until made
  std::unique_ptr<std::shared_ptr<T[]>[]> owners_;  // each block's owner; written under grow_mu_
  std::atomic<std::uint32_t> size_{0};
  std::mutex grow_mu_;
};

}  // namespace remora::detail
