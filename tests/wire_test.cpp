// Round trips through the frame format: every dtype bit-exact, tensor layouts, nested values,
// IValues, and the zero-copy promise of the gather list.
#include <array>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <unordered_map>
#include <variant>
#include <vector>

#include <catch2/catch.hpp>

#include "remora/core/concepts.hpp"
#include "remora/autograd/detail/grad_record.hpp"
#include "wire_support.hpp"

using remora::test::bit_equal;
using remora::test::roundtrip;
namespace wire = remora::wire;
namespace grad = remora::autograd::detail;

namespace {
torch::Tensor random_of(c10::ScalarType dtype, std::vector<int64_t> shape) {
  auto bytes = torch::randint(0, 256, shape, torch::kInt64);
  if (dtype == torch::kBool) return bytes.remainder(2).to(torch::kBool);
  if (c10::isComplexType(dtype)) return torch::complex(torch::randn(shape), torch::randn(shape)).to(dtype);
  if (c10::isFloatingType(dtype)) return torch::randn(shape).to(dtype);
  return bytes.to(dtype);
}
}  // namespace

TEST_CASE("Tensors of every dtype round-trip bit-exactly", "[wire][tensor]") {
  std::vector<c10::ScalarType> dtypes = {torch::kBool, torch::kUInt8, torch::kInt8, torch::kInt16, torch::kInt32,
                                         torch::kInt64, torch::kFloat16, torch::kBFloat16, torch::kFloat32,
                                         torch::kFloat64, torch::kComplexHalf, torch::kComplexFloat,
                                         torch::kComplexDouble};
  for (auto dtype : dtypes) {
    INFO(c10::toString(dtype));
    auto t = random_of(dtype, {3, 5, 2});
    auto [u] = roundtrip(t);
    CHECK(bit_equal(t, u));
    CHECK(u.data_ptr() != t.data_ptr());  // a copy arrived, not an alias
  }
  auto nan = torch::full({4}, std::numeric_limits<float>::quiet_NaN());
  CHECK(bit_equal(nan, std::get<0>(roundtrip(nan))));
}

TEST_CASE("0-d and empty and non-contiguous and view tensors keep their values", "[wire][tensor]") {
  auto scalar = torch::tensor(3.5);
  auto [s] = roundtrip(scalar);
  CHECK(s.dim() == 0);
  CHECK(s.item<double>() == 3.5);

  auto empty = torch::empty({0, 4}, torch::kFloat32);
  auto [e] = roundtrip(empty);
  CHECK(e.sizes() == empty.sizes());

  auto base = torch::arange(24, torch::kFloat32).reshape({4, 6});
  auto transposed = base.t();
  REQUIRE_FALSE(transposed.is_contiguous());
  auto [tr] = roundtrip(transposed);
  CHECK(tr.is_contiguous());
  CHECK(torch::equal(tr, transposed));

  auto strided = base.index({torch::indexing::Slice(), torch::indexing::Slice(0, 6, 2)});
  CHECK(torch::equal(std::get<0>(roundtrip(strided)), strided));
}

TEST_CASE("Only the viewed bytes travel and straight from the tensor's memory", "[wire][tensor]") {
  auto base = torch::arange(1000, torch::kFloat32);
  auto view = base.narrow(0, 100, 10);  // contiguous view into a larger storage
  auto frame = wire::encode_frame(wire::FrameKind::call, 1, view);
  auto segs = frame.segments();
  REQUIRE(segs.size() == 2);
  CHECK(segs[1].size() == 10 * sizeof(float));
  CHECK(static_cast<const void*>(segs[1].data()) == view.data_ptr());  // zero copy
  CHECK(frame.total_bytes() < 200);
  auto [v] = wire::decode<torch::Tensor>(wire::read_frame(remora::test::flatten(frame)));
  CHECK(torch::equal(v, view));
  CHECK(v.storage().nbytes() == 10 * sizeof(float));
}

TEST_CASE("Requires_grad and undefined tensors and conjugate views", "[wire][tensor]") {
  auto w = torch::randn({3}, torch::requires_grad());
  auto plain = torch::randn({3});
  auto [a, b, undef] = roundtrip(w, plain, torch::Tensor());
  CHECK(a.requires_grad());
  CHECK_FALSE(b.requires_grad());
  CHECK(torch::equal(a.detach(), w.detach()));
  CHECK_FALSE(undef.defined());

  auto z = torch::complex(torch::randn({4}), torch::randn({4}));
  auto conj = z.conj();  // lazy conjugate bit
  auto [c] = roundtrip(conj);
  CHECK_FALSE(c.is_conj());
  CHECK(torch::equal(c, conj.resolve_conj()));
}

