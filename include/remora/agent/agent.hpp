#pragma once
// The Agent: one per worker. It joins the group (rendezvous), listens for peers, sends typed
// calls and serves them, and shuts down gracefully with the whole group.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include <asio/defer.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/local/stream_protocol.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>

#include "remora/agent/detail/device_maps.hpp"
#include "remora/agent/detail/io_loop.hpp"
#include "remora/agent/detail/node_cache.hpp"
#include "remora/agent/detail/registry.hpp"
#include "remora/agent/detail/sync_wait.hpp"
#include "remora/agent/detail/worker_pool.hpp"
#include "remora/agent/detail/wire_context.hpp"
#include "remora/agent/options.hpp"
#include "remora/agent/rendezvous.hpp"
#include "remora/transport/host_identity.hpp"
#include "remora/transport/stream_connection.hpp"

namespace remora {

class Agent;
namespace detail {
// The agent whose worker pool runs the current thread's function, if any: lets a remote
// function make nested calls on the agent that serves it.
inline thread_local Agent* serving_agent = nullptr;

// State a layer above keeps per agent (RRef tables), told about the agent's life events.
class AgentService {
 public:
  virtual ~AgentService() = default;
  // A peer's connection was lost: it will never answer again.
  virtual void on_peer_lost(std::uint32_t) {}
  // Graceful shutdown, once no worker has work in flight: release what is held for others.
  virtual void on_group_quiet() {}
  // The agent stopped: its threads are gone; drop everything.
  virtual void on_stop() {}
};
template <class S>
inline constexpr char service_key = 0;
}  // namespace detail

class Agent {
 public:
  // Joins the group: returns once every worker is known. Throws remora::Error on a duplicate
  // name, a bad rank, or a rendezvous timeout.
  Agent(std::string name, int rank, int world_size, Options options = {});
  ~Agent() { shutdown(false); }
  Agent(const Agent&) = delete;
  Agent& operator=(const Agent&) = delete;

  const WorkerInfo& self() const { return workers_[self_id_]; }
  const Options& options() const { return options_; }
  WorkerInfo get_worker_info(std::string_view name) const { return workers_[id_of(name)]; }
  WorkerInfo get_worker_info(std::uint32_t id) const {
    if (id >= workers_.size()) throw Error("remora: no worker has id " + std::to_string(id));
    return workers_[id];
  }
  const std::vector<WorkerInfo>& get_worker_infos() const { return workers_; }
  std::uint16_t listen_port() const { return acceptor_.local_endpoint().port(); }
  // What carries calls to `worker` now: "tcp", "local", or "" while no connection is open.
  std::string transport_to(std::string_view worker) const {
    const auto id = id_of(worker);
    std::lock_guard lock(links_mu_);
    return links_[id] ? links_[id]->kind() : "";
  }
  // The device map replies to `peer` are encoded with (the inverse of its map to this worker;
  // empty when it set none): RemoteModule keeps CUDA results on the device only when there is one.
  const wire::DeviceMap& reply_device_map(std::uint32_t peer) const { return reply_maps_.at(peer); }
  // Bytes of this worker's shared memory that peers still hold (tensors they received and keep).
  std::size_t shared_bytes_in_use() const {
    std::lock_guard lock(links_mu_);
    std::size_t n = 0;
    for (const auto& l : links_)
      if (l) n += l->shared_bytes_in_use();
    for (const auto& l : accepted_) n += l->shared_bytes_in_use();
    return n;
  }

  // Calls F on worker `to` with `args`; the result arrives in the Future. An optional
  // CallOptions first argument sets this call's timeout.
  template <auto F, class... As>
  auto rpc_async(std::string_view to, As&&... args);
  template <auto F, class... As>
  auto rpc_sync(std::string_view to, As&&... args) {
    auto f = rpc_async<F>(to, std::forward<As>(args)...);
    await_sync(f);
    return std::move(f).get();
  }

  // Waits for `f`, the answer to a sync call made through this agent. When it is the only call
  // in flight and no other thread is waiting for one, the caller watches it for a while before
  // it sleeps (detail/sync_wait.hpp).
  template <class T>
  void await_sync(const Future<T>& f) const {
    if (f.is_ready()) return;
    struct Waiting {
      std::atomic<int>& n;
      const bool alone = n.fetch_add(1, std::memory_order_relaxed) == 0;
      ~Waiting() { n.fetch_sub(1, std::memory_order_relaxed); }
    } waiting{sync_waiters_};
    if (options_.sync_watch.count() > 0 && waiting.alone && lone_call_in_flight())
      detail::SyncWaitPolicy::mine().watch(f, options_.sync_watch);
    f.wait();
  }

  // Graceful (default): waits until no worker has calls outstanding, then the whole group stops
  // together. Non-graceful: stops now and fails what is pending. Calls afterwards throw.
  void shutdown(bool graceful = true);
  bool is_running() const { return state_.load() == State::running; }

  // Calls currently awaiting a reply from a peer (or from this worker).
  std::size_t pending_calls() const {
    std::lock_guard lock(pending_mu_);
    return pending_.size();
  }

