// Writes the seed corpus of a harness into a folder: valid frames of each kind a worker reads
// (the shapes tests/frame_fuzz_test.cpp starts from), or greetings for the handshake.
//   fuzz_seeds frame_fuzz|handshake_fuzz DIR
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "fuzz_support.hpp"
#include "wire_support.hpp"
#include "remora/transport/detail/handshake.hpp"

namespace wire = remora::wire;

namespace {
int written = 0;
void write(const std::string& dir, const std::vector<std::byte>& bytes) {
  std::ofstream(dir + "/seed" + std::to_string(written++), std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}
// The harness's input: its first byte chooses the chunking, the rest is the frame.
std::vector<std::byte> framed(const wire::OutFrame& f, std::uint8_t chunking) {
  auto out = remora::test::flatten(f);
  out.insert(out.begin(), std::byte{chunking});
  return out;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) return 2;
  const std::string harness = argv[1], dir = argv[2];
  if (harness == "handshake_fuzz") {
    auto secret = std::make_shared<const std::string>("fuzzing secret");
    remora::transport::detail::Handshake hs({secret, "peer", "", std::chrono::seconds(1)}, true);
    auto g = hs.greeting();
    write(dir, g);
    g.resize(g.size() + remora::transport::detail::kProofBytes);
    write(dir, g);
    return 0;
  }
  const auto call = wire::FrameKind::call;
  std::vector<wire::OutFrame> frames;
  frames.push_back(wire::encode_frame(wire::FrameKind::control, 0, std::uint8_t{1}, std::uint32_t{0}, std::string("a")));
  frames.push_back(wire::encode_frame(call, 1, std::uint64_t{42}, 2, 3));
  frames.push_back(wire::encode_frame(call, 2, std::uint64_t{42}, torch::arange(6, torch::kFloat).view({2, 3}), 1.5));
  frames.push_back(wire::encode_frame(call, 3, std::uint64_t{42},
                                      std::vector<torch::Tensor>{torch::ones({2}), torch::zeros({1, 1}, torch::kInt64)}));
  frames.push_back(wire::encode_frame(call, 4, std::uint64_t{42},
                                      std::map<std::string, torch::Tensor>{{"w", torch::ones({3})}}));
  c10::impl::GenericDict dict(c10::StringType::get(), c10::TensorType::get());
  dict.insert("x", torch::ones({2}));
  frames.push_back(wire::encode_frame(call, 5, std::uint64_t{42}, c10::IValue(dict)));
  frames.push_back(wire::encode_frame(call, 6, std::uint64_t{42}, std::string("aten::add"),
                                      std::vector<c10::IValue>{torch::ones({1}), torch::ones({1}), 2}));
  frames.push_back(wire::encode_frame(wire::FrameKind::error, 7, std::uint8_t{1}, std::string("std::runtime_error"),
                                      std::string("boom"), std::string("w1"), std::string("f")));
  auto with_record = wire::encode_frame(call, 8, std::uint64_t{42}, torch::ones({2}).requires_grad_(true));
  remora::autograd::detail::append_grad_record(with_record, {1, 2, {}});
  frames.push_back(std::move(with_record));
  auto with_origins = wire::encode_frame(call, 9, std::uint64_t{42}, torch::ones({2}).requires_grad_(true));
  remora::autograd::detail::append_grad_record(with_origins, {1, 2, {{0, 1, 3, 0, 1}}});
  frames.push_back(std::move(with_origins));
  for (const auto& f : frames)
    for (std::uint8_t chunking : {0, 7, 63}) write(dir, framed(f, chunking));
  std::printf("%d seeds in %s\n", written, dir.c_str());
  return 0;
}
