#pragma once
// Counts of one agent's distributed autograd tables, as remora::autograd::stats(agent) gives them
// (tests use them to prove nothing leaks; Agent::debug_info() has them too, as "autograd.*").
#include <cstddef>
#include <cstdint>

namespace remora::autograd {

struct Stats {
  std::size_t contexts = 0;
  std::size_t send_functions = 0;
  std::int64_t recv_functions = 0;      // alive, anywhere (the graph holds them)
  std::uint64_t gradient_messages = 0;  // gradients received from peers, ever (one per message)
  std::uint64_t releases_sent = 0;      // ends of contexts told to peers, ever (one per peer told)
  std::uint64_t releases_received = 0;  // ends of contexts peers told this worker, ever
};

}  // namespace remora::autograd
