// Real processes: the test binary re-executed in a role. Rendezvous over a c10d TCPStore,
// a peer killed mid-call, and a torchrun launch.
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include <asio.hpp>
#include <catch2/catch.hpp>

#include "expose/expose_fns.hpp"
#include "remora/dynamic.hpp"
#include "worker_lib/ops.hpp"
#include "remora/agent/rpc.hpp"
#include "remora/rref/remote.hpp"
#include "process_support.hpp"
#include "roles.hpp"

using namespace std::chrono_literals;

namespace procfns {
int add(int a, int b) { return a + b; }
torch::Tensor plus_one(torch::Tensor t) { return t + 1; }
int my_pid() { return static_cast<int>(::getpid()); }
int sleepy(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return ms;
}
}  // namespace procfns

namespace {
using remora::test::host_store;
using remora::test::hosted_options;
using remora::test::spawn_self;
using remora::test::tcp_options;
using remora::test::wait_exit;

// Rank 1: joins, serves until the group shuts down gracefully.
int serve_until_shutdown(const std::vector<std::string>& args) {
  remora::Agent agent("server", 1, 2, tcp_options(static_cast<std::uint16_t>(std::stoi(args.at(0)))));
  agent.shutdown();
  return 0;
}
// Rank 1: joins and serves until killed.
int serve_until_killed(const std::vector<std::string>& args) {
  remora::Agent agent("server", 1, 2, tcp_options(static_cast<std::uint16_t>(std::stoi(args.at(0)))));
  std::this_thread::sleep_for(120s);
  return 1;
}
// Launched by torchrun: rank and world size from the environment, store from MASTER_ADDR/PORT.
int torchrun_pair(const std::vector<std::string>&) {
  int rank = std::stoi(std::getenv("RANK"));
  auto& agent = remora::init_rpc("worker" + std::to_string(rank));
  int ok = 0;
  if (rank == 0) ok = remora::rpc_sync<&procfns::add>("worker1", 40, 2) == 42 ? 0 : 3;
  remora::shutdown();
  (void)agent;
  return ok;
}
// Node 0 of a torchrun job whose node 1 runs stock workers: calls them by name, in a group
// authenticated with the secret the environment gives every process.
int torchrun_trainer(const std::vector<std::string>&) {
  remora::Options o;
  o.secret = remora::secret_from_env();
  remora::init_rpc("trainer", std::stoi(std::getenv("RANK")), std::stoi(std::getenv("WORLD_SIZE")), o);
  auto x = torch::ones({2});
  int ok = 0;
  for (const char* worker : {"stock0", "stock1"})
    if (!torch::equal(remora::rpc_sync<torch::Tensor>(worker, "aten::mul", x, 3), x * 3)) ok = 3;
  remora::shutdown();
  return ok;
}
// Rank 1 over the local transport (started in a PID namespace of its own).
int serve_local_until_shutdown(const std::vector<std::string>& args) {
  auto o = tcp_options(static_cast<std::uint16_t>(std::stoi(args.at(0))));
  o.transport = remora::Transport::local;
  remora::Agent agent("server", 1, 2, o);
  agent.shutdown();
  return 0;
}
remora::test::RegisterRole r5("serve_local_until_shutdown", &serve_local_until_shutdown);
remora::test::RegisterRole r1("serve_until_shutdown", &serve_until_shutdown);
remora::test::RegisterRole r4("torchrun_trainer", &torchrun_trainer);
remora::test::RegisterRole r2("serve_until_killed", &serve_until_killed);
remora::test::RegisterRole r3("torchrun_pair", &torchrun_pair);
}  // namespace

TEST_CASE("Two processes rendezvous over a TCPStore and shut down together", "[process]") {
  auto hosted = host_store();
  pid_t child = spawn_self({"--role", "serve_until_shutdown", std::to_string(hosted.port)});
  {
    remora::Agent client("client", 0, 2, hosted_options(hosted));
    CHECK(client.rpc_sync<&procfns::add>("server", 2, 3) == 5);
    auto slow = client.rpc_async<&procfns::sleepy>("server", 200);
    client.shutdown();  // graceful: the slow call completes first
    CHECK(slow.get() == 200);
  }
  CHECK(wait_exit(child) == 0);
}

