#pragma once
// What an Agent runs on: the group it joined, its listening sockets and connections, the I/O
// threads and the worker pool, the table of calls in flight, and the services of the layers
// above. One per Agent, made by its constructor; the jobs are in the headers named after them
// (links, inbound, call_table, group_shutdown).
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/local/stream_protocol.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/strand.hpp>

#include "remora/agent/detail/call_interceptor.hpp"
#include "remora/agent/detail/call_table.hpp"
#include "remora/agent/detail/checked_options.hpp"
#include "remora/agent/detail/device_maps.hpp"
#include "remora/agent/detail/elastic_store.hpp"
#include "remora/agent/detail/held_frames.hpp"
#include "remora/agent/detail/hello.hpp"
#include "remora/agent/detail/id_table.hpp"
#include "remora/agent/detail/inbound.hpp"
#include "remora/agent/detail/io_loop.hpp"
#include "remora/agent/detail/links.hpp"
#include "remora/agent/detail/membership_watchers.hpp"
#include "remora/agent/detail/remote_profile.hpp"
#include "remora/agent/detail/services.hpp"
#include "remora/agent/detail/worker_pool.hpp"
#include "remora/agent/rendezvous.hpp"
#include "remora/transport/detail/process_token.hpp"
#include "remora/transport/host_identity.hpp"
#include "remora/transport/stream_connection.hpp"
#include "remora/transport/tls_connection.hpp"
#include "remora/wire/frame_reader.hpp"

namespace remora {
class Agent;
}

namespace remora::detail {

class AgentRuntime {
 public:
  enum class State { running, stopping, stopped };
  using Link = PeerLinks::Link;

  // Listens, joins the group through the store, checks the device maps, starts the threads. An
  // elastic group (Options::elastic) ignores `rank` and `world_size`.
  AgentRuntime(Agent& agent, std::string name, int rank, int world_size, Options options);

  Agent& agent;
  const Options options;
  const Options shown_options;  // what Agent::options() hands out: `options` without the secret
  const bool elastic;
  std::uint32_t self_id = 0;  // set once, by the constructor (an elastic worker's comes from the store)
  // By id. An elastic group's ids go up to kElasticIds; each entry is filled once, as its member
  // becomes known, before its id is handed to anyone: readers of a known id need no lock.
  IdTable<WorkerInfo> workers;

  // Throws Error when `name` is not in the group. An elastic worker asks the store for a name it
  // has not met (a blocking read: never on an I/O thread).
  std::uint32_t id_of(std::string_view name) {
    if (elastic) {
      if (auto id = elastic_id_of(name)) return *id;
    } else {
      for (std::uint32_t id = 0; id < workers.size(); ++id)
        if (workers[id].name == name) return id;
    }
    throw Error("remora: worker '" + std::string(name) + "' is not part of this group");
  }
  // Whether `id` is a worker this one knows (a static group's are all known).
  bool knows(std::uint32_t id) const {
    if (!elastic) return id < workers.size();
    std::lock_guard lock(members_mu_);
    return is_known(id);
  }
  // Ids a peer may name: a static group's ranks, or every id an elastic group may hand out.
  std::uint32_t id_bound() const { return elastic ? kElasticIds : workers.size(); }
  // Whether `id` is known, after asking the store when it is not (elastic; a blocking read): an
  // RRef may name an owner this worker has not met.
  bool meet(std::uint32_t id) {
    if (knows(id)) return true;
    if (id >= kElasticIds) return false;
    try {
      if (auto m = read_member(*store_, id)) register_member(*m, true);
    } catch (const std::exception&) {  // the store is gone: so is the member, as far as this worker can tell
    }
    return knows(id);
  }
  // The group as this worker sees it: a static group's workers; an elastic group's members that
  // are known and (unless `with_gone`) neither left nor lost.
  std::vector<WorkerInfo> members(bool with_gone = false) const;
  // Ids of the other members known now (elastic): whom a joining worker greets.
  std::vector<std::uint32_t> other_members() const;
  // `peer` said it leaves (its last call to this worker): it is lost, as having left.
  void member_left(std::uint32_t peer) {
    lose(peer, "worker '" + workers[peer].name + "' left the group", MembershipEvent::left, false);
  }
  std::shared_ptr<MembershipWatchers> watchers() const { return watchers_; }
  // Elastic: takes this worker out of the store, so that workers joining from now on do not meet
  // it (leaving); abandon_join also gives its name back (a join that failed).
  void unpublish() {
    try {
      store_->deleteKey(member_key(self_id));
    } catch (const std::exception& e) {
      log_warning("worker '" + workers[self_id].name + "': could not remove itself from the store (" +
                  store_reason(e) + ")");
    }
  }
  void abandon_join() {
    try {
      detail::abandon_join(*store_, self_record_, previous_name_);
    } catch (const std::exception&) {  // the store is gone: nothing to give back
    }
  }
  // Elastic: a member found in the store that refuses connections is dead; its record goes.
  void forget_record(std::uint32_t id) {
    try {
      store_->deleteKey(member_key(id));
    } catch (const std::exception&) {
    }
  }
  std::uint16_t listen_port() const { return acceptor_.local_endpoint().port(); }
  std::uint64_t next_request_id() { return next_request_id_.fetch_add(1, std::memory_order_relaxed); }
  State state() const { return state_.load(); }

