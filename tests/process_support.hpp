#pragma once
// Helpers for tests that start real processes: the test binary re-executed in a role
// (roles.hpp), rendezvous over a TCPStore the test process hosts on a port the kernel picks.
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "remora/agent/options.hpp"

extern char** environ;

namespace remora::test {

// A TCPStore this process hosts on a port the kernel chose (no race for a free port): rank 0
// uses it as Options::store, the other processes reach it as tcp://127.0.0.1:port.
struct HostedStore {
  c10::intrusive_ptr<c10d::TCPStore> store;
  std::uint16_t port;
};
inline HostedStore host_store() {
  c10d::TCPStoreOptions so;
  so.port = 0;
  so.isServer = true;
  so.waitWorkers = false;
  so.timeout = std::chrono::seconds(30);
  auto store = c10::make_intrusive<c10d::TCPStore>("127.0.0.1", so);
  return {store, store->getPort()};
}

// Starts this test binary with `args`; returns its pid.
inline pid_t spawn_self(std::vector<std::string> args, const std::string& program = "/proc/self/exe") {
  std::string self = std::filesystem::read_symlink("/proc/self/exe");
  std::vector<std::string> all = {program == "/proc/self/exe" ? self : program};
  for (auto& a : args) all.push_back(a == "@self" ? self : a);
  std::vector<char*> argv;
  for (auto& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid;
  REQUIRE(posix_spawn(&pid, all[0].c_str(), nullptr, nullptr, argv.data(), environ) == 0);
  return pid;
}

inline int wait_exit(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

inline remora::Options tcp_options(std::uint16_t port) {
  remora::Options o;
  o.init_method = "tcp://127.0.0.1:" + std::to_string(port);
  o.init_timeout = std::chrono::seconds(30);
  o.shutdown_timeout = std::chrono::seconds(30);
  return o;
}

// Options for rank 0 of a group whose store this process hosts.
inline remora::Options hosted_options(const HostedStore& hosted) {
  remora::Options o = tcp_options(hosted.port);
  o.store = hosted.store;
  return o;
}

}  // namespace remora::test
