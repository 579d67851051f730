#pragma once
// The wire format: what every frame looks like, as both ends agree on it.
//
//   [FrameHeader, 32 bytes][body][tensor descriptors][tensor 0 bytes][tensor 1 bytes]...
//
// The body is a cereal-binary archive of the message's values, in which a tensor is only its
// index. Descriptors (dtype, shape, byte count) let a reader allocate each tensor before its
// bytes arrive and read them straight into it. A writer sends header+body+descriptors as one
// buffer and each tensor's bytes from the tensor's own memory (scatter/gather).
// docs/wire-format.md describes it for readers of the bytes.
#include <bit>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <type_traits>

#include <c10/core/Device.h>

namespace remora::wire {

static_assert(std::endian::native == std::endian::little,
              "remora's wire format is little-endian; big-endian hosts are not supported");

inline constexpr std::uint32_t kMagic = 0x41524d52;  // "RMRA" in memory order
// 2: autograd origins (kGradOrigins), a context's release naming whom it reached, CUDA IPC records
// that name their sender by a process token. Workers of one group run one version.
inline constexpr std::uint16_t kVersion = 2;

// What a frame is for. The wire layer only checks the range; the agent gives meaning. (The RRef
// protocol's messages are ordinary calls; 5 is unused and refused.)
enum class FrameKind : std::uint8_t {
  call = 1,       // request: run a function or method
  reply = 2,      // its result
  error = 3,      // its failure
  control = 4,    // agent-to-agent messages that are not calls: `hello`, a connection's first frame
  transport = 6,  // the transport's own housekeeping (shared-memory releases); never reaches the agent
};
inline constexpr bool valid_frame_kind(std::uint8_t k) { return (k >= 1 && k <= 4) || k == 6; }

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
// FrameHeader::flags of a call or reply: a layer above the agent appended a record to the body,
// which its CallInterceptor takes off before the body is decoded (agent/detail/call_interceptor.hpp;
// distributed autograd's, autograd/detail/grad_record.hpp). Bit 3 (8) is that layer's own.
inline constexpr std::uint8_t kInterceptorRecord = 1;
inline constexpr std::uint8_t kInterceptorBit = 8;
// FrameHeader::flags of a call: the caller is profiling; the callee sends its events back
// (agent/detail/remote_profile.hpp).
inline constexpr std::uint8_t kProfiled = 2;
// FrameHeader::flags of a call: a notification. The callee runs it and answers nothing, not even
// an error; the caller registered nothing to answer (AgentRuntime::notify).
inline constexpr std::uint8_t kNoReply = 4;
// FrameHeader::flags of a call: the callee only reads its GPU tensors while the call runs (weight
// sync), so a receiver on the sender's host may use the sender's memory in place instead of a copy
// (transport/detail/cuda_ipc.hpp). The sender's own choice: it lends its memory, nothing more.
inline constexpr std::uint8_t kLendsDeviceTensors = 16;

// Fixed part of a tensor descriptor; `ndim` int64 sizes follow it.
struct TensorDescriptor {
  std::uint8_t dtype = 0;  // wire dtype (dtype.hpp)
  std::uint8_t ndim = 0;
  std::uint8_t flags = 0;  // kRequiresGrad, and the placement (bits 1-2)
  std::int8_t device_type = 0;  // where it arrives on the receiver (c10::DeviceType): CPU, or a mapped CUDA device
  std::int8_t device_index = -1;
  std::uint8_t reserved[3] = {};
  std::uint64_t nbytes = 0;
};
static_assert(sizeof(TensorDescriptor) == 16 && std::is_trivially_copyable_v<TensorDescriptor>);
inline constexpr std::uint8_t kRequiresGrad = 1;

// Where a tensor's bytes are. Placement 0 (inline): in the stream, after the descriptors. Any
// other placement is a transport's own (transport/ defines them): the stream then holds a record
// of a size the transport fixes (an offset in shared memory, a CUDA IPC handle), which the
// connection's resolver turns into the tensor (FrameReader::set_placement). A reader refuses a
// placement its connection did not register.
inline constexpr std::uint8_t kPlacementShift = 1, kPlacementMask = 0b110;
inline constexpr std::uint8_t kMaxPlacement = kPlacementMask >> kPlacementShift;
inline constexpr std::uint8_t placement_of(const TensorDescriptor& d) {
  return static_cast<std::uint8_t>((d.flags & kPlacementMask) >> kPlacementShift);
}
inline constexpr void set_placement(TensorDescriptor& d, std::uint8_t placement) {
  d.flags = static_cast<std::uint8_t>((d.flags & ~kPlacementMask) | (placement << kPlacementShift));
}

// The device a (type, index) pair from the wire names, or nullopt if it is not one remora knows
// (c10::Device would assert on many such pairs rather than throw).
inline std::optional<c10::Device> device_from_wire(std::int8_t type, std::int8_t index) {
  if (type == static_cast<std::int8_t>(c10::DeviceType::CPU) && (index == -1 || index == 0)) return c10::Device(c10::kCPU);
  if (type == static_cast<std::int8_t>(c10::DeviceType::CUDA) && index >= -1)
    return c10::Device(c10::kCUDA, index);
  return std::nullopt;
}

}  // namespace remora::wire
