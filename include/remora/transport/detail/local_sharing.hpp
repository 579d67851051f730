#pragma once
// What only a connection between processes of one host has: the preface that passes this side's
// shared-memory arena to the peer, large CPU tensors copied into the arena (only their offset
// crosses the socket), GPU tensors lent by CUDA IPC handle, and the releases that give both back.
//
// A tensor of at least `min_bytes` is copied into the arena; the receiver's tensor views the
// arena, and its deleter sends a `transport` frame that frees the range. When the arena is full,
// tensors go inline. GPU tensors (sent under a device map) cross by CUDA IPC handle, at any size,
// when libtorch has CUDA (shared_memory.hpp, cuda_ipc.hpp).
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <string>

#include "remora/config.hpp"
#include "remora/core/errors.hpp"
#include "remora/transport/detail/cuda_ipc.hpp"
#include "remora/transport/detail/shared_memory.hpp"
#include "remora/wire/frame_reader.hpp"
#include "remora/wire/lending_calls.hpp"

namespace remora::transport {

// How a local connection shares memory; ignored by TCP connections.
struct SharedMemoryOptions {
  std::size_t arena_bytes = std::size_t{1} << 30;  // 0: no shared memory, everything inline
  std::size_t min_bytes = std::size_t{256} << 10;  // smaller CPU tensors go inline
};

namespace detail {

class LocalSharing {
 public:
  // Sends a `transport` frame to the peer: `what` (an arena offset or an export id) with `flags`.
  using SendRelease = std::function<void(std::uint64_t what, std::uint8_t flags)>;
  static constexpr std::uint8_t kReleaseShared = 0, kReleaseCuda = 1;

  explicit LocalSharing(SharedMemoryOptions options) : options_(options) {
    if (options_.arena_bytes) arena_ = SendArena::create(options_.arena_bytes);
  }

  // This side's preface, with the arena's descriptor; false if the socket refused it.
  bool send_preface(int socket) {
    LocalPreface preface;
    preface.arena_bytes = arena_ ? arena_->size() : 0;
    return detail::send_preface(socket, preface, arena_ ? arena_->fd() : -1);
  }

  enum class Preface { incomplete, complete };
  // Reads what the socket has of the peer's preface. Throws ProtocolError for a bad preface, and
  // Error (with the reason) when the socket closed or failed.
  Preface read_preface(int socket) {
    auto* into = reinterpret_cast<std::byte*>(&peer_preface_) + preface_filled_;
    const ssize_t n = receive_preface(socket, into, sizeof peer_preface_ - preface_filled_, peer_fd_);
    if (n == 0) throw Error("connection closed by peer");
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) throw Error(std::string("read failed: ") + std::strerror(errno));
    if (n > 0) preface_filled_ += static_cast<std::size_t>(n);
    if (preface_filled_ < sizeof peer_preface_) return Preface::incomplete;
    if (peer_preface_.magic != LocalPreface{}.magic || peer_preface_.version != 1)
      throw ProtocolError("bad local preface (not a remora peer)");
    return Preface::complete;
  }

  // Once the preface is complete: lets `reader` take the peer's shared and lent tensors; their
  // releases go out through `release`, which must not keep the connection alive.
  void accept_placements(wire::FrameReader& reader, SendRelease release) {
    if (peer_preface_.arena_bytes) {
      if (!peer_fd_) throw ProtocolError("the peer announced shared memory but passed none");
      reader.set_placement(kSharedPlacement, kSharedRecordBytes,
                           shared_resolver(map_peer_arena(std::move(peer_fd_), peer_preface_.arena_bytes), release));
    }
#if REMORA_CUDA_IPC
    reader.set_placement(kCudaIpcPlacement, sizeof(CudaIpcRecord), cuda_resolver(release));
#endif
    peer_fd_.reset();
  }

  // Moves the large tensors of `frame` into the arena or lends them by handle.
  void prepare(wire::OutFrame& frame) {
    share_large_tensors(frame);
#if REMORA_CUDA_IPC
    lend_device_tensors(frame);
#endif
  }

  // The peer let go of a shared range or a lent GPU tensor. Throws ProtocolError when it was
  // never handed out.
  void on_release(std::uint64_t what, std::uint8_t flags) {
#if REMORA_CUDA_IPC
    if (flags == kReleaseCuda) {
      if (!cuda_exports_.release(what))
        throw ProtocolError("release of GPU tensor " + std::to_string(what) + " that was not lent");
      return;
    }
#endif
    if (flags != kReleaseShared || !arena_ || !arena_->release(what))
      throw ProtocolError("release of shared memory at offset " + std::to_string(what) + " that is not in use");
  }

