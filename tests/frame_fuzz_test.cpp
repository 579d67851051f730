// Malformed frames: truncated, corrupted, oversized, lying about sizes, bombs. Every one must be
// rejected with ProtocolError; nothing may crash, over-allocate or read out of bounds (this file
// is the one that matters most under ASan and UBSan).
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "wire_support.hpp"

namespace wire = remora::wire;
using remora::ProtocolError;

namespace {
struct RawFrame {
  wire::FrameHeader header;
  std::vector<std::byte> body, descriptors, data;
  std::vector<std::byte> bytes() const {
    wire::FrameHeader h = header;
    h.body_bytes = static_cast<std::uint32_t>(body.size());
    h.descriptor_bytes = static_cast<std::uint32_t>(descriptors.size());
    std::vector<std::byte> out(sizeof h);
    std::memcpy(out.data(), &h, sizeof h);
    out.insert(out.end(), body.begin(), body.end());
    out.insert(out.end(), descriptors.begin(), descriptors.end());
    out.insert(out.end(), data.begin(), data.end());
    return out;
  }
};

template <class T>
void put(std::vector<std::byte>& v, const T& x) {
  auto p = reinterpret_cast<const std::byte*>(&x);
  v.insert(v.end(), p, p + sizeof x);
}

RawFrame one_tensor_frame(std::uint8_t dtype, std::vector<int64_t> sizes, std::uint64_t nbytes) {
  RawFrame f;
  f.header.kind = 1;
  f.header.tensor_count = 1;
  put(f.body, std::uint32_t{0});
  wire::TensorDescriptor d;
  d.dtype = dtype;
  d.ndim = static_cast<std::uint8_t>(sizes.size());
  d.nbytes = nbytes;
  put(f.descriptors, d);
  for (auto s : sizes) put(f.descriptors, s);
  return f;
}

template <class... Ts>
void expect_rejected(const std::vector<std::byte>& bytes, const std::string& reason_part,
                     const wire::Limits& limits = {}) {
  INFO("expected rejection: " << reason_part);
  try {
    auto frame = wire::read_frame(bytes, limits);
    if constexpr (sizeof...(Ts) > 0) wire::decode<Ts...>(frame, limits);
    FAIL("frame was accepted");
  } catch (const ProtocolError& e) {
    CHECK_THAT(e.what(), Catch::Contains(reason_part));
  }
}
}  // namespace

TEST_CASE("Every truncation of a valid frame is rejected", "[wire][fuzz]") {
  auto bytes = remora::test::encode_bytes(std::string("payload"), torch::randn({4, 4}), std::vector<int>{1, 2, 3});
  for (std::size_t n = 0; n < bytes.size(); ++n)
    CHECK_THROWS_AS(wire::read_frame(std::span<const std::byte>(bytes.data(), n)), ProtocolError);
  auto extra = bytes;
  extra.push_back(std::byte{0});
  CHECK_THROWS_WITH(wire::read_frame(extra), Catch::Contains("trailing"));
}

TEST_CASE("Header fields are validated", "[wire][fuzz]") {
  RawFrame f;
  f.header.kind = 1;
  auto with = [&](auto mutate) {
    RawFrame g = f;
    mutate(g.header);
    return g.bytes();
  };
  expect_rejected(with([](auto& h) { h.magic = 0x50545448; }), "bad magic");
  expect_rejected(with([](auto& h) { h.version = 99; }), "version 99");
  expect_rejected(with([](auto& h) { h.kind = 0; }), "unknown frame kind 0");
  expect_rejected(with([](auto& h) { h.kind = 200; }), "unknown frame kind 200");
  expect_rejected(with([](auto& h) { h.reserved = 1; }), "reserved");
  expect_rejected(with([](auto& h) { h.tensor_count = 1u << 30; }), "tensors, limit");
  expect_rejected(with([](auto& h) { h.tensor_count = 3; }), "descriptor table too small");
}

TEST_CASE("A header announcing a huge body is refused before allocation", "[wire][fuzz]") {
  wire::Limits limits;
  limits.max_frame_bytes = 1 << 20;
  wire::FrameHeader h;
  h.kind = 1;
  h.body_bytes = 0xFFFFFFF0u;
  std::vector<std::byte> bytes(sizeof h);
  std::memcpy(bytes.data(), &h, sizeof h);
  expect_rejected(bytes, "exceeds the limit", limits);

  // Within the limit, a lying body length only ever allocates read-ahead, not the whole claim.
  wire::FrameReader reader;  // default limit: 4 GiB
  h.body_bytes = 0xF0000000u;
  std::memcpy(bytes.data(), &h, sizeof h);
  reader.feed(bytes);
  CHECK(reader.next_buffer().size() <= wire::Limits{}.read_ahead_bytes);
}

