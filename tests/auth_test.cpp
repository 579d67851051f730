// Groups with a secret (Options::secret): calls work over both transports; a process without the
// secret, with a wrong one, or one that proves one name and claims another is closed before any
// of its frames runs; a silent one is closed at the handshake's deadline; a group whose workers
// disagree on having a secret does not start; secret_from_env reads the environment and files.
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <thread>
#include <vector>

#include <asio.hpp>
#include <catch2/catch.hpp>

#include "agent_support.hpp"
#include "raw_peer.hpp"
#include "remora/transport/detail/handshake.hpp"

using remora::test::shutdown_group;
using remora::test::start_group;

namespace auth {
std::atomic<int> calls{0};
int add(int a, int b) {
  ++calls;
  return a + b;
}
}  // namespace auth

#if REMORA_OPENSSL
namespace {
namespace td = remora::transport::detail;

remora::Options with_secret(const std::string& secret) {
  remora::Options o;
  o.secret = secret;
  return o;
}
// The frames a worker sends first on a connection it dialed: `hello` as `name`, then a call of
// auth::add(2, 3).
std::vector<std::byte> hello_then_call(std::uint32_t rank, const std::string& name) {
  auto out = remora::test::hello_bytes(rank, name);
  auto call = remora::test::flatten(remora::wire::encode_frame(remora::wire::FrameKind::call, 7,
                                                  remora::function_identity<&auth::add>.id, 2, 3));
  out.insert(out.end(), call.begin(), call.end());
  return out;
}
bool closed_by_peer(asio::ip::tcp::socket& s, std::chrono::milliseconds within) {
  return remora::test::closed_within(s.native_handle(), within);
}
// A client that runs the handshake as worker `name` with `secret`, blocking. Returns whether the
// worker accepted its proof far enough to leave the connection open for frames.
std::unique_ptr<asio::ip::tcp::socket> handshake_as(asio::io_context& io, std::uint16_t port, const std::string& name,
                                                    const std::string& secret) {
  auto s = std::make_unique<asio::ip::tcp::socket>(io);
  s->connect({asio::ip::make_address("127.0.0.1"), port});
  td::Handshake hs({std::make_shared<const std::string>(secret), name, "", std::chrono::seconds(5)}, true);
  asio::write(*s, asio::buffer(hs.greeting()));
  std::vector<std::byte> head(td::kGreetingFixed);
  asio::read(*s, asio::buffer(head));
  std::size_t n = 0;
  REQUIRE(!hs.take_greeting_head(head.data(), &n));
  std::vector<std::byte> peer(n);
  asio::read(*s, asio::buffer(peer));
  REQUIRE(!hs.take_greeting_name(peer.data(), n));
  auto proof = hs.proof();
  asio::write(*s, asio::buffer(proof));
  return s;
}
}  // namespace

TEST_CASE("A group with a secret calls as usual, over TCP and the local transport", "[agent][auth]") {
  for (auto transport : {remora::Transport::tcp, remora::Transport::automatic}) {
    auto o = with_secret("correct horse battery staple");
    o.transport = transport;
    auto g = start_group({"a", "b", "c"}, o);
    CHECK(g[0]->rpc_sync<&auth::add>("b", 2, 3) == 5);
    CHECK(g[1]->rpc_sync<&auth::add>("c", 4, 5) == 9);
    CHECK(g[2]->rpc_async<&auth::add>("a", 1, 1).get() == 2);
    shutdown_group(g);
  }
}

TEST_CASE("Without the secret, with a wrong one, or claiming another name, nothing a stranger sends runs", "[agent][auth]") {
  auto g = start_group({"a", "b"}, with_secret("s3cret"));
  const auto port = g[1]->listen_port();
  asio::io_context io;
  auth::calls = 0;
  {
    // No handshake at all: a hello as rank 0 and a call, as an attacker on the same host would.
    asio::ip::tcp::socket s(io);
    s.connect({asio::ip::make_address("127.0.0.1"), port});
    asio::write(s, asio::buffer(hello_then_call(0, "a")));
    CHECK(closed_by_peer(s, std::chrono::seconds(5)));
  }
  {
    // The handshake with a wrong secret: the worker refuses the proof.
    auto s = handshake_as(io, port, "a", "not the secret");
    asio::write(*s, asio::buffer(hello_then_call(0, "a")));
    CHECK(closed_by_peer(*s, std::chrono::seconds(5)));
  }
  {
    // The right secret, as worker 'b' ... then a hello claiming to be 'a': refused as well.
    auto s = handshake_as(io, port, "b", "s3cret");
    asio::write(*s, asio::buffer(hello_then_call(0, "a")));
    CHECK(closed_by_peer(*s, std::chrono::seconds(5)));
  }
  CHECK(auth::calls == 0);
  // The real peer was never cut off.
  CHECK(g[0]->rpc_sync<&auth::add>("b", 3, 4) == 7);
  CHECK(auth::calls == 1);
  {
    // And the right secret with the name it proved: its call runs (the handshake is all it takes).
    auto s = handshake_as(io, port, "a", "s3cret");
    asio::write(*s, asio::buffer(hello_then_call(0, "a")));
    remora::test::eventually([] { return auth::calls == 2; });
    CHECK(auth::calls == 2);
  }
  shutdown_group(g);
}

