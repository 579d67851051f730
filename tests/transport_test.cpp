// Transports: the choice between TCP and the local transport, large tensors through shared memory
// (released when the receiver lets go, inline when the arena is full), bad bytes on a local
// connection closing it with a reason; and on a CPU-only host, the checks of device maps (the
// CUDA paths themselves are in cuda_test.cpp, run on a GPU machine by scripts/gpu-test).
#include <cstdlib>
#include <future>
#include <mutex>

#include <asio.hpp>
#include <catch2/catch.hpp>

#include "agent_support.hpp"
#include <torch/nn.h>

#include "remora/module/remote_module.hpp"
#include "remora/agent/detail/checked_options.hpp"
#include "remora/transport/stream_connection.hpp"

using namespace std::chrono_literals;
using remora::test::shutdown_group;
using remora::test::start_group;

namespace transport_fns {
torch::Tensor twice(torch::Tensor t) { return t * 2; }
torch::Tensor echo(torch::Tensor t) { return t; }

std::mutex kept_mu;
std::vector<torch::Tensor> kept;
double keep(torch::Tensor t) {
  std::lock_guard lock(kept_mu);
  kept.push_back(t);
  return t.sum().item<double>();
}
void drop_kept() {
  std::lock_guard lock(kept_mu);
  kept.clear();
}
torch::Tensor echo_ref(const torch::Tensor& t) { return t; }
remora::Future<torch::Tensor> echo_ready(torch::Tensor t) { return remora::make_ready_future<torch::Tensor>(t); }

std::string tagged(std::string s, int i) { return s + std::to_string(i); }

struct Echoer {
  virtual ~Echoer() = default;
  virtual torch::Tensor forward(torch::Tensor x) = 0;
};
struct EchoModule : torch::nn::Module, Echoer {
  torch::Tensor forward(torch::Tensor x) override { return x; }
};
}  // namespace transport_fns

namespace {
// Waits (bounded) until the agent's shared memory is all given back.
bool all_released(remora::Agent& a) {
  for (int i = 0; i < 500 && a.shared_bytes_in_use() != 0; ++i) std::this_thread::sleep_for(10ms);
  return a.shared_bytes_in_use() == 0;
}
}  // namespace

TEST_CASE("Workers on one host use the local transport and large tensors cross through shared memory",
          "[transport][local]") {
  auto g = start_group({"a", "b"});
  auto big = torch::randn({1 << 20});  // 4 MiB
  auto small = torch::arange(10, torch::kFloat);
  CHECK(torch::equal(g[0]->rpc_sync<&transport_fns::twice>("b", big), big * 2));
  CHECK(torch::equal(g[0]->rpc_sync<&transport_fns::twice>("b", small), small * 2));
  CHECK(g[0]->transport_to("b") == "local");
  CHECK(all_released(*g[0]));
  CHECK(all_released(*g[1]));

  SECTION("a tensor the callee keeps holds its range until the callee lets go") {
    CHECK(g[0]->rpc_sync<&transport_fns::keep>("b", big) == Approx(big.sum().item<double>()));
    CHECK(g[0]->shared_bytes_in_use() >= big.nbytes());
    big.zero_();  // the callee's tensor is its own copy
    {
      std::lock_guard lock(transport_fns::kept_mu);
      CHECK(transport_fns::kept.at(0).abs().sum().item<double>() > 0);
    }
    g[0]->rpc_sync<&transport_fns::drop_kept>("b");
    CHECK(all_released(*g[0]));
  }
  SECTION("results the caller keeps hold the callee's range until the caller lets go") {
    std::vector<torch::Tensor> results;
    for (int i = 0; i < 4; ++i) results.push_back(g[0]->rpc_sync<&transport_fns::twice>("b", big));
    CHECK(g[1]->shared_bytes_in_use() >= 4 * big.nbytes());
    for (auto& r : results) CHECK(torch::equal(r, big * 2));
    results.clear();
    CHECK(all_released(*g[1]));
  }
  shutdown_group(g);
}

