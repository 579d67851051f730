// remora-worker: a worker that needs no user code. It joins a group under a name and serves
// builtin operators, TorchScript modules, and the REMORA_EXPOSE'd functions of the shared
// libraries it loads at start; it stops when the group shuts down.
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include <remora/remora.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

namespace {

constexpr const char* kUsage = R"(usage: remora-worker --name NAME [options]
       remora-worker --store PORT

Joins a remora group as worker NAME and serves, with no code of the caller's:
  builtin operators by name     remora::rpc_sync<R>(NAME, "aten::add", a, b)    with --operators
  TorchScript modules           remora::ScriptRemoteModule::load(NAME + "/cpu", "m.pt")
                                                                                with --model-dir
  functions of loaded libraries those a library marks with REMORA_EXPOSE / REMORA_EXPOSE_REMOTE
It serves until the whole group shuts down (remora::shutdown() on every worker). By default it
serves no operator by name and loads no model file: a peer could otherwise write and read files
as this worker's user (aten::save, aten::from_file) or load a model, which carries code.

Group:
  --name NAME             this worker's name (required); {rank} and {local_rank} in it become
                          the rank and $LOCAL_RANK, for several workers per torchrun node
  --rank R                its rank (default: $RANK, as torchrun sets it)
  --world-size N          the number of workers (default: $WORLD_SIZE)
  --init-method URL       env:// (default: $MASTER_ADDR, $MASTER_PORT) or tcp://HOST:PORT
  --listen-host HOST      the address to listen on (default 127.0.0.1; 0.0.0.0 for all)
  --advertise-host HOST   the address peers connect to (default: the listen address)
  --init-timeout SECONDS  how long to wait for the group (default 60)
  --elastic               join an elastic group instead (no rank or world size): serve until
                          SIGTERM or SIGINT, then leave it; started again under its name, the
                          worker joins as the next incarnation (docs/fault-tolerance.md)

Store:
  --store PORT            host a group's rendezvous store (c10d's TCPStore, on every interface,
                          as torchrun's) on PORT and do nothing else, until SIGTERM or SIGINT.
                          An elastic group whose store one of its workers hosts cannot be joined
                          once that worker is gone; one hosted this way outlives them all.
                          Workers reach it with --init-method tcp://HOST:PORT.

Trust:
  $REMORA_SECRET, or the file $REMORA_SECRET_FILE names: the group's secret (every worker of
                          the group needs the same; see docs/security.md)

Code:
  --operators LIST        the operators peers may call by name, comma-separated: "aten::add"
                          (every overload) or "aten::add.Tensor" (one); '*' for every operator
                          except those that touch files or start programs (aten::save,
                          aten::from_file: name them to serve them). Default: none
  --model-dir DIR         peers may load TorchScript and AOTInductor files below DIR
                          (repeatable). Default: none
  --load LIB              dlopen LIB before joining (repeatable); its REMORA_EXPOSE'd
                          functions are served. Build LIB against the same remora and libtorch.

Examples:
  torchrun --nproc-per-node=1 --no-python remora-worker --name ps --load ./libmy_ops.so
  torchrun --nnodes=2 --node-rank=1 --nproc-per-node=4 --master-addr=HOST --master-port=29500 \
      --no-python remora-worker --name 'ps{local_rank}' --operators '*' --model-dir /srv/models
  remora-worker --name w1 --rank 1 --world-size 2 --init-method tcp://10.0.0.1:29500
  while true; do remora-worker --elastic --name ps --init-method tcp://10.0.0.1:29500; done
  remora-worker --store 29500 &    # the store of that elastic group, apart from its workers
)";

[[noreturn]] void fail(const std::string& why) {
  std::cerr << "remora-worker: " << why << "\n(remora-worker --help for usage)\n";
  std::exit(2);
}

int to_int(const std::string& flag, const std::string& text) {
  try {
    std::size_t used = 0;
    const int v = std::stoi(text, &used);
    if (used == text.size() && v >= 0) return v;
  } catch (const std::exception&) {
  }
  fail(flag + " wants a non-negative integer, not '" + text + "'");
}

// "a,b,,c" -> {"a", "b", "c"}.
std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start <= text.size()) {
    const auto comma = text.find(',', start);
    const auto end = comma == std::string::npos ? text.size() : comma;
    if (end > start) out.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

// `name` with every {key} replaced by its value.
std::string expand(std::string name, const std::string& key, const std::string& value) {
  for (std::size_t at; (at = name.find(key)) != std::string::npos;) name.replace(at, key.size(), value);
  return name;
}

}  // namespace

// Joins the elastic group, serves until SIGTERM or SIGINT, then leaves it.
// SIGTERM and SIGINT, blocked in main before any thread starts (the libraries' and the agent's
// inherit the mask), so that only sigwait takes them.
sigset_t stop_signals() {
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  return stop;
}

