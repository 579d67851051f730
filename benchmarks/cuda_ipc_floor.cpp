// The floor of handing a GPU buffer between two processes on one GPU with CUDA IPC alone (no
// remora, no libtorch): a round trip is the caller's buffer going to the callee, copied there,
// and coming back, copied into the caller's own buffer, until the caller's stream is done. Each
// hand-over sends a one-byte message on a unix socket after the sender recorded an interprocess
// event (cudaEventDisableTiming | cudaEventInterprocess) behind its data; what differs is how
// the receiver makes its copy wait for that data:
//   gpu_wait     cudaStreamWaitEvent on the sender's event, then the copy (never blocks the host)
//   host_sync    cudaEventSynchronize on the sender's event, then the copy
//   host_spin    spins on cudaEventQuery until the sender's event is done, then the copy
//   sender_sync  the sender synchronizes its stream before its message; the receiver copies at once
// Memory and event handles are exchanged and opened once, as a transport caches them.
// Prints "floor_<style>_<size>_p50_us X" and "..._mean_us X" lines, then what each CUDA call of
// a hand-over costs alone (api_costs); scripts/gpu-test runs it with and without MPS, beside
// gpu_bench's figures for remora.
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

extern char** environ;

namespace {

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "cuda_ipc_floor: %s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}
void send_all(int fd, const void* p, std::size_t n) {
  auto* b = static_cast<const char*>(p);
  while (n) {
    const ssize_t w = ::write(fd, b, n);
    if (w <= 0) std::exit(1);
    b += w;
    n -= static_cast<std::size_t>(w);
  }
}
void recv_all(int fd, void* p, std::size_t n) {
  auto* b = static_cast<char*>(p);
  while (n) {
    const ssize_t r = ::read(fd, b, n);
    if (r <= 0) std::exit(1);
    b += r;
    n -= static_cast<std::size_t>(r);
  }
}

enum Style : int { gpu_wait, host_sync, host_spin, sender_sync, kStyles };
const char* kStyleNames[] = {"gpu_wait", "host_sync", "host_spin", "sender_sync"};

// One side's buffers and event, and the other side's, opened here.
struct Side {
  void* out = nullptr;  // what this side sends (the callee echoes into it)
  void* in = nullptr;   // where this side copies what it receives
  cudaEvent_t ready{};  // recorded behind `out`'s data before each message
  void* peer_out = nullptr;
  cudaEvent_t peer_ready{};
  cudaStream_t stream{};
  std::size_t bytes = 0;

  void setup(int fd, std::size_t n) {
    bytes = n;
    check(cudaMalloc(&out, n), "cudaMalloc");
    check(cudaMalloc(&in, n), "cudaMalloc");
    check(cudaMemset(out, 1, n), "cudaMemset");
    check(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming | cudaEventInterprocess), "cudaEventCreate");
    cudaIpcMemHandle_t mine_mem, theirs_mem;
    cudaIpcEventHandle_t mine_ev, theirs_ev;
    check(cudaIpcGetMemHandle(&mine_mem, out), "cudaIpcGetMemHandle");
    check(cudaIpcGetEventHandle(&mine_ev, ready), "cudaIpcGetEventHandle");
    send_all(fd, &mine_mem, sizeof mine_mem);
    send_all(fd, &mine_ev, sizeof mine_ev);
    recv_all(fd, &theirs_mem, sizeof theirs_mem);
    recv_all(fd, &theirs_ev, sizeof theirs_ev);
    check(cudaIpcOpenMemHandle(&peer_out, theirs_mem, cudaIpcMemLazyEnablePeerAccess), "cudaIpcOpenMemHandle");
    check(cudaIpcOpenEventHandle(&peer_ready, theirs_ev), "cudaIpcOpenEventHandle");
    check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  }
  void teardown() {
    check(cudaIpcCloseMemHandle(peer_out), "cudaIpcCloseMemHandle");
    cudaEventDestroy(peer_ready);
    cudaEventDestroy(ready);
    cudaFree(out);
    cudaFree(in);
  }