  // --- for the layers above (RRefs, modules): the untyped call path ---
  std::uint32_t id_of(std::string_view name) const {
    for (const auto& w : workers_)
      if (w.name == name) return w.id;
    throw Error("remora: worker '" + std::string(name) + "' is not part of this group");
  }
  std::uint64_t next_request_id() { return next_request_id_.fetch_add(1, std::memory_order_relaxed); }
  // Sends `frame` (a call with `request_id`) to `to`; the reply decodes as T.
  template <class T>
  // `keep` is held until the call completed (the RRef a call refers to, say). `*sent` says whether
  // the frame went to the peer: a ready future does not say it did not, since the reply may
  // already be back.
  Future<T> start_call(std::uint32_t to, std::string_view function, std::uint64_t request_id, wire::OutFrame frame,
                       std::chrono::milliseconds timeout, std::shared_ptr<const void> keep = nullptr,
                       bool* sent = nullptr);
  // Calls the handler registered as `fn` on worker `to`, with F's parameter and result types.
  template <auto F, class... As>
  auto call_as(std::uint32_t to, const Identity& fn, CallOptions opts, As&&... args) {
    return call_keeping<F>(nullptr, to, fn, opts, std::forward<As>(args)...);
  }
  // As call_as, holding `keep` until the call completed.
  template <auto F, class... As>
  auto call_keeping(std::shared_ptr<const void> keep, std::uint32_t to, const Identity& fn, CallOptions opts,
                    As&&... args);
  bool is_lost(std::uint32_t peer) const {
    std::lock_guard lock(links_mu_);
    return peer < lost_.size() && !lost_[peer].empty();
  }
  // This agent's instance of service S (made on first use as S(Agent&)); it lives as long as the agent.
  template <class S>
  std::shared_ptr<S> service();

 private:
  enum class State { running, stopping, stopped };
  using Link = std::shared_ptr<transport::Connection>;
  using Completion = detail::UniqueFunction<void(wire::InFrame*, std::exception_ptr)>;
  using Clock = std::chrono::steady_clock;
  struct Pending {
    std::uint32_t peer;
    std::string_view function;
    std::multimap<Clock::time_point, std::uint64_t>::iterator deadline;
    std::chrono::milliseconds timeout;
    Completion complete;
    std::shared_ptr<const void> keep;
  };

  template <class Acceptor>
  void accept_next(Acceptor& acceptor);
  void open_local_acceptor();
  void choose_transports(const std::vector<detail::PeerAddress>& peers);
  void publish_devices();
  void exchange_device_maps();
  friend wire::EncodeDevices detail::encode_devices_for(Agent*, std::uint32_t, detail::Direction);
  transport::SharedMemoryOptions shared_memory_options() const {
    return {options_.shared_memory_bytes, options_.shared_memory_min_bytes};
  }
  Link link_to(std::uint32_t peer);
  void on_frame(const Link& conn, wire::InFrame&& frame);
  void on_close(const Link& conn, const std::string& reason);
  void dispatch_call(std::uint32_t from, wire::InFrame&& frame, detail::UniqueFunction<void(wire::OutFrame)> respond);
  struct CallBatch;
  static const detail::RegisteredFunction* function_of(const wire::InFrame& frame);
  void receive_call(const Link& conn, wire::InFrame&& frame);
  void run_batch(const std::shared_ptr<CallBatch>& batch);
  void run_handler(const detail::RegisteredFunction& fn, detail::IncomingCall&& call);
  void dispatch_known(const detail::RegisteredFunction& fn, std::uint32_t from, wire::InFrame&& frame,
                      detail::UniqueFunction<void(wire::OutFrame)> respond);
  std::vector<std::shared_ptr<detail::AgentService>> services_snapshot() const;
  void on_reply(std::uint32_t from, wire::InFrame&& frame);
  std::optional<Pending> take_pending(std::uint64_t request_id);
  void finish(Pending&& p, wire::InFrame* frame, std::exception_ptr error);
  void fail_pending_to(std::uint32_t peer, const std::function<std::exception_ptr(const Pending&)>& make_error);
  void stop_now(const std::string& why);
  void expire_overdue();
  void arm_sweep();
  // Runs a continuation of a call's future on the pool, counted as work in flight.
  static void dispatch_to_pool(void* agent, detail::UniqueFunction<void()> callback);
  static wire::InFrame loop_copy(wire::OutFrame& f, const wire::Limits& limits);

  Options options_;
  std::uint32_t self_id_ = 0;
  std::vector<WorkerInfo> workers_;
  std::vector<asio::ip::tcp::endpoint> endpoints_;
  std::vector<std::string> local_sockets_;
  // Per peer: the device map of calls to it (ours) and of replies to it (the inverse of its map to us).
  std::vector<wire::DeviceMap> call_maps_, reply_maps_;
  wire::DeviceMap self_map_{{}, true};  // per peer: its local socket when it shares this host, else empty
  c10::intrusive_ptr<c10d::Store> store_;

  asio::io_context io_;
  detail::IoLoop io_loop_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  asio::strand<asio::io_context::executor_type> timer_strand_;
  asio::ip::tcp::acceptor acceptor_;
  asio::local::stream_protocol::acceptor local_acceptor_;
  std::vector<std::thread> io_threads_;
  detail::WorkerPool pool_;

