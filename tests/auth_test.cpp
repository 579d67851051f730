// Groups with a secret (Options::secret): calls work over both transports; a process without the
// secret, with a wrong one, or one that proves one name and claims another is closed before any
// of its frames runs; a silent one is closed at the handshake's deadline; a group whose workers
// disagree on having a secret does not start; secret_from_env reads the environment and files.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <thread>
#include <future>
#include <vector>

#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <asio.hpp>
#include <catch2/catch.hpp>

#include "agent_support.hpp"
#include "raw_peer.hpp"
#include "remora/transport/detail/handshake.hpp"
#include "remora/transport/stream_connection.hpp"

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
  auto out = remora::test::hello_bytes(rank, name, 1);
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
    CHECK(g[0]->options().secret.empty());  // the agent hands out no secret
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

namespace {
// The address of the abstract unix socket `at` ("@name", as DebugInfo::local_socket gives).
struct AbstractAddress {
  sockaddr_un addr{};
  socklen_t len = 0;
  explicit AbstractAddress(const std::string& at) {
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path + 1, at.data() + 1, at.size() - 1);
    len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + at.size());
  }
};
// A unix socket connected to `to`; -1 if it cannot connect. Only system calls (it also runs in a
// forked child).
int connect_abstract(const AbstractAddress& to) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&to.addr), to.len) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}
// What a same-host worker sends first on a connection it dialed (after the handshake, if any):
// the local preface (no shared memory), then hello_then_call.
std::vector<std::byte> local_hello_then_call(std::uint32_t rank, const std::string& name) {
  remora::transport::detail::LocalPreface preface;
  std::vector<std::byte> out(sizeof preface);
  std::memcpy(out.data(), &preface, sizeof preface);
  auto rest = hello_then_call(rank, name);
  out.insert(out.end(), rest.begin(), rest.end());
  return out;
}
bool write_all(int fd, const std::vector<std::byte>& bytes) {  // no SIGPIPE when the peer closed
  std::size_t done = 0;
  while (done < bytes.size()) {
    const auto n = ::send(fd, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
    if (n <= 0) return false;
    done += static_cast<std::size_t>(n);
  }
  return true;
}
// Runs `child` in a forked process as user `uid` (only raw system calls in it: the test process
// has threads); returns its exit status, or -1 when this process cannot change users.
template <class F>
int as_other_user(uid_t uid, F&& child) {
  if (::geteuid() != 0) return -1;
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (::setgid(uid) != 0 || ::setuid(uid) != 0) ::_exit(99);
    ::_exit(child());
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 98;
}
}  // namespace

TEST_CASE("The local transport runs the secret's handshake and admits only this user's processes",
          "[agent][auth][local]") {
  auth::calls = 0;
  SECTION("with a secret: the group calls over local links, a stranger without the proof runs nothing") {
    auto o = with_secret("s3cret");
    o.transport = remora::Transport::local;
    auto g = start_group({"a", "b"}, o);
    CHECK(g[0]->rpc_sync<&auth::add>("b", 2, 3) == 5);
    CHECK(g[1]->rpc_sync<&auth::add>("a", 2, 3) == 5);
    CHECK(g[0]->transport_to("b") == "local");
    CHECK(g[1]->transport_to("a") == "local");
    const auto at = g[1]->debug_info().local_socket;
    REQUIRE(at.size() > 1);
    const int fd = connect_abstract(AbstractAddress(at));
    REQUIRE(fd >= 0);
    CHECK(write_all(fd, local_hello_then_call(0, "a")));
    CHECK(remora::test::closed_within(fd, std::chrono::seconds(5)));
    ::close(fd);
    CHECK(auth::calls == 2);
    shutdown_group(g);
  }
  SECTION("without a secret: another user's process is refused before it is read") {
    remora::Options o;
    o.transport = remora::Transport::local;
    auto g = start_group({"a", "b"}, o);
    const AbstractAddress at(g[1]->debug_info().local_socket);
    const auto bytes = local_hello_then_call(0, "a");
    const int status = as_other_user(65534, [&] {
      const int fd = connect_abstract(at);
      if (fd < 0) return 2;
      write_all(fd, bytes);
      return remora::test::closed_within(fd, std::chrono::seconds(5)) ? 0 : 3;
    });
    if (status == -1) {
      WARN("not root: another user's process cannot be made here");
    } else {
      CHECK(status == 0);
      CHECK(auth::calls == 0);
    }
    // This user's processes (the test itself) are served as before.
    const int fd = connect_abstract(at);
    REQUIRE(fd >= 0);
    CHECK(write_all(fd, bytes));
    CHECK(remora::test::eventually([] { return auth::calls == 1; }));
    ::close(fd);
    CHECK(g[0]->rpc_sync<&auth::add>("b", 1, 1) == 2);
    shutdown_group(g);
  }
}

