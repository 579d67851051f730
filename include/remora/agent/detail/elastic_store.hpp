#pragma once
// An elastic group's records in its store (Options::elastic): ids handed out once each, the
// incarnation count of each name, each member's address under its id, which id a name has now,
// and every name that ever joined. A member that leaves removes its address; one that dies leaves
// it, and whoever reads it finds out when it cannot connect.
//   elastic/ids            the next id (add)
//   elastic/incarnation/N  joins under name N so far (add)
//   elastic/member/ID      the member's address (PeerAddress, incarnation, MPS, device record)
//   elastic/name/N         the id name N has now
//   elastic/names          names that joined so far (add); elastic/names/K: the K-th
//   elastic/listed/N       name N is in that list
// A joining worker reads the members through the names, so its cost grows with the names the
// group has known, not with its joins (a worker restarted every 10 s takes a new id each time).
#include <cstdint>
#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

#include <asio/io_context.hpp>
#include <asio/ip/address.hpp>
#include <asio/ip/tcp.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "remora/agent/rendezvous.hpp"

namespace remora::detail {

// Ids an elastic group hands out in its lifetime (joins and rejoins together): a member restarted
// every 10 s for four months. Each id a worker meets costs it about 400 bytes.
inline constexpr std::uint32_t kElasticIds = std::uint32_t{1} << 20;

struct MemberRecord {
  std::uint32_t id = 0;
  PeerAddress address;
  std::uint64_t incarnation = 1;
  bool cuda_mps = false;
  std::string devices;  // its device record (device_maps.hpp): CUDA devices and device maps
};

// Whether something listens on this host's loopback at `port` (a store, there).
inline bool accepts_connections(std::uint16_t port) {
  asio::io_context io;
  asio::ip::tcp::socket socket(io);
  std::error_code ec;
  socket.connect({asio::ip::address_v4::loopback(), port}, ec);
  return !ec;
}

// The store of an elastic group: Options::store; else torchrun's agent store
// (TORCHELASTIC_USE_AGENT_STORE=True); else the init_method's, hosted by the first worker that
// finds no store there (when its host is this host's loopback; otherwise it waits for one).
inline c10::intrusive_ptr<c10d::Store> open_elastic_store(const Options& o) {
  c10::intrusive_ptr<c10d::Store> base = o.store;
  if (!base) {
    const auto [host, port] = store_address(o);
    c10d::TCPStoreOptions so;
    so.port = port_of(port, "the store port of init_method " + o.init_method);
    so.waitWorkers = false;
    so.timeout = o.init_timeout;
    const bool agent_store = env_or("TORCHELASTIC_USE_AGENT_STORE", "") == "True";
    std::error_code ec;
    const auto address = asio::ip::make_address(host, ec);
    const bool here = host == "localhost" || (!ec && address.is_loopback());
    if (!agent_store && here && !accepts_connections(so.port)) {
      so.isServer = true;  // the first to come hosts it; the port taken meanwhile means another did
      try {
        base = c10::make_intrusive<c10d::TCPStore>(host, so);
      } catch (const std::exception&) {
        so.isServer = false;
      }
    }
    if (!base) base = make_tcp_store(o, host, so);
  }
  return c10::make_intrusive<c10d::PrefixStore>("remora/elastic", base);
}

inline std::string member_key(std::uint32_t id) { return "elastic/member/" + std::to_string(id); }

inline std::string encode_member(const MemberRecord& m) {
  const auto& a = m.address;
  return a.name + "\n" + a.host + "\n" + std::to_string(a.port) + "\n" + a.host_identity + "\n" + a.local_socket +
         "\n" + (a.authenticates ? "secret" : "open") + (a.tls ? "+tls" : "") + "\n" + std::to_string(m.incarnation) +
         "\n" + (m.cuda_mps ? "mps" : "-") + "\n" + m.devices;
}

// Publishes `self` as a new member: returns its record with the id and incarnation it got, and in
// `previous` the id its name had until now ("": none), for abandon_join.
inline MemberRecord join_elastic(c10d::Store& store, const PeerAddress& self, bool cuda_mps, const std::string& devices,
                                 std::string& previous) {
  if (self.name.empty() || self.name.find_first_of("/\n") != std::string::npos)
    throw Error("remora: invalid worker name '" + self.name + "' (non-empty, no '/' or newline)");
  MemberRecord m{static_cast<std::uint32_t>(store.add("elastic/ids", 1) - 1), self, 0, cuda_mps, devices};
  if (m.id >= kElasticIds)
    throw Error("remora: this elastic group has handed out all its " + std::to_string(kElasticIds) +
                " worker ids (joins and rejoins); start a new group");
  m.incarnation = static_cast<std::uint64_t>(store.add("elastic/incarnation/" + self.name, 1));
  store.set(member_key(m.id), bytes_of(encode_member(m)));
  const std::string name_key = "elastic/name/" + self.name;
  previous = store.check({name_key}) ? string_of(store.get(name_key)) : std::string();
  store.set(name_key, bytes_of(std::to_string(m.id)));
  // The name is listed after its record is there: a worker that reads the list finds the record
  // (and one that read it before misses this name, but then this worker, reading next, finds that
  // one). Once per name; again by a later incarnation when the first died before its name was.
  if (const std::string listed = "elastic/listed/" + self.name; !store.check({listed})) {
    store.set("elastic/names/" + std::to_string(store.add("elastic/names", 1) - 1), bytes_of(self.name));
    store.set(listed, bytes_of("1"));
  }
  return m;
}

// Undoes join_elastic for a worker that failed to join: its record goes, and its name means what
// it meant before (unless another worker of that name joined since).
inline void abandon_join(c10d::Store& store, const MemberRecord& m, const std::string& previous) {
  store.deleteKey(member_key(m.id));
  const std::string name_key = "elastic/name/" + m.address.name;
  if (!previous.empty())
    store.compareSet(name_key, bytes_of(std::to_string(m.id)), bytes_of(previous));
  else if (store.check({name_key}) && string_of(store.get(name_key)) == std::to_string(m.id))
    store.deleteKey(name_key);
}

// Member `id` as published, if it is still there (and, with `check_name`, its name has not
// joined again since).
inline std::optional<MemberRecord> read_member(c10d::Store& store, std::uint32_t id, bool check_name = true) {
  if (!store.check({member_key(id)})) return std::nullopt;
  const auto f = split_lines(string_of(store.get(member_key(id))));
  if (f.size() < 9 || (f.size() - 9) % 3 != 0)
    throw Error("remora: elastic member " + std::to_string(id) + " published a record this build cannot read");
  std::string devices = f[8];
  for (std::size_t i = 9; i < f.size(); ++i) devices += "\n" + f[i];
  MemberRecord m{id, {f[0], f[1], port_of(f[2], "the port member " + std::to_string(id) + " published"), f[3], f[4],
                      f[5].rfind("secret", 0) == 0, f[5].ends_with("+tls")},
                 std::stoull(f[6]), f[7] == "mps", std::move(devices)};
  if (!check_name) return m;
  const std::string name_key = "elastic/name/" + m.address.name;
  if (!store.check({name_key}) || string_of(store.get(name_key)) != std::to_string(id)) return std::nullopt;
  return m;
}

// The newest id of `name`, published or not (one that left took its record away).
inline std::optional<std::uint32_t> newest_id(c10d::Store& store, const std::string& name) {
  const std::string key = "elastic/name/" + name;
  if (!store.check({key})) return std::nullopt;
  const auto id = std::stoul(string_of(store.get(key)));
  if (id >= kElasticIds) return std::nullopt;
  return static_cast<std::uint32_t>(id);
}

// The id `name` has now, if it is a member.
inline std::optional<std::uint32_t> member_id(c10d::Store& store, const std::string& name) {
  const auto id = newest_id(store, name);
  if (!id || !store.check({member_key(*id)})) return std::nullopt;
  return id;
}

// Every member published now: the newest record of each name that joined, where it is still there.
// Six store reads per name.
inline std::vector<MemberRecord> published_members(c10d::Store& store) {
  std::vector<MemberRecord> out;
  std::unordered_set<std::uint32_t> seen;  // ids listed already (a name listed twice)
  const auto names = store.add("elastic/names", 0);
  for (std::int64_t k = 0; k < names; ++k) {
    const std::string key = "elastic/names/" + std::to_string(k);
    if (!store.check({key})) continue;  // its worker is between counting itself and writing its name
    const auto id = newest_id(store, string_of(store.get(key)));  // (its record: no need to check the name again)
    if (!id || !seen.insert(*id).second) continue;
    if (auto m = read_member(store, *id, /*check_name=*/false)) out.push_back(std::move(*m));
  }
  return out;
}

}  // namespace remora::detail
