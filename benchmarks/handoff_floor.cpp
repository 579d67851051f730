// What a small call's round trip cannot go below on this host, for each way of handing the work
// between threads, with no RPC library at all: 8 bytes over loopback TCP, p50 of 20,000 trips.
//   blocking:   the caller writes and blocks in read(); the callee thread blocks in read() and
//               writes the answer (the anchor's raw round trip)
//   event_loop: each side waits in epoll_wait, as an I/O thread does, and the callee answers on
//               its I/O thread
//   pool:       remora's threading (DESIGN.md, Threads): the callee's I/O thread hands the request
//               to a worker thread, which answers; the caller's I/O thread hands the answer to
//               the caller, who waits on a condition variable
//   pool_watch: the same, but the caller watches for the answer for up to 50 us (yielding)
//               before it sleeps, as remora's sync calls do when one call is in flight
//   pool_watch_both: the worker also watches for the next request for up to 200 us before it
//               sleeps, as remora's WorkerPool does
//   io_spin:    and the I/O threads poll (epoll_wait with no timeout, yielding) for up to 200 us
//               before they block, as remora's IoLoop does
// scripts/bench prints them beside remora's sync call, which pays the `io_spin` hand-offs plus
// its own work (framing, dispatch, tensor codec).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace {
using Clock = std::chrono::steady_clock;
constexpr int kTrips = 20000;

void read_all(int fd, char* p, std::size_t n) {
  while (n) {
    ssize_t r = ::read(fd, p, n);
    if (r <= 0) std::_Exit(1);
    p += r;
    n -= static_cast<std::size_t>(r);
  }
}
void write_all(int fd, const char* p, std::size_t n) {
  while (n) {
    ssize_t r = ::write(fd, p, n);
    if (r <= 0) std::_Exit(1);
    p += r;
    n -= static_cast<std::size_t>(r);
  }
}

// A connected loopback TCP pair with TCP_NODELAY on both ends.
std::pair<int, int> tcp_pair() {
  int one = 1;
  int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) || ::listen(listener, 1) ||
      ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len))
    std::_Exit(2);
  int client = ::socket(AF_INET, SOCK_STREAM, 0);
  if (::connect(client, reinterpret_cast<sockaddr*>(&addr), sizeof addr)) std::_Exit(2);
  int server = ::accept(listener, nullptr, nullptr);
  ::close(listener);
  ::setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  ::setsockopt(server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return {client, server};
}

// Waits in epoll_wait until `fd` is readable, then reads 8 bytes (what an I/O thread does).
bool g_io_spin = false;
void epoll_read8(int ep, int fd, char* buf) {
  epoll_event ev;
  if (g_io_spin) {
    const auto until = Clock::now() + std::chrono::microseconds(200);
    while (::epoll_wait(ep, &ev, 1, 0) != 1) {
      if (Clock::now() > until) {
        while (::epoll_wait(ep, &ev, 1, -1) != 1) {
        }
        break;
      }
      std::this_thread::yield();
    }
    read_all(fd, buf, 8);
    return;
  }
  while (::epoll_wait(ep, &ev, 1, -1) != 1) {
  }
  read_all(fd, buf, 8);
}
int epoll_for(int fd) {
  int ep = ::epoll_create1(0);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = fd;
  ::epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
  return ep;
}

// A one-slot mailbox between two threads, as a future's state or a pool's queue is.
struct Mailbox {
  std::mutex mu;
  std::condition_variable cv;
  std::atomic<bool> full{false};
  void put() {
    {
      std::lock_guard lock(mu);
      full = true;
    }
    cv.notify_one();
  }
  void take(bool watch = false, int watch_us = 50) {
    if (watch) {
      const auto until = Clock::now() + std::chrono::microseconds(watch_us);
      while (!full.load(std::memory_order_acquire) && Clock::now() < until) std::this_thread::yield();
    }
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return full.load(); });
    full = false;
  }
};

double p50(std::vector<double>& us) {
  std::sort(us.begin(), us.end());
  return us[us.size() / 2];
}

// Times `trip` (one round trip, on the calling thread) after a warm-up.
double time_trips(const std::function<void()>& trip) {
  for (int i = 0; i < 1000; ++i) trip();
  std::vector<double> us;
  us.reserve(kTrips);
  for (int i = 0; i < kTrips; ++i) {
    auto t = Clock::now();
    trip();
    us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t).count());
  }
  return p50(us);
}

double blocking() {
  auto [c, s] = tcp_pair();
  std::thread callee([s = s] {
    char b[8];
    for (int i = 0; i < kTrips + 1000; ++i) {
      read_all(s, b, 8);
      write_all(s, b, 8);
    }
  });
  char b[8] = {};
  double r = time_trips([&, c = c] {
    write_all(c, b, 8);
    read_all(c, b, 8);
  });
  callee.join();
  ::close(c);
  ::close(s);
  return r;
}

double event_loop() {
  auto [c, s] = tcp_pair();
  std::thread callee_io([s = s] {
    int ep = epoll_for(s);
    char b[8];
    for (int i = 0; i < kTrips + 1000; ++i) {
      epoll_read8(ep, s, b);
      write_all(s, b, 8);
    }
    ::close(ep);
  });
  int ep = epoll_for(c);
  char b[8] = {};
  double r = time_trips([&, c = c] {
    write_all(c, b, 8);
    epoll_read8(ep, c, b);
  });
  callee_io.join();
  ::close(ep);
  ::close(c);
  ::close(s);
  return r;
}

double pool(bool watch, bool worker_watch = false) {
  auto [c, s] = tcp_pair();
  Mailbox to_worker, to_caller;
  std::thread callee_io([&, s = s] {
    int ep = epoll_for(s);
    char b[8];
    for (int i = 0; i < kTrips + 1000; ++i) {
      epoll_read8(ep, s, b);
      to_worker.put();
    }
    ::close(ep);
  });
  std::thread worker([&, s = s] {
    char b[8] = {};
    for (int i = 0; i < kTrips + 1000; ++i) {
      to_worker.take(worker_watch, 200);
      write_all(s, b, 8);
    }
  });
  std::thread caller_io([&, c = c] {
    int ep = epoll_for(c);
    char b[8];
    for (int i = 0; i < kTrips + 1000; ++i) {
      epoll_read8(ep, c, b);
      to_caller.put();
    }
    ::close(ep);
  });
  char b[8] = {};
  double r = time_trips([&, c = c] {
    write_all(c, b, 8);
    to_caller.take(watch);
  });
  callee_io.join();
  worker.join();
  caller_io.join();
  ::close(c);
  ::close(s);
  return r;
}
}  // namespace

int main() {
  // Interleaved, twice, so that a noisy moment does not favour one of them.
  double b = 1e9, e = 1e9, p = 1e9, w = 1e9, ww = 1e9, io = 1e9;
  for (int round = 0; round < 2; ++round) {
    b = std::min(b, blocking());
    e = std::min(e, event_loop());
    p = std::min(p, pool(false));
    w = std::min(w, pool(true));
    ww = std::min(ww, pool(true, true));
    g_io_spin = true;
    io = std::min(io, pool(true, true));
    g_io_spin = false;
  }
  std::printf("floor_blocking_8B_p50_us %.1f\nfloor_event_loop_8B_p50_us %.1f\nfloor_pool_8B_p50_us %.1f\n"
              "floor_pool_watch_8B_p50_us %.1f\nfloor_pool_watch_both_8B_p50_us %.1f\nfloor_io_spin_8B_p50_us %.1f\n",
              b, e, p, w, ww, io);
}