  std::size_t bytes_in_use() const { return arena_ ? arena_->in_use() : 0; }

 private:
  // Received shared tensors view the peer's arena; the last reference gone, the range goes back.
  static wire::PlacementResolver shared_resolver(std::shared_ptr<Mapping> mapping, SendRelease release) {
    return [mapping = std::move(mapping), release](std::span<const std::byte> record, c10::IntArrayRef sizes,
                                                   c10::ScalarType dtype, std::uint64_t nbytes, c10::Device,
                                                   wire::InFrame&) {
      std::uint64_t offset;
      std::memcpy(&offset, record.data(), sizeof offset);
      if (offset % kSharedAlignment != 0 || offset > mapping->size() || nbytes > mapping->size() - offset)
        throw ProtocolError("shared tensor at offset " + std::to_string(offset) + " lies outside the peer's arena");
      return torch::from_blob(
          mapping->base() + offset, sizes, [mapping, release, offset](void*) { release(offset, kReleaseShared); },
          torch::TensorOptions().dtype(dtype));
    };
  }

  // Moves each large CPU tensor of `frame` into the arena, leaving its offset in the stream.
  void share_large_tensors(wire::OutFrame& frame) {
    if (!arena_) return;
    frame.for_each_descriptor([&](std::size_t i, wire::TensorDescriptor& d) {
      auto& t = frame.tensors[i];
      if (d.nbytes < options_.min_bytes || !t.device().is_cpu()) return;
      auto offset = arena_->allocate(d.nbytes);
      if (!offset) return;  // full: this one goes inline
      std::memcpy(arena_->at(*offset), t.data_ptr(), d.nbytes);
      wire::set_placement(d, kSharedPlacement);
      t = torch::tensor({static_cast<int64_t>(*offset)}, torch::kLong);
    });
  }

#if REMORA_CUDA_IPC
  // Hands each CUDA tensor of `frame` over by IPC handle, whatever its size; the peer copies it
  // and releases it. Small ones too: staging 4 B through host memory costs two more hand-overs
  // between the processes' GPU contexts (a mapped 4 B call on an H200: 491 us by handle, 574-620 us
  // staged). Empty tensors go inline (they have no memory to export).
  void lend_device_tensors(wire::OutFrame& frame) {
    if (!frame.has_device_tensors()) return;
    frame.for_each_descriptor([&](std::size_t i, wire::TensorDescriptor& d) {
      auto& t = frame.tensors[i];
      if (!t.device().is_cuda() || d.nbytes == 0) return;
      auto record = cuda_exports_.add(t);
      wire::set_placement(d, kCudaIpcPlacement);
      t = torch::empty({static_cast<int64_t>(sizeof record)}, torch::kUInt8);
      std::memcpy(t.data_ptr(), &record, sizeof record);
    });
  }
  // The reading thread only queues the copy of a call's or a reply's GPU tensor: the thread that
  // runs the call or decodes the reply waits for it (import_cuda_tensor). A call the sender lends
  // its tensors to, of a function this process lists as only reading them while it runs
  // (wire::LendingCalls), gets views of the sender's memory instead. Other frames' tensors arrive
  // complete.
  static wire::PlacementResolver cuda_resolver(SendRelease release) {
    return [release](std::span<const std::byte> bytes, c10::IntArrayRef sizes, c10::ScalarType dtype,
                     std::uint64_t nbytes, c10::Device device, wire::InFrame& frame) {
      if (!device.is_cuda()) throw ProtocolError("a GPU handle for a tensor that arrives on the CPU");
      CudaIpcRecord r;
      std::memcpy(&r, bytes.data(), sizeof r);
      const bool call = frame.kind() == wire::FrameKind::call;
      const bool lent = call && (frame.header.flags & wire::kLendsDeviceTensors) &&
                        wire::LendingCalls::allows_body(frame.body());  // the receiver decides
      const auto hand_on = lent                                     ? CopyHandOn::borrow
                           : call                                   ? CopyHandOn::stream_waits
                           : frame.kind() == wire::FrameKind::reply ? CopyHandOn::host_waits
                                                                    : CopyHandOn::complete;
      return import_cuda_tensor(r, sizes, dtype, nbytes, device, [release, id = r.id] { release(id, kReleaseCuda); },
                                hand_on, frame.before_use, frame.borrowed_bytes);
    };
  }
  CudaExports cuda_exports_;
#endif

  SharedMemoryOptions options_;
  std::unique_ptr<SendArena> arena_;
  LocalPreface peer_preface_{0, 0, 0};
  std::size_t preface_filled_ = 0;
  Fd peer_fd_;
};

}  // namespace detail
}  // namespace remora::transport