TEST_CASE("Sparse and quantized tensors are refused with the fix in the message", "[wire][tensor]") {
  auto sparse = torch::eye(3).to_sparse();
  CHECK_THROWS_WITH(wire::encode_frame(wire::FrameKind::call, 1, sparse), Catch::Contains("to_dense()"));
  auto q = torch::quantize_per_tensor(torch::rand({4}), 0.1, 0, torch::kQUInt8);
  CHECK_THROWS_AS(wire::encode_frame(wire::FrameKind::call, 1, q), remora::SerializationError);
  CHECK_THROWS_WITH(wire::encode_frame(wire::FrameKind::call, 1, q), Catch::Contains("dequantize()"));
}

namespace {
enum class Phase : std::uint8_t { warmup, train, eval };

struct Batch {
  std::string name;
  torch::Tensor inputs;
  std::vector<torch::Tensor> targets;
  std::optional<torch::Tensor> mask;
  Phase phase = Phase::train;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(name, inputs, targets, mask, phase);
  }
};

struct Opaque {
  int x;
};
}  // namespace

static_assert(remora::Serializable<Batch>);
static_assert(remora::Serializable<const std::vector<std::map<std::string, std::optional<torch::Tensor>>>&>);
static_assert(remora::Serializable<std::variant<int, torch::Tensor, std::string>>);
static_assert(!remora::Serializable<Opaque>);
static_assert(!remora::Serializable<std::vector<Opaque>>);
static_assert(!remora::Serializable<std::tuple<int, Opaque>>);
static_assert(!remora::Serializable<int*>);

TEST_CASE("Scalars and strings and containers and enums and variants round-trip", "[wire][values]") {
  auto [i, d, b, s, e, arr] = roundtrip(int64_t{-5}, 2.25, true, std::string("héllo\0x", 8), Phase::eval,
                                        std::array<int, 3>{1, 2, 3});
  CHECK(i == -5);
  CHECK(d == 2.25);
  CHECK(b);
  CHECK(s == std::string("héllo\0x", 8));
  CHECK(e == Phase::eval);
  CHECK((arr == std::array<int, 3>{1, 2, 3}));

  std::map<std::string, int> m{{"a", 1}, {"b", 2}};
  std::unordered_map<int, std::string> um{{1, "x"}};
  std::pair<int, std::string> pr{4, "four"};
  std::variant<int, std::string, double> var = std::string("v");
  std::optional<int> none;
  auto [m2, um2, pr2, var2, none2] = roundtrip(m, um, pr, var, none);
  CHECK(m2 == m);
  CHECK(um2 == um);
  CHECK(pr2 == pr);
  CHECK(var2 == var);
  CHECK_FALSE(none2.has_value());
}

TEST_CASE("Tensors nested anywhere still travel as raw segments", "[wire][values]") {
  Batch batch{"b0", torch::randn({2, 3}), {torch::arange(3), torch::ones({1})}, torch::ones({2}, torch::kBool),
              Phase::warmup};
  std::map<std::string, std::tuple<torch::Tensor, int>> by_name{{"w", {torch::randn({5}), 1}}};
  std::variant<int, torch::Tensor> tv = torch::full({2}, 7);
  auto frame = wire::encode_frame(wire::FrameKind::reply, 3, batch, by_name, tv);
  CHECK(frame.tensors.size() == 6);
  CHECK(frame.segments().size() == 7);
  auto [b2, m2, v2] = wire::decode<Batch, decltype(by_name), decltype(tv)>(wire::read_frame(remora::test::flatten(frame)));
  CHECK(b2.name == "b0");
  CHECK(torch::equal(b2.inputs, batch.inputs));
  REQUIRE(b2.targets.size() == 2);
  CHECK(torch::equal(b2.targets[0], batch.targets[0]));
  REQUIRE(b2.mask.has_value());
  CHECK(torch::equal(*b2.mask, *batch.mask));
  CHECK(b2.phase == Phase::warmup);
  CHECK(torch::equal(std::get<0>(m2.at("w")), std::get<0>(by_name.at("w"))));
  CHECK(torch::equal(std::get<torch::Tensor>(v2), std::get<torch::Tensor>(tv)));
}

