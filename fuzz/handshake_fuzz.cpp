// libFuzzer harness: what a peer answers to the authentication handshake (greeting, name, proof),
// as the worker's side reads it. Nothing it sends may crash the parser or pass the proof check.
// Run by scripts/fuzz.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "remora/transport/detail/handshake.hpp"

namespace td = remora::transport::detail;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const auto secret = std::make_shared<const std::string>("fuzzing secret");
  const auto* bytes = reinterpret_cast<const std::byte*>(data);
  td::Handshake hs({secret, "worker", "", std::chrono::seconds(1)}, size % 2 == 0);
  if (size < td::kGreetingFixed) return 0;
  std::size_t name_bytes = 0;
  if (hs.take_greeting_head(bytes, &name_bytes)) return 0;
  std::size_t at = td::kGreetingFixed;
  if (size < at + name_bytes) return 0;
  if (hs.take_greeting_name(bytes + at, name_bytes)) return 0;
  at += name_bytes;
  (void)hs.proof();
  if (size < at + td::kProofBytes) return 0;
  // A proof the input made up must never pass: it would need the secret.
  if (hs.check(data + at)) std::abort();
  return 0;
}
