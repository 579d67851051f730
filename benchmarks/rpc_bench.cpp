// RPC figures for a 4-byte tensor and a 64 MiB tensor between two agents in one process (over
// loopback TCP or the local transport, as REMORA_TRANSPORT says), with PyTorch's RemoteModule and
// the raw-socket probes run beside it by scripts/bench. Prints one line per figure (parsed by
// scripts/bench).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include <sys/resource.h>

#include <torch/csrc/distributed/c10d/HashStore.hpp>

#include "remora/agent/rpc.hpp"
#include "remora/dynamic/builtin.hpp"
#include "remora/module/remote_module.hpp"
#include "remora/rref/remote.hpp"

// Counts heap allocations made through operator new (remora's own containers, frames, closures;
// libtorch's tensor storage uses its own allocator and is not counted). Only while g_counting:
// shared counters bumped by every thread would slow the other figures down.
namespace {
std::atomic<bool> g_counting{false};
std::atomic<std::uint64_t> g_news{0}, g_new_bytes{0};
}  // namespace
void* operator new(std::size_t n) {
  if (g_counting.load(std::memory_order_relaxed)) {
    g_news.fetch_add(1, std::memory_order_relaxed);
    g_new_bytes.fetch_add(n, std::memory_order_relaxed);
  }
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace bench {
torch::Tensor echo(torch::Tensor x) { return x; }
torch::Tensor add_tensors(torch::Tensor a, torch::Tensor b) { return a + b; }
int add(int a, int b) { return a + b; }

struct EchoInterface {
  virtual ~EchoInterface() = default;
  virtual torch::Tensor forward(torch::Tensor x) = 0;
};
struct Echo : torch::nn::Module, EchoInterface {
  torch::Tensor forward(torch::Tensor x) override { return x; }
};
}  // namespace bench

// REMORA_BENCH=sync,async,... runs only those sections (to profile one); unset: all of them.
static bool wanted(const char* section) {
  const char* only = std::getenv("REMORA_BENCH");
  if (!only || !*only) return true;
  const std::string list = std::string(",") + only + ",";
  return list.find(std::string(",") + section + ",") != std::string::npos;
}

int main() {
  using clock = std::chrono::steady_clock;
  remora::Options o;
  o.store = c10::make_intrusive<c10d::HashStore>();
  o.secret = remora::secret_from_env();  // REMORA_SECRET: an authenticated group (scripts/bench)
  o.serve_operators = {"aten::add"};    // the by-name row
  // REMORA_BENCH_TLS=DIR: TLS with DIR/node.pem, DIR/node.key and DIR/ca.pem (scripts/bench).
  if (const char* dir = std::getenv("REMORA_BENCH_TLS"); dir && *dir) {
    const std::string d = std::string(dir) + "/";
    o.tls = remora::TlsOptions{.certificate = d + "node.pem", .private_key = d + "node.key", .ca = d + "ca.pem"};
  }
  std::unique_ptr<remora::Agent> a, b;
  std::thread tb([&] { b = std::make_unique<remora::Agent>("w1", 1, 2, o); });
  a = std::make_unique<remora::Agent>("w0", 0, 2, o);
  tb.join();

  auto x = torch::ones({1});
  for (int i = 0; i < 500; ++i) a->rpc_sync<&bench::echo>("w1", x);
  std::vector<double> us;
  // p50 and p99 of 5,000 calls of `call` (after 500 to warm up), printed as `name`_p50_us, _p99_us.
  auto time_sync = [&](const char* name, auto call) {
    for (int i = 0; i < 500; ++i) call(i);
    us.clear();
    for (int i = 0; i < 5000; ++i) {
      auto t = clock::now();
      call(i);
      us.push_back(std::chrono::duration<double, std::micro>(clock::now() - t).count());
    }
    std::sort(us.begin(), us.end());
    std::printf("%s_p50_us %.1f\n%s_p99_us %.1f\n", name, us[us.size() / 2], name, us[us.size() * 99 / 100]);
  };
  // Heap allocations of 2,000 calls of `call`, both agents (one process) together, per call.
  auto count_allocs = [&](const char* name, auto call) {
    for (int i = 0; i < 100; ++i) call(i);
    const int calls = 2000;
    g_counting = true;
    const auto news0 = g_news.load(), bytes0 = g_new_bytes.load();
    for (int i = 0; i < calls; ++i) call(i);
    g_counting = false;
    std::printf("%s_allocs_per_call %.1f\n%s_alloc_bytes_per_call %.0f\n", name,
                double(g_news.load() - news0) / calls, name, double(g_new_bytes.load() - bytes0) / calls);
  };
  auto echo_call = [&](int) { a->rpc_sync<&bench::echo>("w1", x); };
  auto add_call = [&](int i) {  // scalars: no tensor on either side
    if (a->rpc_sync<&bench::add>("w1", i, 1) != i + 1) std::abort();
  };
  if (wanted("sync")) {
    time_sync("sync_4B", echo_call);
    time_sync("sync_scalar", add_call);
  }
  if (wanted("allocs")) {
    count_allocs("sync_4B", echo_call);
    count_allocs("sync_scalar", add_call);
  }

  // The same operator, typed (a function compiled in) and by name (the dynamic path), taken
  // alternately so that both see the same machine.
  if (wanted("builtin")) {
    std::vector<double> typed, named;
    auto typed_call = [&](int) { a->rpc_sync<&bench::add_tensors>("w1", x, x); };
    auto named_call = [&](int) { remora::rpc_sync<torch::Tensor>(*a, "w1", "aten::add", x, x); };
    for (int i = 0; i < 500; ++i) typed_call(i), named_call(i);
    for (int i = 0; i < 5000; ++i) {
      auto t = clock::now();
      typed_call(i);
      auto m = clock::now();
      named_call(i);
      typed.push_back(std::chrono::duration<double, std::micro>(m - t).count());
      named.push_back(std::chrono::duration<double, std::micro>(clock::now() - m).count());
    }
    std::sort(typed.begin(), typed.end());
    std::sort(named.begin(), named.end());
    std::printf("typed_add_4B_p50_us %.1f\nbuiltin_add_4B_p50_us %.1f\n", typed[typed.size() / 2],
                named[named.size() / 2]);
  }

  // remote() + to_here() of a small value: creation, fetch and deletion, one at a time.
  if (wanted("remote")) {
    for (int i = 0; i < 200; ++i) remora::remote<&bench::echo>(*a, "w1", x).to_here();
    us.clear();
    for (int i = 0; i < 3000; ++i) {
      auto t = clock::now();
      remora::remote<&bench::echo>(*a, "w1", x).to_here();
      us.push_back(std::chrono::duration<double, std::micro>(clock::now() - t).count());
    }
    std::sort(us.begin(), us.end());
    std::printf("remote_to_here_4B_p50_us %.1f\nremote_to_here_4B_p99_us %.1f\n", us[us.size() / 2],
                us[us.size() * 99 / 100]);
  }

  const int n = 20000;
  if (wanted("async")) {
    // The first round also grows the heap to hold 20,000 calls in flight (on this VM a page
    // fault costs about as much as a call): it is reported apart, as the cold figure, and the
    // figure is the next round's. REMORA_BENCH_ROUNDS > 2 repeats it (for a profile).
    const int rounds = std::getenv("REMORA_BENCH_ROUNDS") ? std::atoi(std::getenv("REMORA_BENCH_ROUNDS")) : 2;
    double secs = 0, cold_secs = 0;
    for (int round = 0; round < std::max(rounds, 2); ++round) {
      std::vector<remora::Future<torch::Tensor>> fs;
      fs.reserve(n);
      auto t0 = clock::now();
      for (int i = 0; i < n; ++i) fs.push_back(a->rpc_async<&bench::echo>("w1", x));
      for (auto& f : fs) f.wait();
      secs = std::chrono::duration<double>(clock::now() - t0).count();
      if (round == 0) cold_secs = secs;
    }
    std::printf("async_4B_calls_per_s %.0f\nasync_4B_cold_calls_per_s %.0f\n", n / secs, n / cold_secs);
  }

  // Many callers on one callee: 8 threads of w0 calling w1 synchronously at once.
  if (wanted("callers")) {
    const int threads = 8, each = 2000;
    std::vector<std::thread> callers;
    auto t = clock::now();
    for (int c = 0; c < threads; ++c)
      callers.emplace_back([&] {
        for (int i = 0; i < each; ++i) a->rpc_sync<&bench::echo>("w1", x);
      });
    for (auto& c : callers) c.join();
    std::printf("callers_8_calls_per_s %.0f\n",
                threads * each / std::chrono::duration<double>(clock::now() - t).count());
  }


  // RemoteModule::forward of an echo module, as PyTorch's anchor measures it.
  auto m = remora::RemoteModule<bench::EchoInterface>::create<bench::Echo>(*a, "w1/cpu");
  for (std::int64_t bytes : {4LL, 4096LL, 1LL << 20, 64LL << 20}) {
    if (!wanted("module") && !(bytes <= 4096 && wanted("module_small"))) continue;
    auto t = torch::ones({bytes / 4});
    const int iters = bytes <= 4096 ? 3000 : (bytes <= (1 << 20) ? 300 : 10);
    for (int i = 0; i < std::min(iters / 10 + 1, 20); ++i) m.forward(t);
    us.clear();
    auto start = clock::now();
    for (int i = 0; i < iters; ++i) {
      auto t0 = clock::now();
      m.forward(t);
      us.push_back(std::chrono::duration<double, std::micro>(clock::now() - t0).count());
    }
    double mean_s = std::chrono::duration<double>(clock::now() - start).count() / iters;
    std::sort(us.begin(), us.end());
    const auto b = static_cast<long long>(bytes);
    std::printf(
        "module_%lldB_p50_us %.1f\nmodule_%lldB_p99_us %.1f\nmodule_%lldB_mean_us %.1f\nmodule_%lldB_GBps %.3f\n", b,
        us[us.size() / 2], b, us[us.size() * 99 / 100], b, mean_s * 1e6, b, 2.0 * bytes / mean_s / 1e9);
  }
  if (wanted("allocs")) count_allocs("module_4B", [&, t = torch::ones({1})](int) { m.forward(t); });
  if (wanted("module_async")) {  // as async: the second of two rounds (or the last of REMORA_BENCH_ROUNDS)
    const int rounds = std::getenv("REMORA_BENCH_ROUNDS") ? std::atoi(std::getenv("REMORA_BENCH_ROUNDS")) : 2;
    double secs = 0;
    for (int round = 0; round < std::max(rounds, 2); ++round) {
      std::vector<remora::Future<torch::Tensor>> mf;
      mf.reserve(n);
      auto t2 = clock::now();
      for (int i = 0; i < n; ++i) mf.push_back(m.forward_async(x));
      for (auto& f : mf) f.wait();
      secs = std::chrono::duration<double>(clock::now() - t2).count();
      if (std::getenv("REMORA_BENCH_ROUNDS")) {  // each round on stderr, with the page faults it took
        rusage ru{};
        getrusage(RUSAGE_SELF, &ru);
        std::fprintf(stderr, "round %d: %.0f calls/s, %ld page faults so far\n", round, n / secs, ru.ru_minflt);
      }
    }
    std::printf("module_async_4B_calls_per_s %.0f\n", n / secs);
  }
  // After the module figures, which (as PyTorch's anchor) start with the small sizes: the first
  // small calls after a 64 MiB echo are a few microseconds slower for a while.
  if (wanted("echo")) {
    auto big = torch::ones({(64 << 20) / 4});
    for (int i = 0; i < 5; ++i) a->rpc_sync<&bench::echo>("w1", big);
    const int reps = 20;
    auto t1 = clock::now();
    for (int i = 0; i < reps; ++i) a->rpc_sync<&bench::echo>("w1", big);
    double per = std::chrono::duration<double>(clock::now() - t1).count() / reps;
    std::printf("echo_64MiB_ms %.1f\necho_64MiB_GBps %.3f\n", per * 1e3, 2.0 * (64 << 20) / per / 1e9);
  }
  m = {};

  std::thread sb([&] { b->shutdown(); });
  a->shutdown();
  sb.join();
}