TEST_CASE("A frame's tensors are allocated as their bytes arrive, not when announced", "[wire][fuzz]") {
  // 64 tensors of 1 MiB announced; the peer then sends one and a half tensors' bytes and stalls.
  const std::uint8_t kFloat = *wire::to_wire(torch::kFloat32);
  constexpr int kTensors = 64;
  constexpr std::uint64_t kBytes = 1 << 20;
  RawFrame f;
  f.header.kind = 1;
  f.header.tensor_count = kTensors;
  put(f.body, std::uint32_t{0});
  for (int i = 0; i < kTensors; ++i) {
    wire::TensorDescriptor d;
    d.dtype = kFloat;
    d.ndim = 1;
    d.nbytes = kBytes;
    put(f.descriptors, d);
    put(f.descriptors, static_cast<int64_t>(kBytes / 4));
  }
  const auto head = f.bytes();
  wire::FrameReader reader;
  REQUIRE(reader.feed(head) == head.size());
  const std::uint64_t meta = f.body.size() + f.descriptors.size();
  CHECK(reader.held_bytes() == meta + kBytes);  // the first tensor, whose bytes come next
  std::vector<std::byte> data(kBytes + kBytes / 2, std::byte{1});
  REQUIRE(reader.feed(data) == data.size());
  CHECK(reader.held_bytes() == meta + 2 * kBytes);
  CHECK_FALSE(reader.done());

  // The rest arrives: the frame is whole, its bytes where they belong; the reader then starts
  // the next frame holding nothing.
  data.assign(kTensors * kBytes - data.size(), std::byte{1});
  REQUIRE(reader.feed(data) == data.size());
  REQUIRE(reader.done());
  CHECK(reader.held_bytes() == meta + kTensors * kBytes);
  auto frame = reader.take();
  REQUIRE(frame.tensors.size() == kTensors);
  CHECK(frame.tensors.back().tensor.numel() == kBytes / 4);
  CHECK(static_cast<const std::uint8_t*>(frame.tensors.back().tensor.data_ptr())[kBytes - 1] == 1);
  CHECK(reader.held_bytes() == 0);
}

TEST_CASE("Tensor descriptors are validated before any tensor is allocated", "[wire][fuzz]") {
  const std::uint8_t kFloat = *wire::to_wire(torch::kFloat32);
  expect_rejected(one_tensor_frame(250, {2}, 8).bytes(), "unknown dtype 250");
  expect_rejected(one_tensor_frame(kFloat, std::vector<int64_t>(100, 1), 4).bytes(), "100 dimensions");
  expect_rejected(one_tensor_frame(kFloat, {-4}, 0).bytes(), "negative dimension");
  expect_rejected(one_tensor_frame(kFloat, {4}, 15).bytes(), "announces 15 bytes");
  expect_rejected(one_tensor_frame(kFloat, {int64_t{1} << 40, int64_t{1} << 40}, 0).bytes(), "exceeds the limit");
  expect_rejected(one_tensor_frame(kFloat, {int64_t{1} << 32}, uint64_t{1} << 34).bytes(), "exceeds the limit");
  auto bad_flags = one_tensor_frame(kFloat, {1}, 4);
  bad_flags.descriptors[2] = std::byte{0x80};
  expect_rejected(bad_flags.bytes(), "unknown flags");
  // An integer tensor that claims to require grad (found by fuzz/frame_fuzz: libtorch threw from
  // requires_grad_ while the frame was taken).
  auto int_grad = one_tensor_frame(*wire::to_wire(torch::kInt64), {1}, 8);
  int_grad.descriptors[2] = std::byte{wire::kRequiresGrad};
  expect_rejected(int_grad.bytes(), "cannot have gradients");
  auto bad_device = one_tensor_frame(kFloat, {1}, 4);
  bad_device.descriptors[4] = std::byte{5};  // a CPU tensor claiming device index 5
  expect_rejected(bad_device.bytes(), "unknown device");
  auto trailing = one_tensor_frame(kFloat, {1}, 4);
  trailing.descriptors.push_back(std::byte{0});
  expect_rejected(trailing.bytes(), "trailing bytes");
  auto short_shape = one_tensor_frame(kFloat, {2, 2}, 16);
  short_shape.descriptors.resize(short_shape.descriptors.size() - 4);
  expect_rejected(short_shape.bytes(), "truncated tensor shape");
}

