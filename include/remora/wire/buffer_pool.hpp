#pragma once
// Memory for large received tensors, reused. A fresh multi-MiB allocation is mapped anew by the
// allocator and costs a page fault per 4 KiB page on first touch, which makes writing into it many
// times slower than into memory already mapped (most of all on virtual machines). Received tensors of at
// least `min_pooled` bytes therefore take their memory from this pool, and give it back when the
// last tensor using it is gone.
#include <cstddef>
#include <cstdlib>
#include <map>
#include <mutex>

#include <ATen/EmptyTensor.h>
#include <torch/types.h>

namespace remora::wire {

class BufferPool {
 public:
  static constexpr std::size_t min_pooled = std::size_t{1} << 20;   // smaller tensors: torch::empty
  static constexpr std::size_t max_cached = std::size_t{1} << 30;   // idle memory kept at most

  // Never destroyed: tensors may give memory back during static destruction.
  static BufferPool& global() {
    static auto* pool = new BufferPool;
    return *pool;
  }

  // An uninitialized contiguous tensor of `sizes` and `dtype` (`nbytes` of data).
  torch::Tensor empty(c10::IntArrayRef sizes, c10::ScalarType dtype, std::size_t nbytes) {
    // ATen's CPU allocation itself: torch::empty would go through the dispatcher (and autograd's
    // layer) first, a few hundred ns of each small call's two decodes.
    if (nbytes < min_pooled) return torch::Tensor(at::detail::empty_cpu(sizes, dtype));
    auto [data, capacity] = take(nbytes);
    return torch::from_blob(
        data, sizes, [this, capacity = capacity](void* p) { give_back(p, capacity); },
        torch::TensorOptions().dtype(dtype));
  }

  // Bytes idle in the pool now.
  std::size_t cached_bytes() const {
    std::lock_guard lock(mu_);
    return cached_;
  }

 private:
  std::pair<void*, std::size_t> take(std::size_t nbytes) {
    {
      std::lock_guard lock(mu_);
      // The smallest idle buffer that fits, unless it would waste more than half of itself.
      auto it = idle_.lower_bound(nbytes);
      if (it != idle_.end() && it->first <= 2 * nbytes) {
        auto out = std::pair<void*, std::size_t>{it->second, it->first};
        cached_ -= it->first;
        idle_.erase(it);
        return out;
      }
    }
    const std::size_t capacity = (nbytes + 4095) / 4096 * 4096;
    void* p = std::aligned_alloc(4096, capacity);
    if (!p) throw std::bad_alloc();
    return {p, capacity};
  }

  void give_back(void* p, std::size_t capacity) {
    {
      std::lock_guard lock(mu_);
      if (cached_ + capacity <= max_cached) {
        idle_.emplace(capacity, p);
        cached_ += capacity;
        return;
      }
    }
    std::free(p);
  }

  mutable std::mutex mu_;
  std::multimap<std::size_t, void*> idle_;
  std::size_t cached_ = 0;
};

}  // namespace remora::wire
