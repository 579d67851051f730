// A group of N workers in one process over one TCPStore and TCP links (scale_bench N [ROUNDS]):
// how long the rendezvous takes, the memory each agent costs, and a 1-to-(N-1) call-and-gather
// of a 4 B method (a RemoteGroup's call) once connected, p50 and p99, with the first round,
// which connects, apart. Prints `name value` lines.
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <remora/mesh.hpp>
#include <remora/remora.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

namespace scale {
struct Echo {
  std::int32_t ping(std::int32_t x) { return x + 1; }
};
std::int32_t ping(std::int32_t x) { return x + 1; }
}  // namespace scale

namespace {
using clock_type = std::chrono::steady_clock;
double ms_since(clock_type::time_point t) {
  return std::chrono::duration<double, std::milli>(clock_type::now() - t).count();
}
double rss_kib() {
  std::ifstream f("/proc/self/status");
  std::string key;
  double v = 0;
  while (f >> key)
    if (key == "VmRSS:") return f >> v, v;
  return 0;
}
}  // namespace

int main(int argc, char** argv) {
  const int n = argc > 1 ? std::atoi(argv[1]) : 64;
  const int rounds = argc > 2 ? std::atoi(argv[2]) : 200;
  remora::Options o;
  o.transport = remora::Transport::tcp;
  o.num_worker_threads = 1;
  o.num_io_threads = 1;
  o.init_timeout = std::chrono::seconds(120);
  o.shutdown_timeout = std::chrono::seconds(120);
  // The store's server is up before any agent starts (as torchrun's agent hosts it), so the
  // time measured is the rendezvous, not clients retrying a connection to a server not yet up.
  c10d::TCPStoreOptions so;
  so.port = 0;
  so.isServer = true;
  so.waitWorkers = false;
  so.timeout = std::chrono::seconds(120);
  c10d::TCPStore server("127.0.0.1", so);
  ::setenv("TORCHELASTIC_USE_AGENT_STORE", "True", 1);
  o.init_method = "tcp://127.0.0.1:" + std::to_string(server.getPort());
  std::vector<std::unique_ptr<remora::Agent>> agents(n);
  const double rss0 = rss_kib();
  auto t0 = clock_type::now();
  {
    std::vector<std::thread> t;
    for (int i = 0; i < n; ++i)
      t.emplace_back([&, i] { agents[i] = std::make_unique<remora::Agent>("w" + std::to_string(i), i, n, o); });
    for (auto& th : t) th.join();
  }
  const double rendezvous_ms = ms_since(t0);
  const double rss1 = rss_kib();
  remora::Agent& me = *agents[0];
  std::vector<std::string> points;
  for (int i = 1; i < n; ++i) points.push_back("w" + std::to_string(i) + "/cpu");
  // The first round connects to every worker.
  auto t1 = clock_type::now();
  std::vector<remora::Future<std::int32_t>> first;
  for (int i = 1; i < n; ++i) first.push_back(me.rpc_async<&scale::ping>("w" + std::to_string(i), std::int32_t{1}));
  for (auto& f : first) f.get();
  const double first_ms = ms_since(t1);
  const double rss2 = rss_kib();
  auto group = remora::spawn<scale::Echo>(me, remora::DeviceMesh(points));
  std::vector<double> us;
  for (int r = 0; r < rounds; ++r) {
    auto t = clock_type::now();
    auto values = group.call<&scale::Echo::ping>(r);
    us.push_back(ms_since(t) * 1000);
    if (values.size() != points.size() || values[0] != r + 1) return std::puts("wrong answer"), 1;
  }
  std::sort(us.begin(), us.end());
  std::printf("scale_workers %d\n", n);
  std::printf("scale_rendezvous_ms %.1f\n", rendezvous_ms);
  std::printf("scale_rss_per_agent_kib %.0f\n", (rss1 - rss0) / n);
  std::printf("scale_first_round_ms %.2f (connects to %d workers)\n", first_ms, n - 1);
  // Each connection has both its ends in this process.
  std::printf("scale_rss_per_connection_kib %.1f (both ends)\n", (rss2 - rss1) / (n - 1));
  std::printf("scale_call_gather_us p50 %.0f p99 %.0f (1 to %d, 4 B, %d rounds)\n", us[us.size() / 2],
              us[std::min(us.size() - 1, us.size() * 99 / 100)], n - 1, rounds);
  group = {};
  auto t2 = clock_type::now();
  {
    std::vector<std::thread> t;
    for (auto& a : agents) t.emplace_back([&a] { a->shutdown(); });
    for (auto& th : t) th.join();
  }
  std::printf("scale_shutdown_ms %.1f\n", ms_since(t2));
  return 0;
}