// The callee drops its views of the caller's arena before it answers, so the release reaches the
// caller ahead of the reply and the caller's next call reuses the same (already mapped) range.
// Checked without waiting: a release sent after the reply would still be in flight here.
TEST_CASE("The callee gives back an argument's shared memory before it answers", "[transport][local]") {
  auto g = start_group({"a", "b"});
  auto big = torch::randn({1 << 20});  // 4 MiB
  auto m = remora::RemoteModule<transport_fns::Echoer>::create<transport_fns::EchoModule>(*g[0], "b/cpu");
  // The arena's use is read at once after each call, before anything else can give it time.
  std::vector<std::size_t> in_use;
  std::vector<torch::Tensor> results;
  for (int i = 0; i < 20; ++i) {
    results.push_back(g[0]->rpc_sync<&transport_fns::echo>("b", big));
    in_use.push_back(g[0]->shared_bytes_in_use());
    results.push_back(g[0]->rpc_sync<&transport_fns::echo_ref>("b", big));
    in_use.push_back(g[0]->shared_bytes_in_use());
    results.push_back(g[0]->rpc_sync<&transport_fns::echo_ready>("b", big));
    in_use.push_back(g[0]->shared_bytes_in_use());
    results.push_back(m.forward(big));
    in_use.push_back(g[0]->shared_bytes_in_use());
    for (std::size_t k = 0; k < in_use.size(); ++k) CHECK(in_use[k] == 0);
    for (auto& r : results) CHECK(torch::equal(r, big));
    in_use.clear();
    results.clear();
  }
  // A result the caller keeps holds the callee's range; the callee's arena is free once it lets go.
  auto kept = g[0]->rpc_sync<&transport_fns::echo>("b", big);
  CHECK(g[1]->shared_bytes_in_use() >= big.nbytes());
  kept = torch::Tensor();
  CHECK(all_released(*g[1]));
  m = {};
  shutdown_group(g);
}

TEST_CASE("A full arena sends tensors through the socket instead", "[transport][local]") {
  remora::Options o;
  o.shared_memory_bytes = 1 << 20;
  o.shared_memory_min_bytes = 64 << 10;
  auto g = start_group({"a", "b"}, o);
  std::vector<torch::Tensor> sent;
  for (int i = 0; i < 3; ++i) {
    sent.push_back(torch::full({128 << 10}, float(i + 1)));  // 512 KiB each: the third does not fit
    CHECK(g[0]->rpc_sync<&transport_fns::keep>("b", sent.back()) == Approx(float(i + 1) * (128 << 10)));
  }
  CHECK(g[0]->shared_bytes_in_use() == std::size_t{1} << 20);
  {
    std::lock_guard lock(transport_fns::kept_mu);
    REQUIRE(transport_fns::kept.size() == 3);
    for (int i = 0; i < 3; ++i) CHECK(torch::equal(transport_fns::kept[i], sent[i]));
  }
  g[0]->rpc_sync<&transport_fns::drop_kept>("b");
  CHECK(all_released(*g[0]));
  CHECK(torch::equal(g[0]->rpc_sync<&transport_fns::echo>("b", sent[0]), sent[0]));  // space again
  shutdown_group(g);
}

// Bursts fill the writer's queue while its writes are in flight (the queue must not move what a
// write points into) and its coalescing buffer (small pieces copied, larger ones written from
// where they are): every reply must still come back whole and in its place.
TEST_CASE("Bursts of pipelined calls of mixed sizes come back whole", "[transport][concurrency]") {
  remora::Options o;
  o.transport = GENERATE(remora::Transport::tcp, remora::Transport::local);
  auto g = start_group({"a", "b"}, o);
  const std::int64_t sizes[] = {1, 150, 700, 40000};  // 4 B to 160 KB, across the copy threshold
  const std::string long_text(3000, 'x');               // a frame head over the threshold
  for (int round = 0; round < 3; ++round) {
    std::vector<remora::Future<torch::Tensor>> doubled;
    std::vector<remora::Future<std::string>> texts;
    for (int i = 0; i < 2000; ++i) {
      doubled.push_back(g[0]->rpc_async<&transport_fns::twice>("b", torch::full({sizes[i % 4]}, float(i))));
      if (i % 3 == 0) texts.push_back(g[0]->rpc_async<&transport_fns::tagged>("b", long_text, i));
    }
    int wrong = 0;
    for (int i = 0; i < 2000; ++i)
      wrong += !torch::equal(doubled[i].get(), torch::full({sizes[i % 4]}, 2.f * float(i)));
    for (std::size_t k = 0; k < texts.size(); ++k) wrong += texts[k].get() != long_text + std::to_string(3 * k);
    CHECK(wrong == 0);
  }
  shutdown_group(g);
}