  std::atomic<State> state_{State::running};
  std::atomic<std::uint64_t> next_request_id_{1};
  mutable std::mutex links_mu_;
  std::vector<Link> links_;
  std::vector<Link> accepted_;
  std::vector<std::string> lost_;  // why a peer is gone; empty while it is alive

  mutable std::mutex pending_mu_;
  std::condition_variable pending_cv_;
  std::unordered_map<std::uint64_t, Pending> pending_;
  detail::NodeCache<std::unordered_map<std::uint64_t, Pending>> spare_pending_;
  // Deadlines of pending calls, earliest first; one timer sweeps them (no timer per call).
  std::multimap<Clock::time_point, std::uint64_t> deadlines_;
  detail::NodeCache<std::multimap<Clock::time_point, std::uint64_t>> spare_deadlines_;
  asio::steady_timer sweep_timer_;
  // Calls whose completion has not finished running, and calls ever started: graceful shutdown
  // waits until both stand still across the group.
  std::int64_t outstanding_ = 0;
  std::int64_t started_ = 0;
  mutable std::atomic<int> sync_waiters_{0};  // threads in await_sync
  bool lone_call_in_flight() const {
    std::lock_guard lock(pending_mu_);
    return outstanding_ == 1;
  }

  // Last member: services go first, while everything they refer to still exists.
  mutable std::mutex services_mu_;
  std::vector<std::pair<const void*, std::shared_ptr<detail::AgentService>>> services_;
};

// ---------------------------------------------------------------------------------------------

namespace detail {
// A microseconds setting from the environment variable `name`, if set.
inline void microseconds_from_env(const char* name, std::chrono::microseconds& setting) {
  const char* w = std::getenv(name);
  if (!w || !*w) return;
  char* end = nullptr;
  const long us = std::strtol(w, &end, 10);
  if (*end != '\0' || us < 0 || us > 1'000'000)
    throw Error(std::string("remora: ") + name + " must be a number of microseconds (0 to 1000000), not '" + w + "'");
  setting = std::chrono::microseconds(us);
}

// The options with the environment's overrides, checked.
inline Options checked_options(Options o) {
  if (o.rpc_timeout.count() <= 0) throw Error("remora: Options::rpc_timeout must be positive");
  if (o.sync_watch.count() < 0) throw Error("remora: Options::sync_watch must not be negative");
  if (o.worker_watch.count() < 0) throw Error("remora: Options::worker_watch must not be negative");
  if (o.io_watch.count() < 0) throw Error("remora: Options::io_watch must not be negative");
  if (const char* t = std::getenv("REMORA_TRANSPORT"); t && *t) {
    const std::string v = t;
    if (v == "auto") o.transport = Transport::automatic;
    else if (v == "tcp") o.transport = Transport::tcp;
    else if (v == "local") o.transport = Transport::local;
    else throw Error("remora: REMORA_TRANSPORT must be auto, tcp or local, not '" + v + "'");
  }
  microseconds_from_env("REMORA_SYNC_WATCH_US", o.sync_watch);
  microseconds_from_env("REMORA_WORKER_WATCH_US", o.worker_watch);
  microseconds_from_env("REMORA_IO_WATCH_US", o.io_watch);
  return o;
}
}  // namespace detail

inline Agent::Agent(std::string name, int rank, int world_size, Options options)
    : options_(detail::checked_options(std::move(options))), self_id_(static_cast<std::uint32_t>(rank)),
      io_loop_(io_, options_.io_watch), work_(io_.get_executor()), timer_strand_(asio::make_strand(io_)), acceptor_(io_), local_acceptor_(io_),
      pool_(options_.num_worker_threads, options_.worker_watch), sweep_timer_(timer_strand_) {
  auto listen = asio::ip::tcp::endpoint(asio::ip::make_address(options_.listen_host), options_.listen_port);
  acceptor_.open(listen.protocol());
  acceptor_.set_option(asio::ip::tcp::acceptor::reuse_address(true));
  acceptor_.bind(listen);
  acceptor_.listen();
  detail::PeerAddress me{name, options_.advertise_host.empty() ? options_.listen_host : options_.advertise_host,
                         acceptor_.local_endpoint().port(), transport::host_identity(), ""};
  if (options_.transport != Transport::tcp && !me.host_identity.empty()) {
    open_local_acceptor();
    me.local_socket = "@" + local_acceptor_.local_endpoint().path().substr(1);
  }
  store_ = detail::open_store(options_, rank, world_size);
  publish_devices();  // before the rendezvous key, so every rendezvoused worker's devices are there
  auto peers = detail::rendezvous(*store_, me, rank, world_size, options_.init_timeout);
  asio::ip::tcp::resolver resolver(io_);
  for (std::uint32_t r = 0; r < peers.size(); ++r) {
    workers_.push_back({peers[r].name, r});
    endpoints_.push_back(*resolver.resolve(peers[r].host, std::to_string(peers[r].port)).begin());
  }
  choose_transports(peers);
  exchange_device_maps();
  links_.resize(workers_.size());
  lost_.resize(workers_.size());
  accept_next(acceptor_);
  if (local_acceptor_.is_open()) accept_next(local_acceptor_);
  arm_sweep();
  for (int i = 0; i < std::max(1, options_.num_io_threads); ++i) io_threads_.emplace_back([this] { io_loop_.run(); });
}

// An abstract unix socket (no file to clean up), unique per process and agent.
inline void Agent::open_local_acceptor() {
  static std::atomic<unsigned> counter{0};
  const std::string name = std::string(1, '\0') + "remora-" + std::to_string(::getpid()) + "-" +
                           std::to_string(counter.fetch_add(1)) + "-" + std::to_string(reinterpret_cast<std::uintptr_t>(this));
  asio::local::stream_protocol::endpoint ep(name);
  local_acceptor_.open(ep.protocol());
  local_acceptor_.bind(ep);
  local_acceptor_.listen();
}

// Local to peers of this host (when allowed), TCP to the rest.
inline void Agent::choose_transports(const std::vector<detail::PeerAddress>& peers) {
  const auto& me = peers[self_id_];
  for (const auto& p : peers) {
    const bool same_host = !me.local_socket.empty() && !p.local_socket.empty() && p.host_identity == me.host_identity;
    local_sockets_.push_back(same_host ? p.local_socket : std::string());
    if (options_.transport == Transport::local && !same_host)
      throw Error("remora: Options::transport is local, but worker '" + p.name +
                  "' is on another host or cannot use local sockets (use Transport::automatic)");
  }
}

// This worker's CUDA device count and device maps, for the others to check theirs against.
inline void Agent::publish_devices() {
  store_->set("devices/" + std::to_string(self_id_), detail::bytes_of(detail::device_record(options_)));
}

// Checks every map that involves this worker and keeps the maps frames are encoded with.
inline void Agent::exchange_device_maps() {
  std::vector<std::string> records;
  for (std::size_t r = 0; r < workers_.size(); ++r)
    records.push_back(detail::string_of(store_->get("devices/" + std::to_string(r))));
  auto maps = detail::check_device_maps(workers_, self_id_, records);
  call_maps_ = std::move(maps.call);
  reply_maps_ = std::move(maps.reply);
}

template <class Acceptor>
void Agent::accept_next(Acceptor& acceptor) {
  using Protocol = typename Acceptor::protocol_type;
  using Socket = typename transport::StreamConnection<Protocol>::Socket;
  acceptor.async_accept(asio::make_strand(io_), [this, &acceptor](std::error_code ec, Socket socket) {
    if (ec) return;  // acceptor closed
    auto conn = std::make_shared<transport::StreamConnection<Protocol>>(
        std::move(socket), options_.limits,
        [this](const Link& c, wire::InFrame&& f) { on_frame(c, std::move(f)); },
        [this](const Link& c, const std::string& why) { on_close(c, why); }, shared_memory_options());
    {
      std::lock_guard lock(links_mu_);
      accepted_.push_back(conn);
    }
    conn->start();
    accept_next(acceptor);
  });
}

inline Agent::Link Agent::link_to(std::uint32_t peer) {
  std::lock_guard lock(links_mu_);
  if (!links_[peer]) {
    auto on_frame_cb = [this](const Link& c, wire::InFrame&& f) { on_frame(c, std::move(f)); };
    auto on_close_cb = [this](const Link& c, const std::string& why) { on_close(c, why); };
    Link conn;
    if (const auto& local = local_sockets_[peer]; !local.empty()) {
      conn = transport::LocalConnection::connect(io_.get_executor(),
                                                 asio::local::stream_protocol::endpoint('\0' + local.substr(1)),
                                                 options_.limits, on_frame_cb, on_close_cb, shared_memory_options());
    } else {
      conn = transport::TcpConnection::connect(io_.get_executor(), endpoints_[peer], options_.limits, on_frame_cb,
                                               on_close_cb);
    }
    conn->peer_id = peer;
    conn->send(wire::encode_frame(wire::FrameKind::control, 0, static_cast<std::uint8_t>(detail::ControlType::hello),
                                  self_id_, workers_[self_id_].name));
    links_[peer] = conn;
  }
  return links_[peer];
}

inline void Agent::on_frame(const Link& conn, wire::InFrame&& frame) {
  try {
    switch (frame.kind()) {
      case wire::FrameKind::control: {
        std::uint8_t type;
        std::uint32_t rank;
        std::string name;
        wire::decode_into(frame, options_.limits, type, rank, name);
        if (type != static_cast<std::uint8_t>(detail::ControlType::hello) || rank >= workers_.size() ||
            workers_[rank].name != name)
          throw ProtocolError("unexpected control message or unknown worker '" + name + "'");
        conn->peer_id = rank;
        std::lock_guard lock(links_mu_);
        if (!links_[rank]) links_[rank] = conn;  // one connection serves both directions
        return;
      }
      case wire::FrameKind::call:
        if (conn->peer_id == UINT32_MAX) throw ProtocolError("call before hello");
        return receive_call(conn, std::move(frame));
      case wire::FrameKind::reply:
      case wire::FrameKind::error:
        return on_reply(conn->peer_id, std::move(frame));
      default:
        throw ProtocolError("unexpected frame kind " + std::to_string(frame.header.kind));
    }
  } catch (const ProtocolError& e) {
    detail::log_warning("worker '" + self().name + "': closing connection from " + conn->remote() + ": " + e.reason());
    conn->close("protocol error: " + e.reason());
  }
}

inline const detail::RegisteredFunction* Agent::function_of(const wire::InFrame& frame) {
  std::uint64_t fid;
  if (frame.body().size() < sizeof fid) throw ProtocolError("call without a function id");
  std::memcpy(&fid, frame.body().data(), sizeof fid);
  return detail::Registry::global().find(fid);
}

// Calls to cheap functions (see RegisteredFunction::cheap) read from one connection in one go
// are collected until the read handler returns, then run one after another on one pool thread,
// and their replies leave in one write: one hand-off and one system call for the lot instead of
// one each. Other calls go to the pool one by one.
struct Agent::CallBatch {
  // Bounds what a batch and its replies hold (a 64 KiB read holds some 600 small calls): a batch
  // this size already shares its hop to the pool widely, and larger ones made the heap grow and
  // shrink with every burst.
  static constexpr std::size_t kMaxCalls = 64;
  Link conn;
  std::mutex mu;        // with several I/O threads, the batch may start on another thread
  bool closed = false;  // started: later calls go to a new batch
  std::vector<std::pair<const detail::RegisteredFunction*, wire::InFrame>> calls;
};

inline void Agent::receive_call(const Link& conn, wire::InFrame&& frame) {
  const auto* fn = function_of(frame);
  auto respond = [conn](wire::OutFrame reply) { conn->send(std::move(reply)); };
  if (!fn) return dispatch_call(conn->peer_id, std::move(frame), respond);  // answers "unknown function"
  if (!fn->cheap()) return dispatch_known(*fn, conn->peer_id, std::move(frame), respond);
  // This thread's open batch: read handlers run one at a time per thread, and the batch is
  // closed by a job deferred to this thread, which runs once the current handler returns.
  thread_local std::shared_ptr<CallBatch> open;
  const bool more = conn->more_buffered();
  if (open && open->conn == conn) {
    std::unique_lock lock(open->mu);
    if (!open->closed) {
      open->calls.emplace_back(fn, std::move(frame));
      if (more && open->calls.size() < CallBatch::kMaxCalls) return;
      lock.unlock();  // the last call read (or a full batch): the batch starts now
      auto batch = std::move(open);
      return run_batch(batch);
    }
  }
  open.reset();
  if (!more) return dispatch_known(*fn, conn->peer_id, std::move(frame), respond);  // a lone call
  // The rest of what was read may end in a partial frame: then the job deferred here (it runs
  // once the read handler returns) starts the batch.
  open = std::make_shared<CallBatch>();
  open->conn = conn;
  open->calls.emplace_back(fn, std::move(frame));
  asio::defer(io_, [this, batch = open] {
    if (open == batch) open.reset();
    run_batch(batch);
  });
}

inline void Agent::run_batch(const std::shared_ptr<CallBatch>& batch) {
  {
    std::lock_guard lock(batch->mu);
    if (batch->closed) return;  // started already
    batch->closed = true;
  }
  if (batch->calls.size() == 1) {
    auto& [fn, frame] = batch->calls.front();
    return dispatch_known(*fn, batch->conn->peer_id, std::move(frame),
                          [conn = batch->conn](wire::OutFrame reply) { conn->send(std::move(reply)); });
  }
  pool_.post([this, batch] {
    // Replies given while the batch runs are collected; later ones (a function that answers
    // through a Future) are sent on their own.
    struct Sink {
      std::mutex mu;
      bool open = true;
      std::vector<wire::OutFrame> replies;
    };
    auto sink = std::make_shared<Sink>();
    const Link& conn = batch->conn;
    auto flush = [&] {
      std::vector<wire::OutFrame> out;
      {
        std::lock_guard lock(sink->mu);
        out.swap(sink->replies);
      }
      if (!out.empty()) conn->send_batch(std::move(out));
    };
    const auto start = Clock::now();
    for (auto& [fn, frame] : batch->calls) {
      detail::IncomingCall call{std::move(frame), &options_.limits,
                                [sink, conn](wire::OutFrame reply) {
                                  {
                                    std::lock_guard lock(sink->mu);
                                    if (sink->open) return sink->replies.push_back(std::move(reply));
                                  }
                                  conn->send(std::move(reply));
                                },
                                this, conn->peer_id};
      run_handler(*fn, std::move(call));
      // A batch that turned out slow does not hold finished replies back.
      if (Clock::now() - start > std::chrono::microseconds(100)) flush();
    }
    {
      std::lock_guard lock(sink->mu);
      sink->open = false;
    }
    flush();
  });
}

inline void Agent::run_handler(const detail::RegisteredFunction& fn, detail::IncomingCall&& call) {
  detail::serving_agent = this;
  detail::serving_peer = call.from;
  const auto start = Clock::now();
  fn.handler(std::move(call));
  fn.record_cost(Clock::now() - start);
  detail::serving_agent = nullptr;
  detail::serving_peer = UINT32_MAX;
}

inline void Agent::dispatch_call(std::uint32_t from, wire::InFrame&& frame,
                                 detail::UniqueFunction<void(wire::OutFrame)> respond) {
  const auto* fn = function_of(frame);
  if (!fn) {
    std::uint64_t fid;
    std::memcpy(&fid, frame.body().data(), sizeof fid);
    char hex[19];
    std::snprintf(hex, sizeof hex, "0x%016llx", static_cast<unsigned long long>(fid));
    return respond(detail::error_frame(frame.request_id(), detail::ErrorCode::unknown_function, "",
                                       std::string("no function with id ") + hex +
                                           " is registered (call it from this binary or REMORA_EXPOSE it)"));
  }
  dispatch_known(*fn, from, std::move(frame), std::move(respond));
}

inline void Agent::dispatch_known(const detail::RegisteredFunction& fn, std::uint32_t from, wire::InFrame&& frame,
                                  detail::UniqueFunction<void(wire::OutFrame)> respond) {
  pool_.post([this, &fn, call = detail::IncomingCall{std::move(frame), &options_.limits, std::move(respond), this,
                                                            from}]() mutable { run_handler(fn, std::move(call)); });
}

inline std::optional<Agent::Pending> Agent::take_pending(std::uint64_t request_id) {
  std::lock_guard lock(pending_mu_);
  auto it = pending_.find(request_id);
  if (it == pending_.end()) return std::nullopt;
  auto node = pending_.extract(it);
  Pending p = std::move(node.mapped());
  spare_pending_.keep(std::move(node));
  spare_deadlines_.keep(deadlines_.extract(p.deadline));
  if (pending_.empty()) pending_cv_.notify_all();
  return p;
}

// Timeouts have the sweep's resolution (5 ms): a call times out 0-5 ms after its deadline.
inline void Agent::arm_sweep() {
  sweep_timer_.expires_after(std::chrono::milliseconds(5));
  sweep_timer_.async_wait([this](std::error_code ec) {
    if (ec || state_.load() == State::stopped) return;  // a stopped agent lets its I/O threads end
    expire_overdue();
    arm_sweep();
  });
}

inline void Agent::expire_overdue() {
  std::vector<Pending> overdue;
  {
    std::lock_guard lock(pending_mu_);
    const auto now = Clock::now();
    while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
      auto it = pending_.find(deadlines_.begin()->second);
      deadlines_.erase(deadlines_.begin());
      if (it == pending_.end()) continue;
      overdue.push_back(std::move(it->second));
      pending_.erase(it);
    }
    if (pending_.empty()) pending_cv_.notify_all();
  }
  for (auto& p : overdue) {
    auto error = std::make_exception_ptr(
        Timeout(workers_[p.peer].name, std::string(p.function), "no reply within " +
                                                                   std::to_string(p.timeout.count()) + " ms"));
    finish(std::move(p), nullptr, error);
  }
}

