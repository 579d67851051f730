#pragma once
// Whether this process's CUDA work goes through an MPS server, and the one-time advice to start
// one when two processes of a worker group share a GPU without it (docs/gpu.md, "MPS").
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <string>

#include <torch/cuda.h>

#include "remora/core/log.hpp"

namespace remora::transport::detail {

// CUDA connects a process to an MPS server when an MPS control daemon listens in its pipe
// directory ($CUDA_MPS_PIPE_DIRECTORY, by default /tmp/nvidia-mps). No CUDA call says so; the
// daemon's socket does. Cost: a CUDA device count and one access(2).
inline bool cuda_mps_server() {
  if (torch::cuda::device_count() == 0) return false;
  const char* dir = std::getenv("CUDA_MPS_PIPE_DIRECTORY");
  const std::string control = std::string(dir && *dir ? dir : "/tmp/nvidia-mps") + "/control";
  return ::access(control.c_str(), F_OK) == 0;
}

// Without MPS two processes on one GPU time-slice it: every GPU tensor handed from one to the
// other waits for the GPU to switch contexts. Said once per process, by the receiver of the first
// such tensor (cuda_ipc.hpp), with the figures of docs/gpu.md.
class MpsAdvice {
 public:
  // Whether this process gave the advice (for tests).
  static bool given() { return flag().load(std::memory_order_relaxed); }
  // Whether a tensor from another process should still be looked at: no MPS server, and no
  // advice given yet. Cost after the first call: two loads.
  static bool wanted() { return !under_mps() && !given(); }
  // Called where a tensor from another process is on this process's GPU `device_index`.
  static void shared_gpu(int device_index) {
    if (under_mps() || flag().exchange(true, std::memory_order_relaxed)) return;
    remora::detail::log_warning(
        "this process and a peer process share cuda:" + std::to_string(device_index) +
        " without MPS, so each GPU tensor handed between them waits for the GPU to switch between the two "
        "processes (a round trip of a 4 B tensor costs about 300 us on an H100 or H200; about 40 us under "
        "MPS). Start an MPS control daemon (nvidia-cuda-mps-control -d) before the workers: docs/gpu.md, MPS");
  }

 private:
  static bool under_mps() {
    static const bool mps = cuda_mps_server();  // fixed when the CUDA context was made
    return mps;
  }
  static std::atomic<bool>& flag() {
    static std::atomic<bool> f{false};
    return f;
  }
};

}  // namespace remora::transport::detail