TEST_CASE("A killed peer fails pending and later calls with WorkerLost, promptly", "[process]") {
  auto hosted = host_store();
  pid_t child = spawn_self({"--role", "serve_until_killed", std::to_string(hosted.port)});
  remora::Options o = hosted_options(hosted);
  o.rpc_timeout = 60s;
  remora::Agent client("client", 0, 2, o);
  CHECK(client.rpc_sync<&procfns::add>("server", 1, 1) == 2);
  auto pending = client.rpc_async<&procfns::sleepy>("server", 30000);
  std::this_thread::sleep_for(200ms);
  auto killed_at = std::chrono::steady_clock::now();
  kill(child, SIGKILL);
  CHECK_THROWS_AS(pending.get(), remora::WorkerLost);
  CHECK(std::chrono::steady_clock::now() - killed_at < 30s);  // far sooner than the 60 s timeout
  CHECK_THROWS_WITH(client.rpc_sync<&procfns::add>("server", 1, 1),
                    Catch::Contains("procfns::add on worker 'server' failed, worker lost"));
  client.shutdown(false);
  CHECK(wait_exit(child) == 128 + SIGKILL);
}

TEST_CASE("Torchrun launches a remora program", "[process][torchrun]") {
  REQUIRE(std::filesystem::exists("/usr/bin/python3"));  // scripts/bootstrap installs python3-torch
  // torchrun's agent hosts the store on a port it is given: one the kernel just chose, released
  // for it (the window in which another process could take it is torchrun's start-up).
  const auto port = [] {
    asio::io_context io;
    asio::ip::tcp::acceptor a(io, {asio::ip::make_address("127.0.0.1"), 0});
    return a.local_endpoint().port();
  }();
  // --redirects/--tee non-zero: Debian's torchrun (torch 1.13, Python 3.11) cannot parse the
  // default 0, as Python 3.11 no longer iterates an IntFlag's zero member.
  pid_t run = spawn_self({"-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
                          "--redirects=2", "--tee=2", "--no_python",
                          "--master_port=" + std::to_string(port), "@self", "--role", "torchrun_pair"},
                         "/usr/bin/python3");
  CHECK(wait_exit(run) == 0);
}

TEST_CASE("Torchrun launches remora-worker: two stock workers on one node, a trainer on another", "[process][torchrun]") {
  REQUIRE(std::filesystem::exists("/usr/bin/python3"));
  const auto port = [] {
    asio::io_context io;
    asio::ip::tcp::acceptor a(io, {asio::ip::make_address("127.0.0.1"), 0});
    return a.local_endpoint().port();
  }();
  // Two torchrun agents, as on two hosts: node 0 (whose agent hosts the store) runs the trainer,
  // node 1 two remora-worker processes named from their local ranks. The environment gives every
  // process the group's secret.
  ::setenv("REMORA_SECRET", "torchrun-test-secret", 1);
  auto node = [&](int node_rank, int procs, std::vector<std::string> command) {
    std::vector<std::string> args = {"-m", "torch.distributed.run", "--nnodes=2",
                                     "--node_rank=" + std::to_string(node_rank),
                                     "--nproc_per_node=" + std::to_string(procs), "--master_addr=127.0.0.1",
                                     "--master_port=" + std::to_string(port), "--redirects=2", "--tee=2",
                                     "--no_python"};
    args.insert(args.end(), command.begin(), command.end());
    return spawn_self(args, "/usr/bin/python3");
  };
  pid_t trainer = node(0, 1, {"@self", "--role", "torchrun_trainer"});
  pid_t workers = node(1, 2, {REMORA_WORKER, "--name", "stock{local_rank}", "--operators", "aten::mul"});
  ::unsetenv("REMORA_SECRET");
  CHECK(wait_exit(trainer) == 0);
  CHECK(wait_exit(workers) == 0);
}

TEST_CASE("A serve-only binary serves what REMORA_EXPOSE and REMORA_EXPOSE_REMOTE name", "[process][expose]") {
  auto hosted = host_store();
  pid_t server = spawn_self({std::to_string(hosted.port)}, REMORA_EXPOSE_SERVER);
  {
    remora::Agent client("client", 0, 2, hosted_options(hosted));
    CHECK(client.rpc_sync<&expose_fns::add>("server", 40, 2) == 42);
    CHECK(client.rpc_sync<&expose_fns::greet>("server", std::string("remora")) == "hello, remora");
    auto table = remora::remote<&expose_fns::make_table>(client, "server", std::int64_t{3}, std::int64_t{2});
    CHECK(torch::equal(table.to_here(), torch::ones({3, 2})));
    CHECK_THROWS_AS(client.rpc_sync<&expose_fns::not_exposed>("server", 1), remora::UnknownFunction);
    CHECK_THROWS_WITH(client.rpc_sync<&expose_fns::not_exposed>("server", 1),
                      Catch::Contains("worker 'server' does not expose expose_fns::not_exposed"));
    table = {};
    client.shutdown();
  }
  CHECK(wait_exit(server) == 0);
}

