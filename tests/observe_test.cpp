// What users see of the calls a worker makes and serves: get_debug_info (calls in flight per
// peer, connections, traffic, RRefs) and spans in the profiler on both sides of a call.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <ATen/record_function.h>
#include <catch2/catch.hpp>
#include <torch/csrc/autograd/profiler_legacy.h>

#include "agent_support.hpp"
#include "remora/core/log.hpp"
#include "remora/rref.hpp"
#include "roles.hpp"

using remora::test::eventually;
using remora::test::shutdown_group;
using remora::test::start_group;

namespace observe_fns {
int add(int a, int b) { return a + b; }
torch::Tensor echo(torch::Tensor t) { return t; }
int slow(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return ms;
}
}  // namespace observe_fns

TEST_CASE("Get_debug_info: calls in flight per peer, traffic, connections and RRefs", "[agent][observe]") {
  auto agents = start_group({"w0", "w1"});
  auto& w0 = *agents[0];
  auto& w1 = *agents[1];
  for (int i = 0; i < 10; ++i) CHECK(w0.rpc_sync<&observe_fns::add>("w1", i, 1) == i + 1);
  auto big = torch::ones({1 << 18});  // 1 MiB
  CHECK(w0.rpc_sync<&observe_fns::echo>("w1", big).equal(big));

  auto d0 = w0.debug_info();
  CHECK(d0.worker == "w0");
  CHECK(d0.running);
  REQUIRE(d0.peers.size() == 2);
  CHECK(d0.peers[0].transport == "self");
  const auto& to1 = d0.peers[1];
  CHECK(to1.name == "w1");
  CHECK((to1.transport == "tcp" || to1.transport == "local"));
  CHECK(to1.transport == w0.transport_to("w1"));
  CHECK_FALSE(to1.lost);
  CHECK(to1.connections >= 1);
  CHECK(to1.frames_sent >= 11);
  CHECK(to1.bytes_sent >= (1u << 20));
  CHECK(to1.frames_received >= 11);
  CHECK(to1.bytes_received >= (1u << 20));
  CHECK(d0.calls_in_flight == 0);
  CHECK(d0.connections >= 1);
  // The peer counts the same frames the other way.
  auto d1 = w1.debug_info();
  CHECK(d1.peers[0].frames_received >= 11);
  CHECK(d1.peers[0].bytes_received >= (1u << 20));

  // A call in flight shows on both sides until it is answered.
  auto f = w0.rpc_async<&observe_fns::slow>("w1", 400);
  CHECK(eventually([&] { return w1.debug_info().peers[0].calls_pending_here == 1; }));
  CHECK(w0.debug_info().peers[1].calls_in_flight == 1);
  CHECK(w0.debug_info().calls_in_flight == 1);
  CHECK(f.get() == 400);
  CHECK(w0.debug_info().peers[1].calls_in_flight == 0);
  CHECK(eventually([&] { return w1.debug_info().peers[0].calls_pending_here == 0; }));

  {
    auto r = remora::remote<&observe_fns::add>(w0, "w1", 2, 3);  // owned by w1, used by w0
    CHECK(r.to_here() == 5);
    CHECK(eventually([&] { return w1.debug_info().counters["rref.owned_values"] == 1; }));
    CHECK(w0.debug_info().counters["rref.user_rrefs"] == 1);
  }
  CHECK(eventually([&] { return w1.debug_info().counters["rref.owned_values"] == 0; }));
  CHECK(eventually([&] { return w0.debug_info().counters["rref.user_rrefs"] == 0; }));

  const auto m = w0.debug_info().as_map();
  CHECK(m.at("agent.worker") == "w0");
  CHECK(std::stoull(m.at("peer.w1.bytes_sent")) >= (1u << 20));
  CHECK(m.at("peer.w1.transport") == to1.transport);
  CHECK(m.count("rref.owned_values") == 1);
  shutdown_group(agents);
  CHECK_FALSE(w0.debug_info().running);
}

TEST_CASE("Get_debug_info names a lost peer and why", "[agent][observe]") {
  auto agents = start_group({"w0", "w1"});
  CHECK(agents[0]->rpc_sync<&observe_fns::add>("w1", 1, 1) == 2);
  agents[1]->shutdown(false);
  CHECK(eventually([&] { return agents[0]->debug_info().peers[1].lost; }));
  const auto d = agents[0]->debug_info();
  CHECK_FALSE(d.peers[1].lost_reason.empty());
  CHECK(d.peers[1].transport.empty());
  CHECK(d.as_map().at("peer.w1.lost") == d.peers[1].lost_reason);
  agents[0]->shutdown(false);
}

namespace {
// Names of the USER_SCOPE spans that ended, from a global RecordFunction callback (as Kineto's
// on-demand profiler and other process-wide profilers observe every thread).
struct SpanLog {
  std::mutex mu;
  std::vector<std::string> ended;
  bool has(const std::string& name) {  // a span whose name contains `name`
    std::lock_guard lock(mu);
    return std::any_of(ended.begin(), ended.end(), [&](const std::string& e) { return e.find(name) != std::string::npos; });
  }
};
SpanLog* span_log = nullptr;
}  // namespace

