#pragma once
// Settings of an agent, identities of workers, and per-call options.
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <torch/csrc/distributed/c10d/Store.hpp>

#include "remora/core/errors.hpp"
#include "remora/transport/test_hooks.hpp"
#include "remora/wire/device_map.hpp"
#include "remora/wire/limits.hpp"

namespace remora {

// The group's secret from the environment: REMORA_SECRET, or else the contents of the file named
// by REMORA_SECRET_FILE (without a final newline); empty when neither is set. Throws Error when
// the file cannot be read or is empty.
inline std::string secret_from_env() {
  if (const char* s = std::getenv("REMORA_SECRET"); s && *s) return s;
  const char* file = std::getenv("REMORA_SECRET_FILE");
  if (!file || !*file) return {};
  std::ifstream in(file, std::ios::binary);
  std::string secret((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (!in.good() && !in.eof()) throw Error(std::string("remora: cannot read REMORA_SECRET_FILE '") + file + "'");
  while (!secret.empty() && (secret.back() == '\n' || secret.back() == '\r')) secret.pop_back();
  if (secret.empty()) throw Error(std::string("remora: REMORA_SECRET_FILE '") + file + "' is empty or unreadable");
  return secret;
}

// TLS on connections between hosts (Options::tls): this worker's certificate and key, and the
// certificate authority that signed every worker's certificate, all PEM files. Both sides of a
// connection present a certificate and check the other's against `ca` (mutual TLS 1.3);
// any certificate that CA signed is a member of the group, so give a group its own CA. Worker
// names are not taken from certificates: add Options::secret to bind each connection to a name.
struct TlsOptions {
  std::string certificate;  // this worker's certificate (chain), PEM
  std::string private_key;  // its private key, PEM
  std::string ca;           // the CA certificate(s) peers must chain to, PEM
};

// What carries calls between two workers.
enum class Transport {
  automatic,  // local to workers on this host, TCP to the others
  tcp,        // TCP always
  local,      // unix sockets + shared memory; init_rpc fails if a worker is on another host
};

struct Options {
  // How workers find each other: "env://" (MASTER_ADDR, MASTER_PORT, as torchrun sets them) or
  // "tcp://host:port". Ignored when `store` is set.
  std::string init_method = "env://";
  // An explicit c10d store shared by all workers (e.g. a c10d::HashStore for agents in one process).
  c10::intrusive_ptr<c10d::Store> store;
  // An elastic group: workers join (init_rpc(name, options), no rank or world size) and leave
  // (shutdown()) while it runs, and a worker that died may join again under its name, as a new
  // incarnation with a new id; what was addressed to the old one fails with WorkerLost and never
  // runs on the new one (docs/fault-tolerance.md). The store must outlive the workers that come
  // and go: `store`, torchrun's agent store, or the first worker to join (which then hosts it).
  // Device maps are not supported in an elastic group yet.
  bool elastic = false;
  // Deadline of every call unless the call sets its own; must be positive.
  std::chrono::milliseconds rpc_timeout{60'000};
  // A connection that has not said which worker it is (`hello`) this long after it was accepted
  // is closed: strangers and stalled peers do not hold a worker's connections.
  std::chrono::milliseconds hello_timeout{10'000};
  // The group's shared secret (any bytes; use 32 random ones). When set, every connection starts
  // with a mutual challenge-response under it (HMAC-SHA256; docs/security.md) and a peer that
  // cannot answer is closed before any of its frames is read. It never travels and is never
  // written to the store. Every worker of a group must have the same one. Needs OpenSSL.
  std::string secret;
  // Operators a peer may run on this worker by name (remora::rpc_sync<R>(to, "aten::add", ...)):
  // "aten::add" (every overload) or "aten::add.Tensor" (one). Empty (the default): none; a call
  // by name fails on its caller with UnknownFunction naming this option. {"*"}: every operator
  // except those that read or write files or start programs (docs/security.md lists them; name
  // one explicitly to serve it). Calls a worker makes on itself are not checked.
  std::vector<std::string> serve_operators;
  // Directories below which a peer may have this worker load a TorchScript or AOTInductor file
  // (ScriptRemoteModule::load, RemoteModule<I>::load). Empty (the default): none. A path is
  // resolved (symbolic links and "..") before it is compared. Not checked for loads a worker
  // asks of itself.
  std::vector<std::string> model_dirs;
  // TLS for every TCP connection (the local transport between processes of one host stays as it
  // is: its sockets are local and its shared memory is the process's own). Every worker of a
  // group must set it, or none. Needs OpenSSL; costs: docs/performance.md.
  std::optional<TlsOptions> tls;
  // A TCP link whose peer acknowledges nothing for this long (neither data nor the keepalive
  // probes its kernel answers even while the worker is busy) fails, and that peer is lost: its
  // calls fail with WorkerLost. What notices a host that went down or a network that was cut;
  // also bounds connecting. 0: the kernel's defaults (hours). Same-host links are not affected.
  std::chrono::milliseconds link_timeout{30'000};
  // A distributed autograd context another worker made ends on this worker after this long
  // without news of it (a call or gradients in it): its maker's release may have been lost (a
  // context whose maker is lost ends at once). 0: never.
  std::chrono::milliseconds autograd_context_timeout{std::chrono::minutes(30)};
  // How long init_rpc waits for every worker, and graceful shutdown for every worker to finish.
  std::chrono::milliseconds init_timeout{60'000};
  std::chrono::milliseconds shutdown_timeout{60'000};
  // Threads that run user functions, and threads that do network I/O.
  int num_worker_threads = 4;
  int num_io_threads = 1;
  // How long a sync call that is the only one in flight watches for its answer before the
  // caller sleeps (docs/threading.md); 0: callers sleep at once. Unset: REMORA_SYNC_WATCH_US, or
  // else 200 us (the environment fills in only what the program left unset).
  std::optional<std::chrono::microseconds> sync_watch;
  // How long an idle worker thread watches for the next call before it sleeps (one worker at a
  // time; docs/threading.md); 0: workers sleep at once. Unset: REMORA_WORKER_WATCH_US, or 200 us.
  std::optional<std::chrono::microseconds> worker_watch;
  // How long an I/O thread polls the sockets after an event before it blocks (one thread at a
  // time; docs/threading.md); 0: I/O threads block at once. Unset: REMORA_IO_WATCH_US, or 200 us.
  std::optional<std::chrono::microseconds> io_watch;
  // Address this worker listens on (port 0: any free port) and the host it tells peers to use.
  std::string listen_host = "127.0.0.1";
  std::uint16_t listen_port = 0;
  std::string advertise_host;  // empty: listen_host
  // Unset: the environment variable REMORA_TRANSPORT (auto, tcp, local), or else automatic.
  std::optional<Transport> transport;
  // Local transport: each side of a connection shares up to `shared_memory_bytes` (virtual; pages
  // are used as tensors need them, and stay while the connection lives) for CPU tensors of at
  // least `shared_memory_min_bytes`; 0 bytes: they all go through the socket. (CUDA tensors cross
  // by CUDA IPC handle at any size.)
  std::size_t shared_memory_bytes = std::size_t{1} << 30;
  std::size_t shared_memory_min_bytes = std::size_t{256} << 10;
  // For remora's own tests of failure handling (transport/fault_plan.hpp); a program leaves it be.
  detail::TestHooks test_hooks;
  // Bounds on received frames; larger frames are refused.
  wire::Limits limits;
  // What one peer's calls may hold on this worker at once: calls received and not yet answered,
  // and their frames' bytes. A call past either bound is refused unrun, and its caller gets
  // remora::Overloaded; a peer with nothing pending is always admitted.
  std::uint64_t max_pending_calls_per_peer = 65536;
  std::uint64_t max_pending_bytes_per_peer = std::uint64_t{2} << 30;

  // Device maps, per destination worker: CUDA tensors sent to `worker` arrive on the mapped device
  // (replies come back through the inverse map). Without an entry a CUDA tensor cannot be sent;
  // RemoteModule results then come back on the CPU. init_rpc checks every map.
  //   options.set_device_map("ps", {{"cuda:0", "cuda:1"}});
  std::map<std::string, wire::DeviceMap> device_maps;
  Options& set_device_map(const std::string& worker, const std::map<std::string, std::string>& map) {
    for (const auto& [from, to] : map) add_device_mapping(worker, c10::Device(from), c10::Device(to));
    return *this;
  }
  Options& add_device_mapping(const std::string& worker, c10::Device from, c10::Device to) {
    auto& m = device_maps[worker];
    std::erase_if(m.entries, [&](const auto& e) { return e.first == from; });
    m.entries.emplace_back(from, to);
    return *this;
  }
};

struct WorkerInfo {
  std::string name;
  // Unique in the group for its lifetime: a worker that joins again gets a new id.
  std::uint32_t id = 0;
  // How many times a worker of this name joined the group, counting this time (1 in a static
  // group): an elastic worker restarted under its name has a higher one.
  std::uint64_t incarnation = 1;
  // Its CUDA work goes through an MPS server (an MPS control daemon was running for it when it
  // joined). Two processes on one GPU hand tensors to each other in ~40-100 us with MPS and
  // ~300-600 us without: docs/gpu.md.
  bool cuda_mps = false;
  friend bool operator==(const WorkerInfo&, const WorkerInfo&) = default;
};

// Per-call settings, passed as the first argument after the destination:
//   remora::rpc_async<&f>("ps", remora::CallOptions{.timeout = 50ms}, x, y);
struct CallOptions {
  std::chrono::milliseconds timeout{0};  // 0: the agent's rpc_timeout
};

}  // namespace remora