TEST_CASE("The write queue keeps frames in place and in order while it grows and drains", "[transport]") {
  remora::transport::detail::FrameQueue q;
  auto frame = [](std::uint64_t id) { return remora::wire::encode_frame(remora::wire::FrameKind::reply, id, id); };
  std::vector<const remora::wire::OutFrame*> where;
  for (int i = 0; i < 100; ++i) {
    q.push_back(frame(i));
    where.push_back(&*std::next(q.begin(), i));  // a write in flight points into these
  }
  for (int i = 0; i < 100; ++i) q.push_back(frame(100 + i));  // grows while the first 100 are "in a write"
  for (int i = 0; i < 100; ++i) CHECK(&*std::next(q.begin(), i) == where[i]);
  int in_order = 0;
  for (int i = 0; i < 150; ++i) in_order += q.take_front().header().request_id == std::uint64_t(i);
  CHECK(in_order == 150);
  CHECK(q.size() == 50);
  for (int i = 0; i < 70; ++i) q.push_back(frame(200 + i));
  std::uint64_t expected = 150, rest_in_order = 0;  // 150..199, then 200..269
  for (auto& f : q) rest_in_order += f.header().request_id == expected++;
  CHECK(rest_in_order == 120);
  q.clear();
  CHECK(q.empty());
  q.push_back(frame(7));
  CHECK(q.front().header().request_id == 7u);
}

TEST_CASE("Options::transport and REMORA_TRANSPORT choose TCP", "[transport]") {
  remora::Options o;
  o.transport = remora::Transport::tcp;
  {
    auto g = start_group({"a", "b"}, o);
    auto big = torch::randn({1 << 20});
    CHECK(torch::equal(g[0]->rpc_sync<&transport_fns::twice>("b", big), big * 2));
    CHECK(g[0]->transport_to("b") == "tcp");
    CHECK(g[0]->shared_bytes_in_use() == 0);
    shutdown_group(g);
  }
  // REMORA_TRANSPORT fills in Options::transport when the program left it unset, and never
  // overrides a program's choice; a value it does not know is an error.
  using remora::detail::checked_options;
  auto tcp_env = [](const char* n) -> const char* { return std::string_view(n) == "REMORA_TRANSPORT" ? "tcp" : nullptr; };
  o.transport = remora::Transport::local;
  CHECK(checked_options(o, tcp_env).transport == remora::Transport::local);
  CHECK(checked_options(o, [](const char*) -> const char* { return nullptr; }).transport ==
        remora::Transport::local);
  o.transport.reset();
  CHECK(checked_options(o, tcp_env).transport == remora::Transport::tcp);
  CHECK(checked_options(o, [](const char*) -> const char* { return nullptr; }).transport ==
        remora::Transport::automatic);
  // The watches alike: the environment fills in, the program's setting stays.
  auto watch_env = [](const char* n) -> const char* { return std::string_view(n) == "REMORA_IO_WATCH_US" ? "7" : nullptr; };
  CHECK(*checked_options(o, watch_env).io_watch == std::chrono::microseconds(7));
  CHECK(*checked_options(o, watch_env).sync_watch == std::chrono::microseconds(200));
  o.io_watch = std::chrono::microseconds(0);
  CHECK(*checked_options(o, watch_env).io_watch == std::chrono::microseconds(0));
  CHECK_THROWS_WITH(checked_options(o, [](const char* n) -> const char* {
                      return std::string_view(n) == "REMORA_TRANSPORT" ? "carrier-pigeon" : nullptr;
                    }),
                    Catch::Contains("REMORA_TRANSPORT must be auto, tcp or local"));
}

namespace {
using remora::transport::LocalConnection;
using remora::transport::detail::LocalPreface;
using remora::transport::detail::SendArena;

// One LocalConnection on one end of a socket pair; the test writes raw bytes on the other end and
// learns why the connection closed.
struct RawPeer {
  asio::io_context io;
  asio::local::stream_protocol::socket raw{io};
  std::shared_ptr<LocalConnection> conn;
  std::promise<std::string> closed;