TEST_CASE("IValues of every supported kind round-trip", "[wire][ivalue]") {
  c10::impl::GenericDict dict(c10::StringType::get(), c10::TensorType::get());
  dict.insert("weight", torch::ones({2}));
  c10::List<c10::IValue> generic(c10::AnyType::get());
  generic.push_back(c10::IValue(int64_t{1}));
  generic.push_back(c10::IValue(std::string("two")));
  std::vector<c10::IValue> values = {
      c10::IValue(),
      c10::IValue(int64_t{42}),
      c10::IValue(1.5),
      c10::IValue(false),
      c10::IValue(std::string("name")),
      c10::IValue(c10::complex<double>(1, -2)),
      c10::IValue(c10::Device(c10::kCUDA, 1)),
      c10::IValue(std::vector<int64_t>{1, 2, 3}),
      c10::IValue(std::vector<double>{0.5}),
      c10::IValue(c10::List<bool>({true, false})),
      c10::IValue(std::vector<torch::Tensor>{torch::ones({1}), torch::zeros({2})}),
      c10::IValue(generic),
      c10::IValue(c10::ivalue::Tuple::create({c10::IValue(int64_t{1}), c10::IValue(torch::eye(2)),
                                              c10::IValue(c10::ivalue::Tuple::create({c10::IValue()}))})),
      c10::IValue(dict),
  };
  for (const auto& v : values) {
    INFO(v.tagKind());
    auto [back] = roundtrip(v);
    CHECK(back.tagKind() == v.tagKind());
    if (v.isTensorList()) {
      auto a = v.toTensorVector(), b = back.toTensorVector();
      REQUIRE(a.size() == b.size());
      for (size_t k = 0; k < a.size(); ++k) CHECK(torch::equal(a[k], b[k]));
    } else if (v.isTuple()) {
      CHECK(torch::equal(back.toTupleRef().elements()[1].toTensor(), torch::eye(2)));
      CHECK(back.toTupleRef().elements()[2].toTupleRef().elements()[0].isNone());
    } else if (v.isGenericDict()) {
      CHECK(torch::equal(back.toGenericDict().at("weight").toTensor(), torch::ones({2})));
    } else {
      CHECK(back == v);
    }
  }
}

namespace {
// What a peer could send: a torchbind object of a class this process never registered.
struct ForgedTorchbind {
  template <class Archive>
  void serialize(Archive& ar) {
    std::uint8_t tag = wire::detail::kMaxIValueTag;  // IValueTag::torchbind
    std::string name = "nowhere.Nothing";
    c10::IValue state;
    ar(tag, name, state);
  }
};
}  // namespace

TEST_CASE("A torchbind object of a class not registered here is refused as malformed", "[wire][ivalue]") {
  auto frame = wire::read_frame(remora::test::encode_bytes(ForgedTorchbind{}));
  CHECK_THROWS_WITH(wire::decode<c10::IValue>(std::move(frame)),
                    Catch::Contains("no torchbind class 'nowhere.Nothing' is registered on this worker"));
}

TEST_CASE("Reading a frame in any chunking gives the same values", "[wire][reader]") {
  auto t = torch::randn({64});
  auto bytes = remora::test::encode_bytes(std::string("chunked"), t, std::vector<int>{1, 2});
  for (std::size_t chunk : {std::size_t{1}, std::size_t{3}, std::size_t{31}, std::size_t{4096}}) {
    wire::FrameReader reader;
    std::size_t pos = 0;
    while (!reader.done()) {
      std::size_t n = std::min(chunk, bytes.size() - pos);
      pos += reader.feed(std::span<const std::byte>(bytes.data() + pos, n));
    }
    CHECK(pos == bytes.size());
    auto [s, u, v] = wire::decode<std::string, torch::Tensor, std::vector<int>>(reader.take());
    CHECK(s == "chunked");
    CHECK(torch::equal(u, t));
    CHECK((v == std::vector<int>{1, 2}));
  }
}

TEST_CASE("Back-to-back frames in one buffer are split correctly", "[wire][reader]") {
  auto a = remora::test::encode_bytes(1);
  auto b = remora::test::encode_bytes(std::string("second"), torch::ones({3}));
  std::vector<std::byte> stream = a;
  stream.insert(stream.end(), b.begin(), b.end());
  wire::FrameReader reader;
  std::size_t used = reader.feed(stream);
  REQUIRE(reader.done());
  CHECK(used == a.size());
  CHECK(std::get<0>(wire::decode<int>(reader.take())) == 1);
  used += reader.feed(std::span<const std::byte>(stream).subspan(used));
  REQUIRE(reader.done());
  CHECK(used == stream.size());
  auto [s, t] = wire::decode<std::string, torch::Tensor>(reader.take());
  CHECK(s == "second");
}