TEST_CASE("A dialer that meets a fake acceptor on the local transport hands it nothing", "[transport][auth][local]") {
  using remora::transport::LocalConnection;
  asio::io_context io;
  const std::string name = "remora-fake-" + std::to_string(::getpid());
  asio::local::stream_protocol::endpoint ep(std::string(1, '\0') + name);
  asio::local::stream_protocol::acceptor fake(io, ep);
  std::promise<std::string> closed;
  auto dial = [&] {
    remora::transport::AuthOptions auth{std::make_shared<const std::string>("s3cret"), "a", "b", std::chrono::seconds(5)};
    auto conn = LocalConnection::connect(
        io.get_executor(), ep, remora::wire::Limits{}, [](const auto&, remora::wire::InFrame&&) {},
        [&](const auto&, const std::string& why) { closed.set_value(why); }, {}, auth);
    // A frame queued before the connection is up: it must never reach the fake.
    conn->send(remora::wire::encode_frame(remora::wire::FrameKind::call, 7, remora::function_identity<&auth::add>.id, 2, 3));
    return conn;
  };
  auto conn = dial();
  asio::local::stream_protocol::socket s(io);
  std::thread runner([&] { io.run_for(std::chrono::seconds(10)); });
  fake.accept(s);
  // The fake greets as 'b' and answers the proof with noise.
  td::Handshake hs({std::make_shared<const std::string>("a guess"), "b", "", std::chrono::seconds(5)}, false);
  asio::write(s, asio::buffer(hs.greeting()));
  std::vector<std::byte> noise(td::kProofBytes, std::byte{0x5A});
  asio::write(s, asio::buffer(noise));
  std::vector<std::byte> got;
  std::error_code ec;
  for (;;) {
    std::byte buf[4096];
    const auto n = s.read_some(asio::buffer(buf), ec);
    if (ec) break;
    got.insert(got.end(), buf, buf + n);
  }
  auto f = closed.get_future();
  CHECK(f.wait_for(std::chrono::seconds(5)) == std::future_status::ready);
  CHECK_THAT(f.get(), Catch::Contains("authentication failed"));
  // Its greeting and its proof, nothing more: no frame.
  CHECK(got.size() == td::kGreetingFixed + 1 + td::kProofBytes);
  conn.reset();
  io.stop();
  runner.join();
}

TEST_CASE("A dialer does not talk to another user's process behind a local socket name", "[transport][local]") {
  using remora::transport::LocalConnection;
  if (::geteuid() != 0) {
    WARN("not root: another user's process cannot be made here");
    return;
  }
  const std::string name = "remora-squat-" + std::to_string(::getpid());
  int ready[2];
  REQUIRE(::pipe(ready) == 0);
  const pid_t pid = ::fork();
  if (pid == 0) {  // another user listens on the name, accepts, and waits to be read to
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(99);
    const int lfd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path + 1, name.data(), name.size());
    const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
    if (::bind(lfd, reinterpret_cast<sockaddr*>(&addr), len) != 0 || ::listen(lfd, 1) != 0) ::_exit(2);
    (void)!::write(ready[1], "r", 1);
    const int fd = ::accept(lfd, nullptr, nullptr);
    char buf[4096];
    std::size_t total = 0;
    for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) total += static_cast<std::size_t>(n);
    ::_exit(total == 0 ? 0 : 3);  // read nothing before the dialer closed
  }
  char r;
  REQUIRE(::read(ready[0], &r, 1) == 1);
  asio::io_context io;
  std::promise<std::string> closed;
  auto conn = LocalConnection::connect(
      io.get_executor(), asio::local::stream_protocol::endpoint(std::string(1, '\0') + name), remora::wire::Limits{},
      [](const auto&, remora::wire::InFrame&&) {}, [&](const auto&, const std::string& why) { closed.set_value(why); });
  conn->send(remora::wire::encode_frame(remora::wire::FrameKind::call, 7, remora::function_identity<&auth::add>.id, 2, 3));
  auto f = closed.get_future();
  for (int i = 0; i < 500 && f.wait_for(std::chrono::seconds(0)) != std::future_status::ready; ++i)
    io.run_for(std::chrono::milliseconds(10));
  REQUIRE(f.wait_for(std::chrono::seconds(0)) == std::future_status::ready);
  CHECK_THAT(f.get(), Catch::Contains("runs as uid 65534"));
  conn.reset();
  int status = 0;
  ::waitpid(pid, &status, 0);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  ::close(ready[0]);
  ::close(ready[1]);
}
#endif

using remora::test::stderr_of;

TEST_CASE("A worker listening beyond loopback without a secret or TLS warns once that anyone can call it",
          "[agent][auth]") {
  remora::Options o;
  o.listen_host = "0.0.0.0";
  o.advertise_host = "127.0.0.1";
  o.transport = remora::Transport::tcp;
  const auto open = stderr_of([&] {
    auto g = start_group({"a", "b"}, o);
    shutdown_group(g);
  });
  CHECK_THAT(open, Catch::Contains("worker 'a' listens on 0.0.0.0 without Options::secret or Options::tls: anyone who "
                                   "can reach that port can call every function it exposes"));
  auto count = [](const std::string& text, const std::string& what) {
    std::size_t n = 0;
    for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
    return n;
  };
  CHECK(count(open, "worker 'a' listens on 0.0.0.0 without") == 1);  // once, at init_rpc
  CHECK(count(open, "worker 'b' listens on 0.0.0.0 without") == 1);
  const auto loopback = stderr_of([&] {
    auto g = start_group({"a", "b"});
    shutdown_group(g);
  });
  CHECK_THAT(loopback, !Catch::Contains("without Options::secret"));
#if REMORA_OPENSSL
  o.secret = "s3cret";
  const auto with_secret = stderr_of([&] {
    auto g = start_group({"a", "b"}, o);
    shutdown_group(g);
  });
  CHECK_THAT(with_secret, !Catch::Contains("without Options::secret"));
#endif
}

TEST_CASE("Secret_from_env reads REMORA_SECRET, else the file REMORA_SECRET_FILE names", "[agent][auth]") {
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