inline void Agent::dispatch_to_pool(void* agent, detail::UniqueFunction<void()> callback) {
  auto* self = static_cast<Agent*>(agent);
  {
    std::lock_guard lock(self->pending_mu_);
    ++self->outstanding_;
  }
  self->pool_.post([self, cb = std::move(callback)]() mutable {
    cb();
    cb = detail::UniqueFunction<void()>();
    std::lock_guard lock(self->pending_mu_);
    if (--self->outstanding_ == 0) self->pending_cv_.notify_all();
  });
}

// Completes the call's future here (an I/O thread, usually): waiters wake at once, and the
// future's continuations go to the worker pool (its Promise dispatches them there), so user code
// never runs on an I/O thread.
inline void Agent::finish(Pending&& p, wire::InFrame* frame, std::exception_ptr error) {
  {
    detail::WireScope scope(this, p.peer);
    p.complete(frame, error);
  }
  p.complete = Completion();  // what the completion captured is released before the call counts as finished
  std::lock_guard lock(pending_mu_);
  if (--outstanding_ == 0) pending_cv_.notify_all();
}

inline void Agent::on_reply(std::uint32_t from, wire::InFrame&& frame) {
  auto p = take_pending(frame.request_id());
  if (!p) return;  // late (timed out) or unknown: dropped
  if (p->peer != from) {
    detail::log_warning("worker '" + self().name + "': reply for request " + std::to_string(frame.request_id()) +
                        " came from the wrong worker");
    return finish(std::move(*p), nullptr,
                  std::make_exception_ptr(ProtocolError("reply from the wrong worker", workers_[from].name)));
  }
  finish(std::move(*p), &frame, nullptr);
}

