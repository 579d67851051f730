// Peers and user code that misbehave: each of these ended the process or cut a real peer off
// before. Now a frame that fails closes its connection only, a throwing continuation is dropped,
// and a connection that merely says a peer's name cannot make that peer lost. Last, a network
// adversary: random bytes, truncated frames, hostile lengths, floods, slow writers and silent
// sockets all at once, while a real caller's calls go on.
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <mutex>
#include <random>
#include <stdexcept>
#include <thread>
#include <vector>

#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <asio.hpp>
#include <catch2/catch.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "agent_support.hpp"
#include "raw_peer.hpp"
#include "remora/agent/detail/io_loop.hpp"
#include "remora/agent/detail/remote_profile.hpp"
#include "remora/wire/dtype.hpp"

using remora::test::shutdown_group;
using remora::test::start_group;

namespace hostile {
int add(int a, int b) { return a + b; }
int slow_add(int a, int b) {
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  return a + b;
}
std::atomic<bool> gate_open{false};
std::int64_t held(torch::Tensor t) {  // holds its call (and the tensor) until the gate opens
  while (!gate_open) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return t.numel();
}
}  // namespace hostile

namespace {
// Writes `bytes` to worker `port` on a fresh connection; returns the socket (open).
std::unique_ptr<asio::ip::tcp::socket> send_raw(asio::io_context& io, std::uint16_t port, const std::vector<std::byte>& bytes) {
  auto s = std::make_unique<asio::ip::tcp::socket>(io);
  s->connect({asio::ip::make_address("127.0.0.1"), port});
  asio::write(*s, asio::buffer(bytes));
  return s;
}
}  // namespace

TEST_CASE("A frame with a tensor for a device this worker lacks closes that connection only", "[agent][hostile]") {
  auto g = start_group({"a", "b"});
  // A call frame whose one tensor is to arrive on cuda:99.
  remora::wire::FrameHeader h;
  h.kind = static_cast<std::uint8_t>(remora::wire::FrameKind::call);
  h.body_bytes = 8;
  h.descriptor_bytes = sizeof(remora::wire::TensorDescriptor) + 8;
  h.tensor_count = 1;
  remora::wire::TensorDescriptor d;
  d.dtype = *remora::wire::to_wire(torch::kFloat);
  d.ndim = 1;
  d.device_type = static_cast<std::int8_t>(c10::DeviceType::CUDA);
  d.device_index = 99;
  d.nbytes = 4;
  const std::int64_t size = 1;
  const float value = 1.0f;
  std::vector<std::byte> frame(sizeof h + 8 + sizeof d + 8 + 4);
  std::byte* p = frame.data();
  std::memcpy(p, &h, sizeof h);
  p += sizeof h + 8;
  std::memcpy(p, &d, sizeof d);
  std::memcpy(p + sizeof d, &size, 8);
  std::memcpy(p + sizeof d + 8, &value, 4);
  // After a hello, so that the frame is read under the full limits.
  auto hello = remora::test::hello_bytes(0, "a", 1);
  frame.insert(frame.begin(), hello.begin(), hello.end());
  asio::io_context io;
  auto s = send_raw(io, g[1]->listen_port(), frame);
  std::array<char, 16> buf;
  std::error_code ec;
  s->read_some(asio::buffer(buf), ec);
  CHECK(ec == asio::error::eof);  // closed, not crashed
  CHECK(g[0]->rpc_sync<&hostile::add>("b", 3, 4) == 7);
  shutdown_group(g);
}

