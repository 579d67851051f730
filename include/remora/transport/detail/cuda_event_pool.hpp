#pragma once
// CUDA events kept for reuse, per device: creating one (and, for an interprocess event, exporting
// and opening it on the peer) costs more than the small copy it marks. Thread-safe.
//
// Compiled only when libtorch has CUDA (REMORA_CUDA_IPC, remora/config.hpp).
#include "remora/config.hpp"
#if REMORA_CUDA_IPC
#include <cuda_runtime_api.h>

#include <c10/cuda/CUDAGuard.h>

#include <map>
#include <mutex>
#include <string>

#include "remora/core/errors.hpp"

namespace remora::transport::detail {

class CudaEventPool {
 public:
  // `flags` for cudaEventCreateWithFlags.
  explicit CudaEventPool(unsigned flags) : flags_(flags) {}
  CudaEventPool(const CudaEventPool&) = delete;
  CudaEventPool& operator=(const CudaEventPool&) = delete;
  ~CudaEventPool() {
    for (auto& [device, e] : idle_) cudaEventDestroy(e);
  }

  // An idle event of `device`, or a new one. Throws Error when CUDA cannot make one.
  cudaEvent_t take(c10::DeviceIndex device) {
    {
      std::lock_guard lock(mu_);
      if (auto it = idle_.find(device); it != idle_.end()) {
        auto e = it->second;
        idle_.erase(it);
        return e;
      }
    }
    c10::cuda::CUDAGuard guard(device);
    cudaEvent_t e;
    if (const auto status = cudaEventCreateWithFlags(&e, flags_); status != cudaSuccess)
      throw Error(std::string("remora: cannot create a CUDA event: ") + cudaGetErrorString(status));
    return e;
  }
  void give_back(c10::DeviceIndex device, cudaEvent_t e) {
    std::lock_guard lock(mu_);
    idle_.emplace(device, e);
  }

 private:
  const unsigned flags_;
  std::mutex mu_;
  std::multimap<c10::DeviceIndex, cudaEvent_t> idle_;
};

}  // namespace remora::transport::detail
#endif