  RawPeer() {
    LocalConnection::Socket mine(asio::make_strand(io));
    asio::local::connect_pair(mine, raw);
    conn = std::make_shared<LocalConnection>(
        std::move(mine), remora::wire::Limits{}, [](const auto&, remora::wire::InFrame&&) {},
        [this](const auto&, const std::string& why) { closed.set_value(why); });
    conn->trust();  // as if the peer had said hello: these tests are about what follows
    conn->start();
  }
  void write(const void* p, std::size_t n) { asio::write(raw, asio::buffer(p, n)); }
  void preface(std::uint64_t arena_bytes = 0, int fd = -1) {
    LocalPreface p;
    p.arena_bytes = arena_bytes;
    REQUIRE(remora::transport::detail::send_preface(raw.native_handle(), p, fd));
  }
  std::string reason() {
    auto f = closed.get_future();
    for (int i = 0; i < 500 && f.wait_for(0s) != std::future_status::ready; ++i) io.run_for(10ms);
    REQUIRE(f.wait_for(0s) == std::future_status::ready);
    return f.get();
  }
};

// A frame holding one small tensor marked as shared at `offset`.
std::vector<std::byte> shared_tensor_frame(std::uint64_t offset) {
  auto frame = remora::wire::encode_frame(remora::wire::FrameKind::reply, 1, torch::ones({1024}));
  frame.for_each_descriptor([](std::size_t, remora::wire::TensorDescriptor& d) { remora::wire::set_placement(d, remora::transport::detail::kSharedPlacement); });
  std::vector<std::byte> bytes(frame.head.begin(), frame.head.end());
  const auto* p = reinterpret_cast<const std::byte*>(&offset);
  bytes.insert(bytes.end(), p, p + sizeof offset);
  return bytes;
}
}  // namespace

TEST_CASE("Bad bytes on a local connection close it with the reason", "[transport][local][errors]") {
  SECTION("not a remora preface") {
    RawPeer peer;
    std::vector<std::uint8_t> junk(16, 0xAB);
    peer.write(junk.data(), junk.size());
    CHECK_THAT(peer.reason(), Catch::Contains("bad local preface"));
  }
  SECTION("an arena announced but not passed") {
    RawPeer peer;
    peer.preface(1 << 20);
    CHECK_THAT(peer.reason(), Catch::Contains("announced shared memory but passed none"));
  }
  SECTION("an arena that could shrink under the mapping") {
    RawPeer peer;
    remora::transport::detail::Fd fd(::memfd_create("unsealed", MFD_CLOEXEC));
    REQUIRE(::ftruncate(fd.get(), 1 << 20) == 0);
    peer.preface(1 << 20, fd.get());
    CHECK_THAT(peer.reason(), Catch::Contains("not sealed"));
  }
  SECTION("an arena smaller than announced") {
    RawPeer peer;
    auto arena = SendArena::create(1 << 20);
    peer.preface(2 << 20, arena->fd());
    CHECK_THAT(peer.reason(), Catch::Contains("announced size"));
  }
  SECTION("a shared tensor without an arena") {
    RawPeer peer;
    peer.preface();
    auto bytes = shared_tensor_frame(0);
    peer.write(bytes.data(), bytes.size());
    CHECK_THAT(peer.reason(), Catch::Contains("has placement 1, which this connection does not take"));
  }
  SECTION("a shared tensor outside the arena") {
    RawPeer peer;
    auto arena = SendArena::create(1 << 20);
    peer.preface(arena->size(), arena->fd());
    auto bytes = shared_tensor_frame(1 << 20);
    peer.write(bytes.data(), bytes.size());
    CHECK_THAT(peer.reason(), Catch::Contains("outside the peer's arena"));
  }
  SECTION("a release of memory that was never lent") {
    RawPeer peer;
    peer.preface();
    remora::wire::FrameHeader h;
    h.kind = static_cast<std::uint8_t>(remora::wire::FrameKind::transport);
    h.request_id = 4096;
    peer.write(&h, sizeof h);
    CHECK_THAT(peer.reason(), Catch::Contains("not in use"));
  }
}

