// libFuzzer harness: bytes a peer sends, through the frame reader (in the chunks the input's first
// byte chooses, as reads of any size arrive) and every decoder a worker runs on a frame. Run by
// scripts/fuzz.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>

#include "fuzz_support.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::size_t chunk = 1 + data[0] % 64 * 16;  // 1 to 1009 bytes per feed
  std::span<const std::byte> in(reinterpret_cast<const std::byte*>(data + 1), size - 1);
  const auto limits = remora::fuzz::fuzz_limits();
  remora::wire::FrameReader reader(limits);
  try {
    while (!in.empty()) {
      auto part = in.first(std::min(chunk, in.size()));
      const std::size_t used = reader.feed(part);
      in = in.subspan(used);
      if (!reader.done()) {
        if (used < part.size()) break;  // cannot happen: a reader that is not done takes all
        continue;
      }
      remora::wire::InFrame frame = reader.take();
      remora::fuzz::decode_every_way(frame, limits);
    }
  } catch (const remora::Error&) {
  }
  return 0;
}
