// Several hosts, made of network namespaces (netns_support.hpp): rendezvous over tcp:// and env://
// across them, the same-host transport only between workers of one host, an advertised address
// nobody can reach, a host's cable pulled, and torchrun with one node per host. Needs root: the
// tests say they were skipped without it.
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <thread>

#include <catch2/catch.hpp>

#include "remora/agent/rpc.hpp"
#include "remora/dynamic.hpp"
#include "netns_support.hpp"
#include "process_support.hpp"
#include "roles.hpp"

using namespace std::chrono_literals;

namespace hostfns {
std::string whoami() { return remora::get_worker_info().name; }
int sleepy(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return ms;
}
}  // namespace hostfns

namespace {
using remora::test::NetnsHosts;
using remora::test::spawn_self;
using remora::test::wait_exit;

constexpr int kStorePort = 29500;  // each test's namespaces are its own: no other process has it

int failed(const std::string& why) {
  std::cerr << "multihost role: " << why << std::endl;
  return 3;
}

// args: name rank world init_method listen advertise. Calls every other worker and checks what
// carries the calls: the same-host transport to a worker of this host (same address), TCP to
// the others.
int mh_member(const std::vector<std::string>& a) {
  remora::Options o;
  o.init_method = a.at(3);
  o.listen_host = a.at(4);
  o.advertise_host = a.at(5);
  o.init_timeout = 60s;
  const int rank = std::stoi(a.at(1)), world = std::stoi(a.at(2));
  auto& agent = remora::init_rpc(a.at(0), rank, world, o);
  int status = 0;
  for (int r = 0; r < world; ++r) {
    const std::string peer = agent.get_worker_info(static_cast<std::uint32_t>(r)).name;
    if (r == rank) continue;
    if (remora::rpc_sync<&hostfns::whoami>(peer) != peer) status = failed("wrong answer from " + peer);
  }
  for (const auto& p : remora::get_debug_info().peers) {
    if (p.name == a.at(0)) continue;
    // Names say the host: "h0a" and "h0b" share host 0.
    const bool same_host = p.name.substr(0, 2) == a.at(0).substr(0, 2);
    if (p.transport != (same_host ? "local" : "tcp"))
      status = failed(a.at(0) + " reaches " + p.name + " over '" + p.transport + "'");
  }
  remora::shutdown();
  return status;
}

// args: name rank world init_method advertise unreachable. Rank 0 calls rank 1, whose advertised
// address (`unreachable`) nobody can reach: a WorkerLost that says which address, not a hang.
int mh_unreachable(const std::vector<std::string>& a) {
  remora::Options o;
  o.init_method = a.at(3);
  o.listen_host = "0.0.0.0";
  o.advertise_host = a.at(4);
  o.rpc_timeout = 60s;
  const int rank = std::stoi(a.at(1));
  remora::init_rpc(a.at(0), rank, std::stoi(a.at(2)), o);
  int status = 0;
  if (rank == 0) {
    const auto start = std::chrono::steady_clock::now();
    try {
      remora::rpc_sync<&hostfns::whoami>("far");
      status = failed("a call to an unreachable worker succeeded");
    } catch (const remora::WorkerLost& e) {
      const std::string what = e.what();
      if (what.find("worker 'far'") == std::string::npos ||
          what.find("cannot connect to " + a.at(5)) == std::string::npos ||
          what.find("advertise_host") == std::string::npos)
        status = failed("unclear error: " + what);
    } catch (const std::exception& e) {
      status = failed(std::string("not WorkerLost: ") + e.what());
    }
    if (std::chrono::steady_clock::now() - start > 40s) status = failed("the failure took longer than 40 s");
  }
  remora::shutdown();  // graceful: goes through the store, which both reach
  return status;
}

// args: name rank world init_method listen cut_command. Rank 0 has a call in flight to rank 1
// when rank 1's cable is pulled: the call and later ones fail with WorkerLost within the link
// timeout. Rank 1 sees rank 0 lost as well.
int mh_cut(const std::vector<std::string>& a) {
  remora::Options o;
  o.init_method = a.at(3);
  o.listen_host = a.at(4);
  o.rpc_timeout = 120s;
  o.link_timeout = 3s;
  const int rank = std::stoi(a.at(1));
  auto& agent = remora::init_rpc(a.at(0), rank, std::stoi(a.at(2)), o);
  const std::string other = rank == 0 ? "h1" : "h0";
  int status = 0;
  if (rank == 0) {
    if (remora::rpc_sync<&hostfns::whoami>(other) != other) status = failed("no answer before the cut");
    // Longer than detection takes; short because the callee's shutdown waits for it to return.
    auto pending = remora::rpc_async<&hostfns::sleepy>(other, 8000);
    std::this_thread::sleep_for(500ms);
    const auto cut_at = std::chrono::steady_clock::now();
    if (std::system(a.at(5).c_str()) != 0) return failed("cannot pull the cable: " + a.at(5));
    try {
      pending.get();
      status = failed("the call survived the cut");
    } catch (const remora::WorkerLost&) {
    } catch (const std::exception& e) {
      status = failed(std::string("not WorkerLost: ") + e.what());
    }
    const auto took = std::chrono::steady_clock::now() - cut_at;
    std::cerr << "multihost cut: WorkerLost after "
              << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms\n";
    if (took > 10s) status = failed("WorkerLost came later than 10 s after the cut (link timeout 3 s)");
    try {
      remora::rpc_sync<&hostfns::whoami>(other);
      status = failed("a call after the cut succeeded");
    } catch (const remora::WorkerLost&) {
    }
  } else {
    // Idle on this side: keepalive probes are what notice it.
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    bool lost = false;
    while (!lost && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(100ms);
      lost = agent.debug_info().peers.at(0).lost;
    }
    if (!lost) status = failed("h1 never saw h0 lost");
  }
  remora::shutdown(false);  // the store is across the cut for rank 1
  return status;
}

// Node 0 of a torchrun job across two hosts: the trainer calls the stock workers of node 1.
int mh_torchrun_trainer(const std::vector<std::string>& a) {
  remora::Options o;
  o.listen_host = a.at(0);
  remora::init_rpc("trainer", std::stoi(std::getenv("RANK")), std::stoi(std::getenv("WORLD_SIZE")), o);
  auto x = torch::ones({2});
  int status = 0;
  for (const char* worker : {"stock0", "stock1"})
    if (!torch::equal(remora::rpc_sync<torch::Tensor>(worker, "aten::mul", x, 3), x * 3))
      status = failed(std::string("wrong product from ") + worker);
  for (const auto& p : remora::get_debug_info().peers)
    if (p.name != "trainer" && p.transport != "tcp") status = failed(p.name + " is not reached over TCP");
  remora::shutdown();
  return status;
}

remora::test::RegisterRole r1("mh_member", &mh_member);
remora::test::RegisterRole r2("mh_unreachable", &mh_unreachable);
remora::test::RegisterRole r3("mh_cut", &mh_cut);
remora::test::RegisterRole r4("mh_torchrun_trainer", &mh_torchrun_trainer);

// Runs this test binary in `role` on host `h`, with `env` (NAME=value) added.
// Runs `command` (program first; "@self" is this test binary) on host `h`.
pid_t run_on(const NetnsHosts& hosts, int h, const std::vector<std::string>& command) {
  auto argv = hosts.on(h);
  const std::string ip = argv.front();
  argv.erase(argv.begin());
  argv.insert(argv.end(), command.begin(), command.end());
  return spawn_self(argv, ip);
}
pid_t on_host(const NetnsHosts& hosts, int h, const std::vector<std::string>& env, const std::string& role,
              const std::vector<std::string>& args) {
  std::vector<std::string> command = {"/usr/bin/env"};
  command.insert(command.end(), env.begin(), env.end());
  command.insert(command.end(), {"@self", "--role", role});
  command.insert(command.end(), args.begin(), args.end());
  return run_on(hosts, h, command);
}

#define REMORA_NEED_HOSTS(hosts)                        \
  if (!(hosts).available()) {                           \
    WARN("skipped: " << (hosts).why_not());             \
    return;                                             \
  }
}  // namespace

