#pragma once
// GPU tensors between processes of one host without host staging: the sender exports the
// tensor's memory (a CUDA IPC handle of the caching allocator's segment, plus the offset) and an
// interprocess event recorded on its current stream after the work that produced the tensor; the
// receiver opens the memory, makes a stream wait for the event and copies into its own tensor on
// the mapped device. The I/O thread that reads the frame only queues the copy: a reply's decoder
// thread waits for it on the host before the tensor is handed on; a call's thread makes its
// stream wait for it on the GPU.
// Once the copy is done the receiver tells the sender, which lets go of its tensor and event. A
// peer in the same process (two agents in one program; the record's process token says so) finds
// the export by its id in this process's table: CUDA refuses to open an IPC handle in the process
// that made it, and an address that came from the wire is never used.
//
// Compiled only when libtorch has CUDA (REMORA_CUDA_IPC, remora/config.hpp).
#include "remora/config.hpp"
#if REMORA_CUDA_IPC
#include <cuda_runtime_api.h>

#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <utility>
#include <atomic>
#include <map>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include <torch/types.h>

#include "remora/core/errors.hpp"
#include "remora/transport/detail/cuda_copy_watch.hpp"
#include "remora/transport/detail/cuda_event_pool.hpp"
#include "remora/transport/detail/cuda_mps.hpp"
#include "remora/transport/detail/process_token.hpp"
#include "remora/wire/frame_reader.hpp"

namespace remora::transport::detail {

struct CudaIpcRecord {
  std::byte memory[64];     // cudaIpcMemHandle_t of the tensor's segment
  std::byte event[64];      // cudaIpcEventHandle_t
  std::uint64_t offset;     // of the tensor in its segment
  std::uint64_t id;         // the sender's export, named in the release
  std::uint64_t reserved[2];  // zero
  std::uint64_t token;      // the sender's process (process_token): a receiver in the same process
                            // finds the export by id (InProcessExports), never by an address
};
// The wire placement (wire/format.hpp) of a tensor handed over by IPC handle: the stream holds its
// record.
inline constexpr std::uint8_t kCudaIpcPlacement = 2;
static_assert(sizeof(CudaIpcRecord) == 168);
static_assert(sizeof(cudaIpcMemHandle_t) <= 64 && sizeof(cudaIpcEventHandle_t) <= 64);

inline void cuda_check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw Error(std::string("remora: ") + what + ": " + cudaGetErrorString(e));
}

// What the sender keeps until the receiver has copied: the tensor and its event.
struct CudaExport {
  torch::Tensor tensor;
  cudaEvent_t event = nullptr;
  c10::DeviceIndex device = 0;
};

// This process's live exports by id, for a receiver in the same process (two agents of one
// program): it copies from the tensor it finds here, so no address from the wire is ever used.
// Ids are unique in the process.
class InProcessExports {
 public:
  static InProcessExports& instance() {
    static InProcessExports exports;
    return exports;
  }
  std::uint64_t next_id() { return next_.fetch_add(1, std::memory_order_relaxed); }
  void add(std::uint64_t id, const void* data, std::uint64_t bytes, cudaEvent_t event) {
    std::lock_guard lock(mu_);
    live_[id] = {data, bytes, event};
  }
  void remove(std::uint64_t id) {
    std::lock_guard lock(mu_);
    live_.erase(id);
  }
  // The export's data, size and event; false when this process has no live export `id`.
  bool find(std::uint64_t id, const void*& data, std::uint64_t& bytes, cudaEvent_t& event) const {
    std::lock_guard lock(mu_);
    auto it = live_.find(id);
    if (it == live_.end()) return false;
    data = it->second.data;
    bytes = it->second.bytes;
    event = it->second.event;
    return true;
  }

 private:
  struct Export {
    const void* data = nullptr;
    std::uint64_t bytes = 0;
    cudaEvent_t event = nullptr;
  };
  mutable std::mutex mu_;
  std::atomic<std::uint64_t> next_{1};
  std::map<std::uint64_t, Export> live_;
};

// The sender's side: exports by id, released by the receiver. Events are reused (the receiver
// keeps the ones it opened), since creating, exporting and opening one costs more than the copy
// of a small tensor.
class CudaExports {
 public:
  CudaExports() = default;
  CudaExports(const CudaExports&) = delete;
  CudaExports& operator=(const CudaExports&) = delete;
  ~CudaExports() {
    for (auto& [id, e] : live_) {
      InProcessExports::instance().remove(id);
      cudaEventDestroy(e.event);
    }
  }

