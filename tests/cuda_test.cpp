// CUDA paths, built only with a CUDA libtorch (REMORA_CUDA=ON) and run on a GPU machine by
// scripts/gpu-test: RemoteModule on cuda:0 (CPU arguments moved there, results back on the CPU),
// device maps (CUDA tensors arrive on the mapped device, replies through the inverse map), stream
// order (tensors sent while work that produces them is still queued on the caller's stream), and
// GPU tensors between two processes by CUDA IPC handle, released once copied.
#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <catch2/catch.hpp>

#include "agent_support.hpp"
#include "process_support.hpp"
#include "roles.hpp"
#include "remora/autograd.hpp"
#include "remora/dynamic.hpp"
#include "remora/module/remote_module.hpp"
#include "remora/transport/detail/cuda_ipc.hpp"
#include <torch/csrc/jit/serialization/pickle.h>

using remora::test::shutdown_group;
using remora::test::serving_by_name;
using remora::test::start_group;

namespace cuda_fns {
torch::Tensor scale(torch::Tensor t, double f) { return t * f; }
std::string device_of(torch::Tensor t) { return t.device().str(); }
double sum_of(torch::Tensor t) { return t.sum().item<double>(); }
std::tuple<double, double> min_max(torch::Tensor t) { return {t.min().item<double>(), t.max().item<double>()}; }
// Copies of calls' GPU arguments whose sender has not been told to let go yet, after a
// second for them to finish.
std::size_t copies_pending() {
  auto& watch = remora::transport::detail::CopyWatch::instance();
  for (int i = 0; i < 1000 && watch.pending(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return watch.pending();
}
// A tensor in a segment of its own: the cache is emptied first, so each call exports a new
// segment (a new IPC handle) once the previous reply was released.
torch::Tensor in_new_segment(double value) {
  c10::cuda::CUDACachingAllocator::emptyCache();
  return torch::full({(4 << 20) / 4}, value, torch::kCUDA);
}

struct Inspector {
  virtual ~Inspector() = default;
  // The devices forward saw its tensors on, and the tensors doubled.
  virtual std::tuple<std::string, torch::Tensor, std::vector<torch::Tensor>> forward(
      torch::Tensor x, std::vector<torch::Tensor> xs) = 0;
};
struct Doubler : torch::nn::Module, Inspector {
  Doubler() { w = register_parameter("w", torch::full({1}, 2.0)); }
  std::tuple<std::string, torch::Tensor, std::vector<torch::Tensor>> forward(torch::Tensor x,
                                                                             std::vector<torch::Tensor> xs) override {
    std::string seen = x.device().str();
    for (auto& t : xs) {
      seen += "," + t.device().str();
      t = t * w;
    }
    return {seen, x * w, xs};
  }
  torch::Tensor w;
};
// A module of `count` parameters of `elements` floats each; forward gives each one's sum.
struct Summer {
  virtual ~Summer() = default;
  virtual torch::Tensor forward(torch::Tensor x) = 0;
};
struct Wide : torch::nn::Module, Summer {
  Wide(std::int64_t count, std::int64_t elements) {
    for (std::int64_t i = 0; i < count; ++i) register_parameter("p" + std::to_string(i), torch::zeros({elements}));
  }
  torch::Tensor forward(torch::Tensor x) override {
    std::vector<torch::Tensor> sums;
    for (const auto& p : parameters()) sums.push_back(p.sum().reshape({1}));
    return torch::cat(sums).cpu() * x.cpu();
  }
};
// The gradient of the module's weight in autograd context `context` on this worker.
torch::Tensor weight_grad_in(remora::RRef<Inspector> m, std::uint64_t context) {
  auto grads = remora::autograd::get_gradients(context);
  auto& w = dynamic_cast<Doubler&>(m.local_value()).w;
  auto it = grads.find(w);
  return it == grads.end() ? torch::Tensor() : it->value().cpu();
}
// Rank 1 of the two-process test: serves until the group shuts down.
// Queues `rounds` products on this thread's stream and returns x * 2 computed after them, at
// once: its reply leaves while they run (the sender records an event behind them and does not
// wait). Read before they end, the result would not be x * 2.
torch::Tensor slow_double(torch::Tensor x, std::int64_t rounds) {
  auto y = x;
  for (std::int64_t i = 0; i < rounds; ++i) y = torch::tanh(y.matmul(x) / x.size(0));
  return x * 2 + y.sum() * 0;
}
int ping(int v) { return v + 1; }

int cuda_server(const std::vector<std::string>& args) {
  remora::Agent agent("server", 1, 2, remora::test::tcp_options(static_cast<std::uint16_t>(std::stoi(args.at(0)))));
  agent.shutdown();
  return 0;
}
remora::test::RegisterRole role("cuda_server", &cuda_server);
}  // namespace cuda_fns

TEST_CASE("A RemoteModule on cuda:0 gets CPU arguments on its GPU and answers on the CPU", "[cuda]") {
  REQUIRE(torch::cuda::device_count() >= 1);
  auto g = start_group({"a", "b"}, serving_by_name());
  auto m = remora::RemoteModule<cuda_fns::Inspector>::create<cuda_fns::Doubler>(*g[0], "b/cuda:0");
  CHECK(m.device() == torch::Device("cuda:0"));
  auto x = torch::arange(4, torch::kFloat);
  auto [seen, y, ys] = m.forward(x, std::vector<torch::Tensor>{x + 1, x + 2});
  CHECK(seen == "cuda:0,cuda:0,cuda:0");
  CHECK(y.device().is_cpu());
  CHECK(torch::equal(y, x * 2));
  REQUIRE(ys.size() == 2);
  CHECK(ys[1].device().is_cpu());
  CHECK(torch::equal(ys[1], (x + 2) * 2));
  SECTION("a CUDA argument without a device map is refused, naming the device and the worker") {
    CHECK_THROWS_WITH(m.forward(x.cuda(), std::vector<torch::Tensor>{}), Catch::Contains("a tensor on cuda:0 cannot be sent to worker 'b'"));
  }
  m = {};
  shutdown_group(g);
}

TEST_CASE("With a device map CUDA tensors arrive on the mapped device, and replies come back", "[cuda]") {
  remora::Options o;
  o.set_device_map("b", {{"cuda:0", "cuda:0"}});
  auto g = start_group({"a", "b"}, serving_by_name(o));
  auto x = torch::randn({1 << 20}, torch::kCUDA);  // 4 MiB: the local transport's shared memory too
  CHECK(g[0]->rpc_sync<&cuda_fns::device_of>("b", x) == "cuda:0");
  auto y = g[0]->rpc_sync<&cuda_fns::scale>("b", x, 3.0);
  CHECK(y.device() == torch::Device("cuda:0"));
  CHECK(torch::allclose(y, x * 3));
  CHECK(g[0]->rpc_sync<&cuda_fns::device_of>("b", x.cpu()) == "cpu");  // CPU tensors stay CPU tensors

  auto m = remora::RemoteModule<cuda_fns::Inspector>::create<cuda_fns::Doubler>(*g[0], "b/cuda:0");
  auto [seen, z, zs] = m.forward(x.cpu(), std::vector<torch::Tensor>{x});
  CHECK(seen == "cuda:0,cuda:0");
  CHECK(z.device() == torch::Device("cuda:0"));  // a map to b: results stay on the GPU
  CHECK(torch::allclose(z, x * 2));
  CHECK(torch::allclose(zs.at(0), x * 2));
  m = {};
  shutdown_group(g);
}

namespace cuda_fns {
struct Scaler {
  virtual ~Scaler() = default;
  virtual torch::Tensor forward(torch::Tensor x, double s) = 0;
};
}  // namespace cuda_fns

TEST_CASE("By name on a GPU: script modules on cuda:0 and builtin operators on CUDA tensors", "[cuda][dynamic]") {
  const auto path = (std::filesystem::temp_directory_path() / ("remora_cuda_" + std::to_string(getpid()) + ".pt")).string();
  torch::jit::Module script("Scaler");
  script.register_parameter("w", torch::full({4}, 2.0), false);
  script.define(R"JIT(
def forward(self, x: Tensor, s: float) -> Tensor:
    return x * self.w * s
def where(self, x: Tensor) -> str:
    return str(x.device)
)JIT");
  script.save(path);
  remora::Options o;
  o.set_device_map("b", {{"cuda:0", "cuda:0"}});
  auto g = start_group({"a", "b"}, serving_by_name(o));
  auto x = torch::ones({4});
  {
    // CPU arguments go to the module's GPU; results come back on the CPU (as create<M>), or stay
    // on the GPU with a device map.
    auto d = remora::ScriptRemoteModule::load(*g[0], "b/cuda:0", path);
    CHECK(d.call("where", x).toStringRef() == "cuda:0");
    auto y = d.call("forward", x, 3.0).toTensor();
    CHECK(torch::equal(y.cpu(), x * 6));
    auto typed = remora::RemoteModule<cuda_fns::Scaler>::load(*g[0], "b/cuda:0", path);
    auto z = typed.forward(x.cuda(), 0.5);
    CHECK(z.device() == torch::Device("cuda:0"));
    CHECK(torch::equal(z.cpu(), x));
    // A builtin operator on CUDA tensors, through the device map and back.
    auto c = remora::rpc_sync<torch::Tensor>(*g[0], "b", "aten::add", x.cuda(), x.cuda(), remora::kwargs({{"alpha", 2}}));
    CHECK(c.device() == torch::Device("cuda:0"));
    CHECK(torch::equal(c.cpu(), x * 3));
  }
  shutdown_group(g);
  std::filesystem::remove(path);
}

namespace cuda_fns {
struct Exported {  // what an AOTInductor package serves: tensors in, tensors out
  virtual ~Exported() = default;
  virtual torch::Tensor forward(torch::Tensor x) = 0;
};
struct ExportedTwoIn {
  virtual ~ExportedTwoIn() = default;
  virtual torch::Tensor forward(torch::Tensor x, torch::Tensor y) = 0;
};
struct ExportedTwoOut {
  virtual ~ExportedTwoOut() = default;
  virtual std::tuple<torch::Tensor, torch::Tensor> forward(torch::Tensor x) = 0;
};
}  // namespace cuda_fns

TEST_CASE("Torch.export / AOTInductor packages as remote modules, on cuda:0 and on the CPU", "[cuda][dynamic][aoti]") {
#if !REMORA_AOTI
  WARN("this libtorch (" TORCH_VERSION ") has no AOTInductor package loader");
#else
  // scripts/gpu-test makes the packages with this machine's torch (tests/make_aoti_package.py).
  const char* dir = std::getenv("REMORA_TEST_AOTI_DIR");
  REQUIRE(dir != nullptr);
  remora::Options o;
  o.set_device_map("b", {{"cuda:0", "cuda:0"}});
  auto g = start_group({"a", "b"}, serving_by_name(o));
  int loaded = 0;
  for (std::string device : {"cuda", "cpu"}) {
    const std::string package = std::string(dir) + "/scorer_" + device + ".pt2";
    if (!std::filesystem::exists(package)) continue;
    INFO("package " << package);
    std::ifstream io_file(std::string(dir) + "/io_" + device + ".pt", std::ios::binary);
    std::vector<char> bytes((std::istreambuf_iterator<char>(io_file)), std::istreambuf_iterator<char>());
    auto io = torch::jit::pickle_load(bytes).toTuple();
    auto x = io->elements()[0].toTensor(), y = io->elements()[1].toTensor();
    const std::string where = device == "cuda" ? "b/cuda:0" : "b/cpu";
    auto e = remora::RemoteModule<cuda_fns::Exported>::load(*g[0], where, package);
    // CPU arguments go to the package's device; a CUDA result comes back through the device map.
    auto out = e.forward(x);
    CHECK(out.device() == torch::Device(device == "cuda" ? "cuda:0" : "cpu"));
    CHECK(torch::allclose(out.cpu(), y, 1e-4, 1e-5));
    if (device == "cuda") {
      auto on_gpu = e.forward(x.cuda());
      CHECK(on_gpu.device() == torch::Device("cuda:0"));
      CHECK(torch::allclose(on_gpu.cpu(), y, 1e-4, 1e-5));
      // Without a device map the result comes back on the CPU, as from create<M>.
      auto h = start_group({"c", "d"}, serving_by_name());
      auto plain = remora::RemoteModule<cuda_fns::Exported>::load(*h[0], "d/cuda:0", package);
      auto back = plain.forward(x);
      CHECK(back.device() == torch::Device("cpu"));
      CHECK(torch::allclose(back, y, 1e-4, 1e-5));
      shutdown_group(h);
    }
    // Interfaces that do not fit the package fail at load, naming the file.
    CHECK_THROWS_WITH(remora::RemoteModule<cuda_fns::ExportedTwoIn>::load(*g[0], where, package),
                      Catch::Contains("takes 2 tensors") && Catch::Contains("takes 1"));
    CHECK_THROWS_WITH(remora::RemoteModule<cuda_fns::ExportedTwoOut>::load(*g[0], where, package),
                      Catch::Contains("returns 2 tensors") && Catch::Contains("gives 1"));
    ++loaded;
  }
  // A CUDA package asked for the CPU.
  if (std::filesystem::exists(std::string(dir) + "/scorer_cuda.pt2"))
    CHECK_THROWS_WITH(remora::RemoteModule<cuda_fns::Exported>::load(*g[0], "b/cpu", std::string(dir) + "/scorer_cuda.pt2"),
                      Catch::Contains("was compiled for cuda"));
  CHECK(loaded > 0);
  shutdown_group(g);
#endif
}

TEST_CASE("Tensors sent while the caller's stream is still producing them arrive complete", "[cuda]") {
  remora::Options o;
  o.set_device_map("b", {{"cuda:0", "cuda:0"}});
  auto g = start_group({"a", "b"}, serving_by_name(o));
  auto stream = c10::cuda::getStreamFromPool();
  c10::cuda::CUDAStreamGuard guard(stream);
  for (int round = 0; round < 5; ++round) {
    auto a = torch::randn({2048, 2048}, torch::kCUDA);
    // Queued work (tens of matrix products) whose result is sent before it is done.
    auto x = a;
    for (int i = 0; i < 20; ++i) x = torch::tanh(x.matmul(a) / 2048.0);
    auto remote_sum = g[0]->rpc_sync<&cuda_fns::sum_of>("b", x);
    auto back = g[0]->rpc_sync<&cuda_fns::scale>("b", x, 1.0);
    CHECK(remote_sum == Approx(x.sum().item<double>()).epsilon(1e-3));
    // Used at once on this stream: the copy back is complete before the future completed.
    CHECK(torch::equal(back, x));
  }
  shutdown_group(g);
}

TEST_CASE("Large GPU tensors over TCP go through pinned memory in chunks, and arrive whole", "[cuda]") {
  remora::Options o;
  o.transport = remora::Transport::tcp;  // no CUDA IPC: host staging, chunked both ways
  o.set_device_map("b", {{"cuda:0", "cuda:0"}});
  auto g = start_group({"a", "b"}, serving_by_name(o));
  auto stream = c10::cuda::getStreamFromPool();
  c10::cuda::CUDAStreamGuard guard(stream);
  // Sizes around the 1 MiB threshold and the 4 MiB chunk, one not a multiple of anything.
  for (std::int64_t bytes : {(1 << 20) - 1, 1 << 20, (4 << 20) + 1, (9 << 20) + 12345}) {
    auto x = torch::randint(0, 255, {bytes}, torch::TensorOptions().dtype(torch::kUInt8).device(torch::kCUDA));
    auto y = x.to(torch::kFloat).add_(1).to(torch::kUInt8);  // still queued on this stream when sent
    auto back = g[0]->rpc_sync<&cuda_fns::scale>("b", y.to(torch::kFloat), 1.0);
    CHECK(back.device() == torch::Device("cuda:0"));
    CHECK(torch::equal(back.to(torch::kUInt8), y));
  }
  CHECK(g[0]->transport_to("b") == "tcp");
  auto m = remora::RemoteModule<cuda_fns::Inspector>::create<cuda_fns::Doubler>(*g[0], "b/cuda:0");
  auto big = torch::randn({3 << 20}, torch::kCUDA);  // 12 MiB
  auto [seen, z, zs] = m.forward(big.cpu(), std::vector<torch::Tensor>{big, big.narrow(0, 1, 1 << 20)});
  CHECK(seen == "cuda:0,cuda:0,cuda:0");
  CHECK(torch::allclose(z, big * 2));
  CHECK(torch::allclose(zs.at(0), big * 2));
  CHECK(torch::allclose(zs.at(1), big.narrow(0, 1, 1 << 20) * 2));
  m = {};
  shutdown_group(g);
}

TEST_CASE("Weight sync into a module on the caller's GPU lends the tensors in place: loads past the receiver's "
          "byte budget are not refused",
          "[cuda][weight_sync]") {
  remora::Options o;
  o.set_device_map("b", {{"cuda:0", "cuda:0"}});
  o.limits.max_frame_bytes = std::uint64_t{64} << 20;     // GPU loads of 32 MiB
  o.max_pending_bytes_per_peer = std::uint64_t{64} << 20;  // two of them at once, were they counted
  // Over TCP the tensors are copied, not lent: they count, as any call's tensors do.
  if (std::getenv("REMORA_TRANSPORT") && std::string(std::getenv("REMORA_TRANSPORT")) == "tcp") return;
  auto g = start_group({"a", "b"}, o);
  {
    constexpr std::int64_t kCount = 8, kElements = (std::int64_t{32} << 20) / 4;
    auto trainer = std::make_shared<cuda_fns::Wide>(kCount, kElements);
    trainer->to(torch::kCUDA);
    {
      torch::NoGradGuard no_grad;
      double value = 0;
      for (auto& p : trainer->parameters()) p.fill_(++value);
    }
    auto m = remora::RemoteModule<cuda_fns::Summer>::create<cuda_fns::Wide>(*g[0], "b/cuda:0", kCount, kElements);
    m.load_state_dict(trainer->named_parameters());  // 8 loads of 32 MiB, side by side
    const auto ones = torch::ones({1});
    CHECK(torch::allclose(m.forward(ones).cpu(), trainer->forward(ones)));
    m = {};
  }
  shutdown_group(g);
}

TEST_CASE("A device map to a device the peer lacks fails when the group starts", "[cuda]") {
  const auto n = static_cast<c10::DeviceIndex>(torch::cuda::device_count());
  remora::Options o;
  o.store = c10::make_intrusive<c10d::HashStore>();
  o.add_device_mapping("a", torch::Device("cuda:0"), torch::Device(torch::kCUDA, n));  // a one-worker group
  CHECK_THROWS_WITH(remora::Agent("a", 0, 1, o),
                    Catch::Contains("maps to cuda:" + std::to_string(n) + ", but 'a' has " + std::to_string(n)));
}

TEST_CASE("GPU tensors cross between two processes by CUDA IPC handle, both ways", "[cuda][process]") {
  const auto hosted = remora::test::host_store();
  pid_t child = remora::test::spawn_self({"--role", "cuda_server", std::to_string(hosted.port)});
  {
    auto o = remora::test::hosted_options(hosted);
    o.set_device_map("server", {{"cuda:0", "cuda:0"}});
    remora::Agent client("client", 0, 2, o);
    auto stream = c10::cuda::getStreamFromPool();
    c10::cuda::CUDAStreamGuard guard(stream);
    for (int round = 0; round < 3; ++round) {
      auto a = torch::randn({1024, 1024}, torch::kCUDA);
      auto x = a;
      for (int i = 0; i < 10; ++i) x = torch::tanh(x.matmul(a) / 1024.0);  // still queued when sent
      auto y = client.rpc_sync<&cuda_fns::scale>("server", x, 2.0);
      CHECK(client.transport_to("server") == (std::getenv("REMORA_TRANSPORT") ? std::string(std::getenv("REMORA_TRANSPORT")) : "local"));
      CHECK(y.device() == torch::Device("cuda:0"));
      CHECK(torch::allclose(y, x * 2));
    }
    // The replies came from another process on this GPU: without MPS this process said once that
    // MPS would cut the cost of each hand-over (over TCP nothing crossed by CUDA IPC).
    if (client.transport_to("server") == "local")
      CHECK(remora::transport::detail::MpsAdvice::given() == !remora::transport::detail::cuda_mps_server());
    client.shutdown();
  }
  CHECK(remora::test::wait_exit(child) == 0);
}

TEST_CASE("GPU tensors cross by CUDA IPC between processes in separate PID namespaces", "[cuda][process][pidns]") {
  // unshare(1) makes the server pid 1 of a new PID namespace with its own /proc (root only;
  // skipped elsewhere): the two processes share the GPU and the network namespace, not their
  // pids. (Without a /proc of its own the CUDA driver does not start in such a namespace.)
  if (std::getenv("REMORA_TRANSPORT") && std::string(std::getenv("REMORA_TRANSPORT")) == "tcp") return;  // no IPC
  if (::geteuid() != 0 || std::system("unshare --pid --fork --mount-proc true >/dev/null 2>&1") != 0) {
    WARN("skipped: this process cannot make a PID namespace (unshare --pid --mount-proc)");
    return;
  }
  const auto hosted = remora::test::host_store();
  pid_t child = remora::test::spawn_self(
      {"--pid", "--fork", "--mount-proc", "@self", "--role", "cuda_server", std::to_string(hosted.port)},
      "/usr/bin/unshare");
  {
    auto o = remora::test::hosted_options(hosted);
    o.set_device_map("server", {{"cuda:0", "cuda:0"}});
    remora::Agent client("client", 0, 2, o);
    using remora::transport::detail::OpenedSegments;
    const auto opened_before = OpenedSegments::instance().opened_count();
    for (int round = 0; round < 3; ++round) {
      auto x = torch::randn({1 << 20}, torch::kCUDA);
      auto y = client.rpc_sync<&cuda_fns::scale>("server", x, 2.0);
      CHECK(y.device() == torch::Device("cuda:0"));
      CHECK(torch::allclose(y, x * 2));
    }
    CHECK(client.transport_to("server") == "local");  // (known once the first call connected)
    // The replies came by IPC handle: this process opened the server's memory.
    CHECK(OpenedSegments::instance().opened_count() > opened_before);
    client.shutdown();
  }
  CHECK(remora::test::wait_exit(child) == 0);
}

TEST_CASE("A reply's GPU copy is waited for off the I/O thread: later replies on its connection are not held up",
          "[cuda][process]") {
  if (std::getenv("REMORA_TRANSPORT") && std::string(std::getenv("REMORA_TRANSPORT")) == "tcp") return;  // no IPC
  const auto hosted = remora::test::host_store();
  pid_t child = remora::test::spawn_self({"--role", "cuda_server", std::to_string(hosted.port)});
  {
    auto o = remora::test::hosted_options(hosted);
    o.set_device_map("server", {{"cuda:0", "cuda:0"}});
    remora::Agent client("client", 0, 2, o);
    auto x = torch::randn({4096, 4096}, torch::kCUDA);
    client.rpc_sync<&cuda_fns::slow_double>("server", x, 1);  // segments, events and cuBLAS warm on both sides
    auto slow = client.rpc_async<&cuda_fns::slow_double>("server", x, 400);  // about a second of GPU work
    // The reply is read (its call leaves the table) long before the server's GPU is done with it.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (client.debug_info().calls_in_flight != 0 && std::chrono::steady_clock::now() < deadline)
      std::this_thread::yield();
    REQUIRE(client.debug_info().calls_in_flight == 0);
    CHECK_FALSE(slow.is_ready());  // its copy waits behind the server's work
    // The next reply on the same connection is read by the same I/O thread: it does not wait for
    // that copy (it did when the I/O thread synchronized the copy itself).
    CHECK(client.rpc_sync<&cuda_fns::ping>("server", 1) == 2);
    CHECK_FALSE(slow.is_ready());
    auto y = slow.get();
    CHECK(y.device() == torch::Device("cuda:0"));
    CHECK(torch::equal(y, x * 2));
    client.shutdown();
  }
  CHECK(remora::test::wait_exit(child) == 0);
}

TEST_CASE("A call's GPU arguments reach the call complete, and the caller's memory is reused only after the copy",
          "[cuda][process]") {
  const auto hosted = remora::test::host_store();
  pid_t child = remora::test::spawn_self({"--role", "cuda_server", std::to_string(hosted.port)});
  {
    auto o = remora::test::hosted_options(hosted);
    o.set_device_map("server", {{"cuda:0", "cuda:0"}});
    remora::Agent client("client", 0, 2, o);
    auto stream = c10::cuda::getStreamFromPool();
    c10::cuda::CUDAStreamGuard guard(stream);
    auto a = torch::randn({1024, 1024}, torch::kCUDA);
    std::vector<remora::Future<std::tuple<double, double>>> results;
    for (int round = 0; round < 24; ++round) {
      // Still being produced when sent, and dropped here at once: if the server let go of it
      // before its copy ran, the next rounds' tensors would take its memory.
      auto x = a;
      for (int i = 0; i < 4; ++i) x = torch::tanh(x.matmul(a) / 1024.0);
      auto filled = torch::full({4 << 20}, double(round), torch::kCUDA) + x.sum() * 0;
      results.push_back(client.rpc_async<&cuda_fns::min_max>("server", filled));
    }
    for (int round = 0; round < 24; ++round) {
      auto [lo, hi] = results[static_cast<std::size_t>(round)].get();
      CHECK(lo == round);
      CHECK(hi == round);
    }
    // Every copy the server queued has finished and been released to this side.
    CHECK(client.rpc_sync<&cuda_fns::copies_pending>("server") == 0);
    client.shutdown();
  }
  CHECK(remora::test::wait_exit(child) == 0);
}

TEST_CASE("A process keeps a bounded number of a peer's GPU segments open", "[cuda][process]") {
  if (std::getenv("REMORA_TRANSPORT") && std::string(std::getenv("REMORA_TRANSPORT")) == "tcp") return;  // no IPC
  using remora::transport::detail::OpenedSegments;
  const auto hosted = remora::test::host_store();
  pid_t child = remora::test::spawn_self({"--role", "cuda_server", std::to_string(hosted.port)});
  {
    auto o = remora::test::hosted_options(hosted);
    o.set_device_map("server", {{"cuda:0", "cuda:0"}});
    remora::Agent client("client", 0, 2, o);
    const auto closed_before = OpenedSegments::instance().closed_count();
    const int rounds = static_cast<int>(OpenedSegments::kMaxOpen) + 16;
    for (int round = 0; round < rounds; ++round) {
      auto y = client.rpc_sync<&cuda_fns::in_new_segment>("server", double(round));
      REQUIRE(y.device() == torch::Device("cuda:0"));
      CHECK(y.min().item<double>() == round);
      CHECK(y.max().item<double>() == round);
      CHECK(OpenedSegments::instance().open_count() <= OpenedSegments::kMaxOpen);
    }
    // The peer's segments changed often enough that old ones were closed, not kept.
    CHECK(OpenedSegments::instance().closed_count() > closed_before);
    client.shutdown();
  }
  CHECK(remora::test::wait_exit(child) == 0);
}

TEST_CASE("Distributed autograd with CUDA tensors, with a device map and without one", "[cuda][autograd]") {
  remora::Options o;
  o.set_device_map("b", {{"cuda:0", "cuda:0"}});
  auto g = start_group({"a", "b", "c"}, serving_by_name(o));  // a maps to b; nobody maps to c
  auto& a = *g[0];
  {
    auto x = torch::randn({1 << 20}, torch::TensorOptions(torch::kCUDA).requires_grad(true));
    remora::autograd::Context ctx(a);
    // Mapped: the tensor and its gradient stay on the GPU both ways.
    auto y = a.rpc_sync<&cuda_fns::scale>("b", x, 3.0);
    CHECK(y.device() == torch::Device("cuda:0"));
    remora::autograd::backward(ctx, {y.sum()});
    auto grads = remora::autograd::get_gradients(ctx);
    REQUIRE(grads.contains(x));
    CHECK(grads.at(x).device() == torch::Device("cuda:0"));
    CHECK(torch::allclose(grads.at(x).cpu(), torch::full({1 << 20}, 3.0)));

    // Unmapped: a module on c's GPU takes CPU tensors and answers on the CPU; its weight's
    // gradient stays on c's GPU, in the context.
    auto m = remora::RemoteModule<cuda_fns::Inspector>::create<cuda_fns::Doubler>(a, "c/cuda:0");
    auto v = torch::arange(4, torch::kFloat).requires_grad_(true);
    auto [seen, z, zs] = m.forward(v, std::vector<torch::Tensor>{});
    CHECK(z.device().is_cpu());
    remora::autograd::backward(ctx, {z.sum()});
    CHECK(torch::allclose(remora::autograd::get_gradients(ctx).at(v), torch::full({4}, 2.0)));
    auto wg = a.rpc_sync<&cuda_fns::weight_grad_in>("c", m.module_rref(), ctx.id());
    CHECK(torch::allclose(wg, torch::full({1}, 6.0)));  // the sum of 0..3
    m = {};
  }
  shutdown_group(g);
}

TEST_CASE("A GPU gradient of a passed-on tensor goes back the way it came: no map joins its two ends", "[cuda][autograd]") {
  remora::Options o;
  o.set_device_map("b", {{"cuda:0", "cuda:0"}});
  o.set_device_map("c", {{"cuda:0", "cuda:0"}});
  auto g = start_group({"a", "b", "c"}, serving_by_name(o));  // a maps to b and to c; b and c have no map between them
  auto& a = *g[0];
  auto served = [&](int i) { return remora::autograd::stats(*g[i]).gradient_messages; };
  {
    auto x = torch::randn({1024}, torch::TensorOptions(torch::kCUDA).requires_grad(true));
    remora::autograd::Context ctx(a);
    auto h = a.rpc_sync<&cuda_fns::scale>("b", x, 3.0);  // on a's GPU, from b
    auto z = a.rpc_sync<&cuda_fns::scale>("c", h, 2.0);  // passed on to c untouched
    const std::uint64_t before[3] = {served(0), served(1), served(2)};
    remora::autograd::backward(ctx, {z.sum()});
    CHECK(torch::allclose(remora::autograd::get_gradients(ctx).at(x).cpu(), torch::full({1024}, 6.0)));
    CHECK(served(2) - before[2] == 1);  // z's, from a
    CHECK(served(0) - before[0] == 2);  // h's, from c (not straight to b: it is on the GPU), and x's
    CHECK(served(1) - before[1] == 1);  // h's, from a
  }
  shutdown_group(g);
}

TEST_CASE("Get_worker_info says whether a worker's CUDA work goes through an MPS server", "[cuda]") {
  // An MPS control daemon is known by its socket in the pipe directory: a file stands in for it
  // here (the CUDA context of this process was made long before, so nothing connects to it).
  const auto dir = std::filesystem::temp_directory_path() / ("remora_mps_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const char* saved = std::getenv("CUDA_MPS_PIPE_DIRECTORY");
  const std::string before = saved ? saved : "";
  {
    ::setenv("CUDA_MPS_PIPE_DIRECTORY", dir.c_str(), 1);
    auto g = start_group({"a", "b"}, serving_by_name());
    CHECK_FALSE(g[0]->get_worker_info("b").cuda_mps);  // no daemon's socket there yet
    shutdown_group(g);
  }
  std::ofstream(dir / "control") << "";
  {
    auto g = start_group({"a", "b"}, serving_by_name());
    CHECK(g[0]->get_worker_info("b").cuda_mps);
    CHECK(g[1]->get_worker_info("a").cuda_mps);
    shutdown_group(g);
  }
  if (saved) ::setenv("CUDA_MPS_PIPE_DIRECTORY", before.c_str(), 1);
  else ::unsetenv("CUDA_MPS_PIPE_DIRECTORY");
  std::filesystem::remove(dir / "control");  // not remove_all: see tls_test.cpp
  std::filesystem::remove(dir);
}