TEST_CASE("Three hosts rendezvous over tcp:// and env://, with the same-host transport only within a host",
          "[multihost][local]") {
  NetnsHosts hosts(3);
  REMORA_NEED_HOSTS(hosts);
  // Four workers: two on host 0 (names start with the host), one on each other host. Each listens
  // on every interface and advertises its host's address.
  const std::vector<std::pair<std::string, int>> workers = {{"h0a", 0}, {"h1", 1}, {"h2", 2}, {"h0b", 0}};
  const std::string world = std::to_string(workers.size());
  for (const std::string method : {"tcp", "env"}) {
    INFO(method << "://");
    std::vector<pid_t> pids;
    for (std::size_t r = 0; r < workers.size(); ++r) {
      const auto& [name, h] = workers[r];
      std::vector<std::string> env = {"REMORA_TRANSPORT=auto"};
      std::string init = "tcp://" + NetnsHosts::address(0) + ":" + std::to_string(kStorePort);
      if (method == "env") {
        env.insert(env.end(), {"MASTER_ADDR=" + NetnsHosts::address(0), "MASTER_PORT=" + std::to_string(kStorePort)});
        init = "env://";
      }
      pids.push_back(on_host(hosts, h, env, "mh_member",
                             {name, std::to_string(r), world, init, "0.0.0.0", NetnsHosts::address(h)}));
    }
    for (pid_t p : pids) CHECK(wait_exit(p) == 0);
  }
}