  // Exports `t` (contiguous, on a CUDA device) after the work queued on this thread's current stream.
  CudaIpcRecord add(const torch::Tensor& t) {
    c10::cuda::CUDAGuard guard(t.device());
    CudaExport e;
    e.tensor = t;
    e.device = t.device().index();
    e.event = events_.take(e.device);
    cuda_check(cudaEventRecord(e.event, c10::cuda::getCurrentCUDAStream(t.device().index()).stream()),
               "cannot record a CUDA event");
    CudaIpcRecord r{};
    std::size_t segment_bytes = 0;
    void* base = c10::cuda::CUDACachingAllocator::getBaseAllocation(t.data_ptr(), &segment_bytes);
    cudaIpcMemHandle_t mh;
    cuda_check(cudaIpcGetMemHandle(&mh, base), "cannot export GPU memory (cudaIpcGetMemHandle)");
    cudaIpcEventHandle_t eh;
    cuda_check(cudaIpcGetEventHandle(&eh, e.event), "cannot export a CUDA event");
    std::memcpy(r.memory, &mh, sizeof mh);
    std::memcpy(r.event, &eh, sizeof eh);
    r.offset = static_cast<std::uint64_t>(static_cast<const std::byte*>(t.data_ptr()) - static_cast<std::byte*>(base));
    r.token = process_token();
    r.id = InProcessExports::instance().next_id();
    InProcessExports::instance().add(r.id, t.data_ptr(), t.nbytes(), e.event);
    std::lock_guard lock(mu_);
    live_.emplace(r.id, std::move(e));
    return r;
  }
  bool release(std::uint64_t id) {
    std::lock_guard lock(mu_);
    auto it = live_.find(id);
    if (it == live_.end()) return false;
    InProcessExports::instance().remove(id);
    events_.give_back(it->second.device, it->second.event);
    live_.erase(it);
    return true;
  }
  std::size_t live() const {
    std::lock_guard lock(mu_);
    return live_.size();
  }

 private:
  mutable std::mutex mu_;
  std::map<std::uint64_t, CudaExport> live_;
  CudaEventPool events_{cudaEventDisableTiming | cudaEventInterprocess};
};

// The peers' GPU segments this process has opened, by handle and device. CUDA refuses a second
// open of a handle that is open, and opening costs far more than a small copy, so segments stay
// open between copies; but at most kMaxOpen of them. An open segment keeps its memory from
// going back to the peer's GPU even after the peer frees it, so past the bound the least
// recently used segment that nobody is copying from is closed.
class OpenedSegments {
 public:
  static constexpr std::size_t kMaxOpen = 512;  // a 7B model's state is about 300 tensors

  static OpenedSegments& instance() {
    static OpenedSegments segments;
    return segments;
  }

  // A segment's base address, open for as long as the lease lives (and then while it stays recent).
  class Lease {
   public:
    Lease(const std::byte (&handle)[64], c10::DeviceIndex device)
        : key_(key_of(handle, device)), base_(instance().acquire(key_, handle)) {}
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease() { instance().release(key_); }
    void* base() const { return base_; }

   private:
    std::string key_;
    void* base_;
  };

  std::size_t open_count() const {
    std::lock_guard lock(mu_);
    return open_.size();
  }
  std::uint64_t closed_count() const {
    std::lock_guard lock(mu_);
    return closed_;
  }
  // Segments opened so far (each cudaIpcOpenMemHandle that succeeded).
  std::uint64_t opened_count() const {
    std::lock_guard lock(mu_);
    return opened_;
  }

 private:
  struct Segment {
    void* base = nullptr;
    int users = 0;
    std::uint64_t last_use = 0;
  };

  static std::string key_of(const std::byte (&handle)[64], c10::DeviceIndex device) {
    std::string key(reinterpret_cast<const char*>(handle), sizeof(cudaIpcMemHandle_t));
    key += static_cast<char>(device);
    return key;
  }

