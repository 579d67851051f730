// TLS (Options::tls): a group whose TCP connections are encrypted and whose certificates are
// checked both ways; a worker with a certificate from another CA, or a peer that does not speak
// TLS, is closed before any frame runs; a group that disagrees on TLS does not start; unusable
// files are named at init.
#include <cstdlib>
#include <filesystem>
#include <string>

#include <asio.hpp>
#include <asio/ssl.hpp>
#include <catch2/catch.hpp>

#include "agent_support.hpp"
#include "raw_peer.hpp"

using remora::test::shutdown_group;
using remora::test::start_group;

namespace tls_fns {
torch::Tensor echo(torch::Tensor t) { return t; }
int add(int a, int b) { return a + b; }
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
    asio::write(s, asio::buffer(remora::test::hello_bytes(0, "w0")));
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
      asio::write(s, asio::buffer(remora::test::hello_bytes(0, "w0")), ec);
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
      asio::write(s, asio::buffer(remora::test::hello_bytes(0, "w0")), ec);
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
#endif  // REMORA_OPENSSL
