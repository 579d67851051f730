#pragma once
// The frame: the unit every transport carries.
//
//   [FrameHeader, 32 bytes][body][tensor descriptors][tensor 0 bytes][tensor 1 bytes]...
//
// The body is a cereal-binary archive of the message's values, in which a tensor is only its
// index. Descriptors (dtype, shape, byte count) let a reader allocate each tensor before its
// bytes arrive and read them straight into it. A writer sends header+body+descriptors as one
// buffer and each tensor's bytes from the tensor's own memory (scatter/gather).
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <c10/util/SmallVector.h>
#include <torch/cuda.h>
#include <torch/types.h>

#include "remora/core/errors.hpp"
#include "remora/wire/buffer_pool.hpp"
#include "remora/wire/dtype.hpp"
#include "remora/wire/limits.hpp"

namespace remora::wire {

static_assert(std::endian::native == std::endian::little,
              "remora's wire format is little-endian; big-endian hosts are not supported");

inline constexpr std::uint32_t kMagic = 0x41524d52;  // "RMRA" in memory order
inline constexpr std::uint16_t kVersion = 1;

// What a frame is for. The wire layer only checks the range; the agent gives meaning.
enum class FrameKind : std::uint8_t {
  call = 1,       // request: run a function or method
  reply = 2,      // its result
  error = 3,      // its failure
  control = 4,    // agent-to-agent housekeeping (shutdown, heartbeats)
  rref = 5,       // RRef protocol messages
  transport = 6,  // the transport's own housekeeping (shared-memory releases); never reaches the agent
};
inline constexpr std::uint8_t kMaxFrameKind = 6;

struct FrameHeader {
  std::uint32_t magic = kMagic;
  std::uint16_t version = kVersion;
  std::uint8_t kind = 0;
  std::uint8_t flags = 0;
  std::uint64_t request_id = 0;
  std::uint32_t body_bytes = 0;
  std::uint32_t descriptor_bytes = 0;
  std::uint32_t tensor_count = 0;
  std::uint32_t reserved = 0;  // must be zero
};
static_assert(sizeof(FrameHeader) == 32 && std::is_trivially_copyable_v<FrameHeader>);

// Fixed part of a tensor descriptor; `ndim` int64 sizes follow it.
struct TensorDescriptor {
  std::uint8_t dtype = 0;  // wire dtype (dtype.hpp)
  std::uint8_t ndim = 0;
  std::uint8_t flags = 0;  // kRequiresGrad
  std::int8_t device_type = 0;  // where it arrives on the receiver (c10::DeviceType): CPU, or a mapped CUDA device
  std::int8_t device_index = -1;
  std::uint8_t reserved[3] = {};
  std::uint64_t nbytes = 0;
};
static_assert(sizeof(TensorDescriptor) == 16 && std::is_trivially_copyable_v<TensorDescriptor>);
inline constexpr std::uint8_t kRequiresGrad = 1;
// The tensor's bytes are not in the stream: 8 bytes there give their offset in memory the sender
// shares with the receiver (the same-host transport); the reader asks its SharedResolver for them.
inline constexpr std::uint8_t kShared = 2;
// The tensor stays in the sender's GPU memory: the stream holds a kCudaIpcRecordBytes record
// (memory and event handles) that the receiver's CudaIpcResolver copies it from (local transport).
inline constexpr std::uint8_t kCudaIpc = 4;
inline constexpr std::size_t kCudaIpcRecordBytes = 168;

// The device a (type, index) pair from the wire names, or nullopt if it is not one remora knows
// (c10::Device would assert on many such pairs rather than throw).
inline std::optional<c10::Device> device_from_wire(std::int8_t type, std::int8_t index) {
  if (type == static_cast<std::int8_t>(c10::DeviceType::CPU) && (index == -1 || index == 0)) return c10::Device(c10::kCPU);
  if (type == static_cast<std::int8_t>(c10::DeviceType::CUDA) && index >= -1)
    return c10::Device(c10::kCUDA, index);
  return std::nullopt;
}

// A tensor as read from a frame (on the device its descriptor names, once the frame is taken).
struct ReceivedTensor {
  torch::Tensor tensor;
  c10::Device device = c10::kCPU;
};

// A complete received frame. As an OutFrame, a small call's frame (up to 128 bytes of body and
// descriptors, two tensors) holds them inline and allocates nothing.
struct InFrame {
  FrameHeader header;
  c10::SmallVector<std::byte, 128> meta;  // body then descriptors
  c10::SmallVector<ReceivedTensor, 2> tensors;