TEST_CASE("Calls appear in the profiler on both sides, named by function and workers", "[agent][observe]") {
  auto agents = start_group({"w0", "w1"});
  SpanLog log;
  span_log = &log;
  auto handle = at::addGlobalCallback(
      at::RecordFunctionCallback(
          [](const at::RecordFunction&) -> std::unique_ptr<at::ObserverContext> { return nullptr; },
          [](const at::RecordFunction& fn, at::ObserverContext*) {
            std::lock_guard lock(span_log->mu);
            span_log->ended.emplace_back(fn.name());
          })
          .scopes({at::RecordScope::USER_SCOPE}));
  CHECK(agents[0]->rpc_sync<&observe_fns::add>("w1", 2, 3) == 5);
  CHECK(agents[0]->rpc_async<&observe_fns::slow>("w1", 1).get() == 1);
  // The caller's span ends when the answer arrives; the callee's when its function returns.
  CHECK(eventually([&] { return log.has("remora::rpc#observe_fns::add(w0 -> w1)"); }));
  CHECK(eventually([&] { return log.has("remora::serve#observe_fns::add(w0 -> w1)"); }));
  CHECK(eventually([&] { return log.has("remora::rpc#observe_fns::slow(w0 -> w1)"); }));
  CHECK(eventually([&] { return log.has("remora::serve#observe_fns::slow(w0 -> w1)"); }));
  at::removeCallback(handle);
  span_log = nullptr;

  // torch::autograd::profiler's own trace (the legacy profiler, on the caller's thread).
  std::ostringstream trace;
  {
    torch::autograd::profiler::RecordProfile profile(trace);
    CHECK(agents[0]->rpc_sync<&observe_fns::add>("w1", 1, 1) == 2);
  }
  CHECK_THAT(trace.str(), Catch::Contains("remora::rpc#observe_fns::add(w0 -> w1)"));
  // The callee's own span came back with the answer and is in the caller's trace too.
  CHECK_THAT(trace.str(), Catch::Contains("remora::serve#observe_fns::add(w0 -> w1)"));
  shutdown_group(agents);
}

namespace observe_fns {
torch::Tensor square_relu(torch::Tensor x) { return torch::mm(x, x).relu(); }
}  // namespace observe_fns

TEST_CASE("A caller's legacy profile gets the callee's events, with the callee's node id", "[agent][observe]") {
  namespace prof = torch::autograd::profiler;
  auto agents = start_group({"w0", "w1"});
  auto x = torch::ones({4, 4});
  const auto want = torch::mm(x, x).relu();  // before the profile: the caller records no aten::mm
  prof::thread_event_lists lists;
  {
    prof::TLSLegacyProfilerGuard guard(torch::profiler::impl::ProfilerConfig(torch::profiler::impl::ProfilerState::CPU),
                                       [&](const prof::thread_event_lists& l) { lists = l; });
    CHECK(torch::equal(agents[0]->rpc_sync<&observe_fns::square_relu>("w1", x), want));
    CHECK(agents[0]->rpc_async<&observe_fns::add>("w1", 1, 2).get() == 3);
  }
  int remote_mm = 0, local_mm = 0, remote_serve = 0;
  for (const auto& thread : lists)
    for (const auto& e : thread) {
      const std::string name = e.name();
      if (name == "aten::mm") (e.nodeId() == 1 ? remote_mm : local_mm) += 1;
      if (name.find("remora::serve#observe_fns::") != std::string::npos && e.nodeId() == 1) ++remote_serve;
    }
  CHECK(remote_mm >= 1);      // the callee's matrix product, from worker 1
  CHECK(local_mm == 0);       // the caller ran none
  CHECK(remote_serve >= 2);   // both calls' serve spans
  shutdown_group(agents);
}

namespace {
// Prints one remora warning, after c10::initLogging() (as torch's Python module runs it).
int log_probe(const std::vector<std::string>&) {
  c10::initLogging();
  remora::detail::log_warning("log probe");
  return 0;
}
remora::test::RegisterRole log_probe_role("log_probe", &log_probe);

// What the test binary in role log_probe writes to stderr, with `env` (NAME=value ...) set.
std::string log_probe_output(const std::string& env) {
  const std::string self = std::filesystem::read_symlink("/proc/self/exe");
  const std::string file = std::filesystem::temp_directory_path() / ("remora_log_" + std::to_string(::getpid()));
  REQUIRE(std::system(("env " + env + " " + self + " --role log_probe 2>" + file).c_str()) == 0);
  std::ifstream in(file);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::filesystem::remove(file);
  return text;
}
}  // namespace

TEST_CASE("Warnings go through c10's logging and follow libtorch's log level", "[observe]") {
  CHECK_THAT(log_probe_output("REMORA_TEST_UNUSED=1"), Catch::Contains("remora: log probe"));
  // glog builds (Debian's) read GLOG_minloglevel; others TORCH_CPP_LOG_LEVEL: 2 is ERROR in both.
  CHECK_THAT(log_probe_output("GLOG_minloglevel=2 TORCH_CPP_LOG_LEVEL=ERROR"),
             !Catch::Contains("remora: log probe"));
  CHECK_THAT(log_probe_output("REMORA_LOG=quiet"), !Catch::Contains("remora: log probe"));
}
