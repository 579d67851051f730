#pragma once
// Starting a group of agents inside one test process: they share one in-memory store and
// listen on ephemeral loopback ports. And waiting: for a condition, for a peer to close a socket.
#include <poll.h>
#include <unistd.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstdio>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <torch/csrc/distributed/c10d/HashStore.hpp>

#include "remora/agent/rpc.hpp"

namespace remora::test {

// What this process writes to stderr (libtorch's LOG(WARNING) among it) while the capture lives;
// text() reads what came so far.
class StderrCapture {
 public:
  StderrCapture() : file_(std::tmpfile()) {
    std::fflush(stderr);
    saved_ = ::dup(2);
    ::dup2(::fileno(file_), 2);
  }
  ~StderrCapture() {
    std::fflush(stderr);
    ::dup2(saved_, 2);
    ::close(saved_);
    std::fclose(file_);
  }
  StderrCapture(const StderrCapture&) = delete;
  StderrCapture& operator=(const StderrCapture&) = delete;
  std::string text() const {
    std::fflush(stderr);
    std::string out;
    char buf[4096];
    for (off_t at = 0;;) {
      const auto n = ::pread(::fileno(file_), buf, sizeof buf, at);
      if (n <= 0) return out;
      out.append(buf, static_cast<std::size_t>(n));
      at += n;
    }
  }

 private:
  std::FILE* file_;
  int saved_ = -1;
};

// What `run` writes to stderr.
template <class F>
std::string stderr_of(F&& run) {
  StderrCapture capture;
  run();
  return capture.text();
}

// Whether `pred` becomes true within `limit` (polled every millisecond): for what other workers
// finish asynchronously, such as releasing what a scope held.
inline bool eventually(const std::function<bool()>& pred,
                       std::chrono::milliseconds limit = std::chrono::seconds(20)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return pred();
}

// Whether the peer of socket `fd` closes it within `within`; what it sends meanwhile is read and
// dropped. (Polls: a blocking read with SO_RCVTIMEO would not return through Asio.)
inline bool closed_within(int fd, std::chrono::milliseconds within) {
  char buf[65536];
  const auto deadline = std::chrono::steady_clock::now() + within;
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 10) <= 0) continue;
    const auto n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) return true;
  }
  return false;
}

// `base` serving every operator by name that "*" covers, and model files below the temporary
// directory: for tests of calls by name (the default serves neither).
inline Options serving_by_name(Options base = {}) {
  base.serve_operators = {"*"};
  base.model_dirs = {std::filesystem::temp_directory_path().string()};
  if (const char* aoti = std::getenv("REMORA_TEST_AOTI_DIR"); aoti && *aoti) base.model_dirs.push_back(aoti);
  return base;
}

inline std::vector<std::unique_ptr<Agent>> start_group(std::vector<std::string> names, Options base = {}) {
  base.store = c10::make_intrusive<c10d::HashStore>();
  base.init_timeout = std::chrono::seconds(20);
  base.shutdown_timeout = std::chrono::seconds(20);
  std::vector<std::unique_ptr<Agent>> agents(names.size());
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < names.size(); ++i)
    threads.emplace_back([&, i] { agents[i] = std::make_unique<Agent>(names[i], int(i), int(names.size()), base); });
  for (auto& t : threads) t.join();
  return agents;
}

// Graceful shutdown of a whole group, all at once as separate processes would.
// An elastic group's options over `store` (20 s for every timeout).
inline Options elastic_options(c10::intrusive_ptr<c10d::Store> store) {
  Options o;
  o.elastic = true;
  o.store = std::move(store);
  o.rpc_timeout = std::chrono::seconds(20);
  o.init_timeout = std::chrono::seconds(20);
  o.shutdown_timeout = std::chrono::seconds(20);
  return o;
}

inline void shutdown_group(std::vector<std::unique_ptr<Agent>>& agents) {
  std::vector<std::thread> threads;
  for (auto& a : agents) threads.emplace_back([&a] { a->shutdown(); });
  for (auto& t : threads) t.join();
}

}  // namespace remora::test