TEST_CASE("A continuation that throws on the worker pool is dropped, and the worker goes on", "[agent][hostile]") {
  auto g = start_group({"a", "b"});
  auto f = g[0]->rpc_async<&hostile::slow_add>("b", 1, 2);
  std::atomic<bool> ran{false};
  f.on_ready([&] {  // the reply completes f on an I/O thread; this runs on a's worker pool
    ran = true;
    throw std::runtime_error("a bug in user code");
  });
  CHECK(f.get() == 3);
  for (int i = 0; i < 200 && !ran; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  CHECK(ran);
  CHECK(g[0]->rpc_sync<&hostile::add>("b", 1, 1) == 2);
  CHECK(g[1]->rpc_sync<&hostile::add>("a", 2, 2) == 4);
  // The dropped job still counted as finished: a's graceful shutdown does not wait out its
  // 20 s timeout for work that will never end.
  const auto start = std::chrono::steady_clock::now();
  shutdown_group(g);
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(10));
}

TEST_CASE("A peer's pending calls and bytes are bounded: past them its calls are refused unrun", "[agent][hostile]") {
  remora::Options o;
  o.max_pending_calls_per_peer = 3;
  o.max_pending_bytes_per_peer = 1 << 20;
  o.num_worker_threads = 4;
  auto g = start_group({"a", "b"}, o);
  hostile::gate_open = false;
  const auto small = torch::ones({1});
  std::vector<remora::Future<std::int64_t>> held;
  for (int i = 0; i < 3; ++i) held.push_back(g[0]->rpc_async<&hostile::held>("b", small));
  REQUIRE(remora::test::eventually([&] { return remora::detail::AgentAccess::pending_from(*g[1], 0) == 3; }));
  // A fourth call is refused at once, unrun, and says why; the three go on.
  try {
    g[0]->rpc_sync<&hostile::add>("b", 1, 2);
    FAIL("no error");
  } catch (const remora::Overloaded& e) {
    CHECK(e.worker() == "b");
    CHECK_THAT(e.what(), Catch::Contains("3 calls from this worker are already pending there"));
  }
  // The other direction has its own budget.
  CHECK(g[1]->rpc_sync<&hostile::add>("a", 1, 2) == 3);
  hostile::gate_open = true;
  for (auto& f : held) CHECK(f.get() == 1);
  CHECK(remora::test::eventually([&] { return remora::detail::AgentAccess::pending_from(*g[1], 0) == 0; }));
  CHECK(g[0]->rpc_sync<&hostile::add>("b", 1, 2) == 3);

  // Bytes: one 768 KiB call pending, a second one would pass 1 MiB; a small one still fits.
  hostile::gate_open = false;
  const auto big = torch::ones({192 << 10});  // 768 KiB of floats
  auto first = g[0]->rpc_async<&hostile::held>("b", big);
  REQUIRE(remora::test::eventually([&] { return remora::detail::AgentAccess::pending_from(*g[1], 0) == 1; }));
  CHECK_THROWS_AS(g[0]->rpc_sync<&hostile::held>("b", big), remora::Overloaded);
  auto little = g[0]->rpc_async<&hostile::held>("b", small);
  hostile::gate_open = true;
  CHECK(first.get() == big.numel());
  CHECK(little.get() == 1);
  shutdown_group(g);
}

TEST_CASE("A connection that says a known worker's name cannot make that worker lost", "[agent][hostile]") {
  auto g = start_group({"a", "b"});
  CHECK(g[0]->rpc_sync<&hostile::add>("b", 1, 2) == 3);  // a's own connection to b is up
  auto connections_from_a = [&] { return g[1]->debug_info().peers.at(0).connections; };
  REQUIRE(connections_from_a() == 1);
  {
    asio::io_context io;
    auto s = send_raw(io, g[1]->listen_port(), remora::test::hello_bytes(0, "a", 1));
    // b took the hello: the impostor's connection now counts as one of a's.
    CHECK(remora::test::eventually([&] { return connections_from_a() == 2; }));
    s->close();  // the impostor goes away
  }
  // b saw it close, and a is not lost for it.
  CHECK(remora::test::eventually([&] { return connections_from_a() == 1; }));
  CHECK_FALSE(g[1]->debug_info().peers.at(0).lost);
  CHECK(g[1]->rpc_sync<&hostile::add>("a", 2, 3) == 5);  // b still reaches the real a
  CHECK(g[0]->rpc_sync<&hostile::add>("b", 3, 3) == 6);
  shutdown_group(g);
}