  // The data behind `src` is ready (or will be, for the stream) as `style` makes sure: then copy
  // it into `dst` on this side's stream.
  void receive(Style style, void* dst) {
    switch (style) {
      case gpu_wait: check(cudaStreamWaitEvent(stream, peer_ready, 0), "cudaStreamWaitEvent"); break;
      case host_sync: check(cudaEventSynchronize(peer_ready), "cudaEventSynchronize"); break;
      case host_spin:
        for (cudaError_t e; (e = cudaEventQuery(peer_ready)) != cudaSuccess;)
          if (e != cudaErrorNotReady) check(e, "cudaEventQuery");
        break;
      case sender_sync: break;
      default: break;
    }
    check(cudaMemcpyAsync(dst, peer_out, bytes, cudaMemcpyDeviceToDevice, stream), "cudaMemcpyAsync");
  }
  // `out` holds what to send: mark it and tell the peer.
  void hand_over(Style style, int fd) {
    check(cudaEventRecord(ready, stream), "cudaEventRecord");
    if (style == sender_sync) check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
    const char go = 'g';
    send_all(fd, &go, 1);
  }
};

struct Run {
  int style;
  int iters;
  std::size_t bytes;
};

int callee(int fd) {
  check(cudaSetDevice(0), "cudaSetDevice");
  Side side;
  check(cudaStreamCreateWithFlags(&side.stream, cudaStreamNonBlocking), "cudaStreamCreate");
  for (;;) {
    Run run;
    recv_all(fd, &run, sizeof run);
    if (run.iters < 0) return 0;
    side.setup(fd, run.bytes);
    for (int i = 0; i < run.iters; ++i) {
      char go;
      recv_all(fd, &go, 1);
      side.receive(static_cast<Style>(run.style), side.out);  // the echo: what came is what goes back
      side.hand_over(static_cast<Style>(run.style), fd);
    }
    check(cudaStreamSynchronize(side.stream), "cudaStreamSynchronize");
    side.teardown();
  }
}

void caller(int fd, bool mps) {
  check(cudaSetDevice(0), "cudaSetDevice");
  Side side;
  check(cudaStreamCreateWithFlags(&side.stream, cudaStreamNonBlocking), "cudaStreamCreate");
  const std::string suffix = mps ? "_mps" : "";
  for (std::size_t bytes : {std::size_t{4}, std::size_t{64} << 20}) {
    const int iters = bytes <= 4096 ? 2000 : 50;
    for (int style = 0; style < kStyles; ++style) {
      Run run{style, iters + iters / 10, bytes};
      send_all(fd, &run, sizeof run);
      side.setup(fd, bytes);
      std::vector<double> us;
      double total = 0;
      for (int i = 0; i < run.iters; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        side.hand_over(static_cast<Style>(style), fd);
        char go;
        recv_all(fd, &go, 1);
        side.receive(static_cast<Style>(style), side.in);
        check(cudaStreamSynchronize(side.stream), "cudaStreamSynchronize");  // the echo is here
        const double t = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
        if (i >= iters / 10) {  // after the warm-up
          us.push_back(t);
          total += t;
        }
      }
      side.teardown();
      std::sort(us.begin(), us.end());
      const std::string name = std::string("floor_") + kStyleNames[style] + "_" +
                               (bytes == 4 ? "4B" : "64MiB") + suffix;
      std::printf("%s_p50_us %.1f\n%s_mean_us %.1f\n", name.c_str(), us[us.size() / 2], name.c_str(),
                  total / static_cast<double>(us.size()));
      std::fflush(stdout);
    }
  }
  Run stop{0, -1, 0};
  send_all(fd, &stop, sizeof stop);
}