  FrameKind kind() const { return static_cast<FrameKind>(header.kind); }
  std::uint64_t request_id() const { return header.request_id; }
  std::span<const std::byte> body() const { return {meta.data(), header.body_bytes}; }
};

// Bytes ready to send: one head buffer (header, body, descriptors) and the tensors whose memory
// follows it. The tensors are kept alive here until the frame is sent. Both are inline for a
// small call's frame (up to 128 bytes of head, two tensors), which then allocates nothing.
using FrameHead = c10::SmallVector<std::byte, 128>;
using FrameTensors = c10::SmallVector<torch::Tensor, 2>;
struct OutFrame {
  FrameHead head;
  FrameTensors tensors;
  // Bytes from `begin` on (counted from the frame's first byte) may not be written before
  // `ready()` is true: a tensor staged from a GPU in chunks goes out chunk by chunk, each once its
  // copy to host memory is complete, so the copies overlap with the network. Ascending `begin`.
  struct Gate {
    std::uint64_t begin;
    std::function<bool()> ready;
  };
  std::vector<Gate> gates;

  const FrameHeader& header() const { return *reinterpret_cast<const FrameHeader*>(head.data()); }
  // The frame as a gather list: head first, then each non-empty tensor's bytes.
  // (Inline for up to 3 tensors: a small call's writes allocate nothing.)
  c10::SmallVector<std::span<const std::byte>, 4> segments() const {
    c10::SmallVector<std::span<const std::byte>, 4> out;
    out.reserve(1 + tensors.size());
    out.emplace_back(head.data(), head.size());
    for (const auto& t : tensors)
      if (t.nbytes() > 0) out.emplace_back(static_cast<const std::byte*>(t.data_ptr()), t.nbytes());
    return out;
  }
  std::uint64_t total_bytes() const {
    std::uint64_t n = head.size();
    for (const auto& t : tensors) n += t.nbytes();
    return n;
  }
  // How many bytes from the frame's start may be written now (gates found open are dropped).
  std::uint64_t writable_bytes() {
    std::size_t open = 0;
    while (open < gates.size() && gates[open].ready()) ++open;
    gates.erase(gates.begin(), gates.begin() + static_cast<std::ptrdiff_t>(open));
    return gates.empty() ? total_bytes() : gates.front().begin;
  }
  // Replaces tensors still on a GPU by host copies (their descriptors already say where they
  // arrive). The copy is ordered after the work queued on this thread's current stream, and
  // complete when this returns.
  void stage_to_host() {
    for (auto& t : tensors)
      if (!t.device().is_cpu()) {
        auto host = BufferPool::global().empty(t.sizes(), t.scalar_type(), t.nbytes());
        host.copy_(t);
        t = std::move(host);
      }
  }
  bool has_device_tensors() const {
    for (const auto& t : tensors)
      if (!t.device().is_cpu()) return true;
    return false;
  }
  // Calls f(index, descriptor) for each tensor; what f changes in the descriptor is written back.
  template <class F>
  void for_each_descriptor(F&& f) {
    std::byte* p = head.data() + sizeof(FrameHeader) + header().body_bytes;
    for (std::size_t i = 0; i < tensors.size(); ++i) {
      TensorDescriptor d;
      std::memcpy(&d, p, sizeof d);
      f(i, d);
      std::memcpy(p, &d, sizeof d);
      p += sizeof d + d.ndim * sizeof(std::int64_t);
    }
  }
};

// Makes the tensor a kCudaIpc descriptor stands for, on `device`, from the record the stream held.
using CudaIpcResolver = std::function<torch::Tensor(std::span<const std::byte> record, c10::IntArrayRef sizes,
                                                    c10::ScalarType dtype, std::uint64_t nbytes, c10::Device device)>;

// Makes the tensor a kShared descriptor stands for: its bytes live at `offset` in memory the
// sender shares with this process. Throws ProtocolError when the offset is not a valid region.
using SharedResolver = std::function<torch::Tensor(std::uint64_t offset, c10::IntArrayRef sizes,
                                                   c10::ScalarType dtype, std::uint64_t nbytes)>;

// A tensor that arrives for a GPU, copied there while the rest of its bytes are still read: the
// reader reads into staging() and reports progress(); finish() gives the tensor on its device,
// complete for every stream. Made by the transport where CUDA is available.
class DeviceUpload {
 public:
  virtual ~DeviceUpload() = default;
  virtual torch::Tensor staging() = 0;
  virtual void progress(std::uint64_t bytes_in) = 0;
  virtual torch::Tensor finish() = 0;
};
// Returns an upload for such a tensor, or nullptr where a plain copy after the read is as good.
using DeviceUploader = std::function<std::unique_ptr<DeviceUpload>(c10::IntArrayRef sizes, c10::ScalarType dtype,
                                                                   std::uint64_t nbytes, c10::Device device)>;

// Reads one frame at a time from a byte stream, validating before it allocates.
//
// Two ways to feed it: feed() copies from bytes the transport already holds; next_buffer() /
// commit() let the transport read straight into the frame's memory (used for tensor bytes, so
// a large tensor is read into its final storage with no staging copy). Any invalid field throws
// ProtocolError; the reader is then unusable and the connection should be closed.
class FrameReader {
 public:
  explicit FrameReader(Limits limits = {}) : limits_(limits) { reset(); }

