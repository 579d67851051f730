// Training through killed workers: a trainer drives a model split over three serving workers
// (one stage each, in an elastic group) with distributed autograd and DistributedOptimizer, while
// a driver thread SIGKILLs a random serving worker every KILL_EVERY seconds and a loop per worker
// starts it again under its name. The trainer keeps each stage's state after every completed
// step (its replica); a step that meets a lost stage waits for the stage's next incarnation,
// makes the stage again there from that state, puts the other stages back to it, and runs again.
// Then the same number of steps runs without kills, and the final parameters are compared.
//
//   chaos [SECONDS [KILL_EVERY]]      defaults: 120 s, a kill every 10 s
//   chaos restore [MIB]               a member of MIB MiB (default 1024) made again from a replica
//
// Prints: kills; kill to WorkerLost on the trainer (its `lost` event), p50 and max; kill to the
// next step completed after that, p50 and max; kill to the restarted process's `joined`; step attempts that
// failed and ran again; calls executed twice (each stage appends every forward's tag to a file
// that each of its incarnations shares); the largest parameter difference from the run without
// kills (0: no step lost, none applied twice). Exits 1 when a call ran twice or they differ.
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <remora/mesh.hpp>
#include <remora/remora.hpp>
#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/nn.h>
#include <torch/optim.h>

extern char** environ;
using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace chaos {
std::string log_path;  // this serving process's record of the forwards it ran

struct Stage {
  virtual ~Stage() = default;
  virtual torch::Tensor forward(torch::Tensor x, std::int64_t tag) = 0;
};
struct Layer : torch::nn::Module, Stage {
  explicit Layer(std::int64_t width) : fc(register_module("fc", torch::nn::Linear(width, width))) {}
  torch::Tensor forward(torch::Tensor x, std::int64_t tag) override {
    // One write(2) per forward, O_APPEND: each incarnation of the stage adds to the same file.
    const std::string line = std::to_string(tag) + "\n";
    if (int fd = ::open(log_path.c_str(), O_WRONLY | O_APPEND | O_CREAT, 0644); fd >= 0) {
      (void)!::write(fd, line.data(), line.size());
      ::close(fd);
    }
    return torch::tanh(fc->forward(x));
  }
  torch::nn::Linear fc;
};
}  // namespace chaos

namespace {

constexpr std::int64_t kWidth = 64, kBatch = 32;
using State = std::map<std::string, torch::Tensor>;
using RM = remora::RemoteModule<chaos::Stage>;

double ms_since(clock_type::time_point a, clock_type::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}
std::pair<double, double> p50_max(std::vector<double> v) {
  if (v.empty()) return {0, 0};
  std::sort(v.begin(), v.end());
  return {v[v.size() / 2], v.back()};
}

pid_t spawn(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = -1;
  if (posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ) != 0) return -1;
  return pid;
}

int serve(const std::string& name, const std::string& port, const std::string& log) {
  chaos::log_path = log;
  torch::set_num_threads(1);
  remora::Options o;
  o.elastic = true;
  o.init_method = "tcp://127.0.0.1:" + port;
  remora::Agent agent(name, o);
  std::this_thread::sleep_for(std::chrono::hours(1));  // until killed
  return 0;
}

// The trainer's view of the stages: the modules, their last good states, and the optimizer.
struct Model {
  remora::Agent& agent;
  std::vector<std::string> workers;
  std::vector<RM> stages;
  std::vector<State> saved;  // after the last completed step
  std::unique_ptr<remora::optim::DistributedOptimizer<torch::optim::SGD>> opt;