inline void Agent::fail_pending_to(std::uint32_t peer,
                                   const std::function<std::exception_ptr(const Pending&)>& make_error) {
  std::vector<Pending> failed;
  {
    std::lock_guard lock(pending_mu_);
    for (auto it = pending_.begin(); it != pending_.end();) {
      if (peer == UINT32_MAX || it->second.peer == peer) {
        failed.push_back(std::move(it->second));
        it = pending_.erase(it);
      } else {
        ++it;
      }
    }
    if (pending_.empty()) pending_cv_.notify_all();
  }
  for (auto& p : failed) {
    auto e = make_error(p);
    finish(std::move(p), nullptr, e);
  }
}

inline void Agent::on_close(const Link& conn, const std::string& reason) {
  const std::uint32_t peer = conn->peer_id;
  {
    std::lock_guard lock(links_mu_);
    std::erase(accepted_, conn);
    if (peer == UINT32_MAX) return;
    if (links_[peer] == conn) links_[peer].reset();
    if (state_.load() != State::running) return;
    lost_[peer] = reason;
  }
  const std::string worker = workers_[peer].name;
  fail_pending_to(peer, [&](const Pending& p) {
    return std::make_exception_ptr(WorkerLost(worker, std::string(p.function), reason));
  });
  pool_.post([this, peer] {
    for (auto& s : services_snapshot()) s->on_peer_lost(peer);
  });
}