TEST_CASE("Bodies that lie are rejected while decoding values", "[wire][fuzz]") {
  RawFrame f;
  f.header.kind = 2;
  put(f.body, std::uint64_t{1} << 60);  // vector size far beyond the body
  expect_rejected<std::vector<int>>(f.bytes(), "container announces");
  expect_rejected<std::string>(f.bytes(), "container announces");

  RawFrame b;
  b.header.kind = 2;
  put(b.body, std::uint8_t{7});
  expect_rejected<bool>(b.bytes(), "invalid bool byte 7");

  RawFrame v;
  v.header.kind = 2;
  put(v.body, std::int32_t{9});  // variant index out of range
  expect_rejected<std::variant<int, float>>(v.bytes(), "malformed body");

  RawFrame idx;
  idx.header.kind = 2;
  put(idx.body, std::uint32_t{3});  // tensor index, but the frame holds no tensors
  expect_rejected<torch::Tensor>(idx.bytes(), "tensor index 3 out of range");

  RawFrame extra;
  extra.header.kind = 2;
  put(extra.body, std::int32_t{1});
  put(extra.body, std::int32_t{2});
  expect_rejected<int>(extra.bytes(), "unread bytes");
  expect_rejected<int, int, int>(extra.bytes(), "body ends inside a value");
}

TEST_CASE("Malformed IValues are rejected and including nesting bombs", "[wire][fuzz][ivalue]") {
  RawFrame tag;
  tag.header.kind = 2;
  put(tag.body, std::uint8_t{99});
  expect_rejected<c10::IValue>(tag.bytes(), "unknown IValue tag 99");

  RawFrame bomb;  // a tuple of a tuple of ... 100000 deep: must not overflow the stack
  bomb.header.kind = 2;
  for (int i = 0; i < 100000; ++i) {
    put(bomb.body, std::uint8_t{6});  // tuple
    put(bomb.body, std::uint64_t{1});
  }
  put(bomb.body, std::uint8_t{0});
  expect_rejected<c10::IValue>(bomb.bytes(), "nested deeper than");

  RawFrame dev;
  dev.header.kind = 2;
  put(dev.body, std::uint8_t{10});
  put(dev.body, std::int8_t{77});
  put(dev.body, std::int8_t{0});
  expect_rejected<c10::IValue>(dev.bytes(), "unsupported device 77:0");

  RawFrame key;  // dict with a list as key
  key.header.kind = 2;
  put(key.body, std::uint8_t{8});
  put(key.body, std::uint64_t{1});
  put(key.body, std::uint8_t{11});
  put(key.body, std::uint64_t{0});
  put(key.body, std::uint8_t{0});
  expect_rejected<c10::IValue>(key.bytes(), "not hashable");
}

TEST_CASE("Random corruption never crashes: it decodes or throws a remora error", "[wire][fuzz]") {
  c10::impl::GenericDict dict(c10::StringType::get(), c10::AnyType::get());
  dict.insert("k", c10::IValue(std::vector<int64_t>{1, 2}));
  auto valid = remora::test::encode_bytes(std::string("abc"), torch::randn({3, 2}), std::vector<double>{1, 2},
                                          std::optional<int>(5), c10::IValue(dict));
  std::mt19937 rng(1234);
  int accepted = 0, rejected = 0;
  for (int round = 0; round < 3000; ++round) {
    auto bytes = valid;
    int flips = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < flips; ++k) bytes[rng() % bytes.size()] ^= std::byte(1u << (rng() % 8));
    if (rng() % 4 == 0) bytes.resize(rng() % bytes.size());
    try {
      auto frame = wire::read_frame(bytes);
      wire::decode<std::string, torch::Tensor, std::vector<double>, std::optional<int>, c10::IValue>(frame);
      ++accepted;
    } catch (const remora::Error&) {
      ++rejected;
    }
  }
  CHECK(accepted + rejected == 3000);
  CHECK(rejected > 0);
}
