#pragma once
// Roles: the test binary re-executed as another process (`remora_tests --role NAME args...`)
// for tests that need real processes: rendezvous over TCP, process death, torchrun.
#include <map>
#include <string>
#include <vector>

namespace remora::test {

using Role = int (*)(const std::vector<std::string>& args);

inline std::map<std::string, Role>& roles() {
  static std::map<std::string, Role> r;
  return r;
}

struct RegisterRole {
  RegisterRole(const std::string& name, Role fn) { roles()[name] = fn; }
};

}  // namespace remora::test
