#include <remora/remora.hpp>
#include <remora/wire/frame_reader.hpp>
#include <remora/wire/value_codec.hpp>

int twice(int x) { return 2 * x; }

int main() {
  auto f = remora::make_ready_future<int>(21).then([](int v) { return twice(v); });
  auto frame = remora::wire::encode_frame(remora::wire::FrameKind::call, 1, torch::ones({2, 2}), f.get());
  std::vector<std::byte> bytes;
  for (auto s : frame.segments()) bytes.insert(bytes.end(), s.begin(), s.end());
  auto [t, v] = remora::wire::decode<torch::Tensor, int>(remora::wire::read_frame(bytes));
  return (v == 42 && t.sum().item<float>() == 4.0f && remora::function_identity<&twice>.name == "twice") ? 0 : 1;
}
