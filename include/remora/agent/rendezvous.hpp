#pragma once
// Rendezvous through a c10d store: every worker publishes its name, address and device record
// under its rank in one key, and each waits until all ranks are known. Rank 0 gathers every
// rank's key into one roster, which the others read once: three store operations per worker
// (rank 0: one read per rank), not one read per rank per worker. Names must be unique: every
// worker checks the roster, so a duplicate fails the whole group at once.
#include <chrono>
#include <cstdlib>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include <c10/util/Exception.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "remora/agent/options.hpp"
#include "remora/core/errors.hpp"

namespace remora::detail {

struct PeerAddress {
  std::string name;
  std::string host;
  std::uint16_t port = 0;
  std::string host_identity;  // same value: same host (transport/host_identity.hpp)
  std::string local_socket;   // abstract unix socket name, '@' for the leading NUL; empty: none
  bool authenticates = false;  // has a secret (never the secret itself)
  bool tls = false;            // its TCP connections speak TLS
};

inline std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::string(v) : fallback;
}

inline std::vector<std::uint8_t> bytes_of(const std::string& s) { return {s.begin(), s.end()}; }

// `text` as a port number; throws Error naming `what` (an environment variable, a rank's address)
// when it is not one.
inline std::uint16_t port_of(const std::string& text, const std::string& what) {
  std::size_t used = 0;
  long v = -1;
  try {
    v = std::stol(text, &used);
  } catch (const std::exception&) {
  }
  if (used != text.size() || v < 0 || v > 65535)
    throw Error("remora: " + what + " is '" + text + "', which is not a port number (0-65535)");
  return static_cast<std::uint16_t>(v);
}

// What a store's exception says, without libtorch's C++ backtrace.
inline std::string store_reason(const std::exception& e) {
  const auto* c10_error = dynamic_cast<const c10::Error*>(&e);
  return c10_error ? c10_error->what_without_backtrace() : e.what();
}
inline std::string string_of(const std::vector<std::uint8_t>& b) { return {b.begin(), b.end()}; }

// The host and port of the store that `o.init_method` names (env://: MASTER_ADDR, MASTER_PORT;
// tcp://host:port). Throws Error for a missing variable or a malformed or unknown method.
struct StoreAddress {
  std::string host, port;
};
inline StoreAddress store_address(const Options& o) {
  if (o.init_method.rfind("env://", 0) == 0) {
    StoreAddress a{env_or("MASTER_ADDR", ""), env_or("MASTER_PORT", "")};
    if (a.host.empty() || a.port.empty())
      throw Error("remora: init_method env:// needs MASTER_ADDR and MASTER_PORT in the environment");
    return a;
  }
  if (o.init_method.rfind("tcp://", 0) == 0) {
    auto hp = o.init_method.substr(6);
    auto colon = hp.rfind(':');
    if (colon == std::string::npos) throw Error("remora: init_method must be tcp://host:port, got " + o.init_method);
    return {hp.substr(0, colon), hp.substr(colon + 1)};
  }
  throw Error("remora: unknown init_method '" + o.init_method + "' (use env:// or tcp://host:port)");
}

// The TCPStore at `host` with `so` (a client, or its server when so.isServer). Throws Error naming
// the store's address when it cannot be reached or hosted (libtorch throws c10::Error, or c10d's
// TimeoutError, a runtime_error in 1.13).
inline c10::intrusive_ptr<c10d::Store> make_tcp_store(const Options& o, const std::string& host,
                                                      const c10d::TCPStoreOptions& so) {
  try {
    return c10::make_intrusive<c10d::TCPStore>(host, so);
  } catch (const std::exception& e) {
    throw Error("remora: cannot " + std::string(so.isServer ? "host" : "reach") + " the rendezvous store at " + host +
                ":" + std::to_string(so.port) + " (init_method " + o.init_method + ", init_timeout " +
                std::to_string(o.init_timeout.count()) + " ms): " + store_reason(e));
  }
}

