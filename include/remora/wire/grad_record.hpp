#pragma once
// A frame's distributed-autograd record: the sender's autograd context the frame belongs to, and
// the message whose tensors that require grad hang from the sender's graph (0: none do). It is
// the last 16 bytes of the body of a call or reply frame whose header has the flag kGradRecord;
// the agent takes it off before the body is decoded, so values never see it.
#include <cstdint>
#include <cstring>
#include <optional>

#include "remora/core/errors.hpp"
#include "remora/wire/frame.hpp"

namespace remora::wire {

inline constexpr std::uint8_t kGradRecord = 1;  // FrameHeader::flags of call and reply frames

struct GradRecord {
  std::uint64_t context = 0;
  std::uint64_t message = 0;
};
static_assert(sizeof(GradRecord) == 16);

// Appends `record` to the body of `frame` (header, body, descriptors in one buffer: the
// descriptors move up 16 bytes). Before the frame is handed to a transport.
inline void append_grad_record(OutFrame& frame, const GradRecord& record) {
  FrameHeader h;
  std::memcpy(&h, frame.head.data(), sizeof h);
  const auto at = frame.head.begin() + static_cast<std::ptrdiff_t>(sizeof h + h.body_bytes);
  const auto* bytes = reinterpret_cast<const std::byte*>(&record);
  frame.head.insert(at, bytes, bytes + sizeof record);
  h.body_bytes += sizeof record;
  h.flags |= kGradRecord;
  std::memcpy(frame.head.data(), &h, sizeof h);
  for (auto& g : frame.gates) g.begin += sizeof record;
}

// Takes the record off `frame` if its header says it has one. Throws ProtocolError when the body
// is too short to hold it.
inline std::optional<GradRecord> take_grad_record(InFrame& frame) {
  if (!(frame.header.flags & kGradRecord)) return std::nullopt;
  if (frame.header.body_bytes < sizeof(GradRecord)) throw ProtocolError("autograd record missing from the frame body");
  GradRecord r;
  const std::size_t at = frame.header.body_bytes - sizeof r;
  std::memcpy(&r, frame.meta.data() + at, sizeof r);
  frame.meta.erase(frame.meta.begin() + static_cast<std::ptrdiff_t>(at),
                   frame.meta.begin() + static_cast<std::ptrdiff_t>(at + sizeof r));
  frame.header.body_bytes -= sizeof r;
  frame.header.flags &= static_cast<std::uint8_t>(~kGradRecord);
  return r;
}

}  // namespace remora::wire