  void* acquire(const std::string& key, const std::byte (&handle)[64]) {
    std::lock_guard lock(mu_);
    auto it = open_.find(key);
    if (it == open_.end()) {
      close_unused_beyond(kMaxOpen - 1);
      cudaIpcMemHandle_t mh;
      std::memcpy(&mh, handle, sizeof mh);
      void* base = nullptr;
      if (cudaIpcOpenMemHandle(&base, mh, cudaIpcMemLazyEnablePeerAccess) != cudaSuccess)
        throw ProtocolError("cannot open the peer's GPU memory handle");
      it = open_.emplace(key, Segment{base}).first;
      ++opened_;
    }
    ++it->second.users;
    it->second.last_use = ++clock_;
    return it->second.base;
  }

  void release(const std::string& key) {
    std::lock_guard lock(mu_);
    if (auto it = open_.find(key); it != open_.end()) --it->second.users;
  }

  // Closes least recently used segments without users until at most `keep` are open.
  void close_unused_beyond(std::size_t keep) {
    while (open_.size() > keep) {
      auto victim = open_.end();
      for (auto it = open_.begin(); it != open_.end(); ++it)
        if (it->second.users == 0 && (victim == open_.end() || it->second.last_use < victim->second.last_use))
          victim = it;
      if (victim == open_.end()) return;  // all in use: allowed past the bound for now
      cudaIpcCloseMemHandle(victim->second.base);
      open_.erase(victim);
      ++closed_;
    }
  }

  mutable std::mutex mu_;
  std::map<std::string, Segment> open_;
  std::uint64_t clock_ = 0;
  std::uint64_t closed_ = 0;
  std::uint64_t opened_ = 0;
};

// How the receiver hands a copied tensor on.
enum class CopyHandOn {
  complete,       // the copy is complete for every stream on return (the reading thread waits)
  stream_waits,   // a call's argument: before_use makes the running thread's stream wait (no host wait)
  host_waits,     // a reply's value: before_use waits on the host, on the thread that hands it on
  borrow,         // a call that only reads its GPU tensors while it runs (wire::kLendsDeviceTensors):
                  // no copy; the tensor is a view of the sender's memory, before_use makes the
                  // running thread's stream wait for the sender's event, and the sender gets its
                  // memory back once the view is gone and the work queued then on the current
                  // stream of the thread that dropped it is done
};