  // Accepts kShared tensors from now on (without a resolver they are a protocol error).
  void set_shared_resolver(SharedResolver resolve) { resolve_ = std::move(resolve); }
  // Accepts kCudaIpc tensors from now on.
  void set_cuda_ipc_resolver(CudaIpcResolver resolve) { resolve_ipc_ = std::move(resolve); }
  // Copies large tensors that arrive for a GPU there while they are read.
  void set_device_uploader(DeviceUploader upload) { upload_ = std::move(upload); }

  bool done() const { return stage_ == Stage::done; }

  // Where the next bytes of the frame go; empty once the frame is complete.
  std::span<std::byte> next_buffer() {
    switch (stage_) {
      case Stage::header:
        return {reinterpret_cast<std::byte*>(&frame_.header) + filled_, sizeof(FrameHeader) - filled_};
      case Stage::meta: {
        std::size_t want = std::min<std::size_t>(meta_total_, filled_ + limits_.read_ahead_bytes);
        if (frame_.meta.size() < want) frame_.meta.resize(want);
        return {frame_.meta.data() + filled_, want - filled_};
      }
      case Stage::tensors: {
        auto& t = frame_.tensors[tensor_index_].tensor;
        return {static_cast<std::byte*>(t.data_ptr()) + filled_, t.nbytes() - filled_};
      }
      case Stage::done:
        return {};
    }
    return {};
  }

  // `n` bytes were written at next_buffer().
  void commit(std::size_t n) {
    filled_ += n;
    switch (stage_) {
      case Stage::header:
        if (filled_ == sizeof(FrameHeader)) on_header();
        break;
      case Stage::meta:
        if (filled_ == meta_total_) on_meta();
        break;
      case Stage::tensors:
        if (uploads_[tensor_index_]) uploads_[tensor_index_]->progress(filled_);
        if (filled_ == frame_.tensors[tensor_index_].tensor.nbytes()) {
          if (external_[tensor_index_]) resolve_external(tensor_index_);
          filled_ = 0;
          ++tensor_index_;
          skip_empty_tensors();
        }
        break;
      case Stage::done:
        break;
    }
  }

  // Copies from `data` into the frame until it is complete or `data` is used up. Returns how
  // many bytes were consumed; the rest belong to the next frame.
  std::size_t feed(std::span<const std::byte> data) {
    std::size_t used = 0;
    while (!done() && used < data.size()) {
      auto dst = next_buffer();
      std::size_t n = std::min(dst.size(), data.size() - used);
      if (n) std::memcpy(dst.data(), data.data() + used, n);
      used += n;
      commit(n);
    }
    return used;
  }

  // The complete frame; the reader starts over for the next one. Tensors for a CUDA device are
  // copied there from their host staging (a blocking copy: complete for every stream on return).
  InFrame take() {
    InFrame out = std::move(frame_);
    for (std::size_t i = 0; i < out.tensors.size(); ++i) {
      auto& r = out.tensors[i];
      if (uploads_[i]) r.tensor = uploads_[i]->finish();
      else if (!r.device.is_cpu()) r.tensor = r.tensor.to(r.device);
      if (requires_grad_[i]) r.tensor.requires_grad_(true);
    }
    reset();
    return out;
  }

 private:
  enum class Stage { header, meta, tensors, done };

  [[noreturn]] static void fail(const std::string& why) { throw ProtocolError(why); }
  static int cuda_devices() {
    static const int n = static_cast<int>(torch::cuda::device_count());
    return n;
  }