  Model(remora::Agent& a, std::vector<std::string> names) : agent(a), workers(std::move(names)) {
    torch::manual_seed(1);
    for (std::size_t i = 0; i < workers.size(); ++i) {
      chaos::Layer init(kWidth);
      State s;
      for (const auto& p : init.named_parameters()) s[p.key()] = p.value().detach().clone();
      saved.push_back(s);
    }
    rebuild({});
  }
  // Makes every stage in `lost` again on its worker's newest incarnation, puts every stage back to
  // its saved state, and a new optimizer over them.
  void rebuild(const std::set<std::size_t>& lost) {
    stages.resize(workers.size());
    for (std::size_t i = 0; i < workers.size(); ++i) {
      if (!stages[i].valid() || lost.count(i)) stages[i] = RM::create<chaos::Layer>(agent, workers[i] + "/cpu", kWidth);
      stages[i].load_state_dict(saved[i]);
    }
    std::vector<remora::RRef<torch::Tensor>> params;
    for (auto& s : stages)
      for (auto& p : s.remote_parameters()) params.push_back(p);
    opt = std::make_unique<remora::optim::DistributedOptimizer<torch::optim::SGD>>(params, torch::optim::SGDOptions(0.05));
  }
  void step(std::int64_t k, std::int64_t attempt) {
    torch::manual_seed(1000 + k);
    auto x = torch::randn({kBatch, kWidth}), target = torch::randn({kBatch, kWidth});
    remora::autograd::Context ctx(agent);
    auto y = x;
    for (std::size_t i = 0; i < stages.size(); ++i) y = stages[i].forward(y, (k * 100 + attempt) * 10 + std::int64_t(i));
    remora::autograd::backward(ctx, {torch::mse_loss(y, target)});
    opt->step(ctx);
  }
  // All or nothing: a stage lost half-way keeps every saved state as it was (else the stages
  // saved already would run the step again from their new state).
  void save() {
    std::vector<State> now;
    for (auto& s : stages) now.push_back(s.state_dict());
    saved = std::move(now);
  }
  // The stages whose worker is gone (the incarnation that holds them is no member any more).
  std::set<std::size_t> lost_stages() const {
    std::set<std::size_t> out;
    const auto members = agent.get_worker_infos();
    for (std::size_t i = 0; i < stages.size(); ++i) {
      const auto owner = stages[i].owner();
      if (std::none_of(members.begin(), members.end(), [&](const auto& w) { return w.id == owner.id; })) out.insert(i);
    }
    return out;
  }
  // Waits for a newer incarnation of each lost stage's worker.
  void await_restarts(const std::set<std::size_t>& lost) const {
    for (auto i : lost) {
      const auto old = stages[i].owner().incarnation;
      const auto deadline = clock_type::now() + 60s;
      for (;;) {
        try {
          if (agent.get_worker_info(workers[i]).incarnation > old) break;
        } catch (const remora::Error&) {
        }
        if (clock_type::now() > deadline) throw remora::Error("chaos: '" + workers[i] + "' did not come back");
        std::this_thread::sleep_for(2ms);
      }
    }
  }
};

// A worker `name` started again whenever it exits, until `stop`.
struct Restarter {
  std::string name;
  std::vector<std::string> args;
  std::atomic<pid_t> pid{-1};
  std::mutex mu;
  std::vector<clock_type::time_point> started;
  std::thread loop;
  void run(const std::atomic<bool>& stop) {
    loop = std::thread([this, &stop] {
      while (!stop) {
        {
          std::lock_guard lock(mu);
          started.push_back(clock_type::now());
        }
        pid = spawn(args);
        int status = 0;
        waitpid(pid, &status, 0);
        pid = -1;
      }
    });
  }
};

}  // namespace

namespace chaos {
struct Wide {
  virtual ~Wide() = default;
  virtual torch::Tensor forward(torch::Tensor x) = 0;
};
// One weight of `mib` MiB (no initialisation: restoring, not making, is what is timed).
struct Big : torch::nn::Module, Wide {
  explicit Big(std::int64_t mib) { w = register_parameter("w", torch::empty({mib, 1 << 18})); }
  torch::Tensor forward(torch::Tensor x) override { return x; }
  torch::Tensor w;
};
}  // namespace chaos