// The receiver's side: a copy of the exported tensor on `device`, made on a stream of its own
// behind the sender's event; `release` lets the sender reuse its memory. With
// CopyHandOn::complete the copy is complete for every stream on return, and `release` has run.
// Otherwise the thread that reads the frame (an I/O thread) does not wait for the GPU: the entry
// added to `before_use` waits, on the thread that runs the call (its stream, not its host) or
// the one that decodes the reply (the agent's decoder thread; its host), and `release` runs on
// CopyWatch's thread once the copy is done. A callee's host thus never waits for the GPU to
// switch to its context and back; a caller waits once per round trip, off the I/O thread.
// A tensor borrowed in place adds its `nbytes` to `borrowed_bytes` (the frame's: it counts against
// no budget of the receiver's).
inline torch::Tensor import_cuda_tensor(const CudaIpcRecord& r, c10::IntArrayRef sizes, c10::ScalarType dtype,
                                        std::uint64_t nbytes, c10::Device device, std::function<void()> release,
                                        CopyHandOn hand_on, std::vector<std::function<void()>>& before_use,
                                        std::uint64_t& borrowed_bytes) {
  c10::cuda::CUDAGuard guard(device);
  const bool same_process = r.token == process_token();
  const std::byte* src = nullptr;
  cudaEvent_t event = nullptr;
  std::shared_ptr<OpenedSegments::Lease> segment;  // open until the copy below is done
  if (same_process) {
    const void* data = nullptr;
    std::uint64_t held = 0;
    if (!InProcessExports::instance().find(r.id, data, held, event))
      throw ProtocolError("a GPU tensor names export " + std::to_string(r.id) + ", which this process does not hold");
    if (nbytes > held)
      throw ProtocolError("a GPU tensor of " + std::to_string(nbytes) + " bytes names export " + std::to_string(r.id) +
                          " of " + std::to_string(held));
    src = static_cast<const std::byte*>(data);
  } else {
    segment = std::make_shared<OpenedSegments::Lease>(r.memory, device.index());
    {
      // Opened events are kept: the sender reuses its events, so the same handles come back.
      static std::mutex mu;
      static std::map<std::string, cudaEvent_t> events;
      std::lock_guard lock(mu);
      const std::string ekey(reinterpret_cast<const char*>(r.event), sizeof(cudaIpcEventHandle_t));
      auto it = events.find(ekey);
      if (it == events.end()) {
        cudaIpcEventHandle_t eh;
        std::memcpy(&eh, r.event, sizeof eh);
        if (cudaIpcOpenEventHandle(&event, eh) != cudaSuccess) throw ProtocolError("cannot open the peer's CUDA event");
        it = events.emplace(ekey, event).first;
      }
      event = it->second;
    }
    src = static_cast<const std::byte*>(segment->base()) + r.offset;
  }
  // Whether the sender's memory is on the very GPU the tensor is for: asked for a lent tensor
  // (a view in place only there; a map to another GPU of this host copies, as any call), and from
  // another process until the MPS advice was given or is not needed (cuda_mps.hpp).
  const bool advise = !same_process && MpsAdvice::wanted();
  if (hand_on == CopyHandOn::borrow || advise) {
    cudaPointerAttributes where{};
    bool here = false;
    if (cudaPointerGetAttributes(&where, src) == cudaSuccess) here = where.device == device.index();
    else cudaGetLastError();  // (clears the error the failed query left)
    if (advise && here) MpsAdvice::shared_gpu(device.index());
    if (hand_on == CopyHandOn::borrow && !here) hand_on = CopyHandOn::stream_waits;
  }
  if (hand_on == CopyHandOn::borrow) {
    borrowed_bytes += nbytes;
    before_use.push_back([event, device] {
      c10::cuda::CUDAGuard guard(device);
      cuda_check(cudaStreamWaitEvent(c10::cuda::getCurrentCUDAStream(device.index()).stream(), event, 0),
                 "cannot wait for a lent GPU tensor");
    });
    auto lent = [segment = std::move(segment), release = std::move(release), device](void*) mutable {
      try {
        c10::cuda::CUDAGuard guard(device);
        auto done = CopyWatch::instance().record(c10::cuda::getCurrentCUDAStream(device.index()));
        CopyWatch::instance().when_done(std::move(done), [segment = std::move(segment), release = std::move(release)]() mutable {
          segment.reset();
          release();
        });
      } catch (...) {  // no event to wait for: the segment stays open, the sender keeps its memory
        remora::detail::log_current_exception("a lent GPU tensor's release");
        if (segment) new std::shared_ptr<OpenedSegments::Lease>(std::move(segment));  // never closed
      }
    };
    return torch::from_blob(const_cast<std::byte*>(src), sizes, std::move(lent),
                            torch::TensorOptions().dtype(dtype).device(device));
  }
  auto stream = c10::cuda::getStreamFromPool(false, device.index());
  auto out = torch::empty(sizes, torch::TensorOptions().dtype(dtype).device(device));
  // The copy's stream waits for the sender's event on the GPU (docs/gpu.md compares the other
  // ways of waiting: a host synchronize, a spin, the sender's own synchronize).
  cudaError_t e = cudaStreamWaitEvent(stream.stream(), event, 0);
  if (e == cudaSuccess) e = cudaMemcpyAsync(out.data_ptr(), src, nbytes, cudaMemcpyDeviceToDevice, stream.stream());
  if (e != cudaSuccess) throw ProtocolError(std::string("copy from the peer's GPU memory failed: ") + cudaGetErrorString(e));
  if (hand_on != CopyHandOn::complete) {
    // `out` was allocated for this thread's current stream but is written on `stream`: the
    // allocator must not hand its memory out again before that copy is done.
    c10::cuda::CUDACachingAllocator::recordStream(out.storage().data_ptr(), stream);
    auto done = CopyWatch::instance().record(stream);
    if (hand_on == CopyHandOn::stream_waits) before_use.push_back([done] { done->wait_on_current_stream(); });
    else before_use.push_back([done] { done->synchronize(std::chrono::minutes(1)); });
    CopyWatch::instance().when_done(std::move(done),
                                    [release = std::move(release), segment = std::move(segment)]() mutable {
                                      segment.reset();
                                      release();
                                    });
    return out;
  }
  e = cudaStreamSynchronize(stream.stream());
  if (e != cudaSuccess) throw ProtocolError(std::string("copy from the peer's GPU memory failed: ") + cudaGetErrorString(e));
  segment.reset();
  release();
  return out;
}

}  // namespace remora::transport::detail
#endif
