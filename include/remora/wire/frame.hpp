#pragma once
// Frames in memory: a received frame (InFrame) and one ready to send (OutFrame). Both hold a
// small call's frame inline, allocating nothing.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <span>
#include <vector>

#include <c10/util/SmallVector.h>
#include <torch/types.h>

#include "remora/wire/buffer_pool.hpp"
#include "remora/wire/format.hpp"

namespace remora::wire {

// A tensor as read from a frame (on the device its descriptor names, once the frame is taken).
struct ReceivedTensor {
  torch::Tensor tensor;
  c10::Device device = c10::kCPU;
};

// A complete received frame. A small call's frame (up to 128 bytes of body and descriptors, two
// tensors) is held inline.
struct InFrame {
  FrameHeader header;
  c10::SmallVector<std::byte, 128> meta;  // body then descriptors
  c10::SmallVector<ReceivedTensor, 2> tensors;
  // What the thread that uses the tensors does first: a GPU tensor lent by a peer of this host is
  // still being copied on a stream of its own. A call's entries make the running thread's stream
  // wait for the copy (the callee's host never waits for the GPU); a reply's wait on the host, on
  // the decoder thread (never the I/O thread that read it). Empty for every other frame and for
  // frames without such tensors. Cost: one stream wait or one host wait each.
  std::vector<std::function<void()>> before_use;
  // Bytes of its tensors that are views of a peer's memory (GPU tensors lent in place): this
  // worker holds none of them, so they count against no budget of its own.
  std::uint64_t borrowed_bytes = 0;

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

}  // namespace remora::wire