// What each CUDA call of a hand-over costs the host on its own (mean of 2000), in this process:
// where a round trip's time goes beyond the floor's (remora makes more of these calls than the
// floor does: an export's two handle queries, a copy-done event, a second stream wait).
// Prints "api_<call>_<suffix>_us X".
void api_costs(const std::string& suffix) {
  check(cudaSetDevice(0), "cudaSetDevice");
  cudaStream_t stream;
  check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
  void *a = nullptr, *b = nullptr;
  check(cudaMalloc(&a, 4096), "cudaMalloc");
  check(cudaMalloc(&b, 4096), "cudaMalloc");
  cudaEvent_t ipc, plain;
  check(cudaEventCreateWithFlags(&ipc, cudaEventDisableTiming | cudaEventInterprocess), "cudaEventCreate");
  check(cudaEventCreateWithFlags(&plain, cudaEventDisableTiming), "cudaEventCreate");
  const auto measure = [&](const char* name, auto&& call) {
    constexpr int kIters = 2000;
    for (int i = 0; i < 100; ++i) call();
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < kIters; ++i) call();
    const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / kIters;
    check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
    std::printf("api_%s%s_us %.2f\n", name, suffix.c_str(), us);
    std::fflush(stdout);
  };
  measure("event_record_interprocess", [&] { check(cudaEventRecord(ipc, stream), "cudaEventRecord"); });
  measure("event_record", [&] { check(cudaEventRecord(plain, stream), "cudaEventRecord"); });
  measure("ipc_get_event_handle", [&] {
    cudaIpcEventHandle_t h;
    check(cudaIpcGetEventHandle(&h, ipc), "cudaIpcGetEventHandle");
  });
  measure("ipc_get_mem_handle", [&] {
    cudaIpcMemHandle_t h;
    check(cudaIpcGetMemHandle(&h, a), "cudaIpcGetMemHandle");
  });
  measure("stream_wait_event", [&] { check(cudaStreamWaitEvent(stream, plain, 0), "cudaStreamWaitEvent"); });
  measure("memcpy_async_4B", [&] { check(cudaMemcpyAsync(b, a, 4, cudaMemcpyDeviceToDevice, stream), "cudaMemcpyAsync"); });
  measure("memcpy_4B_then_stream_sync", [&] {
    check(cudaMemcpyAsync(b, a, 4, cudaMemcpyDeviceToDevice, stream), "cudaMemcpyAsync");
    check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  });
  measure("memcpy_4B_then_event_sync", [&] {
    check(cudaMemcpyAsync(b, a, 4, cudaMemcpyDeviceToDevice, stream), "cudaMemcpyAsync");
    check(cudaEventRecord(plain, stream), "cudaEventRecord");
    check(cudaEventSynchronize(plain), "cudaEventSynchronize");
  });
  measure("event_query_done", [&] { (void)cudaEventQuery(plain); });
  measure("pointer_get_attributes", [&] {
    cudaPointerAttributes where{};
    check(cudaPointerGetAttributes(&where, a), "cudaPointerGetAttributes");
  });
  cudaEventDestroy(ipc);
  cudaEventDestroy(plain);
  cudaFree(a);
  cudaFree(b);
  cudaStreamDestroy(stream);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::strcmp(argv[1], "--callee") == 0) return callee(std::atoi(argv[2]));
  // Before any CUDA call: the callee is a fresh process with its own context.
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM, 0, fds) != 0) return 1;
  std::string fd = std::to_string(fds[1]);
  std::vector<char*> args = {argv[0], const_cast<char*>("--callee"), fd.data(), nullptr};
  pid_t child;
  if (posix_spawn(&child, "/proc/self/exe", nullptr, nullptr, args.data(), environ) != 0) return 1;
  ::close(fds[1]);
  const bool mps = argc > 1 && std::strcmp(argv[1], "--mps") == 0;  // names the figures *_mps
  caller(fds[0], mps);
  api_costs(mps ? "_mps" : "");
  int status = 0;
  ::waitpid(child, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
