#pragma once
// A frame's distributed-autograd record: the sender's autograd context the frame belongs to, and
// the message whose tensors that require grad hang from the sender's graph (0: none do). It is
// the last 16 bytes of the body of a call or reply frame whose header has the flag kGradRecord
// (the agent's wire::kInterceptorRecord); the autograd layer's interceptor takes it off before the
// body is decoded, so values never see it.
//
// With the flag kGradOrigins, the origins of tensors the sender only passed on come just before
// those 16 bytes: entries of 24 bytes, then their count (u32) and a zero u32. A tensor the
// sender received from worker W and sent on untouched has its gradient due at W; its origin
// lets the receiver send that gradient to W itself, one hop instead of two.
#include <cstdint>
#include <cstring>
#include <optional>
#include <vector>

#include "remora/core/errors.hpp"
#include "remora/wire/format.hpp"
#include "remora/wire/frame.hpp"

namespace remora::autograd::detail {

using wire::FrameHeader;
using wire::InFrame;
using wire::OutFrame;
inline constexpr std::uint8_t kGradRecord = wire::kInterceptorRecord;  // FrameHeader::flags of calls and replies
inline constexpr std::uint8_t kGradOrigins = wire::kInterceptorBit;    // with kGradRecord: origins precede the record

// Where the gradient of one of the frame's tensors that require grad may go straight: it is
// input `input` of `inputs` of message `message` that worker `worker` sent.
struct GradOrigin {
  std::uint32_t slot = 0;  // which tensor, counting only those that require grad, in frame order
  std::uint32_t worker = 0;
  std::uint64_t message = 0;
  std::uint32_t input = 0;
  std::uint32_t inputs = 0;
};
static_assert(sizeof(GradOrigin) == 24 && std::is_trivially_copyable_v<GradOrigin>);

struct GradRecord {
  std::uint64_t context = 0;
  std::uint64_t message = 0;
  std::vector<GradOrigin> origins;  // by slot, ascending; most frames have none
};

// Appends `record` to the body of `frame` (header, body, descriptors in one buffer: the
// descriptors move up). Before the frame is handed to a transport.
inline void append_grad_record(OutFrame& frame, const GradRecord& record) {
  FrameHeader h;
  std::memcpy(&h, frame.head.data(), sizeof h);
  std::vector<std::byte> bytes;
  auto put = [&](const void* p, std::size_t n) {
    const auto* b = static_cast<const std::byte*>(p);
    bytes.insert(bytes.end(), b, b + n);
  };
  if (!record.origins.empty()) {
    put(record.origins.data(), record.origins.size() * sizeof(GradOrigin));
    const std::uint32_t trailer[2] = {static_cast<std::uint32_t>(record.origins.size()), 0};
    put(trailer, sizeof trailer);
    h.flags |= kGradOrigins;
  }
  put(&record.context, 8);
  put(&record.message, 8);
  const auto at = frame.head.begin() + static_cast<std::ptrdiff_t>(sizeof h + h.body_bytes);
  frame.head.insert(at, bytes.begin(), bytes.end());
  h.body_bytes += static_cast<std::uint32_t>(bytes.size());
  h.flags |= kGradRecord;
  std::memcpy(frame.head.data(), &h, sizeof h);
  for (auto& g : frame.gates) g.begin += bytes.size();
}

// Takes the record (and its origins) off `frame` if its header says it has one. Throws
// ProtocolError when the body is too short to hold them or an origin is out of order.
inline std::optional<GradRecord> take_grad_record(InFrame& frame) {
  if (!(frame.header.flags & kGradRecord)) return std::nullopt;
  std::size_t end = frame.header.body_bytes;
  if (end < 16) throw ProtocolError("autograd record missing from the frame body");
  GradRecord r;
  std::memcpy(&r.context, frame.meta.data() + end - 16, 8);
  std::memcpy(&r.message, frame.meta.data() + end - 8, 8);
  std::size_t begin = end - 16;
  if (frame.header.flags & kGradOrigins) {
    std::uint32_t trailer[2];
    if (begin < sizeof trailer) throw ProtocolError("autograd origins missing from the frame body");
    std::memcpy(trailer, frame.meta.data() + begin - sizeof trailer, sizeof trailer);
    begin -= sizeof trailer;
    const std::size_t n = trailer[0];
    if (trailer[1] != 0 || n == 0 || n > begin / sizeof(GradOrigin))
      throw ProtocolError("autograd origins malformed in the frame body");
    begin -= n * sizeof(GradOrigin);
    r.origins.resize(n);
    std::memcpy(r.origins.data(), frame.meta.data() + begin, n * sizeof(GradOrigin));
    for (std::size_t i = 1; i < n; ++i)
      if (r.origins[i].slot <= r.origins[i - 1].slot) throw ProtocolError("autograd origins out of order");
    for (const auto& o : r.origins)
      if (o.input >= o.inputs || o.message == 0) throw ProtocolError("autograd origin malformed");
  }
  frame.meta.erase(frame.meta.begin() + static_cast<std::ptrdiff_t>(begin),
                   frame.meta.begin() + static_cast<std::ptrdiff_t>(end));
  frame.header.body_bytes -= static_cast<std::uint32_t>(end - begin);
  frame.header.flags &= static_cast<std::uint8_t>(~(kGradRecord | kGradOrigins));
  return r;
}

}  // namespace remora::autograd::detail