inline std::vector<std::shared_ptr<detail::AgentService>> Agent::services_snapshot() const {
  std::lock_guard lock(services_mu_);
  std::vector<std::shared_ptr<detail::AgentService>> out;
  for (auto& [key, s] : services_) out.push_back(s);
  return out;
}

template <class S>
std::shared_ptr<S> Agent::service() {
  std::lock_guard lock(services_mu_);
  for (auto& [key, s] : services_)
    if (key == &detail::service_key<S>) return std::static_pointer_cast<S>(s);
  auto s = std::make_shared<S>(*this);
  services_.emplace_back(&detail::service_key<S>, s);
  return s;
}

// A frame to self read back as if it had crossed the network. GPU tensors are staged on the
// calling thread, after what its current stream still has queued.
inline wire::InFrame Agent::loop_copy(wire::OutFrame& f, const wire::Limits& limits) {
  f.stage_to_host();
  wire::FrameReader reader(limits);
  for (auto s : f.segments()) reader.feed(s);
  return reader.take();
}

template <class T>
Future<T> Agent::start_call(std::uint32_t to, std::string_view function, std::uint64_t request_id,
                            wire::OutFrame frame, std::chrono::milliseconds timeout,
                            std::shared_ptr<const void> keep, bool* sent) {
  const std::string& worker = workers_.at(to).name;
  if (state_.load() == State::stopped)
    throw Error("remora: worker '" + self().name + "' has shut down; cannot call " + std::string(function) +
                " on '" + worker + "'");
  if (timeout.count() <= 0) timeout = options_.rpc_timeout;
  Promise<T> promise;
  promise.set_dispatch(&Agent::dispatch_to_pool, this);
  Future<T> future = promise.get_future();
  {
    std::lock_guard lock(links_mu_);
    if (!lost_[to].empty()) {
      promise.set_error(WorkerLost(worker, std::string(function), lost_[to]));
      return future;
    }
  }
  // Small enough to live inside the Completion (no allocation): the worker's name is looked up
  // only when an error needs it.
  Completion complete = [promise = std::move(promise), function, this, to](wire::InFrame* reply,
                                                                          std::exception_ptr error) mutable {
    if (error) return promise.set_exception(error);
    const wire::Limits* limits = &options_.limits;
    try {
      if (reply->kind() == wire::FrameKind::error) {
        const std::string& worker = workers_[to].name;
        std::uint8_t code;
        std::string type, message;
        std::vector<std::string> origin;
        wire::decode_into(*reply, *limits, code, type, message, origin);
        switch (static_cast<detail::ErrorCode>(code)) {
          case detail::ErrorCode::forwarded:
            if (origin.size() == 2) return promise.set_error(RemoteError(origin[0], origin[1], type, message));
            [[fallthrough]];
          case detail::ErrorCode::unknown_function:
            return promise.set_error(UnknownFunction(worker, std::string(function), message));
          case detail::ErrorCode::bad_request:
            return promise.set_error(RemoteError(worker, std::string(function), type,
                                                 "the arguments did not decode as its parameters: " + message));
          default:
            return promise.set_error(RemoteError(worker, std::string(function), type, message));
        }
      }
      if constexpr (std::is_void_v<T>) {
        wire::decode_into(*reply, *limits);
        promise.set_value();
      } else {
        T value;
        wire::decode_into(*reply, *limits, value);
        promise.set_value(std::move(value));
      }
    } catch (...) {
      promise.set_exception(std::current_exception());
    }
  };
  {
    std::lock_guard lock(pending_mu_);
    auto deadline = spare_deadlines_.emplace(deadlines_, Clock::now() + timeout, request_id);
    spare_pending_.emplace(pending_, request_id,
                           Pending{to, function, deadline, timeout, std::move(complete), std::move(keep)});
    ++outstanding_;
    ++started_;
  }
  if (to == self_id_) {
    // A call to self skips the network but not the serialization boundary: the callee gets
    // copies, exactly as a remote callee would.
    frame.stage_to_host();  // here, on the caller's thread and stream
    pool_.post([this, f = std::move(frame)]() mutable {
      try {
        dispatch_call(self_id_, loop_copy(f, options_.limits), [this](wire::OutFrame reply) {
          on_reply(self_id_, loop_copy(reply, options_.limits));
        });
      } catch (const ProtocolError&) {
      }
    });
  } else {
    link_to(to)->send(std::move(frame));
  }
  if (sent) *sent = true;
  return future;
}