TEST_CASE("A connection that never finishes the handshake is closed at its deadline", "[agent][auth]") {
  auto o = with_secret("s3cret");
  o.hello_timeout = std::chrono::milliseconds(200);
  auto g = start_group({"a", "b"}, o);
  asio::io_context io;
  asio::ip::tcp::socket s(io);
  s.connect({asio::ip::make_address("127.0.0.1"), g[1]->listen_port()});
  const auto t0 = std::chrono::steady_clock::now();
  CHECK(closed_by_peer(s, std::chrono::seconds(5)));
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(4));
  CHECK(g[0]->rpc_sync<&auth::add>("b", 1, 2) == 3);
  shutdown_group(g);
}

TEST_CASE("Workers that disagree on the secret do not start: none on one, or another one", "[agent][auth]") {
  remora::Options with = with_secret("s3cret"), without;
  with.store = without.store = c10::make_intrusive<c10d::HashStore>();
  with.init_timeout = without.init_timeout = std::chrono::seconds(20);
  std::string errors[2];
  std::thread t0([&] {
    try {
      remora::Agent a("a", 0, 2, with);
    } catch (const remora::Error& e) {
      errors[0] = e.what();
    }
  });
  std::thread t1([&] {
    try {
      remora::Agent b("b", 1, 2, without);
    } catch (const remora::Error& e) {
      errors[1] = e.what();
    }
  });
  t0.join();
  t1.join();
  for (const auto& e : errors) CHECK_THAT(e, Catch::Contains("'a' has a secret") && Catch::Contains("'b' has none"));

  // Both with a secret, not the same one: neither starts either, and both say why.
  remora::Options other = with_secret("another");
  with.store = other.store = c10::make_intrusive<c10d::HashStore>();
  other.init_timeout = with.init_timeout;
  errors[0].clear();
  errors[1].clear();
  std::thread ta([&] {
    try {
      remora::Agent a("a", 0, 2, with);
    } catch (const remora::Error& e) {
      errors[0] = e.what();
    }
  });
  try {
    remora::Agent b("b", 1, 2, other);
  } catch (const remora::Error& e) {
    errors[1] = e.what();
  }
  ta.join();
  for (const auto& e : errors)
    CHECK_THAT(e, Catch::Contains("worker 'b' could not authenticate with worker 'a'") &&
                      Catch::Contains("authentication failed") && Catch::Contains("needs the same secret"));
}
#endif

TEST_CASE("secret_from_env reads REMORA_SECRET, else the file REMORA_SECRET_FILE names", "[agent][auth]") {
  ::unsetenv("REMORA_SECRET");
  ::unsetenv("REMORA_SECRET_FILE");
  CHECK(remora::secret_from_env().empty());
  ::setenv("REMORA_SECRET", "from the environment", 1);
  CHECK(remora::secret_from_env() == "from the environment");
  ::unsetenv("REMORA_SECRET");
  const std::string file = "/tmp/remora_secret_" + std::to_string(::getpid());
  std::ofstream(file) << "from a file\n";
  ::setenv("REMORA_SECRET_FILE", file.c_str(), 1);
  CHECK(remora::secret_from_env() == "from a file");
  std::remove(file.c_str());
  CHECK_THROWS_WITH(remora::secret_from_env(), Catch::Contains(file));
  ::unsetenv("REMORA_SECRET_FILE");
#if !REMORA_OPENSSL
  remora::Options o;
  o.secret = "s3cret";
  o.store = c10::make_intrusive<c10d::HashStore>();
  CHECK_THROWS_WITH(remora::Agent("a", 0, 1, o), Catch::Contains("needs OpenSSL"));
#endif
}