TEST_CASE("The arena gives ranges lowest first and merges freed neighbours", "[transport][local]") {
  auto arena = SendArena::create(64 << 10);
  REQUIRE(arena);
  auto a = arena->allocate(4096), b = arena->allocate(5000), c = arena->allocate(4096);
  REQUIRE((a && b && c));
  CHECK(*a == 0);
  CHECK(*b == 4096);
  CHECK(*c == 3 * 4096);  // 5000 bytes take two pages
  CHECK_FALSE(arena->allocate(64 << 10));
  CHECK(arena->release(*b));
  CHECK_FALSE(arena->release(*b));
  CHECK(arena->release(*a));
  CHECK(arena->allocate(3 * 4096) == std::uint64_t{0});  // a and b merged
  CHECK(arena->in_use() == 4 * 4096);
}

namespace {
// Starts a group whose construction may fail: each rank's error message, empty if it joined.
std::vector<std::string> try_start_group(std::vector<std::string> names, remora::Options o) {
  o.store = c10::make_intrusive<c10d::HashStore>();
  o.init_timeout = std::chrono::seconds(20);
  std::vector<std::unique_ptr<remora::Agent>> agents(names.size());
  std::vector<std::string> errors(names.size());
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < names.size(); ++i)
    threads.emplace_back([&, i] {
      try {
        agents[i] = std::make_unique<remora::Agent>(names[i], int(i), int(names.size()), o);
      } catch (const std::exception& e) {
        errors[i] = e.what();
      }
    });
  for (auto& t : threads) t.join();
  for (auto& a : agents)
    if (a) a->shutdown(false);
  return errors;
}
}  // namespace

TEST_CASE("Device maps are checked when the group starts, on every worker", "[transport][devices]") {
  remora::Options o;
  SECTION("devices this host does not have") {
    const auto n = std::to_string(torch::cuda::device_count());
    o.set_device_map("b", {{"cuda:" + n, "cuda:0"}});
    for (const auto& e : try_start_group({"a", "b"}, o))
      CHECK_THAT(e, Catch::Contains("device map of worker 'a' to 'b' maps from cuda:" + n + ", but 'a' has " + n +
                                    " CUDA devices"));
  }
  SECTION("a worker that is not in the group") {
    o.set_device_map("nobody", {{"cuda:0", "cuda:0"}});
    CHECK_THAT(try_start_group({"a", "b"}, o)[0], Catch::Contains("names a worker that is not in the group"));
  }
  SECTION("devices that are not CUDA devices") {
    o.set_device_map("b", {{"cpu", "cpu"}});
    CHECK_THAT(try_start_group({"a", "b"}, o)[1], Catch::Contains("map indexed CUDA devices"));
  }
  SECTION("two devices onto one") {
    o.set_device_map("b", {{"cuda:0", "cuda:1"}, {"cuda:1", "cuda:1"}});
    CHECK_THAT(try_start_group({"a", "b"}, o)[0], Catch::Contains("one-to-one"));
  }
}

TEST_CASE("A tensor on a device the map does not name is refused, naming the device and the worker",
          "[transport][devices]") {
  auto g = start_group({"a", "b"});
  auto elsewhere = torch::empty({4}, torch::TensorOptions().device(torch::kMeta));
  CHECK_THROWS_WITH(g[0]->rpc_sync<&transport_fns::echo>("b", elsewhere),
                    Catch::Contains("a tensor on meta cannot be sent to worker 'b'") &&
                        Catch::Contains("Options::set_device_map"));
  CHECK(torch::equal(g[0]->rpc_sync<&transport_fns::echo>("b", torch::ones({2})), torch::ones({2})));
  shutdown_group(g);
}

TEST_CASE("A frame that puts a tensor on a CUDA device this process lacks is refused", "[transport][devices]") {
  const auto n = static_cast<std::int8_t>(torch::cuda::device_count());  // one past the last device
  auto frame = remora::wire::encode_frame(remora::wire::FrameKind::reply, 1, torch::ones({4}));
  frame.for_each_descriptor([&](std::size_t, remora::wire::TensorDescriptor& d) {
    d.device_type = static_cast<std::int8_t>(c10::DeviceType::CUDA);
    d.device_index = n;
  });
  std::vector<std::byte> bytes;
  for (auto s : frame.segments()) bytes.insert(bytes.end(), s.begin(), s.end());
  CHECK_THROWS_WITH(remora::wire::read_frame(bytes),
                    Catch::Contains("is for cuda:" + std::to_string(n) + ", which this process does not have"));
}
