#pragma once
// Lets an example run by hand as a whole group: without RANK in the environment, the process
// becomes rank 0 and starts ranks 1..N-1 as copies of itself. Under torchrun (or any launcher
// that sets RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) it does nothing.
#include <spawn.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

extern char** environ;

namespace example {

inline std::vector<pid_t>& children() {
  static std::vector<pid_t> pids;
  return pids;
}

// Returns this process's rank.
inline int launch_group(int world_size, const char* port) {
  if (!std::getenv("RANK")) {
    setenv("MASTER_ADDR", "127.0.0.1", 1);
    setenv("MASTER_PORT", port, 0);
    setenv("WORLD_SIZE", std::to_string(world_size).c_str(), 1);
    std::string self = std::filesystem::read_symlink("/proc/self/exe");
    for (int r = 1; r < world_size; ++r) {
      setenv("RANK", std::to_string(r).c_str(), 1);
      char* args[] = {self.data(), nullptr};
      pid_t pid = 0;
      if (posix_spawn(&pid, self.c_str(), nullptr, nullptr, args, environ) == 0) children().push_back(pid);
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