TEST_CASE("A connection that says it is the worker itself is closed", "[agent][hostile]") {
  auto g = start_group({"a", "b"});
  asio::io_context io;
  auto s = send_raw(io, g[1]->listen_port(), remora::test::hello_bytes(1, "b", 1));  // b's own name, to b
  CHECK(remora::test::closed_within(s->native_handle(), std::chrono::seconds(5)));
  CHECK(g[0]->rpc_sync<&hostile::add>("b", 1, 2) == 3);
  shutdown_group(g);
}

TEST_CASE("Before its hello a connection gets room for a hello only: a larger frame closes it at once", "[agent][hostile]") {
  auto g = start_group({"a", "b"});
  asio::io_context io;
  for (int kind : {0, 1}) {
    // A call header announcing a 1 MiB body, or 4 tensors, and nothing after it: a worker used to
    // allocate for it and wait (hello_timeout, 10 s) for the rest.
    remora::wire::FrameHeader h;
    h.kind = static_cast<std::uint8_t>(remora::wire::FrameKind::call);
    h.body_bytes = kind == 0 ? 1u << 20 : 8;
    h.tensor_count = kind == 0 ? 0 : 4;
    std::vector<std::byte> header(sizeof h);
    std::memcpy(header.data(), &h, sizeof h);
    auto s = send_raw(io, g[1]->listen_port(), header);
    CHECK(remora::test::closed_within(s->native_handle(), std::chrono::seconds(3)));
  }
  CHECK(g[0]->rpc_sync<&hostile::add>("b", 1, 1) == 2);  // workers' own connections are unaffected
  shutdown_group(g);
}

TEST_CASE("One address may hold 64 connections that say nothing: more are refused at once", "[agent][hostile]") {
  auto g = start_group({"a", "b"});
  CHECK(g[0]->rpc_sync<&hostile::add>("b", 1, 2) == 3);  // a's own connection is up (and known)
  asio::io_context io;
  std::vector<std::unique_ptr<asio::ip::tcp::socket>> silent;
  for (int i = 0; i < 72; ++i) {
    silent.push_back(std::make_unique<asio::ip::tcp::socket>(io));
    silent.back()->connect({asio::ip::make_address("127.0.0.1"), g[1]->listen_port()});
  }
  // A second later (the worker's hello_timeout is 10 s): which ones has the worker closed?
  auto count_closed = [&] {
    int closed = 0;
    for (auto& s : silent) {
      char c;
      const auto n = ::recv(s->native_handle(), &c, 1, MSG_DONTWAIT | MSG_PEEK);
      if (n == 0 || (n < 0 && errno == ECONNRESET)) ++closed;
    }
    return closed;
  };
  remora::test::eventually([&] { return count_closed() >= 72 - 64; });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  CHECK(count_closed() == 72 - 64);
  CHECK(g[1]->rpc_sync<&hostile::add>("a", 2, 3) == 5);  // the workers still reach each other
  CHECK(g[0]->rpc_sync<&hostile::add>("b", 3, 3) == 6);
  shutdown_group(g);
}