namespace detail {
template <class... As>
struct first_is_call_options : std::false_type {};
template <class A, class... As>
struct first_is_call_options<A, As...> : std::is_same<std::remove_cvref_t<A>, CallOptions> {};
}  // namespace detail

template <auto F, class... As>
auto Agent::call_keeping(std::shared_ptr<const void> keep, std::uint32_t to, const Identity& fn, CallOptions opts,
                         As&&... args) {
  using Tr = detail::fn_traits<decltype(F)>;
  const auto rid = next_request_id();
  // Values that fork references for the peer (RRefs) record undo actions: they run if the frame
  // is never sent, or the peer is already known to be lost.
  detail::WireScope scope(this, to);
  auto frame = std::apply(
      [&](const auto&... typed) {
        return wire::encode_frame(wire::FrameKind::call, rid, options_.limits, fn.id, typed...);
      },
      typename Tr::args(std::forward<As>(args)...));
  bool sent = false;
  auto future =
      start_call<typename Tr::result>(to, fn.name, rid, std::move(frame), opts.timeout, std::move(keep), &sent);
  if (sent) scope.commit();
  return future;
}

template <auto F, class... As>
auto Agent::rpc_async(std::string_view to, As&&... args) {
  if constexpr (detail::first_is_call_options<As...>::value) {
    return [&]<class O, class... Rest>(O&& opts, Rest&&... rest) {
      detail::check_callable<F, Rest...>();
      (void)detail::AutoRegister<F>::registered;
      return call_as<F>(id_of(to), function_identity<F>, opts, std::forward<Rest>(rest)...);
    }(std::forward<As>(args)...);
  } else {
    return rpc_async<F>(to, CallOptions{}, std::forward<As>(args)...);
  }
}