  void reset() {
    frame_ = InFrame{};
    requires_grad_.clear();
    external_.clear();
    uploads_.clear();
    planned_.clear();
    stage_ = Stage::header;
    filled_ = 0;
    tensor_index_ = 0;
    meta_total_ = 0;
  }

  void on_header() {
    const auto& h = frame_.header;
    if (h.magic != kMagic) fail("bad magic number (not a remora frame)");
    if (h.version != kVersion)
      fail("unsupported frame version " + std::to_string(h.version) + " (this build speaks " +
           std::to_string(kVersion) + ")");
    if (h.kind == 0 || h.kind > kMaxFrameKind) fail("unknown frame kind " + std::to_string(h.kind));
    if (h.reserved != 0) fail("reserved header field is not zero");
    if (h.tensor_count > limits_.max_tensors)
      fail("frame holds " + std::to_string(h.tensor_count) + " tensors, limit is " +
           std::to_string(limits_.max_tensors));
    if (h.descriptor_bytes < std::uint64_t{h.tensor_count} * sizeof(TensorDescriptor))
      fail("descriptor table too small for " + std::to_string(h.tensor_count) + " tensors");
    meta_total_ = std::size_t{h.body_bytes} + h.descriptor_bytes;
    if (sizeof(FrameHeader) + meta_total_ > limits_.max_frame_bytes) fail(over_limit(sizeof(FrameHeader) + meta_total_));
    filled_ = 0;
    stage_ = Stage::meta;
    if (meta_total_ == 0) on_meta();
  }

  void on_meta() {
    frame_.meta.resize(meta_total_);
    const auto& h = frame_.header;
    const std::byte* p = frame_.meta.data() + h.body_bytes;
    const std::byte* end = frame_.meta.data() + meta_total_;
    std::uint64_t total = sizeof(FrameHeader) + meta_total_;
    auto& planned = planned_;
    planned.reserve(h.tensor_count);
    for (std::uint32_t i = 0; i < h.tensor_count; ++i) {
      TensorDescriptor d;
      if (end - p < static_cast<std::ptrdiff_t>(sizeof d)) fail("truncated tensor descriptor");
      std::memcpy(&d, p, sizeof d);
      p += sizeof d;
      auto dtype = from_wire(d.dtype);
      if (!dtype) fail("tensor " + std::to_string(i) + " has unknown dtype " + std::to_string(d.dtype));
      if (d.ndim > limits_.max_dims)
        fail("tensor " + std::to_string(i) + " has " + std::to_string(d.ndim) + " dimensions, limit is " +
             std::to_string(limits_.max_dims));
      if (d.flags & ~(kRequiresGrad | kShared | kCudaIpc)) fail("tensor " + std::to_string(i) + " has unknown flags");
      if ((d.flags & kShared) && (d.flags & kCudaIpc)) fail("tensor " + std::to_string(i) + " has conflicting flags");
      if ((d.flags & kShared) && !resolve_)
        fail("tensor " + std::to_string(i) + " is in shared memory, which this connection does not have");
      if ((d.flags & kCudaIpc) && !resolve_ipc_)
        fail("tensor " + std::to_string(i) + " is in GPU memory shared by handle, which this connection does not take");
      if (end - p < static_cast<std::ptrdiff_t>(d.ndim * sizeof(int64_t))) fail("truncated tensor shape");
      c10::SmallVector<int64_t, 6> sizes(d.ndim);
      if (d.ndim) std::memcpy(sizes.data(), p, d.ndim * sizeof(int64_t));
      p += d.ndim * sizeof(int64_t);
      // numel * itemsize must equal nbytes, computed without overflow.
      unsigned __int128 bytes = c10::elementSize(*dtype);
      for (int64_t s : sizes) {
        if (s < 0) fail("tensor " + std::to_string(i) + " has a negative dimension");
        bytes *= static_cast<std::uint64_t>(s);
        if (bytes > limits_.max_frame_bytes) fail(over_limit(static_cast<std::uint64_t>(-1)));
      }
      if (bytes != d.nbytes)
        fail("tensor " + std::to_string(i) + " announces " + std::to_string(d.nbytes) +
             " bytes but its shape and dtype need " + std::to_string(static_cast<std::uint64_t>(bytes)));
      total += d.nbytes;
      if (total > limits_.max_frame_bytes) fail(over_limit(total));
      auto device = device_from_wire(d.device_type, d.device_index);
      if (!device) fail("tensor " + std::to_string(i) + " names an unknown device");
      if ((d.flags & kCudaIpc) && !device->is_cuda()) fail("tensor " + std::to_string(i) + " is a GPU handle for the CPU");
      if (device->is_cuda() && (!device->has_index() || device->index() >= cuda_devices()))
        fail("tensor " + std::to_string(i) + " is for " + device->str() + ", which this process does not have (" +
             std::to_string(cuda_devices()) + " CUDA devices)");
      planned.push_back({*dtype, std::move(sizes), *device, d.nbytes});
      requires_grad_.push_back(d.flags & kRequiresGrad);
      external_.push_back(d.flags & (kShared | kCudaIpc));
    }
    if (p != end) fail("descriptor table has trailing bytes");
    // Every field checked: now allocate.
    frame_.tensors.reserve(planned.size());
    for (std::size_t i = 0; i < planned.size(); ++i) {
      auto& t = planned[i];
      // An external tensor's stream bytes say where it is (an offset, an IPC record): they are
      // read into a placeholder first.
      uploads_.push_back(!external_[i] && t.device.is_cuda() && upload_ ? upload_(t.sizes, t.dtype, t.nbytes, t.device)
                                                                         : nullptr);
      auto tensor = external_[i] == kShared  ? torch::empty({1}, torch::kLong)
                    : external_[i] == kCudaIpc ? torch::empty({static_cast<int64_t>(kCudaIpcRecordBytes)}, torch::kUInt8)
                    : uploads_[i]              ? uploads_[i]->staging()
                                               : BufferPool::global().empty(t.sizes, t.dtype, t.nbytes);
      frame_.tensors.push_back({std::move(tensor), t.device});
    }
    filled_ = 0;
    tensor_index_ = 0;
    stage_ = Stage::tensors;
    skip_empty_tensors();
  }

