#pragma once
// A random 64-bit name for this process, made anew in a forked child: what a peer may compare to
// learn that it is in the same process, and what makes this process's socket names unique on a
// host. Not its pid: two processes in different PID namespaces of one host can have the same pid,
// and a pid that came from a peer proves nothing.
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <random>

namespace remora::transport::detail {

inline std::uint64_t process_token() {
  static std::mutex mu;
  static pid_t made_in = -1;
  static std::uint64_t token = 0;
  std::lock_guard lock(mu);
  if (made_in != ::getpid()) {  // first use, or first use in a forked child
    std::random_device rd;
    token = (std::uint64_t{rd()} << 32) ^ rd();
    made_in = ::getpid();
  }
  return token;
}

}  // namespace remora::transport::detail