inline void Agent::shutdown(bool graceful) {
  State expected = State::running;
  if (!state_.compare_exchange_strong(expected, State::stopping)) return;
  if (graceful) {
    try {
      const int world = static_cast<int>(workers_.size());
      // Rounds until the group stands still: nothing in flight anywhere and no call started
      // since the previous round. Then services release what they hold for others (RRef
      // deletions, which start calls of their own), and rounds go on until still again.
      std::int64_t previous_started = -1;
      bool released = false;
      for (int round = 0;; ++round) {
        std::int64_t outstanding, started;
        {
          std::unique_lock lock(pending_mu_);
          if (!pending_cv_.wait_for(lock, options_.shutdown_timeout, [&] { return outstanding_ == 0; }))
            throw Error("calls still pending after " + std::to_string(options_.shutdown_timeout.count()) + " ms");
          outstanding = outstanding_;
          started = started_;
        }
        auto totals = detail::sum_over_workers(*store_, "join/" + std::to_string(round), world,
                                               {outstanding, started}, options_.shutdown_timeout);
        if (totals[0] == 0 && totals[1] == previous_started) {
          if (released) break;
          released = true;
          for (auto& s : services_snapshot()) s->on_group_quiet();
          previous_started = -1;
          continue;
        }
        previous_started = totals[1];
      }
      detail::sum_over_workers(*store_, "stop", world, {0}, options_.shutdown_timeout);
    } catch (const std::exception& e) {
      detail::log_warning("worker '" + self().name + "': graceful shutdown failed (" + e.what() + "); stopping now");
    }
  }
  stop_now("worker '" + self().name + "' shut down");
}

inline void Agent::stop_now(const std::string& why) {
  state_.store(State::stopped);
  fail_pending_to(UINT32_MAX, [&](const Pending& p) {
    return std::make_exception_ptr(
        WorkerLost(workers_[p.peer].name, std::string(p.function), "local agent stopped: " + why));
  });
  asio::post(timer_strand_, [this] { sweep_timer_.cancel(); });
  asio::post(io_, [this] {
    std::error_code ignored;
    acceptor_.close(ignored);
    local_acceptor_.close(ignored);
    std::lock_guard lock(links_mu_);
    for (auto& l : links_)
      if (l) l->close("shutdown");
    for (auto& l : accepted_) l->close("shutdown");
  });
  // I/O threads first: once they are gone no reply can arrive, so nothing posts a completion to
  // the pool after it drains. Then the pool runs every queued completion and handler.
  work_.reset();
  for (auto& t : io_threads_) t.join();
  io_threads_.clear();
  pool_.join();
  {
    std::lock_guard lock(links_mu_);
    links_.assign(links_.size(), nullptr);
    accepted_.clear();
  }
  for (auto& s : services_snapshot()) s->on_stop();
}

namespace detail {
inline wire::EncodeDevices encode_devices_for(Agent* agent, std::uint32_t peer, Direction direction) {
  if (peer >= agent->workers_.size()) return {};
  const wire::DeviceMap* map = peer == agent->self_id_ ? &agent->self_map_
                               : direction == Direction::call ? &agent->call_maps_[peer]
                                                              : &agent->reply_maps_[peer];
  return {map, agent->workers_[peer].name};
}
}  // namespace detail

}  // namespace remora