  // See AgentAccess::submit.
  bool submit(std::uint32_t to, std::string_view function, std::uint64_t request_id, wire::OutFrame frame,
              std::chrono::milliseconds timeout, std::shared_ptr<const void> keep, Completion complete);
  // See AgentAccess::notify.
  bool notify(std::uint32_t to, wire::OutFrame frame, bool with_next_call);
  void shutdown(bool graceful);
  // `job` on the pool (run_counted) or the decoder thread (decode_counted), counted as work in
  // flight until it and its captures are gone.
  void run_counted(UniqueFunction<void()> job) { post_counted(pool_, std::move(job)); }
  void decode_counted(UniqueFunction<void()> job) { post_counted(decoder_, std::move(job)); }
  // The device map and peer name for frames to `peer` (WireScope).
  wire::EncodeDevices encode_devices(std::uint32_t peer, Direction direction) const {
    if (peer >= workers.size() || (elastic && !knows(peer))) return {};  // not met yet: no map, no name
    const wire::DeviceMap* map = peer == self_id                ? &self_map_
                                 : direction == Direction::call ? &call_maps_[peer]
                                                                : &reply_maps_[peer];
    return {map, workers[peer].name};
  }
  const wire::DeviceMap& reply_map(std::uint32_t peer) const { return reply_maps_[peer]; }
  std::uint64_t calls_batched() const { return inbound_.calls_batched(); }
  std::uint64_t late_replies() const { return late_replies_.load(std::memory_order_relaxed); }
  std::uint64_t pending_from(std::uint32_t peer) const { return inbound_.pending_from(peer); }

  PeerLinks links;
  CallTable calls;
  RemoteProfiles remote_profiles;  // events of profiled calls in flight, from their callees
  // The layer above that meets this agent's calls (call_interceptor.hpp); null until one is
  // registered (intercept), which the hot path checks and nothing more.
  std::atomic<CallInterceptor*> interceptor{nullptr};
  // Registers `i`; the first one stays. Throws Error when another is registered already.
  void intercept(CallInterceptor* i) {
    CallInterceptor* none = nullptr;
    if (!interceptor.compare_exchange_strong(none, i, std::memory_order_acq_rel) && none != i)
      throw Error("remora: worker '" + workers[self_id].name + "' has a call interceptor already");
  }
  // The interceptor for a frame that carries a record: made by its layer on first need
  // (interceptor_of); null when the program has no such layer.
  CallInterceptor* interceptor_for_record() {
    if (auto* i = interceptor.load(std::memory_order_acquire)) return i;
    if (auto of = interceptor_of.load(std::memory_order_acquire)) intercept(of(agent));
    return interceptor.load(std::memory_order_acquire);
  }
  c10d::Store& store() { return *store_; }  // the group's (prefixed) rendezvous store
  const c10::intrusive_ptr<c10d::Store>& store_ptr() const { return store_; }
  // Worker `id`'s same-host socket as this worker reaches it ("@name"; "" when it uses TCP).
  std::string local_socket_of(std::uint32_t id) const { return local_sockets_[id]; }

