#pragma once
// The functions whose calls may read a caller's GPU tensors in place (a call frame flagged
// wire::kLendsDeviceTensors): the library's own that only read them while they run (weight sync's
// load). The flag is the sender's offer; a receiver takes it only for a function listed here,
// since any other handler could keep its arguments or write into them. Process-wide, filled at
// static initialization by the layers that define such functions.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <span>
#include <vector>

namespace remora::wire {

class LendingCalls {
 public:
  static void allow(std::uint64_t function) {
    auto& s = state();
    std::lock_guard lock(s.mu);
    if (std::find(s.ids.begin(), s.ids.end(), function) == s.ids.end()) s.ids.push_back(function);
  }
  static bool allows(std::uint64_t function) {
    auto& s = state();
    std::lock_guard lock(s.mu);
    return std::find(s.ids.begin(), s.ids.end(), function) != s.ids.end();
  }
  // Whether a call whose body is `body` (its function id first) may read its tensors in place.
  static bool allows_body(std::span<const std::byte> body) {
    std::uint64_t id = 0;
    if (body.size() < sizeof id) return false;
    std::memcpy(&id, body.data(), sizeof id);  // little-endian hosts only (wire-format.md)
    return allows(id);
  }

 private:
  struct State {
    std::mutex mu;
    std::vector<std::uint64_t> ids;
  };
  static State& state() {
    static State s;
    return s;
  }
};

}  // namespace remora::wire
