#pragma once
// What a worker is doing, for people debugging a job: PyTorch's `_get_debug_info`, typed. A
// snapshot taken under each table's own lock (the parts may be microseconds apart); cost: a walk
// of the calls in flight and of the connections, so not for a hot loop.
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace remora {

struct PeerDebugInfo {
  std::string name;
  std::uint32_t id = 0;
  std::string transport;  // what carries calls to it now: "tcp", "tls", "local", "self", or "" (none open)
  bool lost = false;       // its connection failed; calls to it fail with WorkerLost
  std::string lost_reason;
  std::size_t connections = 0;         // open now (one usually; more while a duplicate is being refused)
  std::size_t calls_in_flight = 0;     // this worker's calls to it awaiting their reply
  std::uint64_t calls_pending_here = 0;  // its calls this worker received and has not answered
  // Frames and bytes over its connections since the start, open and closed ones (a tensor in
  // shared memory counts its size).
  std::uint64_t frames_sent = 0, bytes_sent = 0, frames_received = 0, bytes_received = 0;
};

struct DebugInfo {
  std::string worker;
  std::uint32_t id = 0;
  bool running = false;
  std::size_t calls_in_flight = 0;  // awaiting a reply, to every peer and to self
  std::size_t connections = 0;      // open now, including ones whose peer has not said who it is
  std::string local_socket;         // its same-host socket ("@" and the abstract name; "" when none)
  std::uint64_t late_replies = 0;   // replies that came after their call had ended (timed out): dropped
  std::vector<PeerDebugInfo> peers;  // by id, this worker included
  // Counts from the layers above, by name: "rref.owned_values", "rref.forks", "rref.user_rrefs",
  // "rref.pending_children" once an RRef was used, "autograd.contexts", "autograd.send_functions",
  // "autograd.recv_functions" once distributed autograd was.
  std::map<std::string, std::int64_t> counters;

  // Everything as name -> text, the shape of PyTorch's `_get_debug_info` ("agent.calls_in_flight",
  // "peer.w1.bytes_sent", "rref.owned_values", ...).
  std::map<std::string, std::string> as_map() const {
    std::map<std::string, std::string> m;
    m["agent.worker"] = worker;
    m["agent.id"] = std::to_string(id);
    m["agent.running"] = running ? "true" : "false";
    m["agent.calls_in_flight"] = std::to_string(calls_in_flight);
    m["agent.connections"] = std::to_string(connections);
    for (const auto& p : peers) {
      const std::string k = "peer." + p.name + ".";
      m[k + "transport"] = p.transport;
      m[k + "lost"] = p.lost ? p.lost_reason : "";
      m[k + "connections"] = std::to_string(p.connections);
      m[k + "calls_in_flight"] = std::to_string(p.calls_in_flight);
      m[k + "calls_pending_here"] = std::to_string(p.calls_pending_here);
      m[k + "frames_sent"] = std::to_string(p.frames_sent);
      m[k + "bytes_sent"] = std::to_string(p.bytes_sent);
      m[k + "frames_received"] = std::to_string(p.frames_received);
      m[k + "bytes_received"] = std::to_string(p.bytes_received);
    }
    for (const auto& [name, value] : counters) m[name] = std::to_string(value);
    return m;
  }
};

}  // namespace remora
