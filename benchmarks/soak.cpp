// A soak (not a test): 10^6 mixed calls between two processes (sync and async calls, remote +
// to_here, module forwards, calls that throw, calls that time out), printing every 10^5 calls
// both processes' resident memory, their open file descriptors and the owner's live-value count.
// Everything should be flat after the first report.
//   soak [calls]           (default 1,000,000; it starts its peer itself)
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <remora/remora.hpp>
#include <torch/nn.h>

namespace soak {

std::int64_t resident_kib() {
  std::ifstream statm("/proc/self/statm");
  std::int64_t pages = 0, resident = 0;
  statm >> pages >> resident;
  return resident * (sysconf(_SC_PAGESIZE) / 1024);
}
std::int64_t open_fds() {
  std::int64_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

// Served by the peer.
int add(int a, int b) { return a + b; }
torch::Tensor scale(torch::Tensor t, double f) { return t * f; }
torch::Tensor make_tensor(std::int64_t n) { return torch::full({n}, 1.0); }
int fails(int) { throw std::runtime_error("this call fails"); }
int slow(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return ms;
}
// The peer's figures: resident KiB, open descriptors, values it holds for RRefs.
std::vector<std::int64_t> figures() {
  return {resident_kib(), open_fds(), remora::rref_stats(remora::current_agent()).owned_values};
}

struct Scorer {
  virtual ~Scorer() = default;
  virtual torch::Tensor forward(torch::Tensor x) = 0;
};
struct Linear : torch::nn::Module, Scorer {
  Linear() : fc(register_module("fc", torch::nn::Linear(8, 4))) {}
  torch::Tensor forward(torch::Tensor x) override { return fc->forward(x); }
  torch::nn::Linear fc;
};

// The driver's side: `calls` calls in rounds of 100; returns how many it made.
long drive(long calls) {
  auto x = torch::ones({2, 8});
  long done = 0, failed = 0, timed_out = 0;
  auto model = remora::RemoteModule<soak::Scorer>::create<soak::Linear>("peer/cpu");
  std::printf("%10s %12s %12s %8s %8s %12s %9s %9s\n", "calls", "driver KiB", "peer KiB", "drv fds", "peer fds",
              "peer values", "failed", "timeouts");
  while (done < calls) {
    // One round of 100 calls: 60 sync, 20 async in flight together, 10 remote + to_here,
    // 8 forwards, 1 that throws, and every 10th round one with a 1 ms deadline on a 5 ms call
    // (deadlines are checked every 5 ms: some of those complete first).
    for (int i = 0; i < 60; ++i) (void)remora::rpc_sync<&soak::add>("peer", i, 1);
    std::vector<remora::Future<torch::Tensor>> inflight;
    for (int i = 0; i < 20; ++i) inflight.push_back(remora::rpc_async<&soak::scale>("peer", x, 2.0));
    for (auto& f : inflight) (void)f.get();
    for (int i = 0; i < 10; ++i) (void)remora::remote<&soak::make_tensor>("peer", 16).to_here();
    for (int i = 0; i < 8; ++i) (void)model.forward(x);
    try {
      remora::rpc_sync<&soak::fails>("peer", 1);
    } catch (const remora::RemoteError&) {
      ++failed;
    }
    if ((done / 100) % 10 == 0) {
      try {
        remora::rpc_sync<&soak::slow>("peer", remora::CallOptions{std::chrono::milliseconds(1)}, 5);
      } catch (const remora::Timeout&) {
        ++timed_out;
      }
    } else {
      (void)remora::rpc_sync<&soak::add>("peer", 0, 0);
    }
    done += 100;
    if (done % 100'000 == 0) {
      auto peer = remora::rpc_sync<&soak::figures>("peer");
      std::printf("%10ld %12lld %12lld %8lld %8lld %12lld %9ld %9ld\n", done, static_cast<long long>(soak::resident_kib()),
                  static_cast<long long>(peer[0]), static_cast<long long>(soak::open_fds()),
                  static_cast<long long>(peer[1]), static_cast<long long>(peer[2]), failed, timed_out);
      std::fflush(stdout);
    }
  }
  return done;
}

}  // namespace soak

REMORA_EXPOSE(&soak::add, &soak::scale, &soak::fails, &soak::slow, &soak::figures);
REMORA_EXPOSE_REMOTE(&soak::make_tensor);

int main(int argc, char** argv) {
  const std::string port = "29761";
  remora::Options o;
  o.init_method = "tcp://127.0.0.1:" + port;
  o.transport = remora::Transport::tcp;
  o.shutdown_timeout = std::chrono::hours(1);  // the peer's shutdown waits for the whole soak
  if (argc > 1 && std::string(argv[1]) == "--serve") {
    remora::init_rpc("peer", 1, 2, o);
    remora::shutdown();
    return 0;
  }
  const long calls = argc > 1 ? std::atol(argv[1]) : 1'000'000;
  const pid_t child = fork();
  if (child == 0) {
    execl("/proc/self/exe", argv[0], "--serve", static_cast<char*>(nullptr));
    _exit(127);
  }
  remora::init_rpc("driver", 0, 2, o);
  torch::set_num_threads(1);
  const auto t0 = std::chrono::steady_clock::now();
  const long done = soak::drive(calls);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("soak: %ld calls in %.1f s (%.0f calls/s)\n", done, s, done / s);
  remora::shutdown();
  int status = 0;
  waitpid(child, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