// The store the options name, namespaced under "remora/" (and torchrun's restart count, so a
// restarted group does not read its predecessor's keys).
inline c10::intrusive_ptr<c10d::Store> open_store(const Options& o, int rank, int world_size) {
  c10::intrusive_ptr<c10d::Store> base = o.store;
  if (!base) {
    const auto [host, port] = store_address(o);
    c10d::TCPStoreOptions so;
    so.port = port_of(port, o.init_method.rfind("env://", 0) == 0 ? std::string("MASTER_PORT")
                                                                   : "the port of init_method " + o.init_method);
    // torchrun's agent already hosts the store; otherwise rank 0 does.
    so.isServer = rank == 0 && env_or("TORCHELASTIC_USE_AGENT_STORE", "") != "True";
    so.numWorkers = world_size;
    so.waitWorkers = false;
    so.timeout = o.init_timeout;
    base = make_tcp_store(o, host, so);
  }
  return c10::make_intrusive<c10d::PrefixStore>("remora/" + env_or("TORCHELASTIC_RESTART_COUNT", "0"), base);
}

inline std::vector<std::string> split_lines(const std::string& v) {
  std::vector<std::string> out;
  std::size_t start = 0;
  for (std::size_t nl; (nl = v.find('\n', start)) != std::string::npos; start = nl + 1) out.push_back(v.substr(start, nl - start));
  out.push_back(v.substr(start));
  return out;
}

// What the rendezvous gives each worker: every rank's address and device record, indexed by rank.
struct Roster {
  std::vector<PeerAddress> peers;
  std::vector<std::string> devices;
};

// The roster's bytes: each record as "SIZE:" and its bytes (records hold newlines).
inline void append_record(std::string& out, const std::string& record) {
  out += std::to_string(record.size()) + ":" + record;
}
inline std::string next_record(const std::string& in, std::size_t& at) {
  const auto colon = in.find(':', at);
  std::size_t size = 0;
  if (colon == std::string::npos || colon == at || colon - at > 9 ||
      in.find_first_not_of("0123456789", at) != colon || (size = std::stoul(in.substr(at, colon - at))) > in.size() - colon - 1)
    throw Error("remora: the rendezvous roster is malformed (another version of remora in the group?)");
  at = colon + 1 + size;
  return in.substr(colon + 1, size);
}

// The worker name in a published key (its first record: "name\nhost\n...").
inline std::string split_name(const std::vector<std::uint8_t>& published) {
  std::size_t at = 0;
  return "'" + split_lines(next_record(string_of(published), at))[0] + "'";
}

