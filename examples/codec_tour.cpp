// A tour of remora's foundation: futures and coroutines, compile-time identities, and a message
// with nested tensors going through the wire format and back (no network yet).
#include <iostream>
#include <map>

#include <remora/remora.hpp>
#include <remora/wire/frame_reader.hpp>
#include <remora/wire/value_codec.hpp>

namespace demo {
torch::Tensor scale(torch::Tensor x, double factor) { return x * factor; }

struct Batch {
  std::string name;
  torch::Tensor inputs;
  std::map<std::string, torch::Tensor> extras;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(name, inputs, extras);
  }
};

remora::Task<double> total(remora::Future<torch::Tensor> a, remora::Future<torch::Tensor> b) {
  torch::Tensor x = co_await a;
  torch::Tensor y = co_await b;
  co_return (x + y).sum().item<double>();
}
}  // namespace demo

int main() {
  // 1. Every function has a stable wire identity, computed at compile time.
  constexpr auto id = remora::function_identity<&demo::scale>;
  std::cout << "function " << id.name << " has id 0x" << std::hex << id.id << std::dec << "\n";

  // 2. Futures chain with then() and compose in coroutines.
  remora::Promise<torch::Tensor> pa, pb;
  remora::Task<double> sum = demo::total(pa.get_future(), pb.get_future());
  auto described = sum.then([](double s) { return "sum = " + std::to_string(s); });
  pa.set_value(torch::ones({2, 2}));
  pb.set_value(demo::scale(torch::ones({2, 2}), 2.0));
  std::cout << described.get() << "\n";

  // 3. A message with nested tensors: the body holds indices; tensor bytes are separate segments.
  demo::Batch batch{"batch-0", torch::randn({128, 64}), {{"mask", torch::ones({128}, torch::kBool)}}};
  auto frame = remora::wire::encode_frame(remora::wire::FrameKind::call, 1, batch, 0.5);
  std::cout << "frame: " << frame.head.size() << " header+body bytes, " << frame.segments().size() - 1
            << " tensor segments, " << frame.total_bytes() << " bytes in all\n";

  std::vector<std::byte> bytes;  // what a transport would deliver
  for (auto s : frame.segments()) bytes.insert(bytes.end(), s.begin(), s.end());
  auto [back, factor] = remora::wire::decode<demo::Batch, double>(remora::wire::read_frame(bytes));
  std::cout << "decoded " << back.name << ": inputs equal = " << torch::equal(back.inputs, batch.inputs)
            << ", factor = " << factor << "\n";

  // 4. Corrupted bytes are a typed error, never a crash.
  bytes[40] ^= std::byte{0xff};
  bytes.resize(bytes.size() / 2);
  try {
    remora::wire::read_frame(bytes);
  } catch (const remora::ProtocolError& e) {
    std::cout << "corrupted frame rejected: " << e.what() << "\n";
  }
}
