#pragma once
// Lets an example run by hand as a whole group: without RANK in the environment, the process
// becomes rank 0 and starts ranks 1..N-1 as copies of itself. As torchrun's agent does, it hosts
// the rendezvous store itself, on a port the kernel picks (unless MASTER_PORT is set), so runs
// side by side never collide. Under torchrun (or any launcher that sets RANK, WORLD_SIZE,
// MASTER_ADDR, MASTER_PORT) it does nothing.
#include <spawn.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include <torch/csrc/distributed/c10d/TCPStore.hpp>

extern char** environ;

namespace example {

inline std::vector<pid_t>& children() {
  static std::vector<pid_t> pids;
  return pids;
}

// Returns this process's rank. Ranks 1..N-1 run `program` (default: this one) with the
// arguments `args_of(rank)` gives.
inline int launch_group(int world_size, std::string program = {},
                        std::vector<std::string> (*args_of)(int rank) = nullptr) {
  if (!std::getenv("RANK")) {
    setenv("MASTER_ADDR", "127.0.0.1", 1);
    if (!std::getenv("MASTER_PORT")) {
      c10d::TCPStoreOptions so;
      so.port = 0;
      so.isServer = true;
      so.waitWorkers = false;
      static auto store = c10::make_intrusive<c10d::TCPStore>("127.0.0.1", so);  // lives until exit
      setenv("MASTER_PORT", std::to_string(store->getPort()).c_str(), 1);
      setenv("TORCHELASTIC_USE_AGENT_STORE", "True", 1);  // every rank, 0 included, is a client
    }
    setenv("WORLD_SIZE", std::to_string(world_size).c_str(), 1);
    if (program.empty()) program = std::filesystem::read_symlink("/proc/self/exe");
    for (int r = 1; r < world_size; ++r) {
      setenv("RANK", std::to_string(r).c_str(), 1);
      std::vector<std::string> all{program};
      if (args_of)
        for (auto& a : args_of(r)) all.push_back(a);
      std::vector<char*> argv;
      for (auto& a : all) argv.push_back(a.data());
      argv.push_back(nullptr);
      pid_t pid = 0;
      if (posix_spawn(&pid, program.c_str(), nullptr, nullptr, argv.data(), environ) == 0) children().push_back(pid);
    }
    setenv("RANK", "0", 1);
  }
  return std::atoi(std::getenv("RANK"));
}

// Waits for the ranks this process started; returns non-zero if one failed.
inline int wait_group() {
  int failed = 0;
  for (pid_t pid : children()) {
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) failed = 1;
  }
  return failed;
}

}  // namespace example