int serve_elastic(const std::string& name, remora::Options options) {
  const sigset_t stop = stop_signals();
  try {
    auto& agent = remora::init_rpc(name, std::move(options));
    std::cerr << "remora-worker: '" << name << "' (id " << agent.self().id << ", incarnation "
              << agent.self().incarnation << ") serving\n";
    int signal = 0;
    sigwait(&stop, &signal);
    remora::shutdown();  // graceful: leaves the group; the others go on
    std::cerr << "remora-worker: '" << name << "' left the group\n";
  } catch (const std::exception& e) {
    std::cerr << "remora-worker: " << e.what() << "\n";
    return 1;
  }
  return 0;
}

// Hosts a TCPStore on `port` until SIGTERM or SIGINT.
int host_store(int port) {
  if (port > 65535) fail("--store wants a port, not " + std::to_string(port));
  const sigset_t stop = stop_signals();
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);  // before the store's threads start: they inherit it
  try {
    c10d::TCPStoreOptions so;
    so.port = static_cast<std::uint16_t>(port);
    so.isServer = true;
    so.waitWorkers = false;
    auto store = c10::make_intrusive<c10d::TCPStore>("127.0.0.1", so);
    std::cerr << "remora-worker: hosting a store on port " << store->getPort() << "\n";
    int signal = 0;
    sigwait(&stop, &signal);
  } catch (const std::exception& e) {
    std::cerr << "remora-worker: cannot host a store on port " << port << ": " << e.what() << "\n";
    return 1;
  }
  return 0;
}

int main(int argc, char** argv) {
  if (argc == 3 && std::string(argv[1]) == "--store") return host_store(to_int("--store", argv[2]));
  std::string name;
  int rank = -1, world = -1;
  std::vector<std::string> libraries;
  remora::Options options;
  options.init_timeout = std::chrono::seconds(60);
  // A stock worker waits for the rest of the group to finish, however long its job runs.
  options.shutdown_timeout = std::chrono::hours(24 * 365);
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::cout << kUsage;
      return 0;
    }
    if (flag == "--elastic") {
      options.elastic = true;
      continue;
    }
    if (i + 1 >= argc) fail("option " + flag + " needs a value");
    const std::string value = argv[++i];
    if (flag == "--name") name = value;
    else if (flag == "--store") fail("--store PORT takes no other option");
    else if (flag == "--rank") rank = to_int(flag, value);
    else if (flag == "--world-size") world = to_int(flag, value);
    else if (flag == "--init-method") options.init_method = value;
    else if (flag == "--listen-host") options.listen_host = value;
    else if (flag == "--advertise-host") options.advertise_host = value;
    else if (flag == "--init-timeout") options.init_timeout = std::chrono::seconds(to_int(flag, value));
    else if (flag == "--load") libraries.push_back(value);
    else if (flag == "--operators") {
      for (auto& op : split_list(value)) options.serve_operators.push_back(std::move(op));
      if (options.serve_operators.empty()) fail("--operators wants operator names or '*', not '" + value + "'");
    } else if (flag == "--model-dir") options.model_dirs.push_back(value);
    else fail("unknown option " + flag);
  }
  if (name.empty()) fail("--name is required");
  if (rank < 0 && !options.elastic && std::getenv("RANK")) rank = to_int("RANK", std::getenv("RANK"));
  if (world < 0 && !options.elastic && std::getenv("WORLD_SIZE")) world = to_int("WORLD_SIZE", std::getenv("WORLD_SIZE"));
  if (options.elastic && (rank >= 0 || world >= 0)) fail("--elastic takes no --rank or --world-size");
  if (!options.elastic && (rank < 0 || world < 0))
    fail("no rank and world size: pass --rank and --world-size, or set RANK and WORLD_SIZE (or use --elastic)");
  name = expand(std::move(name), "{rank}", std::to_string(rank));
  if (name.find("{local_rank}") != std::string::npos) {
    const char* local = std::getenv("LOCAL_RANK");
    if (!local) fail("--name uses {local_rank} but LOCAL_RANK is not set (torchrun sets it)");
    name = expand(std::move(name), "{local_rank}", std::to_string(to_int("LOCAL_RANK", local)));
  }
  try {
    options.secret = remora::secret_from_env();
  } catch (const std::exception& e) {
    fail(e.what());
  }

  if (options.elastic) {
    const sigset_t stop = stop_signals();
    pthread_sigmask(SIG_BLOCK, &stop, nullptr);
  }
  // Before joining, so that everything the libraries expose is registered when peers call.
  // RTLD_GLOBAL and this executable's exported symbols give the libraries its function registry.
  for (const auto& lib : libraries)
    if (!dlopen(lib.c_str(), RTLD_NOW | RTLD_GLOBAL)) fail("cannot load " + lib + ": " + dlerror());

  if (options.elastic) return serve_elastic(name, options);
  try {
    remora::init_rpc(name, rank, world, options);
    std::cerr << "remora-worker: '" << name << "' (rank " << rank << " of " << world << ") serving\n";
    remora::shutdown();  // graceful: returns once every worker of the group has shut down
  } catch (const std::exception& e) {
    std::cerr << "remora-worker: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
