#pragma once
// Reading frames from a byte stream: every field validated before anything is allocated.
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <torch/cuda.h>
#include <torch/types.h>

#include "remora/core/errors.hpp"
#include "remora/wire/buffer_pool.hpp"
#include "remora/wire/dtype.hpp"
#include "remora/wire/frame.hpp"
#include "remora/wire/limits.hpp"

namespace remora::wire {

// Makes the tensor a descriptor of a transport's placement stands for, on `device`, from the
// record the stream held in its place. `frame` is the frame it belongs to, its header complete: a
// resolver may add to its before_use. Throws ProtocolError when the record is not valid.
using PlacementResolver =
    std::function<torch::Tensor(std::span<const std::byte> record, c10::IntArrayRef sizes, c10::ScalarType dtype,
                                std::uint64_t nbytes, c10::Device device, InFrame& frame)>;

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

  // Accepts tensors of `placement` (1 to kMaxPlacement) from now on: the stream holds a record of
  // `record_bytes` in place of each one's bytes, which `resolve` turns into the tensor. Without
  // this, such a tensor is a protocol error.
  void set_placement(std::uint8_t placement, std::size_t record_bytes, PlacementResolver resolve) {
    placements_.at(placement) = {record_bytes, std::move(resolve)};
  }
  // The bounds for the frames after the current one (a connection's peer became known).
  void set_limits(const Limits& limits) { limits_ = limits; }
  // Copies large tensors that arrive for a GPU there while they are read.
  void set_device_uploader(DeviceUploader upload) { upload_ = std::move(upload); }

  bool done() const { return stage_ == Stage::done; }
  // Memory the frame in progress holds so far: its body and descriptors plus the tensors
  // allocated, which are those whose bytes have started to arrive (and the empty ones).
  std::uint64_t held_bytes() const { return frame_.meta.size() + allocated_bytes_; }

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
          if (placement_[tensor_index_]) resolve_placed(tensor_index_);
          filled_ = 0;
          ++tensor_index_;
          arrive_at_next_nonempty();
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
    placement_.clear();
    uploads_.clear();
    planned_.clear();
    stage_ = Stage::header;
    filled_ = 0;
    tensor_index_ = 0;
    meta_total_ = 0;
    allocated_bytes_ = 0;
  }

  void on_header() {
    const auto& h = frame_.header;
    if (h.magic != kMagic) fail("bad magic number (not a remora frame)");
    if (h.version != kVersion)
      fail("unsupported frame version " + std::to_string(h.version) + " (this build speaks " +
           std::to_string(kVersion) + ")");
    if (!valid_frame_kind(h.kind)) fail("unknown frame kind " + std::to_string(h.kind));
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
      if (d.flags & ~(kRequiresGrad | kPlacementMask)) fail("tensor " + std::to_string(i) + " has unknown flags");
      if ((d.flags & kRequiresGrad) && !(c10::isFloatingType(*dtype) || c10::isComplexType(*dtype)))
        fail("tensor " + std::to_string(i) + " requires grad but its dtype cannot have gradients");
      const std::uint8_t placement = placement_of(d);
      if (placement && !placements_[placement].resolve)
        fail("tensor " + std::to_string(i) + " has placement " + std::to_string(placement) +
             ", which this connection does not take");
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
      if (device->is_cuda() && (!device->has_index() || device->index() >= cuda_devices()))
        fail("tensor " + std::to_string(i) + " is for " + device->str() + ", which this process does not have (" +
             std::to_string(cuda_devices()) + " CUDA devices)");
      planned.push_back({*dtype, std::move(sizes), *device, d.nbytes});
      requires_grad_.push_back(d.flags & kRequiresGrad);
      placement_.push_back(placement);
    }
    if (p != end) fail("descriptor table has trailing bytes");
    // Every field checked. Each tensor is allocated only when the bytes before it have arrived
    // (arrive_at), so a peer that announces many large tensors and stalls makes this reader
    // hold what it sent plus one tensor, not the whole frame.
    frame_.tensors.resize(planned.size());
    uploads_.resize(planned.size());
    filled_ = 0;
    tensor_index_ = 0;
    stage_ = Stage::tensors;
    arrive_at_next_nonempty();
  }

  // Bytes the stream holds for tensor i: its data, or a placement's record in its place.
  std::uint64_t stream_bytes(std::size_t i) const {
    return placement_[i] ? placements_[placement_[i]].record_bytes : planned_[i].nbytes;
  }

  // Allocates tensor i, whose bytes come next.
  void allocate(std::size_t i) {
    const auto& t = planned_[i];
    // A placed tensor's stream bytes say where it is (an offset, an IPC record): they are read
    // into a placeholder first.
    const auto placement = placement_[i];
    uploads_[i] = !placement && t.device.is_cuda() && upload_ ? upload_(t.sizes, t.dtype, t.nbytes, t.device) : nullptr;
    auto tensor = placement ? torch::empty({static_cast<int64_t>(placements_[placement].record_bytes)}, torch::kUInt8)
                  : uploads_[i] ? uploads_[i]->staging()
                                : BufferPool::global().empty(t.sizes, t.dtype, t.nbytes);
    allocated_bytes_ += stream_bytes(i);
    frame_.tensors[i] = {std::move(tensor), t.device};
  }

  // Moves to the first tensor from tensor_index_ on with bytes to read, allocating the empty
  // ones passed over and that one; the frame is done when none is left.
  void arrive_at_next_nonempty() {
    while (tensor_index_ < planned_.size() && stream_bytes(tensor_index_) == 0) allocate(tensor_index_++);
    if (tensor_index_ == planned_.size()) stage_ = Stage::done;
    else allocate(tensor_index_);
  }

  void resolve_placed(std::size_t i) {
    const auto& t = planned_[i];
    auto& slot = frame_.tensors[i].tensor;
    const auto& placement = placements_[placement_[i]];
    std::span<const std::byte> record(static_cast<const std::byte*>(slot.data_ptr()), placement.record_bytes);
    slot = placement.resolve(record, t.sizes, t.dtype, t.nbytes, t.device, frame_);
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
  struct Placement {
    std::size_t record_bytes = 0;
    PlacementResolver resolve;  // empty: not taken
  };
  std::array<Placement, kMaxPlacement + 1> placements_;
  DeviceUploader upload_;
  InFrame frame_;
  std::vector<Planned> planned_;
  std::vector<bool> requires_grad_;
  std::vector<std::uint8_t> placement_;  // per tensor; 0: inline
  std::vector<std::unique_ptr<DeviceUpload>> uploads_;  // per tensor; null: none
  Stage stage_ = Stage::header;
  std::size_t filled_ = 0;
  std::size_t meta_total_ = 0;
  std::size_t tensor_index_ = 0;
  std::uint64_t allocated_bytes_ = 0;  // tensor memory allocated for the frame in progress
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
