// TLS (Options::tls): a group whose TCP connections are encrypted and whose certificates are
// checked both ways; a worker with a certificate from another CA, or a peer that does not speak
// TLS, is closed before any frame runs; a group that disagrees on TLS does not start; unusable
// files are named at init.
#include <atomic>
#include <cstdlib>
#include <future>
#include <memory>
#include <thread>
#include <filesystem>
#include <string>

#include <asio.hpp>
#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <asio/ssl.hpp>
#include <catch2/catch.hpp>

#include "agent_support.hpp"
#include "raw_peer.hpp"
#include "remora/transport/tls_connection.hpp"

using remora::test::shutdown_group;
using remora::test::start_group;

namespace tls_fns {
torch::Tensor echo(torch::Tensor t) { return t; }
std::atomic<int> adds{0};
int add(int a, int b) {
  ++adds;
  return a + b;
}
}  // namespace tls_fns

#if REMORA_OPENSSL
namespace {

// Two certificate authorities and a worker certificate signed by each, made by the openssl tool
// (Debian's `openssl`, which scripts/bootstrap installs) in a fresh directory.
struct TestPki {
  std::filesystem::path dir;
  bool ok = false;
  TestPki() {
    dir = std::filesystem::temp_directory_path() / ("remora_tls_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    const std::string d = dir.string();
    auto run = [](const std::string& cmd) { return std::system((cmd + " >/dev/null 2>&1").c_str()) == 0; };
    auto ca = [&](const std::string& name) {
      return run("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=" +
                 name + " -keyout " + d + "/" + name + ".key -out " + d + "/" + name + ".pem");
    };
    auto node = [&](const std::string& name, const std::string& by) {
      return run("openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=" + name +
                 " -keyout " + d + "/" + name + ".key -out " + d + "/" + name + ".csr") &&
             run("openssl x509 -req -days 2 -in " + d + "/" + name + ".csr -CA " + d + "/" + by + ".pem -CAkey " + d +
                 "/" + by + ".key -CAcreateserial -out " + d + "/" + name + ".pem");
    };
    ok = ca("ca") && ca("other_ca") && node("node", "ca") && node("stranger", "other_ca");
  }
  // Not std::filesystem::remove_all: libtorch.so 2.11 carries its own copy of it, which the
  // test binary binds to, and that copy jumped to address 0 (seen on the GPU machine).
  ~TestPki() { [[maybe_unused]] int rc = std::system(("rm -rf '" + dir.string() + "'").c_str()); }
  remora::TlsOptions options(const std::string& cert, const std::string& ca = "ca") const {
    const std::string d = dir.string() + "/";
    return remora::TlsOptions{.certificate = d + cert + ".pem", .private_key = d + cert + ".key", .ca = d + ca + ".pem"};
  }
};

remora::Options tls_options(const remora::TlsOptions& tls) {
  remora::Options o;
  o.transport = remora::Transport::tcp;  // TLS is for TCP; the local transport stays as it is
  o.tls = tls;
  o.rpc_timeout = std::chrono::seconds(10);
  return o;
}

}  // namespace

TEST_CASE("TLS: calls and large tensors over encrypted, mutually checked connections", "[agent][tls]") {
  TestPki pki;
  if (!pki.ok) {
    WARN("skipped: the openssl tool is not available to make test certificates");
    return;
  }
  for (bool with_secret : {false, true}) {
    INFO("with a secret: " << with_secret);
    auto o = tls_options(pki.options("node"));
    if (with_secret) o.secret = "tls-and-secret";
    auto g = start_group({"w0", "w1"}, o);
    CHECK(g[0]->rpc_sync<&tls_fns::add>("w1", 40, 2) == 42);
    CHECK(g[0]->transport_to("w1") == "tls");
    // 16 MiB: many TLS records, the large segment read straight into the tensor.
    auto big = torch::randn({4 << 20});
    CHECK(torch::equal(g[0]->rpc_sync<&tls_fns::echo>("w1", big), big));
    // Both ways, and many small calls in flight at once.
    CHECK(g[1]->rpc_sync<&tls_fns::add>("w0", 1, 2) == 3);
    std::vector<remora::Future<int>> calls;
    for (int i = 0; i < 200; ++i) calls.push_back(g[0]->rpc_async<&tls_fns::add>("w1", i, 1));
    for (int i = 0; i < 200; ++i) CHECK(calls[i].get() == i + 1);
    shutdown_group(g);
  }
}

TEST_CASE("TLS: a certificate from another CA, or a peer without TLS, gets no frame through", "[agent][tls]") {
  TestPki pki;
  if (!pki.ok) {
    WARN("skipped: the openssl tool is not available to make test certificates");
    return;
  }
  auto o = tls_options(pki.options("node"));
  o.rpc_timeout = std::chrono::seconds(5);
  auto g = start_group({"w0", "w1"}, o);
  const auto port = g[1]->listen_port();
  asio::io_context io;
  {
    // Plain TCP that says hello and calls: the worker waits for a TLS ClientHello, gets garbage,
    // and closes the connection.
    asio::ip::tcp::socket s(io);
    s.connect({asio::ip::make_address("127.0.0.1"), port});
    asio::write(s, asio::buffer(remora::test::hello_bytes(0, "w0", 1)));
    CHECK(remora::test::closed_within(s.native_handle(), std::chrono::seconds(5)));
  }
  {
    // TLS with a certificate the group's CA did not sign: refused in the TLS handshake.
    asio::ssl::context ctx(asio::ssl::context::tls);
    ctx.use_certificate_chain_file(pki.options("stranger").certificate);
    ctx.use_private_key_file(pki.options("stranger").private_key, asio::ssl::context::pem);
    ctx.load_verify_file((pki.dir / "ca.pem").string());
    ctx.set_verify_mode(asio::ssl::verify_peer);
    asio::ssl::stream<asio::ip::tcp::socket> s(io, ctx);
    s.lowest_layer().connect({asio::ip::make_address("127.0.0.1"), port});
    std::error_code ec;
    s.handshake(asio::ssl::stream_base::client, ec);
    if (!ec) {  // TLS 1.3: the server's refusal arrives after the client's side of the handshake
      asio::write(s, asio::buffer(remora::test::hello_bytes(0, "w0", 1)), ec);
      std::array<char, 16> buf;
      s.read_some(asio::buffer(buf), ec);
    }
    CHECK(ec);
  }
  {
    // Without any certificate: refused too (the worker requires one).
    asio::ssl::context ctx(asio::ssl::context::tls);
    ctx.load_verify_file((pki.dir / "ca.pem").string());
    asio::ssl::stream<asio::ip::tcp::socket> s(io, ctx);
    s.lowest_layer().connect({asio::ip::make_address("127.0.0.1"), port});
    std::error_code ec;
    s.handshake(asio::ssl::stream_base::client, ec);
    if (!ec) {
      asio::write(s, asio::buffer(remora::test::hello_bytes(0, "w0", 1)), ec);
      std::array<char, 16> buf;
      s.read_some(asio::buffer(buf), ec);
    }
    CHECK(ec);
  }
  // The group itself is unharmed.
  CHECK(g[0]->rpc_sync<&tls_fns::add>("w1", 2, 3) == 5);
  shutdown_group(g);
}

TEST_CASE("TLS: a worker whose certificate the others do not trust cannot be reached", "[agent][tls]") {
  TestPki pki;
  if (!pki.ok) {
    WARN("skipped: the openssl tool is not available to make test certificates");
    return;
  }
  // w1 presents a certificate from another CA (and trusts ours): every connection between them
  // fails its TLS handshake, and calls fail with WorkerLost, not a hang.
  auto base = tls_options(pki.options("node"));
  base.rpc_timeout = std::chrono::seconds(5);
  base.store = c10::make_intrusive<c10d::HashStore>();
  auto odd = base;
  odd.tls = pki.options("stranger");
  std::unique_ptr<remora::Agent> w0, w1;
  std::thread t([&] { w1 = std::make_unique<remora::Agent>("w1", 1, 2, odd); });
  w0 = std::make_unique<remora::Agent>("w0", 0, 2, base);
  t.join();
  try {
    w0->rpc_sync<&tls_fns::add>("w1", 1, 1);
    FAIL("no error");
  } catch (const remora::WorkerLost& e) {
    CHECK_THAT(e.what(), Catch::Contains("TLS handshake failed"));
  }
  w0->shutdown(false);
  w1->shutdown(false);
}

TEST_CASE("TLS: a group that disagrees on TLS does not start, and unusable files are named", "[agent][tls]") {
  TestPki pki;
  if (!pki.ok) {
    WARN("skipped: the openssl tool is not available to make test certificates");
    return;
  }
  auto with = tls_options(pki.options("node"));
  with.store = c10::make_intrusive<c10d::HashStore>();
  with.init_timeout = std::chrono::seconds(10);
  auto without = with;
  without.tls.reset();
  std::string error0, error1;
  std::thread t([&] {
    try {
      remora::Agent a("w1", 1, 2, without);
    } catch (const remora::Error& e) {
      error1 = e.what();
    }
  });
  try {
    remora::Agent a("w0", 0, 2, with);
  } catch (const remora::Error& e) {
    error0 = e.what();
  }
  t.join();
  CHECK_THAT(error0, Catch::Contains("worker 'w0' uses TLS (Options::tls) and 'w1' does not"));
  CHECK_THAT(error1, Catch::Contains("worker 'w0' uses TLS (Options::tls) and 'w1' does not"));

  auto missing = tls_options(pki.options("node"));
  missing.tls->private_key = "/nonexistent/node.key";
  CHECK_THROWS_WITH(remora::Agent("w0", 0, 1, [&] {
                      missing.store = c10::make_intrusive<c10d::HashStore>();
                      return missing;
                    }()),
                    Catch::Contains("TlsOptions::private_key '/nonexistent/node.key' cannot be used"));
}
namespace {
// A relay in the middle: it holds a certificate of the group's CA (not the secret), accepts one
// TLS connection, opens another to `to`, and passes the bytes between the two sessions.
struct TlsRelay {
  asio::io_context io;
  asio::ip::tcp::acceptor acceptor{io, {asio::ip::make_address("127.0.0.1"), 0}};
  std::shared_ptr<asio::ssl::context> tls;
  std::thread thread;