  void skip_empty_tensors() {
    while (tensor_index_ < frame_.tensors.size() && frame_.tensors[tensor_index_].tensor.nbytes() == 0)
      ++tensor_index_;
    if (tensor_index_ == frame_.tensors.size()) stage_ = Stage::done;
  }

  void resolve_external(std::size_t i) {
    const auto& t = planned_[i];
    auto& slot = frame_.tensors[i].tensor;
    if (external_[i] == kShared) {
      slot = resolve_(static_cast<std::uint64_t>(slot.data_ptr<int64_t>()[0]), t.sizes, t.dtype, t.nbytes);
    } else {
      std::span<const std::byte> record(static_cast<const std::byte*>(slot.data_ptr()), kCudaIpcRecordBytes);
      slot = resolve_ipc_(record, t.sizes, t.dtype, t.nbytes, t.device);
    }
  }

  std::string over_limit(std::uint64_t n) const {
    return "frame size " + (n == static_cast<std::uint64_t>(-1) ? std::string("overflows") : std::to_string(n)) +
           " exceeds the limit of " + std::to_string(limits_.max_frame_bytes) + " bytes";
  }

  struct Planned {
    c10::ScalarType dtype;
    c10::SmallVector<int64_t, 6> sizes;  // inline: no allocation per received tensor
    c10::Device device;
    std::uint64_t nbytes;
  };

  Limits limits_;
  SharedResolver resolve_;
  CudaIpcResolver resolve_ipc_;
  DeviceUploader upload_;
  InFrame frame_;
  std::vector<Planned> planned_;
  std::vector<bool> requires_grad_;
  std::vector<std::uint8_t> external_;  // 0, kShared or kCudaIpc per tensor
  std::vector<std::unique_ptr<DeviceUpload>> uploads_;  // per tensor; null: none
  Stage stage_ = Stage::header;
  std::size_t filled_ = 0;
  std::size_t meta_total_ = 0;
  std::size_t tensor_index_ = 0;
};

// Decodes exactly one whole frame from `bytes`; trailing bytes or a short buffer are errors.
inline InFrame read_frame(std::span<const std::byte> bytes, const Limits& limits = {}) {
  FrameReader reader(limits);
  std::size_t used = reader.feed(bytes);
  if (!reader.done()) throw ProtocolError("truncated frame: " + std::to_string(bytes.size()) + " bytes");
  if (used != bytes.size()) throw ProtocolError("trailing bytes after frame");
  return reader.take();
}

}  // namespace remora::wire
