// Heap allocations per call: a count, not a time. The speed work relies on these staying small
// (docs/performance.md). This file replaces operator new for the whole test binary, so it is left
// out of sanitizer builds, whose allocator must see every allocation itself.
// GCC cannot see that the operator new below is malloc too.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <new>

#include <catch2/catch.hpp>

#include "agent_support.hpp"
#include "remora/module/remote_module.hpp"

namespace {
std::atomic<bool> counting{false};
std::atomic<std::uint64_t> news{0};
}  // namespace

void* operator new(std::size_t n) {
  if (counting.load(std::memory_order_relaxed)) news.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace alloc_fns {
torch::Tensor echo(torch::Tensor x) { return x; }
int add(int a, int b) { return a + b; }
struct Echo {
  virtual ~Echo() = default;
  virtual torch::Tensor forward(torch::Tensor x) = 0;
};
struct EchoModule : torch::nn::Module, Echo {
  torch::Tensor forward(torch::Tensor x) override { return x; }
};
}  // namespace alloc_fns

namespace {
// Allocations per call of `call`, both agents (one process) together, after a warm-up.
template <class Call>
double allocations_per_call(Call&& call) {
  for (int i = 0; i < 200; ++i) call(i);
  constexpr int kCalls = 1000;
  counting = true;
  const auto before = news.load();
  for (int i = 0; i < kCalls; ++i) call(i);
  counting = false;
  return double(news.load() - before) / kCalls;
}
}  // namespace

TEST_CASE("A small call allocates a fixed handful of times", "[agent][allocations]") {
  remora::Options o;
  o.sync_watch = std::chrono::microseconds(0);  // the count must not depend on who wakes whom
  auto g = remora::test::start_group({"a", "b"}, o);
  auto& a = *g[0];
  const auto x = torch::ones({1});
  // remora's own: the future's state and the served call's pool job (2). The rest are libtorch's
  // TensorImpl, StorageImpl and data context of each received tensor (argument and reply: 6),
  // which a received tensor cannot do without. A few calls in a thousand also grow a buffer.
  const double tensor_call = allocations_per_call([&](int) { (void)a.rpc_sync<&alloc_fns::echo>("b", x); });
  CHECK(tensor_call <= 8.5);
  int wrong = 0;  // counted, not CHECKed: Catch's assertions allocate
  const double scalar_call = allocations_per_call([&](int i) { wrong += a.rpc_sync<&alloc_fns::add>("b", i, 1) != i + 1; });
  CHECK(wrong == 0);
  CHECK(scalar_call <= 2.5);
  auto m = remora::RemoteModule<alloc_fns::Echo>::create<alloc_fns::EchoModule>(a, "b/cpu");
  const double forward = allocations_per_call([&](int) { (void)m.forward(x); });
  CHECK(forward <= 9.5);  // one more than rpc_sync
  WARN("allocations per call: 4 B rpc_sync " << tensor_call << ", ints " << scalar_call
                                                      << ", RemoteModule::forward " << forward);
  m = remora::RemoteModule<alloc_fns::Echo>();
  remora::test::shutdown_group(g);
}