  TlsRelay(const remora::TlsOptions& cert, std::uint16_t to)
      : tls(remora::transport::make_tls_context(cert.certificate, cert.private_key, cert.ca)) {
    thread = std::thread([this, to] {
      std::error_code ec;
      asio::ssl::stream<asio::ip::tcp::socket> in(io, *tls), out(io, *tls);
      acceptor.accept(in.lowest_layer(), ec);
      if (!ec) in.handshake(asio::ssl::stream_base::server, ec);
      if (!ec) out.lowest_layer().connect({asio::ip::make_address("127.0.0.1"), to}, ec);
      if (!ec) out.handshake(asio::ssl::stream_base::client, ec);
      if (ec) return;
      std::array<char, 16384> up{}, down{};
      std::function<void(asio::ssl::stream<asio::ip::tcp::socket>&, asio::ssl::stream<asio::ip::tcp::socket>&,
                         std::array<char, 16384>&)>
          pump = [&](auto& from, auto& into, auto& buf) {
            from.async_read_some(asio::buffer(buf), [&](std::error_code e, std::size_t n) {
              if (e) return io.stop();
              asio::async_write(into, asio::buffer(buf.data(), n), [&](std::error_code e2, std::size_t) {
                if (e2) return io.stop();
                pump(from, into, buf);
              });
            });
          };
      pump(in, out, up);
      pump(out, in, down);
      io.run_for(std::chrono::seconds(10));
    });
  }
  std::uint16_t port() const { return acceptor.local_endpoint().port(); }
  ~TlsRelay() {
    io.stop();
    thread.join();
  }
};
}  // namespace

TEST_CASE("TLS with a secret: the proofs are bound to the TLS session, so a relay between two sessions fails",
          "[agent][tls][auth]") {
  TestPki pki;
  if (!pki.ok) {
    WARN("skipped: the openssl tool is not available to make test certificates");
    return;
  }
  auto o = tls_options(pki.options("node"));
  o.secret = "s3cret";
  auto g = start_group({"a", "b"}, o);
  tls_fns::adds = 0;
  CHECK(g[0]->rpc_sync<&tls_fns::add>("b", 1, 2) == 3);  // the group itself: bound proofs agree
  const auto cert = pki.options("node");
  // Worker a's side of a connection, dialed to `port` as a dials b, sending a hello and a call.
  auto dial = [&](std::uint16_t port) {
    asio::io_context io;
    std::promise<std::string> closed;
    auto conn = remora::transport::TlsConnection::connect(
        io.get_executor(), {asio::ip::make_address("127.0.0.1"), port},
        remora::transport::make_tls_context(cert.certificate, cert.private_key, cert.ca), remora::wire::Limits{},
        [](const auto&, remora::wire::InFrame&&) {}, [&](const auto&, const std::string& why) { closed.set_value(why); },
        remora::transport::AuthOptions{std::make_shared<const std::string>("s3cret"), "a", "b", std::chrono::seconds(5)},
        std::chrono::seconds(5));
    remora::detail::Hello hello;
    hello.rank = 0;
    hello.name = "a";
    hello.target = 1;
    conn->send(remora::detail::encode_hello(hello));
    conn->send(remora::wire::encode_frame(remora::wire::FrameKind::call, 7,
                                          remora::function_identity<&tls_fns::add>.id, 2, 3));
    auto f = closed.get_future();
    io.run_for(std::chrono::seconds(3));
    std::string why = f.wait_for(std::chrono::seconds(0)) == std::future_status::ready ? f.get() : "";
    conn->close("done");
    io.run_for(std::chrono::milliseconds(100));
    return why;
  };
  {
    TlsRelay relay(cert, g[1]->listen_port());
    CHECK_THAT(dial(relay.port()), Catch::Contains("authentication failed"));
  }
  CHECK(tls_fns::adds == 1);
  // The same dialer straight to b authenticates, and its call runs.
  CHECK(dial(g[1]->listen_port()).find("authentication failed") == std::string::npos);
  CHECK(remora::test::eventually([] { return tls_fns::adds == 2; }));
  shutdown_group(g);
}
TEST_CASE("An elastic group under TLS and a secret: a worker that joins again authenticates as any other",
          "[elastic][tls]") {
  TestPki pki;
  if (!pki.ok) {
    WARN("skipped: the openssl tool is not available to make test certificates");
    return;
  }
  auto o = tls_options(pki.options("node"));
  o.secret = "elastic-secret";
  o.elastic = true;
  o.store = c10::make_intrusive<c10d::HashStore>();
  auto a = std::make_unique<remora::Agent>("a", o);
  auto b = std::make_unique<remora::Agent>("b", o);
  CHECK(a->rpc_sync<&tls_fns::add>("b", 1, 2) == 3);
  CHECK(a->transport_to("b") == "tls");
  const auto first = a->get_worker_info("b").incarnation;
  b->shutdown(false);  // dies
  REQUIRE(remora::test::eventually([&] { return a->get_worker_infos().size() == 1; }));
  b = std::make_unique<remora::Agent>("b", o);  // started again under its name
  CHECK(a->get_worker_info("b").incarnation > first);
  CHECK(a->rpc_sync<&tls_fns::add>("b", 2, 3) == 5);
  CHECK(b->rpc_sync<&tls_fns::add>("a", 3, 4) == 7);
  CHECK(b->transport_to("a") == "tls");
  // A joiner with another secret: every member refuses it, so it does not join.
  auto wrong = o;
  wrong.secret = "not-the-secret";
  CHECK_THROWS_AS(remora::Agent("c", wrong), remora::Error);
  CHECK(a->get_worker_infos().size() == 2);
  b->shutdown();
  a->shutdown();
}

#endif  // REMORA_OPENSSL