// `chaos restore MIB`: a member of MIB MiB of parameters made again on a third worker from a
// healthy replica (RemoteModuleGroup::replace), three workers of this process over the local
// transport; prints the time of replace and of its parts.
int restore(std::int64_t mib) {
  remora::Options o;
  o.elastic = true;
  o.store = c10::make_intrusive<c10d::HashStore>();
  o.rpc_timeout = 120s;
  remora::Agent driver("driver", o), w1("w1", o), w2("w2", o), w3("w3", o);
  auto g = remora::RemoteModuleGroup<chaos::Wide>::create<chaos::Big>(driver, remora::DeviceMesh({"w1/cpu", "w2/cpu"}), mib);
  // The replace first, while every arena of the local links is still cold: a member restored
  // after a loss meets fresh links too. Its parts after it, for comparison (through this caller).
  auto t0 = clock_type::now();
  g.replace(1, "w3/cpu");
  auto t1 = clock_type::now();
  auto state = g.member(0).state_dict();
  auto t2 = clock_type::now();
  auto fresh = remora::RemoteModule<chaos::Wide>::create<chaos::Big>(driver, "w2/cpu", mib);
  fresh.load_state_dict(state);
  auto t3 = clock_type::now();
  std::printf("chaos_restore_%lldMiB_replace_ms %.0f (worker to worker; through this caller: state_dict %.0f, "
              "create and load_state_dict %.0f)\n",
              (long long)mib, ms_since(t0, t1), ms_since(t1, t2), ms_since(t2, t3));
  state.clear();
  g = {};
  fresh = {};
  for (auto* a : {&w1, &w2, &w3, &driver}) a->shutdown();
  return 0;
}