TEST_CASE("Large received tensors reuse pooled memory", "[wire]") {
  auto& pool = remora::wire::BufferPool::global();
  const std::size_t bytes = (std::size_t{4} << 20) + 3 * 4096;  // a size no other test uses
  void* first = nullptr;
  {
    auto t = pool.empty({static_cast<std::int64_t>(bytes / 4)}, torch::kFloat32, bytes);
    first = t.data_ptr();
    t.fill_(1);
  }
  const auto idle = pool.cached_bytes();
  CHECK(idle >= bytes);
  auto again = pool.empty({static_cast<std::int64_t>(bytes / 4)}, torch::kFloat32, bytes);
  CHECK(again.data_ptr() == first);  // the same memory, already mapped
  CHECK(pool.cached_bytes() == idle - bytes);
  // Small tensors are ordinary allocations.
  auto small = pool.empty({4}, torch::kFloat32, 16);
  CHECK(small.numel() == 4);
}

TEST_CASE("An autograd record rides at the end of the body and comes off before decoding", "[wire]") {
  auto frame = wire::encode_frame(wire::FrameKind::call, 7, std::string("args"), torch::arange(6).reshape({2, 3}),
                                  torch::ones({2}));
  grad::append_grad_record(frame, {0x0001000000000005ull, 42, {}});
  CHECK(frame.header().flags == grad::kGradRecord);
  auto in = wire::read_frame(remora::test::flatten(frame));
  auto record = grad::take_grad_record(in);
  REQUIRE(record);
  CHECK(record->context == 0x0001000000000005ull);
  CHECK(record->message == 42);
  CHECK(in.header.flags == 0);
  CHECK(!grad::take_grad_record(in));  // taken once
  auto [s, t, u] = wire::decode<std::string, torch::Tensor, torch::Tensor>(in);
  CHECK(s == "args");
  CHECK(torch::equal(t, torch::arange(6).reshape({2, 3})));
  CHECK(torch::equal(u, torch::ones({2})));
  // A header that claims a record the body is too short to hold is a protocol error.
  auto bare = wire::read_frame(remora::test::flatten(wire::encode_frame(wire::FrameKind::reply, 8)));
  bare.header.flags = grad::kGradRecord;
  CHECK_THROWS_AS(grad::take_grad_record(bare), remora::ProtocolError);
}

TEST_CASE("An autograd record carries the origins of passed-on tensors, and bad ones are refused", "[wire]") {
  auto make = [](std::vector<grad::GradOrigin> origins) {
    auto frame = wire::encode_frame(wire::FrameKind::call, 7, std::string("args"), torch::ones({3}));
    grad::GradRecord record;
    record.context = 9;
    record.message = 4;
    record.origins = std::move(origins);
    grad::append_grad_record(frame, record);
    return wire::read_frame(remora::test::flatten(frame));
  };
  auto in = make({{0, 2, 17, 1, 3}, {2, 1, 5, 0, 1}});
  CHECK(in.header.flags == (grad::kGradRecord | grad::kGradOrigins));
  auto record = grad::take_grad_record(in);
  REQUIRE(record);
  CHECK(record->context == 9);
  CHECK(record->message == 4);
  REQUIRE(record->origins.size() == 2);
  CHECK(record->origins[0].worker == 2);
  CHECK(record->origins[0].message == 17);
  CHECK(record->origins[0].input == 1);
  CHECK(record->origins[0].inputs == 3);
  CHECK(record->origins[1].slot == 2);
  CHECK(in.header.flags == 0);
  auto [s, t] = wire::decode<std::string, torch::Tensor>(in);
  CHECK(s == "args");
  CHECK(torch::equal(t, torch::ones({3})));
  // Out of order, an input past the message's count, or a count the body cannot hold: refused.
  auto unordered = make({{1, 2, 17, 0, 1}, {1, 2, 18, 0, 1}});
  CHECK_THROWS_AS(grad::take_grad_record(unordered), remora::ProtocolError);
  auto past = make({{0, 2, 17, 3, 3}});
  CHECK_THROWS_AS(grad::take_grad_record(past), remora::ProtocolError);
  auto empty = wire::encode_frame(wire::FrameKind::reply, 8);
  grad::append_grad_record(empty, {9, 4, {}});
  auto short_body = wire::read_frame(remora::test::flatten(empty));
  short_body.header.flags |= grad::kGradOrigins;
  CHECK_THROWS_AS(grad::take_grad_record(short_body), remora::ProtocolError);
}
