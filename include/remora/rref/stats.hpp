#pragma once
// Counts of one agent's RRef tables, as remora::rref_stats(agent) gives them (tests use them to
// prove nothing leaks; Agent::debug_info() has them too, as "rref.*" counters).
#include <cstddef>
#include <cstdint>

namespace remora {

struct RRefStats {
  std::int64_t owned_values = 0;   // values this worker holds for RRefs (created or awaited)
  std::size_t forks = 0;           // users' references to them that the owner knows of
  std::size_t user_rrefs = 0;      // references this worker holds to values on other workers
  std::size_t pending_children = 0;
};

}  // namespace remora