int main(int argc, char** argv) {
  if (argc >= 5 && std::string(argv[1]) == "serve") return serve(argv[2], argv[3], argv[4]);
  if (argc >= 2 && std::string(argv[1]) == "restore") return restore(argc > 2 ? std::atoll(argv[2]) : 1024);
  const int seconds = argc > 1 ? std::atoi(argv[1]) : 120;
  const int kill_every = argc > 2 ? std::atoi(argv[2]) : 10;
  torch::set_num_threads(1);
  const std::string self = std::filesystem::read_symlink("/proc/self/exe");
  const auto logs = std::filesystem::temp_directory_path() / ("remora-chaos-" + std::to_string(::getpid()));
  std::filesystem::create_directories(logs);

  c10d::TCPStoreOptions so;
  so.port = 0;
  so.isServer = true;
  so.waitWorkers = false;
  auto store = c10::make_intrusive<c10d::TCPStore>("127.0.0.1", so);
  const std::string port = std::to_string(store->getPort());
  remora::Options o;
  o.elastic = true;
  o.store = store;
  o.rpc_timeout = 30s;
  remora::Agent trainer("trainer", o);

  std::mutex mu;
  std::map<std::string, std::vector<clock_type::time_point>> lost_at, joined_at;
  auto sub = trainer.on_membership([&](const remora::MembershipEvent& e) {
    std::lock_guard lock(mu);
    (e.kind == remora::MembershipEvent::joined ? joined_at : lost_at)[e.worker.name].push_back(clock_type::now());
  });

  auto run = [&](const std::vector<std::string>& names, bool kills, std::int64_t max_steps, Model*& out_model,
                 std::vector<std::pair<std::string, clock_type::time_point>>* kill_log,
                 std::vector<clock_type::time_point>* step_done, std::int64_t* failed_attempts) {
    std::atomic<bool> stop{false};
    std::vector<std::unique_ptr<Restarter>> workers;
    for (const auto& n : names) {
      auto r = std::make_unique<Restarter>();
      r->name = n;
      r->args = {self, "serve", n, port, (logs / (n + ".log")).string()};
      r->run(stop);
      workers.push_back(std::move(r));
    }
    for (const auto& n : names)
      while (true) {
        try {
          trainer.get_worker_info(n);
          break;
        } catch (const remora::Error&) {
          std::this_thread::sleep_for(10ms);
        }
      }
    auto* model = new Model(trainer, names);
    out_model = model;
    std::thread killer;
    const auto end = clock_type::now() + std::chrono::seconds(seconds);
    if (kills)
      killer = std::thread([&] {
        std::mt19937 rng(7);
        while (!stop) {
          for (int i = 0; i < kill_every * 10 && !stop; ++i) std::this_thread::sleep_for(100ms);
          if (stop) break;
          auto& w = *workers[rng() % workers.size()];
          const pid_t pid = w.pid;
          if (pid <= 0) continue;
          kill_log->push_back({w.name, clock_type::now()});
          ::kill(pid, SIGKILL);
        }
      });
    std::int64_t k = 0;
    while (kills ? clock_type::now() < end : k < max_steps) {
      for (std::int64_t attempt = 0;; ++attempt) {
        try {
          model->step(k, attempt);
          model->save();
          break;
        } catch (const remora::Error&) {  // WorkerLost, or a RemoteError about a lost peer
          if (failed_attempts) ++*failed_attempts;
          for (;;) {
            try {
              auto lost = model->lost_stages();
              model->await_restarts(lost);
              model->rebuild(lost);
              break;
            } catch (const remora::Error&) {  // lost again while recovering
              std::this_thread::sleep_for(5ms);
            }
          }
        }
      }
      if (step_done) step_done->push_back(clock_type::now());
      ++k;
    }
    stop = true;
    if (killer.joinable()) killer.join();
    for (auto& w : workers)
      if (pid_t p = w->pid; p > 0) ::kill(p, SIGKILL);
    for (auto& w : workers) w->loop.join();
    return k;
  };

  std::vector<std::pair<std::string, clock_type::time_point>> kills;
  std::vector<clock_type::time_point> steps_done;
  std::int64_t failed = 0;
  Model* chaos_model = nullptr;
  const auto steps = run({"s0", "s1", "s2"}, true, 0, chaos_model, &kills, &steps_done, &failed);
  Model* calm_model = nullptr;
  run({"r0", "r1", "r2"}, false, steps, calm_model, nullptr, nullptr, nullptr);

  std::vector<double> detect, recover, start;
  {
    std::lock_guard lock(mu);
    for (const auto& [name, at] : kills) {
      auto first_after = [&](const std::vector<clock_type::time_point>& ts) {
        for (auto t : ts)
          if (t >= at) return ms_since(at, t);
        return -1.0;
      };
      std::fprintf(stderr, "kill %s: lost %.1f ms, joined %.1f ms, next step %.1f ms\n", name.c_str(),
                   first_after(lost_at[name]), first_after(joined_at[name]), first_after(steps_done));
      for (auto t : lost_at[name])
        if (t >= at) {
          detect.push_back(ms_since(at, t));
          break;
        }
      // The next step completed once the loss was seen (one that ends just after the kill had
      // already had its answers from the killed worker).
      const double lost_after = first_after(lost_at[name]);
      const auto seen = at + std::chrono::duration_cast<clock_type::duration>(
                                 std::chrono::duration<double, std::milli>(std::max(0.0, lost_after)));
      for (auto t : steps_done)
        if (t >= seen) {
          recover.push_back(ms_since(at, t));
          break;
        }
    }
  }
  // A restarted process's own start: from each kill to the next `joined` of that name, less the
  // detection (the restart loop starts it once the old one is reaped).
  {
    std::lock_guard lock(mu);
    for (const auto& [name, at] : kills)
      for (auto t : joined_at[name])
        if (t >= at) {
          start.push_back(ms_since(at, t));
          break;
        }
  }
  std::size_t forwards = 0, twice = 0;
  for (const auto& n : {"s0", "s1", "s2"}) {
    std::ifstream in(logs / (std::string(n) + ".log"));
    std::set<std::string> seen;
    for (std::string line; std::getline(in, line);) {
      ++forwards;
      if (!seen.insert(line).second) ++twice;
    }
  }
  double diff = 0;
  for (std::size_t i = 0; i < 3; ++i)
    for (const auto& [name, t] : chaos_model->saved[i])
      diff = std::max(diff, (t - calm_model->saved[i].at(name)).abs().max().item<double>());
  const auto [d50, dmax] = p50_max(detect);
  const auto [r50, rmax] = p50_max(recover);
  const auto [s50, smax] = p50_max(start);
  std::printf("chaos_seconds %d\nchaos_kills %zu\nchaos_steps %lld\n", seconds, kills.size(), (long long)steps);
  std::printf("chaos_kill_to_lost_ms p50 %.1f max %.1f\n", d50, dmax);
  std::printf("chaos_kill_to_next_step_ms p50 %.1f max %.1f\n", r50, rmax);
  std::printf("chaos_kill_to_rejoined_ms p50 %.1f max %.1f\n", s50, smax);
  // No step is lost or applied twice exactly when the final parameters equal the calm run's.
  std::printf("chaos_failed_attempts_retried %lld\n", (long long)failed);
  std::printf("chaos_calls_executed_twice %zu of %zu\n", twice, forwards);
  std::printf("chaos_final_parameters_max_abs_diff %.3g\n", diff);
  sub.reset();
  trainer.shutdown();
  std::filesystem::remove_all(logs);
  delete chaos_model;
  delete calm_model;
  return twice == 0 && diff <= 1e-6 ? 0 : 1;
}