TEST_CASE("The stock worker serves builtin operators, script modules and the functions of libraries it loads",
          "[process][worker]") {
  auto hosted = host_store();
  const auto models = std::filesystem::temp_directory_path() / ("remora_worker_" + std::to_string(getpid()));
  std::filesystem::create_directories(models);
  const auto path = (models / "half.pt").string();
  const auto outside = (std::filesystem::temp_directory_path() / ("remora_outside_" + std::to_string(getpid()) + ".pt")).string();
  pid_t worker = spawn_self({"--name", "stock", "--rank", "1", "--world-size", "2", "--init-method",
                             "tcp://127.0.0.1:" + std::to_string(hosted.port), "--load", REMORA_TEST_OPS,
                             "--operators", "*", "--model-dir", models.string()},
                            REMORA_WORKER);
  {
    torch::jit::Module m("Half");
    m.define("def forward(self, x: Tensor) -> Tensor:\n    return x / 2\n");
    m.save(path);
    m.save(outside);
    remora::Agent client("client", 0, 2, hosted_options(hosted));
    auto x = torch::ones({2});
    CHECK(torch::equal(client.rpc_sync<&worker_ops::triple>("stock", x), x * 3));
    CHECK(client.rpc_sync<&worker_ops::where_am_i>("stock") == "a library loaded by remora-worker");
    CHECK(torch::equal(remora::rpc_sync<torch::Tensor>(client, "stock", "aten::mul", x, 4), x * 4));
    CHECK(torch::equal(remora::remote<torch::Tensor>(client, "stock", "aten::ones", std::vector<int64_t>{2}).to_here(), x));
    auto half = remora::ScriptRemoteModule::load(client, "stock/cpu", path);
    CHECK(torch::equal(half.call("forward", x).toTensor(), x / 2));
    // '*' leaves out what writes files; a model outside --model-dir (or reached through "..") is
    // not loaded.
    CHECK_THROWS_WITH(remora::rpc_sync(client, "stock", "aten::save", x, path + ".saved"),
                      Catch::Contains("does not serve this operator") && Catch::Contains("aten::save"));
    CHECK_FALSE(std::filesystem::exists(path + ".saved"));
    CHECK_THROWS_AS(remora::ScriptRemoteModule::load(client, "stock/cpu", outside), remora::UnknownFunction);
    CHECK_THROWS_WITH(remora::ScriptRemoteModule::load(client, "stock/cpu", (models / ".." / std::filesystem::path(outside).filename()).string()),
                      Catch::Contains("--model-dir"));
    // Functions nobody exposed there are unknown, as on any worker.
    CHECK_THROWS_AS(client.rpc_sync<&expose_fns::add>("stock", 1, 2), remora::UnknownFunction);
    half = {};
    client.shutdown();
  }
  CHECK(wait_exit(worker) == 0);
  std::filesystem::remove_all(models);
  std::filesystem::remove(outside);
}

TEST_CASE("The stock worker: --help, and clear errors for a bad library or missing options", "[process][worker]") {
  CHECK(wait_exit(spawn_self({"--help"}, REMORA_WORKER)) == 0);
  CHECK(wait_exit(spawn_self({"--name", "w", "--rank", "0", "--world-size", "1", "--load", "/nonexistent/libx.so"},
                             REMORA_WORKER)) == 2);
  CHECK(wait_exit(spawn_self({"--rank", "0"}, REMORA_WORKER)) == 2);
  CHECK(wait_exit(spawn_self({"--name", "w", "--rank", "x"}, REMORA_WORKER)) == 2);
}

TEST_CASE("Processes in separate PID namespaces of one host exchange tensors through shared memory",
          "[process][local][pidns]") {
  // unshare(1) makes the server pid 1 of a new PID namespace (root only; skipped elsewhere).
  if (::geteuid() != 0 || std::system("unshare --pid --fork true >/dev/null 2>&1") != 0) {
    WARN("skipped: this process cannot make a PID namespace (unshare --pid)");
    return;
  }
  auto hosted = host_store();
  pid_t server = spawn_self({"--pid", "--fork", "@self", "--role", "serve_local_until_shutdown",
                             std::to_string(hosted.port)},
                            "/usr/bin/unshare");
  {
    auto o = hosted_options(hosted);
    o.transport = remora::Transport::local;
    remora::Agent client("client", 0, 2, o);
    CHECK(client.rpc_sync<&procfns::my_pid>("server") == 1);  // it is in a namespace of its own
    auto big = torch::arange(1 << 20, torch::kFloat);  // 4 MiB: through the shared memory arena
    CHECK(torch::equal(client.rpc_sync<&procfns::plus_one>("server", big), big + 1));
    CHECK(client.transport_to("server") == "local");
    client.shutdown();
  }
  CHECK(wait_exit(server) == 0);
}