 private:
  void post_counted(WorkerPool& pool, UniqueFunction<void()> job) {
    calls.begin_work();
    pool.post([this, job = std::move(job)]() mutable {
      // Its captures go, then it counts as finished, even when it throws (the pool drops that).
      struct Done {
        UniqueFunction<void()>& job;
        CallTable& calls;
        ~Done() {
          job = UniqueFunction<void()>();
          calls.finished();
        }
      } done{job, calls};
      job();
    });
  }
  void listen();
  void open_local_acceptor();
  void join_static(const PeerAddress& me, int rank, int world_size);
  void join_elastic(const PeerAddress& me);
  void meet_published(const PeerAddress& me);
  std::optional<std::uint32_t> elastic_id_of(std::string_view name);
  // Makes member `m` known (elastic). False when it is stale: its name has a newer incarnation
  // here. A newer incarnation than the one known replaces it: the old one is lost.
  bool register_member(const MemberRecord& m, bool announce);
  // `peer` is gone for `reason`; its calls fail, the layers above and the subscribers hear of it.
  void lose(std::uint32_t peer, const std::string& reason, MembershipEvent::Kind kind, bool take_link);
  void peer_gone(std::uint32_t peer, const std::string& reason, MembershipEvent::Kind kind);
  void emit(MembershipEvent event);
  Hello hello_to(std::uint32_t peer) const {
    const auto& me = workers[self_id];
    // An elastic peer that has not met this worker registers it from the hello: it needs this
    // worker's devices and its map to that peer (only that one: a hello is read under 1 KiB).
    return {self_id, me.name, peer, me.incarnation, me_.host, me_.port, me_.host_identity, me_.local_socket,
            me.cuda_mps, elastic ? hello_devices(my_devices_, workers[peer].name) : std::string()};
  }
  void choose_transports(const std::vector<PeerAddress>& peers);
  // Every per-id table takes ids below `limit`.
  void reserve_ids(std::uint32_t limit) {
    workers.reserve(limit);
    endpoints_.reserve(limit);
    local_sockets_.reserve(limit);
    call_maps_.reserve(limit);
    reply_maps_.reserve(limit);
  }
  // Elastic, under members_mu_: whether `id`'s entries are filled; marking it so.
  bool is_known(std::uint32_t id) const { return id < known_.size() && known_[id]; }
  void mark_known(std::uint32_t id) {
    if (known_.size() <= id) known_.resize(id + 1, 0);
    known_[id] = 1;
  }
  template <class Acceptor>
  void accept_next(Acceptor& acceptor);
  Link link_to(std::uint32_t peer);
  transport::SharedMemoryOptions shared_memory_options() const {
    return {options.shared_memory_bytes, options.shared_memory_min_bytes};
  }
  // How a connection proves itself: to `peer` when this side dials it; any worker when accepting.
  transport::AuthOptions auth_options(std::uint32_t peer = UINT32_MAX) const {
    if (!secret_) return {};
    return {secret_, workers[self_id].name, peer == UINT32_MAX ? std::string() : workers[peer].name,
            options.hello_timeout};
  }
  void on_frame(const Link& conn, wire::InFrame&& frame);
  void on_close(const Link& conn, const std::string& reason);
  void on_reply(std::uint32_t from, wire::InFrame&& frame);
  void finish(CallTable::Pending&& p, wire::InFrame* frame, std::exception_ptr error);
  void fail_calls(std::vector<CallTable::Pending> failed, const std::string& why, bool timed_out);
  void call_self(wire::OutFrame frame);
  void arm_sweep();
  void wake_sweep();
  void send_held();
  void close_silent_connections();
  void stop_now(const std::string& why);

  std::shared_ptr<const std::string> secret_;  // null: no handshake
  PeerAddress me_;                             // as published
  MemberRecord self_record_;                   // elastic: as published
  std::string previous_name_;                  // elastic: the id this name had before it joined
  mutable std::mutex members_mu_;              // elastic: known_ and names_
  std::vector<char> known_;                    // elastic, by id: its entries are filled (grows)
  std::unordered_map<std::string, std::uint32_t> names_;  // elastic: each name's newest id
  std::shared_ptr<MembershipWatchers> watchers_ = std::make_shared<MembershipWatchers>();

 public:
  bool authenticates() const { return secret_ != nullptr; }  // the group has a secret

 private:
#if REMORA_OPENSSL
  std::shared_ptr<asio::ssl::context> tls_;  // null: plain TCP
#endif
  bool uses_tls() const {
#if REMORA_OPENSSL
    return tls_ != nullptr;
#else
    return false;
#endif
  }
  IdTable<asio::ip::tcp::endpoint> endpoints_;
  IdTable<std::string> local_sockets_;  // per peer: its local socket when it shares this host
  // Per peer: the device map of calls to it (ours) and of replies to it (the inverse of its map to us).
  IdTable<wire::DeviceMap> call_maps_, reply_maps_;
  DeviceRecord my_devices_;  // elastic: this worker's device count and maps, for members it meets
  wire::DeviceMap self_map_{{}, true};
  c10::intrusive_ptr<c10d::Store> store_;

  asio::io_context io_;
  IoLoop io_loop_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  asio::strand<asio::io_context::executor_type> timer_strand_;
  asio::ip::tcp::acceptor acceptor_;
  asio::local::stream_protocol::acceptor local_acceptor_;
  std::vector<std::thread> io_threads_;
  WorkerPool pool_;
  // Decodes replies whose decoding may run user code (outbound.hpp): off the I/O threads, and
  // off the pool, whose threads may all be waiting in sync calls for exactly such replies.
  WorkerPool decoder_;
  InboundCalls inbound_;
  asio::steady_timer sweep_timer_;
  std::atomic<bool> sweep_idle_{false};  // the sweep runs every 100 ms, not 5 (arm_sweep)
  std::chrono::steady_clock::time_point last_silent_check_{}, last_tick_{};  // on the timer strand
  HeldFrames held_;           // notifications waiting for the next call to their peer
  std::atomic<State> state_{State::running};
  std::atomic<std::uint64_t> next_request_id_{1};
  std::atomic<std::uint64_t> late_replies_{0};  // replies whose call had ended (timed out): dropped