// Publishes this worker (`self.name`, its addresses and `devices`, its device record) and
// returns every worker's, indexed by rank. `get_waits`: the store's get waits for a missing key
// up to `timeout` itself (a TCPStore opened with that timeout), so the roster needs no wait of
// its own (c10d's TCPStore::get is a wait and a read: one round trip less of four).
inline Roster rendezvous(c10d::Store& store, const PeerAddress& self, const std::string& devices, int rank,
                         int world_size, std::chrono::milliseconds timeout, bool get_waits = false) {
  const std::string& name = self.name;
  if (name.empty() || name.find_first_of("/\n") != std::string::npos)
    throw Error("remora: invalid worker name '" + name + "' (non-empty, no '/' or newline)");
  if (world_size < 1 || rank < 0 || rank >= world_size)
    throw Error("remora: rank " + std::to_string(rank) + " is outside world size " + std::to_string(world_size));
  // The key's value is two roster records: rank 0 concatenates the values as they are.
  std::string published;
  append_record(published, name + "\n" + self.host + "\n" + std::to_string(self.port) + "\n" + self.host_identity +
                               "\n" + self.local_socket + "\n" + (self.authenticates ? "secret" : "open") +
                               (self.tls ? "+tls" : ""));
  append_record(published, devices);
  store.set("worker/" + std::to_string(rank), bytes_of(published));
  std::vector<std::string> keys;
  for (int r = 0; r < world_size; ++r) keys.push_back("worker/" + std::to_string(r));
  std::string roster;
  try {
    if (rank == 0) {
      store.wait(keys, timeout);
      for (int r = 0; r < world_size; ++r) roster += string_of(store.get(keys[r]));
      store.set("roster", bytes_of(roster));
    } else {
      if (!get_waits) store.wait({"roster"}, timeout);
      roster = string_of(store.get("roster"));
    }
  } catch (const std::exception& e) {
    // Who came and who did not, as far as the store still answers.
    std::string joined, missing;
    for (int r = 0; r < world_size; ++r) {
      bool there = false;
      try {
        there = store.check({keys[r]});
        if (there) joined += (joined.empty() ? "" : ", ") + split_name(store.get(keys[r])) + " (rank " + std::to_string(r) + ")";
      } catch (const std::exception&) {
      }
      if (!there) missing += (missing.empty() ? "" : ", ") + std::to_string(r);
    }
    throw Error("remora: worker '" + name + "' timed out after " + std::to_string(timeout.count()) +
                " ms waiting for all " + std::to_string(world_size) + " workers to join; joined: " +
                (joined.empty() ? std::string("none") : joined) + "; missing ranks: " +
                (missing.empty() ? std::string("none") : missing) + " (" + store_reason(e) + ")");
  }
  Roster out;
  auto& peers = out.peers;
  peers.resize(world_size);
  std::size_t at = 0;
  std::unordered_map<std::string, int> rank_of;  // names seen so far
  for (int r = 0; r < world_size; ++r) {
    const std::size_t begins = at;
    auto fields = split_lines(next_record(roster, at));
    out.devices.push_back(next_record(roster, at));
    // This rank's part is what it published: otherwise the roster is another group's (a store
    // and prefix used again) or was made for another world size.
    if (r == rank && roster.compare(begins, at - begins, published) != 0)
      throw Error("remora: the rendezvous roster does not hold what worker '" + name + "' published as rank " +
                  std::to_string(rank) + ": the store holds an earlier group's keys, or ranks disagree on the world size");
    if (fields.size() != 6) throw Error("remora: rank " + std::to_string(r) + " published an address this build cannot read");
    if (auto [it, fresh] = rank_of.emplace(fields[0], r); !fresh)
      throw Error("remora: ranks " + std::to_string(it->second) + " and " + std::to_string(r) + " both joined as '" +
                  fields[0] + "': the name is already taken, and worker names must be unique");
    peers[r] = {fields[0], fields[1], port_of(fields[2], "the port rank " + std::to_string(r) + " published"), fields[3], fields[4],
                fields[5].rfind("secret", 0) == 0, fields[5].ends_with("+tls")};
  }
  if (at != roster.size())
    throw Error("remora: the rendezvous roster holds more than " + std::to_string(world_size) +
                " workers: ranks disagree on the world size");
  // A group authenticates all or nothing: say so here rather than as failed connections later.
  for (const auto& p : peers)
    if (p.authenticates != self.authenticates)
      throw Error("remora: worker '" + (self.authenticates ? name : p.name) + "' has a secret (Options::secret) and '" +
                  (self.authenticates ? p.name : name) + "' has none: every worker of a group needs the same secret");
  for (const auto& p : peers)
    if (p.tls != self.tls)
      throw Error("remora: worker '" + (self.tls ? name : p.name) + "' uses TLS (Options::tls) and '" +
                  (self.tls ? p.name : name) + "' does not: every worker of a group needs TLS, or none");
  return out;
}

// A barrier that also sums numbers over all workers: used by graceful shutdown.
inline std::vector<std::int64_t> sum_over_workers(c10d::Store& store, const std::string& key, int world_size,
                                                  const std::vector<std::int64_t>& values,
                                                  std::chrono::milliseconds timeout) {
  for (std::size_t i = 0; i < values.size(); ++i) store.add(key + "/sum" + std::to_string(i), values[i]);
  const auto arrived = store.add(key + "/arrived", 1);
  if (arrived == world_size) store.set(key + "/done", bytes_of("1"));
  try {
    store.wait({key + "/done"}, timeout);
  } catch (const std::exception& e) {  // c10::Error (TCPStore), std::system_error (HashStore)
    throw Error("remora: the group's barrier '" + key + "' was not reached by every worker within " +
                std::to_string(timeout.count()) + " ms (" + std::to_string(arrived) + " of " +
                std::to_string(world_size) + " had arrived when this one did; a worker is gone or still busy): " +
                store_reason(e));
  }
  std::vector<std::int64_t> totals;
  for (std::size_t i = 0; i < values.size(); ++i) totals.push_back(store.add(key + "/sum" + std::to_string(i), 0));
  return totals;
}

}  // namespace remora::detail
