#pragma once
// Which processes may use the local transport with each other: those of one boot of one kernel
// in one network namespace (abstract unix socket names are per network namespace).
#include <unistd.h>

#include <fstream>
#include <string>

namespace remora::transport {

// "boot-id/net-namespace", or empty when either cannot be read (no local transport then).
inline std::string host_identity() {
  std::string boot;
  std::ifstream("/proc/sys/kernel/random/boot_id") >> boot;
  char ns[128];
  const ssize_t n = ::readlink("/proc/self/ns/net", ns, sizeof ns - 1);
  if (boot.empty() || n <= 0) return {};
  return boot + "/" + std::string(ns, static_cast<std::size_t>(n));
}

}  // namespace remora::transport