 public:
  // Last member: services go first, while everything they refer to still exists.
  ServiceSet services;
};

// Whether `host` (an address or a name) is this host's loopback: a name that does not parse as an
// address ("localhost", say) counts only when it is "localhost".
inline bool listens_on_loopback(const std::string& host) {
  std::error_code ec;
  const auto address = asio::ip::make_address(host, ec);
  return ec ? host == "localhost" : address.is_loopback();
}

inline AgentRuntime::AgentRuntime(Agent& a, std::string name, int rank, int world_size, Options o)
    : agent(a), options(checked_options(std::move(o))), shown_options([&] {
        Options shown = options;
        shown.secret.clear();
        return shown;
      }()),
      elastic(options.elastic),
      io_loop_(io_, *options.io_watch), work_(io_.get_executor()), timer_strand_(asio::make_strand(io_)),
      acceptor_(io_), local_acceptor_(io_), pool_(options.num_worker_threads, *options.worker_watch),
      decoder_(1, std::chrono::microseconds(0)),
      inbound_(&a, pool_, io_, options.limits, options.max_pending_calls_per_peer,
               options.max_pending_bytes_per_peer, [this] { return interceptor_for_record(); }),
      sweep_timer_(timer_strand_) {
  Registry::global().check_no_clashes();
  listen();
  if (!options.secret.empty()) {
    if (!transport::detail::auth_available())
      throw Error("remora: Options::secret needs OpenSSL, and this program was built without it (REMORA_OPENSSL=0)");
    secret_ = std::make_shared<const std::string>(options.secret);
  } else if (!options.tls && !listens_on_loopback(options.listen_host)) {
    log_warning("worker '" + name + "' listens on " + options.listen_host +
                " without Options::secret or Options::tls: anyone who can reach that port can call every function "
                "it exposes (docs/security.md)");
  }
  if (options.tls) {
#if REMORA_OPENSSL
    tls_ = transport::make_tls_context(options.tls->certificate, options.tls->private_key, options.tls->ca);
#else
    throw Error("remora: Options::tls needs OpenSSL, and this program was built without it (REMORA_OPENSSL=0)");
#endif
  }
  PeerAddress me{name, options.advertise_host.empty() ? options.listen_host : options.advertise_host,
                 acceptor_.local_endpoint().port(), transport::host_identity(), "", secret_ != nullptr, uses_tls()};
  if (options.transport != Transport::tcp && !me.host_identity.empty()) {
    open_local_acceptor();
    me.local_socket = "@" + local_acceptor_.local_endpoint().path().substr(1);
  }
  me_ = me;
  if (elastic)
    join_elastic(me);
  else
    join_static(me, rank, world_size);
  accept_next(acceptor_);
  if (local_acceptor_.is_open()) accept_next(local_acceptor_);
  arm_sweep();
  for (int i = 0; i < std::max(1, options.num_io_threads); ++i) io_threads_.emplace_back([this] { io_loop_.run(); });
}

inline void AgentRuntime::listen() {
  auto at = asio::ip::tcp::endpoint(asio::ip::make_address(options.listen_host), options.listen_port);
  acceptor_.open(at.protocol());
  acceptor_.set_option(asio::ip::tcp::acceptor::reuse_address(true));
  acceptor_.bind(at);
  acceptor_.listen();
}

// An abstract unix socket (no file to clean up), unique per process and agent: named after the
// process's random token, not its pid (processes in different PID namespaces share pids).
inline void AgentRuntime::open_local_acceptor() {
  static std::atomic<unsigned> counter{0};
  char token[17];
  std::snprintf(token, sizeof token, "%016llx", static_cast<unsigned long long>(transport::detail::process_token()));
  const std::string name = std::string(1, '\0') + "remora-" + token + "-" +
                           std::to_string(counter.fetch_add(1)) + "-" +
                           std::to_string(reinterpret_cast<std::uintptr_t>(this));
  asio::local::stream_protocol::endpoint ep(name);
  local_acceptor_.open(ep.protocol());
  local_acceptor_.bind(ep);
  local_acceptor_.listen();
}

}  // namespace remora::detail

#include "remora/agent/detail/runtime_links.hpp"
#include "remora/agent/detail/runtime_members.hpp"
#include "remora/agent/detail/runtime_calls.hpp"