TEST_CASE("A connection that never says which worker it is is closed after hello_timeout", "[agent][hostile]") {
  remora::Options o;
  o.hello_timeout = std::chrono::milliseconds(300);
  auto g = start_group({"a", "b"}, o);
  asio::io_context io;
  std::vector<std::unique_ptr<asio::ip::tcp::socket>> silent;
  for (int i = 0; i < 3; ++i) {
    silent.push_back(std::make_unique<asio::ip::tcp::socket>(io));
    silent.back()->connect({asio::ip::make_address("127.0.0.1"), g[1]->listen_port()});
  }
  // A stalled frame: a header that announces a body which never comes.
  remora::wire::FrameHeader h;
  h.kind = static_cast<std::uint8_t>(remora::wire::FrameKind::control);
  h.body_bytes = 1000;
  std::vector<std::byte> stalled(sizeof h);
  std::memcpy(stalled.data(), &h, sizeof h);
  silent.push_back(send_raw(io, g[1]->listen_port(), stalled));
  for (auto& s : silent) {
    timeval limit{10, 0};  // a worker that keeps them fails this test instead of hanging it
    setsockopt(s->native_handle(), SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
    std::array<char, 16> buf;
    std::error_code ec;
    s->read_some(asio::buffer(buf), ec);
    CHECK(ec == asio::error::eof);
  }
  CHECK(g[0]->rpc_sync<&hostile::add>("b", 1, 2) == 3);  // real workers said hello: kept
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  CHECK(g[0]->rpc_sync<&hostile::add>("b", 2, 2) == 4);
  CHECK(g[1]->rpc_sync<&hostile::add>("a", 3, 2) == 5);
  shutdown_group(g);
}

TEST_CASE("Warnings a peer causes are rate-limited, and say how many were suppressed", "[agent][hostile]") {
  using remora::detail::WarningLimiter;
  WarningLimiter limiter;
  const auto t0 = WarningLimiter::Clock::now();
  std::uint64_t suppressed = 0;
  int printed = 0;
  for (int i = 0; i < 1000; ++i) printed += limiter.admit(t0, suppressed);
  CHECK(printed == static_cast<int>(WarningLimiter::kBurst));
  CHECK_FALSE(limiter.admit(t0 + WarningLimiter::kRefill / 2, suppressed));
  REQUIRE(limiter.admit(t0 + WarningLimiter::kRefill, suppressed));
  CHECK(suppressed == static_cast<std::uint64_t>(1000 - printed + 1));
  REQUIRE(limiter.admit(t0 + 100 * WarningLimiter::kRefill, suppressed));
  CHECK(suppressed == 0);

  // A worker that 200 connections send garbage to closes each one and prints a bounded number
  // of lines about it (stderr is captured in a file meanwhile).
  auto g = start_group({"a", "b"});
  std::FILE* capture = std::tmpfile();
  REQUIRE(capture);
  std::fflush(stderr);
  const int saved = ::dup(2);
  ::dup2(::fileno(capture), 2);
  const auto start = std::chrono::steady_clock::now();
  asio::io_context io;
  for (int i = 0; i < 200; ++i) {
    auto s = send_raw(io, g[1]->listen_port(), std::vector<std::byte>(sizeof(remora::wire::FrameHeader), std::byte{7}));
    CHECK(remora::test::closed_within(s->native_handle(), std::chrono::seconds(3)));
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::fflush(stderr);
  ::dup2(saved, 2);
  ::close(saved);
  std::rewind(capture);
  int lines = 0;
  bool said_suppressed = false;
  std::array<char, 512> line;
  while (std::fgets(line.data(), line.size(), capture)) {
    lines += std::strstr(line.data(), "closing connection") != nullptr;
    said_suppressed |= std::strstr(line.data(), "more warnings about peers were suppressed") != nullptr;
  }
  std::fclose(capture);
  INFO("lines: " << lines << " in " << seconds << " s");
  CHECK(lines >= 1);
  CHECK(lines <= WarningLimiter::kBurst + seconds / std::chrono::duration<double>(WarningLimiter::kRefill).count() + 1);
  CHECK(lines < 200);
  if (seconds > 1.5) CHECK(said_suppressed);
  CHECK(g[0]->rpc_sync<&hostile::add>("b", 1, 2) == 3);
  shutdown_group(g);
}

namespace {
std::int64_t resident_kib() {
  std::ifstream statm("/proc/self/statm");
  std::int64_t pages = 0, resident = 0;
  statm >> pages >> resident;
  return resident * (::sysconf(_SC_PAGESIZE) / 1024);
}
}  // namespace

TEST_CASE("Under attack from other sockets a worker keeps answering its real caller, in bounded memory",
          "[agent][hostile][adversary]") {
  auto g = start_group({"a", "b"});
  const auto port = g[1]->listen_port();
  CHECK(g[0]->rpc_sync<&hostile::add>("b", 1, 2) == 3);  // a's own connection first
  const auto hello = remora::test::hello_bytes(0, "a", 1);
  auto call = [](std::uint64_t rid, int x) {
    return remora::test::flatten(remora::wire::encode_frame(remora::wire::FrameKind::call, rid,
                                               remora::function_identity<&hostile::add>.id, x, 1));
  };
  const auto big = remora::test::flatten(remora::wire::encode_frame(remora::wire::FrameKind::call, 9,
                                                       remora::function_identity<&hostile::add>.id,
                                                       torch::ones({1 << 16})));
  const auto rss_before = resident_kib();
  std::atomic<bool> stop{false};
  std::atomic<long> attacks{0};
  auto attacker = [&](auto&& attack) {
    return std::thread([&, attack] {
      asio::io_context io;
      for (std::uint32_t round = 0; !stop; ++round) {
        try {
          asio::ip::tcp::socket s(io);
          s.connect({asio::ip::make_address("127.0.0.1"), port});
          attack(s, round);
          (void)remora::test::closed_within(s.native_handle(), std::chrono::milliseconds(50));
          ++attacks;
        } catch (const std::exception&) {  // the worker closed it first: as it should
        }
      }
    });
  };
  std::vector<std::thread> threads;
  // Random bytes.
  threads.push_back(attacker([](asio::ip::tcp::socket& s, std::uint32_t round) {
    std::mt19937 rng(round);
    std::vector<std::uint8_t> junk(4096);
    for (auto& b : junk) b = static_cast<std::uint8_t>(rng());
    asio::write(s, asio::buffer(junk));
  }));
  // Truncated frames: a hello, then part of a call carrying a tensor.
  threads.push_back(attacker([&](asio::ip::tcp::socket& s, std::uint32_t round) {
    asio::write(s, asio::buffer(hello));
    asio::write(s, asio::buffer(big.data(), 1 + round * 7919 % (big.size() - 1)));
  }));
  // Hostile lengths: a call header announcing a 1 GiB body after a hello.
  threads.push_back(attacker([&](asio::ip::tcp::socket& s, std::uint32_t) {
    remora::wire::FrameHeader h;
    h.kind = static_cast<std::uint8_t>(remora::wire::FrameKind::call);
    h.body_bytes = 1u << 30;
    std::vector<std::byte> bytes = hello;
    const auto* p = reinterpret_cast<const std::byte*>(&h);
    bytes.insert(bytes.end(), p, p + sizeof h);
    asio::write(s, asio::buffer(bytes));
  }));
  // A flood: 500 calls in one write (their answers drained).
  threads.push_back(attacker([&](asio::ip::tcp::socket& s, std::uint32_t) {
    std::vector<std::byte> bytes = hello;
    for (int i = 0; i < 500; ++i) {
      auto c = call(1000 + i, i);
      bytes.insert(bytes.end(), c.begin(), c.end());
    }
    asio::write(s, asio::buffer(bytes));
  }));
  // A slow writer: a hello and a call, one byte every millisecond.
  threads.push_back(attacker([&](asio::ip::tcp::socket& s, std::uint32_t) {
    std::vector<std::byte> bytes = hello;
    auto c = call(5, 5);
    bytes.insert(bytes.end(), c.begin(), c.end());
    for (auto b : bytes) {
      asio::write(s, asio::buffer(&b, 1));
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }));
  // Connections that never speak (fewer than the 64 an address may hold).
  asio::io_context io;
  std::vector<std::unique_ptr<asio::ip::tcp::socket>> silent;
  for (int i = 0; i < 32; ++i) {
    silent.push_back(std::make_unique<asio::ip::tcp::socket>(io));
    silent.back()->connect({asio::ip::make_address("127.0.0.1"), port});
  }
  // Meanwhile the real caller: every call answered, rightly.
  int wrong = 0;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  int calls = 0;
  for (; std::chrono::steady_clock::now() < until; ++calls) {
    try {
      if (g[0]->rpc_sync<&hostile::add>("b", calls, 1) != calls + 1) ++wrong;
    } catch (const std::exception& e) {
      ++wrong;
      UNSCOPED_INFO("call " << calls << ": " << e.what());
    }
  }
  stop = true;
  for (auto& t : threads) t.join();
  CHECK(wrong == 0);
  CHECK(calls > 100);
  CHECK(attacks > 10);
  // Bounded: a 1 GiB announcement holds at most the reader's read-ahead (1 MiB) while it lasts.
  const auto grown = resident_kib() - rss_before;
  INFO("the process grew " << grown << " KiB during " << attacks << " attacks");
#if defined(__SANITIZE_ADDRESS__)
  CHECK(grown < 1024 * 1024);  // ASan keeps freed memory in quarantine (256 MiB) before reuse
#else
  CHECK(grown < 256 * 1024);
#endif
  CHECK(g[1]->rpc_sync<&hostile::add>("a", 2, 3) == 5);
  shutdown_group(g);
}

namespace hostile {
// A served function whose answer comes later, from outside the agent: the test completes it.
std::mutex late_mu;
std::vector<remora::Promise<int>> late_promises;
remora::Future<int> answered_later(int x) {
  remora::Promise<int> p;
  auto f = p.get_future();
  std::lock_guard lock(late_mu);
  late_promises.push_back(std::move(p));
  return f;
}
}  // namespace hostile

TEST_CASE("A served Future that completes after its agent stopped, or was destroyed, is dropped safely",
          "[agent][hostile][late]") {
  for (bool destroyed : {false, true}) {
    INFO("agent destroyed " << destroyed);
    {
      std::lock_guard lock(hostile::late_mu);
      hostile::late_promises.clear();
    }
    remora::Options o;
    o.rpc_timeout = std::chrono::seconds(20);
    auto g = start_group({"a", "b"}, o);
    auto pending = g[0]->rpc_async<&hostile::answered_later>("b", 1);
    auto to_self = g[1]->rpc_async<&hostile::answered_later>("b", 2);  // a call to self as well
    REQUIRE(remora::test::eventually([] {
      std::lock_guard lock(hostile::late_mu);
      return hostile::late_promises.size() == 2;
    }));
    for (auto& a : g) a->shutdown(/*graceful=*/false);
    CHECK_THROWS_AS(pending.get(), remora::Error);
    CHECK_THROWS_AS(to_self.get(), remora::Error);
    if (destroyed) g.clear();  // ~Agent: its limits, budgets, connections and io_context are gone
    // Under ASan a use of any of them here is a heap-use-after-free.
    std::lock_guard lock(hostile::late_mu);
    for (auto& p : hostile::late_promises) p.set_value(42);
    hostile::late_promises.clear();
  }
}

TEST_CASE("A reply that cannot be sent reaches its caller as an error, not as a timeout", "[agent][hostile]") {
  // handle_call's answer goes through `respond`; one that throws (as a transport that cannot stage
  // a tensor would) is followed by the error frame.
  std::vector<remora::wire::OutFrame> sent;
  int tries = 0;
  auto frame = remora::wire::read_frame(remora::test::flatten(remora::wire::encode_frame(
      remora::wire::FrameKind::call, 9, remora::function_identity<&hostile::add>.id, 2, 3)));
  remora::wire::Limits limits;
  remora::detail::IncomingCall call{std::move(frame), &limits, [&](remora::wire::OutFrame reply) {
                                      if (++tries == 1) throw std::runtime_error("cannot stage the reply");
                                      sent.push_back(std::move(reply));
                                    },
                                    nullptr, UINT32_MAX, nullptr};
  remora::detail::handle_call<&hostile::add>(std::move(call));
  REQUIRE(sent.size() == 1);
  CHECK(sent[0].header().kind == static_cast<std::uint8_t>(remora::wire::FrameKind::error));
  CHECK(sent[0].header().request_id == 9);
}

TEST_CASE("An I/O handler that throws is logged and dropped, and the loop goes on", "[agent][hostile][io]") {
  asio::io_context io;
  auto work = asio::make_work_guard(io);
  remora::detail::IoLoop loop(io, std::chrono::microseconds(200));
  std::atomic<bool> after{false};
  asio::post(io, [] { throw std::runtime_error("a handler's bug"); });
  asio::post(io, [&] {
    after = true;
    work.reset();
  });
  std::thread t([&] { loop.run(); });
  t.join();
  CHECK(after);
}

TEST_CASE("A bad MASTER_PORT and a rendezvous that times out say what is wrong, without a backtrace",
          "[agent][hostile][rendezvous]") {
  ::setenv("MASTER_ADDR", "127.0.0.1", 1);
  ::setenv("MASTER_PORT", "29x00", 1);
  CHECK_THROWS_WITH(remora::Agent("a", 0, 1, remora::Options{}),
                    Catch::Contains("MASTER_PORT is '29x00', which is not a port number"));
  ::unsetenv("MASTER_PORT");
  ::unsetenv("MASTER_ADDR");
  remora::Options o;
  o.store = c10::make_intrusive<c10d::HashStore>();
  o.init_timeout = std::chrono::milliseconds(200);
  try {
    remora::Agent a("first", 0, 3, o);
    FAIL("the rendezvous did not time out");
  } catch (const remora::Error& e) {
    const std::string what = e.what();
    CHECK_THAT(what, Catch::Contains("waiting for all 3 workers to join; joined: 'first' (rank 0); missing ranks: 1, 2"));
    CHECK_THAT(what, !Catch::Contains("frame #"));
  }
  // A rank other than 0 waits for the roster in the get of the TCPStore it opened with
  // init_timeout: as prompt, and the same account.
  c10d::TCPStoreOptions so;
  so.port = 0;
  so.isServer = true;
  so.waitWorkers = false;
  c10d::TCPStore server("127.0.0.1", so);  // (rank 1 does not host one)
  remora::Options t;
  t.init_method = "tcp://127.0.0.1:" + std::to_string(server.getPort());
  t.init_timeout = std::chrono::seconds(2);
  const auto started = std::chrono::steady_clock::now();
  try {
    remora::Agent b("second", 1, 2, t);
    FAIL("the rendezvous did not time out");
  } catch (const remora::Error& e) {
    CHECK_THAT(e.what(), Catch::Contains("waiting for all 2 workers to join; joined: 'second' (rank 1); missing ranks: 0"));
    CHECK_THAT(e.what(), !Catch::Contains("frame #"));
  }
  CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(20));  // not the store's default
  // A store nobody hosts: a remora::Error that names its address, not libtorch's backtrace.
  t.init_method = "tcp://127.0.0.1:1";
  t.init_timeout = std::chrono::milliseconds(300);
  CHECK_THROWS_WITH(remora::Agent("third", 1, 2, t),
                    Catch::Contains("cannot reach the rendezvous store at 127.0.0.1:1") && !Catch::Contains("frame #"));
}

TEST_CASE("Profile events are taken only from the worker that served the call they name", "[agent][hostile]") {
  remora::detail::RemoteProfiles profiles;
  bool completed = false;
  auto complete = profiles.expect(5, /*callee=*/1, [&](remora::wire::InFrame*, std::exception_ptr) { completed = true; });
  std::vector<c10::IValue> events{c10::IValue(1)};
  CHECK_FALSE(profiles.receive(/*from=*/2, 5, events));  // another worker: refused
  CHECK(profiles.receive(1, 5, events));                 // the callee: kept
  CHECK(profiles.receive(2, 77, events));                // a call nobody expects: dropped quietly
  complete(nullptr, std::make_exception_ptr(std::runtime_error("ended")));
  CHECK(completed);
}