TEST_CASE("A worker that advertises an address nobody can reach fails calls to it with a clear WorkerLost",
          "[multihost][local]") {
  NetnsHosts hosts(2);
  REMORA_NEED_HOSTS(hosts);
  const std::string init = "tcp://" + NetnsHosts::address(0) + ":" + std::to_string(kStorePort);
  // Host 1's worker advertises 10.77.0.99, an address no host has.
  pid_t near = on_host(hosts, 0, {}, "mh_unreachable", {"near", "0", "2", init, NetnsHosts::address(0), "10.77.0.99"});
  pid_t far = on_host(hosts, 1, {}, "mh_unreachable", {"far", "1", "2", init, "10.77.0.99", "10.77.0.99"});
  CHECK(wait_exit(near) == 0);
  CHECK(wait_exit(far) == 0);
}

TEST_CASE("A host whose network is cut is lost: its calls fail with WorkerLost within the link timeout",
          "[multihost][local]") {
  NetnsHosts hosts(2);
  REMORA_NEED_HOSTS(hosts);
  const std::string init = "tcp://" + NetnsHosts::address(0) + ":" + std::to_string(kStorePort);
  pid_t h0 = on_host(hosts, 0, {}, "mh_cut", {"h0", "0", "2", init, NetnsHosts::address(0), hosts.cut_command(1)});
  pid_t h1 = on_host(hosts, 1, {}, "mh_cut", {"h1", "1", "2", init, NetnsHosts::address(1), "-"});
  CHECK(wait_exit(h0) == 0);
  CHECK(wait_exit(h1) == 0);
}

TEST_CASE("Torchrun --nnodes=2 across two hosts: a trainer on one, two stock workers on the other",
          "[multihost][local][torchrun]") {
  REQUIRE(std::filesystem::exists("/usr/bin/python3"));
  NetnsHosts hosts(2);
  REMORA_NEED_HOSTS(hosts);
  auto node = [&](int h, int procs, std::vector<std::string> command) {
    std::vector<std::string> args = {"/usr/bin/python3", "-m", "torch.distributed.run", "--nnodes=2",
                                     "--node_rank=" + std::to_string(h),
                                     "--nproc_per_node=" + std::to_string(procs),
                                     "--master_addr=" + NetnsHosts::address(0),
                                     "--master_port=" + std::to_string(kStorePort), "--redirects=2", "--tee=2",
                                     "--no_python"};
    args.insert(args.end(), command.begin(), command.end());
    return run_on(hosts, h, args);
  };
  pid_t trainer = node(0, 1, {"@self", "--role", "mh_torchrun_trainer", NetnsHosts::address(0)});
  pid_t workers = node(1, 2, {REMORA_WORKER, "--name", "stock{local_rank}", "--listen-host", NetnsHosts::address(1),
                              "--operators", "aten::mul"});
  CHECK(wait_exit(trainer) == 0);
  CHECK(wait_exit(workers) == 0);
}
