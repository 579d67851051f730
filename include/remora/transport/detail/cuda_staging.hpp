#pragma once
// GPU tensors across hosts (or wherever CUDA IPC is not used) go through pinned host memory in
// chunks, so the copies overlap with the network instead of preceding or following it:
// - sending: each chunk is copied device-to-host on a side stream (after the work the sender's
//   current stream has queued) and the writer sends it once its event says it is complete;
// - receiving: each chunk read is copied host-to-device on a side stream at once; the tensor is
//   handed on after that stream (not the device) is synchronized, so it is complete for every
//   stream.
// Compiled only when libtorch has CUDA (REMORA_CUDA_IPC, remora/config.hpp); without it,
// stage_in_chunks does nothing and make_device_uploader gives no uploader.
#include "remora/transport/detail/cuda_ipc.hpp"
#include "remora/wire/frame_reader.hpp"

#if REMORA_CUDA_IPC
#include <cstdint>
#include <memory>
#include <vector>

#include <torch/types.h>

#include "remora/wire/frame_reader.hpp"

namespace remora::transport::detail {

// Tensors smaller than this are staged whole; larger ones in chunks of kStagingChunk.
inline constexpr std::uint64_t kChunkedStagingMin = std::uint64_t{1} << 20;
inline constexpr std::uint64_t kStagingChunk = std::uint64_t{4} << 20;

class CudaEvents {
 public:
  explicit CudaEvents(std::size_t n) : events_(n, nullptr) {
    for (auto& e : events_) cuda_check(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "cudaEventCreate");
  }
  CudaEvents(const CudaEvents&) = delete;
  CudaEvents& operator=(const CudaEvents&) = delete;
  ~CudaEvents() {
    for (auto e : events_)
      if (e) cudaEventDestroy(e);
  }
  cudaEvent_t operator[](std::size_t i) const { return events_[i]; }
  std::size_t size() const { return events_.size(); }
  // cudaErrorNotReady while the work before it runs; anything else ends the wait.
  bool done(std::size_t i) const { return cudaEventQuery(events_[i]) != cudaErrorNotReady; }

 private:
  std::vector<cudaEvent_t> events_;
};

// One tensor's chunked device-to-host copy: keeps the device tensor and the pinned buffer until
// every chunk is copied, even if the frame is dropped before it is sent.
struct DownloadInFlight {
  torch::Tensor device, host;
  std::unique_ptr<CudaEvents> events;
  ~DownloadInFlight() {
    if (events && events->size()) cudaEventSynchronize((*events)[events->size() - 1]);
  }
};

// Replaces each large CUDA tensor of `frame` by a pinned host tensor filled in chunks, and gates
// each chunk's bytes on its copy. Smaller CUDA tensors are left for OutFrame::stage_to_host.
inline void stage_in_chunks(wire::OutFrame& frame) {
  if (!frame.has_device_tensors()) return;
  std::uint64_t offset = frame.head.size();
  for (auto& t : frame.tensors) {
    const std::uint64_t n = t.nbytes();
    if (t.is_cuda() && n >= kChunkedStagingMin) {
      const auto index = t.device().index();
      c10::cuda::CUDAGuard guard(t.device());
      auto producer = c10::cuda::getCurrentCUDAStream(index);
      auto side = c10::cuda::getStreamFromPool(false, index);
      auto state = std::make_shared<DownloadInFlight>();
      state->device = t;
      state->host = torch::empty(t.sizes(), torch::TensorOptions().dtype(t.scalar_type()).pinned_memory(true));
      const std::size_t chunks = (n + kStagingChunk - 1) / kStagingChunk;
      state->events = std::make_unique<CudaEvents>(chunks + 1);
      // Event 0: the side stream starts after what the producer has queued (the tensor's own
      // writes). Event c + 1: chunk c is in host memory.
      cuda_check(cudaEventRecord((*state->events)[0], producer.stream()), "cudaEventRecord");
      cuda_check(cudaStreamWaitEvent(side.stream(), (*state->events)[0], 0), "cudaStreamWaitEvent");
      auto* src = static_cast<const std::byte*>(t.data_ptr());
      auto* dst = static_cast<std::byte*>(state->host.data_ptr());
      for (std::size_t c = 0; c < chunks; ++c) {
        const std::uint64_t begin = c * kStagingChunk, len = std::min(kStagingChunk, n - begin);
        cuda_check(cudaMemcpyAsync(dst + begin, src + begin, len, cudaMemcpyDeviceToHost, side.stream()),
                   "cudaMemcpyAsync");
        cuda_check(cudaEventRecord((*state->events)[c + 1], side.stream()), "cudaEventRecord");
        frame.gates.push_back({offset + begin, [state, c] { return state->events->done(c + 1); }});
      }
      t = state->host;
    }
    offset += t.nbytes();
  }
}

// The receiving side: reads into pinned memory and copies each full chunk to the device at once.
class ChunkedUpload final : public wire::DeviceUpload {
 public:
  ChunkedUpload(c10::IntArrayRef sizes, c10::ScalarType dtype, std::uint64_t nbytes, c10::Device device)
      : nbytes_(nbytes), guard_device_(device), stream_(c10::cuda::getStreamFromPool(false, device.index())) {
    c10::cuda::CUDAGuard guard(device);
    host_ = torch::empty(sizes, torch::TensorOptions().dtype(dtype).pinned_memory(true));
    device_ = torch::empty(sizes, torch::TensorOptions().dtype(dtype).device(device));
  }
  ChunkedUpload(const ChunkedUpload&) = delete;
  ChunkedUpload& operator=(const ChunkedUpload&) = delete;
  ~ChunkedUpload() override {
    if (issued_ > 0) cudaStreamSynchronize(stream_.stream());  // the pinned buffer outlives its copies
  }

  torch::Tensor staging() override { return host_; }

  void progress(std::uint64_t in) override {
    while (issued_ < in && (in - issued_ >= kStagingChunk || in == nbytes_)) {
      const std::uint64_t len = std::min(kStagingChunk, in - issued_);
      c10::cuda::CUDAGuard guard(guard_device_);
      cuda_check(cudaMemcpyAsync(static_cast<std::byte*>(device_.data_ptr()) + issued_,
                                 static_cast<const std::byte*>(host_.data_ptr()) + issued_, len,
                                 cudaMemcpyHostToDevice, stream_.stream()),
                 "cudaMemcpyAsync");
      issued_ += len;
    }
  }

  torch::Tensor finish() override {
    cuda_check(cudaStreamSynchronize(stream_.stream()), "cudaStreamSynchronize");
    issued_ = 0;
    return device_;
  }

 private:
  std::uint64_t nbytes_;
  std::uint64_t issued_ = 0;
  c10::Device guard_device_;
  c10::cuda::CUDAStream stream_;
  torch::Tensor host_, device_;
};

inline wire::DeviceUploader make_device_uploader() {
  return [](c10::IntArrayRef sizes, c10::ScalarType dtype, std::uint64_t nbytes,
            c10::Device device) -> std::unique_ptr<wire::DeviceUpload> {
    if (nbytes < kChunkedStagingMin) return nullptr;
    return std::make_unique<ChunkedUpload>(sizes, dtype, nbytes, device);
  };
}

}  // namespace remora::transport::detail
#else
namespace remora::transport::detail {
inline void stage_in_chunks(wire::OutFrame&) {}
inline wire::DeviceUploader make_device_uploader() { return nullptr; }
}  // namespace remora::transport::detail
#endif
