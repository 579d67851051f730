// Distributed autograd and DistributedOptimizer, in-process groups: gradients through
// rpc_sync/rpc_async, remote + to_here, RRef proxies, RemoteModule, nested calls over three
// workers, tensors nested in containers, a TorchScript module (typed and by name); retain_graph;
// errors in a remote backward; a dead worker; two trainers sharing a parameter server; and no
// context, send or receive function left anywhere once a context ends. (Behaviours ported from
// PyTorch's dist_autograd_test.py and dist_optimizer_test.py where they apply.)
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include <catch2/catch.hpp>

#include "agent_support.hpp"
#include <torch/nn.h>
#include <torch/optim.h>

#include "remora/autograd.hpp"
#include "remora/dynamic.hpp"
#include "remora/module/remote_module.hpp"

using namespace std::chrono_literals;
using remora::RemoteModule;
using remora::RRef;
using remora::test::shutdown_group;
using remora::test::eventually;
using remora::test::start_group;
namespace ag = remora::autograd;

namespace dag {

torch::Tensor mul_add(torch::Tensor a, torch::Tensor b) { return a * b + a; }
torch::Tensor square(torch::Tensor a) { return a * a; }
// The callee passes `a` on untouched to `next`, and its result back.
torch::Tensor square_on(std::string next, torch::Tensor a) { return remora::rpc_sync<&square>(next, a); }
// b -> c: the callee calls on.
torch::Tensor square_then_mul_add_on(std::string next, torch::Tensor a, torch::Tensor b) {
  return remora::rpc_sync<&mul_add>(next, a * a, b);
}
struct Pair {
  torch::Tensor x;
  std::vector<torch::Tensor> ys;
  template <class A>
  void serialize(A& ar) {
    ar(x, ys);
  }
};
std::vector<torch::Tensor> nested(Pair p) { return {p.x * p.ys[0], p.ys[1].exp()}; }

// A parameter held by the callee: its gradient stays there.
torch::Tensor weight = torch::full({3}, 2.0).requires_grad_(true);
torch::Tensor scale_by_weight(torch::Tensor x) { return x * weight; }
torch::Tensor the_weight() { return weight; }  // the tensor itself, not a copy
torch::Tensor weight_grad_in(std::uint64_t context) {
  auto grads = remora::autograd::get_gradients(context);
  auto it = grads.find(weight);
  return it == grads.end() ? torch::Tensor() : it->value();
}

// A backward that fails on the callee.
struct Breaks : torch::autograd::Function<Breaks> {
  static torch::Tensor forward(torch::autograd::AutogradContext*, torch::Tensor x) { return x.clone(); }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext*, torch::autograd::variable_list) {
    throw std::runtime_error("this backward breaks");
  }
};
torch::Tensor breaks_in_backward(torch::Tensor x) { return Breaks::apply(x * 2); }

struct Scorer {
  virtual ~Scorer() = default;
  virtual torch::Tensor forward(torch::Tensor x, double scale = 1.0) = 0;
};
struct Affine : torch::nn::Module, Scorer {
  Affine(std::int64_t in, std::int64_t out) : fc(register_module("fc", torch::nn::Linear(in, out))) {}
  torch::Tensor forward(torch::Tensor x, double scale) override { return fc->forward(x) * scale; }
  torch::nn::Linear fc;
};

struct Counter {
  torch::Tensor w = torch::ones({2}).requires_grad_(true);
  torch::Tensor apply(torch::Tensor x) { return (x * w).sum(); }
};
std::shared_ptr<Counter> make_counter() { return std::make_shared<Counter>(); }

}  // namespace dag

namespace {
bool nothing_left(remora::Agent& a) {
  auto s = ag::stats(a);
  return s.contexts == 0 && s.send_functions == 0 && s.recv_functions == 0;
}
void check_nothing_left(std::vector<std::unique_ptr<remora::Agent>>& g) {
  for (auto& a : g) {
    eventually([&] { return nothing_left(*a); });
    auto s = ag::stats(*a);
    INFO("worker " << a->self().name << ": " << s.contexts << " contexts, " << s.send_functions
                   << " send functions, " << s.recv_functions << " receive functions");
    CHECK(nothing_left(*a));
  }
}
torch::Tensor grad_of(const c10::Dict<torch::Tensor, torch::Tensor>& grads, const torch::Tensor& t) {
  auto it = grads.find(t);
  return it == grads.end() ? torch::Tensor() : it->value();
}
}  // namespace

TEST_CASE("Gradients of a remote call come back to the caller's leaves, not to .grad", "[autograd]") {
  auto g = start_group({"a", "b"}, remora::test::serving_by_name());
  auto& a = *g[0];
  {
    auto x = torch::tensor({1.0, 2.0, 3.0}, torch::requires_grad());
    auto y = torch::tensor({4.0, 5.0, 6.0}, torch::requires_grad());
    ag::Context ctx(a);
    CHECK(ctx.id() >> ag::detail::GradContexts::kMakerShift == 1);
    auto z = a.rpc_sync<&dag::mul_add>("b", x, y);
    CHECK(z.requires_grad());
    ag::backward(ctx, {z.sum()});
    auto grads = ag::get_gradients(ctx);
    CHECK(grads.size() == 2);
    CHECK(torch::allclose(grad_of(grads, x), y + 1));
    CHECK(torch::allclose(grad_of(grads, y), x));
    CHECK(!x.grad().defined());
    // rpc_async and a call to self take the same path.
    auto w = a.rpc_async<&dag::square>("a", x).get();
    ag::backward(ctx, {w.sum()});
    CHECK(torch::allclose(grad_of(ag::get_gradients(ctx), x), y + 1 + 2 * x));
    CHECK(ag::stats(*g[1]).contexts == 1);
    // An operator by name.
    auto p = remora::rpc_sync<torch::Tensor>(a, "b", "aten::mul", x, y);
    ag::backward(ctx, {p.sum()});
    CHECK(torch::allclose(grad_of(ag::get_gradients(ctx), y), x + x));
  }
  check_nothing_left(g);
  shutdown_group(g);
}

TEST_CASE("A callee's own parameters get their gradient in its context, and nested calls over three workers", "[autograd]") {
  auto g = start_group({"a", "b", "c"});
  auto& a = *g[0];
  {
    auto x = torch::tensor({1.0, -1.0, 0.5}, torch::requires_grad());
    auto y = torch::tensor({2.0, 3.0, 4.0}, torch::requires_grad());
    ag::Context ctx(a);
    // a -> b -> c: b squares x and calls c with it.
    auto z = a.rpc_sync<&dag::square_then_mul_add_on>("b", std::string("c"), x, y);
    // The same computed here.
    auto xl = x.detach().requires_grad_(true), yl = y.detach().requires_grad_(true);
    auto zl = (xl * xl) * yl + xl * xl;
    CHECK(torch::allclose(z, zl));
    ag::backward(ctx, {(z * z).sum()});
    (zl * zl).sum().backward();
    auto grads = ag::get_gradients(ctx);
    CHECK(torch::allclose(grad_of(grads, x), xl.grad()));
    CHECK(torch::allclose(grad_of(grads, y), yl.grad()));
    // c's and b's tables know the context until it ends.
    CHECK(ag::stats(*g[2]).contexts == 1);

    // A parameter that lives on b.
    auto s = a.rpc_sync<&dag::scale_by_weight>("b", x);
    ag::backward(ctx, {s.sum()});
    CHECK(!dag::weight.grad().defined());
  }
  check_nothing_left(g);
  shutdown_group(g);
}

TEST_CASE("A tensor a worker only passes on gets its gradient back where it came from, summed over each use", "[autograd]") {
  auto g = start_group({"a", "b", "c"});
  auto& a = *g[0];
  {
    auto x = torch::tensor({1.0, -2.0, 0.5}, torch::requires_grad());
    ag::Context ctx(a);
    // h comes from b and goes on to c three times, in two calls: a's part of the graph for it is
    // nothing but the tensor received.
    auto h = a.rpc_sync<&dag::square>("b", x);
    auto z1 = a.rpc_sync<&dag::mul_add>("c", h, h);
    auto z2 = a.rpc_sync<&dag::square>("c", h);
    ag::backward(ctx, {z1.sum() + z2.sum()});
    auto xl = x.detach().requires_grad_(true);
    auto hl = xl * xl;
    ((hl * hl + hl).sum() + (hl * hl).sum()).backward();
    CHECK(torch::allclose(grad_of(ag::get_gradients(ctx), x), xl.grad()));
  }
  check_nothing_left(g);
  shutdown_group(g);
}

TEST_CASE("A gradient skips the workers that only passed its tensor on, over any number of hops", "[autograd]") {
  auto g = start_group({"a", "b", "c", "d"});
  auto& a = *g[0];
  auto served = [&](int i) { return ag::stats(*g[i]).gradient_messages; };
  {
    auto x = torch::tensor({1.0, -2.0, 0.5}, torch::requires_grad());
    ag::Context ctx(a);
    // h = x*x is made on b; a passes it to c, c to d, which squares it; d's result comes back
    // through c untouched. Neither a (for h) nor c does any work in the backward pass: the
    // gradient of z goes from a straight to d, that of h from d straight to b, and b's to a.
    auto h = a.rpc_sync<&dag::square>("b", x);
    auto z = a.rpc_sync<&dag::square_on>("c", std::string("d"), h);
    const std::uint64_t before[4] = {served(0), served(1), served(2), served(3)};
    ag::backward(ctx, {z.sum()}, /*retain_graph=*/true);  // b's part is run again below
    CHECK(torch::allclose(grad_of(ag::get_gradients(ctx), x), 4 * x.detach().pow(3)));
    CHECK(served(0) - before[0] == 1);  // x's, from b
    CHECK(served(1) - before[1] == 1);  // h's, from d
    CHECK(served(2) - before[2] == 0);
    CHECK(served(3) - before[3] == 1);  // z's, from a
    // Where a worker did work on the tensor, its gradient goes through it as before: here a
    // doubles h before sending it on.
    auto z2 = a.rpc_sync<&dag::square_on>("c", std::string("d"), h * 2);
    const std::uint64_t again[2] = {served(0), served(1)};
    ag::backward(ctx, {z2.sum()});
    CHECK(served(0) - again[0] == 2);  // 2h's, from d, and x's, from b
    CHECK(served(1) - again[1] == 1);  // h's, from a
    CHECK(torch::allclose(grad_of(ag::get_gradients(ctx), x), 4 * x.detach().pow(3) * 5));
    CHECK(a.debug_info().counters.at("autograd.gradient_messages") == static_cast<std::int64_t>(served(0)));
  }
  check_nothing_left(g);
  shutdown_group(g);
}

TEST_CASE("Ending a context tells each worker once: stages that the trainer told do not tell each other", "[autograd]") {
  auto g = start_group({"trainer", "s1", "s2"});
  auto& t = *g[0];
  auto frames_from = [&](int to, int from) {
    for (const auto& p : g[to]->debug_info().peers)
      if (p.id == g[from]->self().id) return p.frames_received;
    return std::uint64_t{0};
  };
  std::uint64_t s1_from_s2 = 0, s2_from_s1 = 0;
  {
    auto x = torch::tensor({1.0, -2.0, 0.5}, torch::requires_grad());
    ag::Context ctx(t);
    // h comes from s1 and goes on to s2 untouched, so s2 sends h's gradient to s1 itself: the
    // two stages both know the context and each other.
    auto h = t.rpc_sync<&dag::square>("s1", x);
    auto z = t.rpc_sync<&dag::square>("s2", h);
    ag::backward(ctx, {z.sum()});
    CHECK(torch::allclose(grad_of(ag::get_gradients(ctx), x), 4 * x.detach().pow(3)));
    s1_from_s2 = frames_from(1, 2);
    s2_from_s1 = frames_from(2, 1);
    CHECK(s1_from_s2 > 0);  // the gradient of h
    CHECK(s2_from_s1 > 0);  // its answer
  }
  // The trainer's release reaches both stages (held for the next call, or sent within 5 ms);
  // each learns that the other was told too, so neither passes it on: once each stage has handled
  // the release (counted after it told whom it tells), only the trainer has sent any.
  check_nothing_left(g);
  CHECK(eventually([&] { return ag::stats(*g[1]).releases_received == 1 && ag::stats(*g[2]).releases_received == 1; }));
  CHECK(ag::stats(t).releases_sent == 2);
  CHECK(ag::stats(*g[1]).releases_sent == 0);
  CHECK(ag::stats(*g[2]).releases_sent == 0);
  CHECK(frames_from(1, 2) == s1_from_s2);
  CHECK(frames_from(2, 1) == s2_from_s1);
  shutdown_group(g);
}

TEST_CASE("Tensors nested in structs and containers, and RRefs: remote, to_here, proxies", "[autograd]") {
  auto g = start_group({"a", "b"});
  auto& a = *g[0];
  {
    auto x = torch::tensor({1.0, 2.0}, torch::requires_grad());
    auto y0 = torch::tensor({3.0, 4.0}, torch::requires_grad());
    auto y1 = torch::tensor({0.5, 0.25}, torch::requires_grad());
    ag::Context ctx(a);
    auto out = a.rpc_sync<&dag::nested>("b", dag::Pair{x, {y0, y1}});
    ag::backward(ctx, {out[0].sum() + out[1].sum()});
    auto grads = ag::get_gradients(ctx);
    CHECK(torch::allclose(grad_of(grads, x), y0));
    CHECK(torch::allclose(grad_of(grads, y0), x));
    CHECK(torch::allclose(grad_of(grads, y1), y1.exp()));

    // remote() keeps the result on b; to_here() brings it with its history.
    RRef<torch::Tensor> r = remora::remote<&dag::mul_add>(a, "b", x, y0);
    auto v = r.to_here();
    ag::backward(ctx, {v.sum()});
    CHECK(torch::allclose(grad_of(ag::get_gradients(ctx), x), y0 + y0 + 1));

    // A proxy call on an object b owns.
    auto c = remora::remote<&dag::make_counter>(a, "b");
    auto k = c.rpc_sync().call<&dag::Counter::apply>(x);
    ag::backward(ctx, {k});
    CHECK(torch::allclose(grad_of(ag::get_gradients(ctx), x), y0 + y0 + 1 + 1));
  }
  check_nothing_left(g);
  shutdown_group(g);
}

namespace {
// Opens a context, makes a call in it, and ends it after `resume` completes: on the thread that
// completes it (a coroutine resumed elsewhere).
remora::Task<void> context_across_threads(remora::Agent& a, remora::Future<int> resume, std::uint64_t* id) {
  ag::Context ctx(a);
  *id = ctx.id();
  auto x = torch::ones({2}, torch::requires_grad());
  a.rpc_sync<&dag::square>("b", x);
  co_await resume;
}
}  // namespace

TEST_CASE("A context that ends on another thread after a co_await leaves both threads' contexts right", "[autograd]") {
  auto g = start_group({"a", "b"});
  auto& a = *g[0];
  remora::Promise<int> resume;
  std::uint64_t first = 0;
  auto task = context_across_threads(a, resume.get_future(), &first);
  CHECK(ag::stats(a).contexts == 1);
  std::thread other([&] {
    ag::Context own(a);
    resume.set_value(1);  // the coroutine resumes here and its context ends on this thread
    // This thread is still in its own context: the call is recorded, its gradient comes back.
    auto x = torch::tensor({1.0, 2.0}, torch::requires_grad());
    auto z = a.rpc_sync<&dag::square>("b", x);
    ag::backward(own, {z.sum()});
    auto grad = grad_of(ag::get_gradients(own), x);
    CHECK(grad.defined());
    if (grad.defined()) CHECK(torch::allclose(grad, 2 * x));
  });
  other.join();
  task.get();
  // The thread the coroutine began on is in no context now: a new one may begin here.
  {
    ag::Context again(a);
    CHECK(again.id() != first);
  }
  check_nothing_left(g);
  shutdown_group(g);
}

TEST_CASE("Retain_graph allows a second pass, and without it the second pass fails on the callee", "[autograd]") {
  auto g = start_group({"a", "b"});
  auto& a = *g[0];
  {
    auto x = torch::tensor({1.0, 2.0}, torch::requires_grad());
    ag::Context ctx(a);
    auto z = a.rpc_sync<&dag::square>("b", x).sum();
    ag::backward(ctx, {z}, /*retain_graph=*/true);
    ag::backward(ctx, {z}, /*retain_graph=*/true);
    CHECK(torch::allclose(grad_of(ag::get_gradients(ctx), x), 4 * x));
    ag::backward(ctx, {z});
    CHECK_THROWS(ag::backward(ctx, {z}));
  }
  check_nothing_left(g);
  shutdown_group(g);
}

TEST_CASE("Errors: a failing remote backward, a local backward of a received tensor, bad roots", "[autograd]") {
  auto g = start_group({"a", "b"});
  auto& a = *g[0];
  {
    auto x = torch::tensor({1.0, 2.0}, torch::requires_grad());
    ag::Context ctx(a);
    auto z = a.rpc_sync<&dag::breaks_in_backward>("b", x).sum();
    try {
      ag::backward(ctx, {z});
      FAIL("backward did not throw");
    } catch (const remora::RemoteError& e) {
      CHECK(e.worker() == "b");
      CHECK_THAT(e.remote_message(), Catch::Contains("this backward breaks"));
    }
    auto w = a.rpc_sync<&dag::square>("b", x).sum();
    CHECK_THROWS_WITH(w.backward(), Catch::Contains("remora::autograd::backward"));
    CHECK_THROWS_WITH(ag::backward(ctx, {x * 2}), Catch::Contains("one"));
    CHECK_THROWS_WITH(ag::backward(ctx, {torch::ones({1})}), Catch::Contains("does not require grad"));
    CHECK_THROWS_WITH(ag::Context(a), Catch::Contains("do not nest"));
  }
  check_nothing_left(g);
  shutdown_group(g);
}

TEST_CASE("A worker lost before the backward pass fails it with WorkerLost, and its contexts go", "[autograd]") {
  auto g = start_group({"a", "b", "c"});
  auto& a = *g[0];
  {
    auto x = torch::tensor({1.0, 2.0}, torch::requires_grad());
    ag::Context ctx(a);
    auto z = a.rpc_sync<&dag::square>("b", x).sum();
    auto w = a.rpc_sync<&dag::square>("c", x).sum();
    CHECK(ag::stats(*g[2]).contexts == 1);
    g[1]->shutdown(false);  // b stops at once, as if killed
    CHECK_THROWS_AS(ag::backward(ctx, {z + w}), remora::WorkerLost);
  }
  // c learns that a's context ended from a.
  CHECK(eventually([&] { return nothing_left(*g[2]) && nothing_left(a); }));
  g[2]->shutdown(false);
  a.shutdown(false);
}

TEST_CASE("DistributedOptimizer trains a RemoteModule exactly as the same model trained locally", "[autograd]") {
  auto g = start_group({"trainer", "ps"});
  auto& trainer = *g[0];
  {
    auto m = RemoteModule<dag::Scorer>::create<dag::Affine>(trainer, "ps/cpu", 4, 2);
    // The same model here, from the remote one's starting parameters.
    dag::Affine local(4, 2);
    {
      torch::NoGradGuard no_grad;
      auto params = m.remote_parameters();
      REQUIRE(params.size() == 2);
      local.fc->weight.copy_(params[0].to_here());
      local.fc->bias.copy_(params[1].to_here());
    }
    torch::optim::SGD local_opt(local.parameters(), torch::optim::SGDOptions(0.05).momentum(0.9));
    remora::optim::DistributedOptimizer<torch::optim::SGD> opt(m.remote_parameters(),
                                                               torch::optim::SGDOptions(0.05).momentum(0.9));
    torch::manual_seed(7);
    for (int step = 0; step < 20; ++step) {
      auto x = torch::randn({8, 4});
      auto target = torch::randn({8, 2});
      {
        ag::Context ctx(trainer);
        torch::Tensor y = step % 2 ? m.forward(x, 1.5) : m.forward_async(x, 1.5).get();
        torch::Tensor loss = torch::mse_loss(y, target);
        ag::backward(ctx, {loss});
        CHECK(ag::get_gradients(ctx).size() == 0);  // the parameters' gradients are on ps
        opt.step(ctx);
      }
      local_opt.zero_grad();
      torch::mse_loss(local.forward(x, 1.5), target).backward();
      local_opt.step();
    }
    auto params = m.remote_parameters();
    CHECK(torch::allclose(params[0].to_here(), local.fc->weight, 1e-6, 1e-6));
    CHECK(torch::allclose(params[1].to_here(), local.fc->bias, 1e-6, 1e-6));
  }
  check_nothing_left(g);
  shutdown_group(g);
}

TEST_CASE("A TorchScript module on a worker trains through its typed forward and by name", "[autograd][dynamic]") {
  // The module a Python user would script: y = x @ w.t() + b, scaled.
  torch::jit::Module script("Affine");
  torch::manual_seed(3);
  script.register_parameter("w", torch::randn({2, 4}).requires_grad_(true), false);
  script.register_parameter("b", torch::randn({2}).requires_grad_(true), false);
  script.register_attribute("training", c10::BoolType::get(), true);  // as a Python-scripted module has
  script.define(R"JIT(
def forward(self, x: Tensor, scale: float = 1.0) -> Tensor:
    return (x.matmul(self.w.t()) + self.b) * scale

def is_training(self) -> bool:
    return self.training
)JIT");
  const auto path = (std::filesystem::temp_directory_path() / ("remora_" + std::to_string(::getpid()) + "_affine.pt")).string();
  script.save(path);
  auto g = start_group({"trainer", "ps"}, remora::test::serving_by_name());
  auto& trainer = *g[0];
  {
    auto typed = RemoteModule<dag::Scorer>::load(trainer, "ps/cpu", path);
    auto by_name = remora::ScriptRemoteModule::load(trainer, "ps/cpu", path);
    // The same model here, from the file's parameters.
    auto w = script.attr("w").toTensor().detach().clone().requires_grad_(true);
    auto b = script.attr("b").toTensor().detach().clone().requires_grad_(true);
    torch::optim::SGD local_opt({w, b}, torch::optim::SGDOptions(0.1));
    remora::optim::DistributedOptimizer<torch::optim::SGD> opt(typed.remote_parameters(), torch::optim::SGDOptions(0.1));
    remora::optim::DistributedOptimizer<torch::optim::SGD> opt_by_name(by_name.remote_parameters(),
                                                                       torch::optim::SGDOptions(0.1));
    for (int step = 0; step < 6; ++step) {
      auto x = torch::randn({5, 4});
      auto target = torch::randn({5, 2});
      {
        ag::Context ctx(trainer);
        auto loss = torch::mse_loss(typed.forward(x, 2.0), target);
        ag::backward(ctx, {loss});
        opt.step(ctx);
      }
      {
        ag::Context ctx(trainer);
        auto y = by_name.call("forward", x, 2.0).toTensor();
        REQUIRE(y.requires_grad());
        ag::backward(ctx, {torch::mse_loss(y, target)});
        opt_by_name.step(ctx);
      }
      local_opt.zero_grad();
      torch::mse_loss((x.matmul(w.t()) + b) * 2.0, target).backward();
      local_opt.step();
    }
    // train() and eval() reach the script too.
    by_name.eval();
    CHECK(!by_name.call("is_training").toBool());
    by_name.train();
    CHECK(by_name.call("is_training").toBool());
    typed.eval();
    // Each of the two copies on ps took the same steps as the local one.
    auto typed_params = typed.remote_parameters();
    auto named_params = by_name.remote_parameters();
    REQUIRE(typed_params.size() == 2);
    REQUIRE(named_params.size() == 2);
    CHECK(torch::allclose(typed_params[0].to_here(), w, 1e-6, 1e-6));
    CHECK(torch::allclose(typed_params[1].to_here(), b, 1e-6, 1e-6));
    CHECK(torch::allclose(named_params[0].to_here(), w, 1e-6, 1e-6));
    CHECK(torch::allclose(named_params[1].to_here(), b, 1e-6, 1e-6));
  }
  std::filesystem::remove(path);
  check_nothing_left(g);
  shutdown_group(g);
}

TEST_CASE("Two trainers share a parameter server: each context keeps its own gradients", "[autograd]") {
  auto g = start_group({"t1", "t2", "ps"});
  dag::weight = torch::full({3}, 2.0).requires_grad_(true);
  {
    std::vector<std::thread> trainers;
    std::atomic<int> ok{0};
    for (int t = 0; t < 2; ++t)
      trainers.emplace_back([&, t] {
        auto& me = *g[t];
        remora::optim::DistributedOptimizer<torch::optim::SGD> opt({remora::remote<&dag::the_weight>(me, "ps")},
                                                                   torch::optim::SGDOptions(0.1));
        const double k = t == 0 ? 1.0 : 3.0;
        for (int step = 0; step < 10; ++step) {
          ag::Context ctx(me);
          auto y = me.rpc_sync<&dag::scale_by_weight>("ps", torch::full({3}, k));
          ag::backward(ctx, {y.sum()});
          // ps holds this context's gradient of its weight: this trainer's alone.
          auto on_ps = me.rpc_sync<&dag::weight_grad_in>("ps", ctx.id());
          if (torch::equal(on_ps, torch::full({3}, k))) ++ok;
          opt.step(ctx);
        }
      });
    for (auto& t : trainers) t.join();
    CHECK(ok == 20);
    CHECK(torch::allclose(dag::weight, torch::full({3}, 2.0 - 0.1 * (10 * 1.0 + 10 * 3.0))));
  }
  check_nothing_left(g);
  shutdown_group(g);
}

TEST_CASE("A context another worker made ends after autograd_context_timeout without news, one made here does not",
          "[autograd]") {
  remora::Options o;
  o.autograd_context_timeout = 200ms;
  auto g = start_group({"a", "b"}, o);
  auto table = remora::autograd::detail::grad_contexts(*g[1]);
  // As if a's release of its context never came: b knows the context, nobody ends it.
  const std::uint64_t made_by_a = std::uint64_t{1} << ag::detail::GradContexts::kMakerShift | 999;
  REQUIRE(table->join(made_by_a, 0) != nullptr);
  auto own = table->create();
  CHECK(ag::stats(*g[1]).contexts == 2);
  CHECK(eventually([&] { return g[1]->debug_info().counters["autograd.contexts_expired"] == 1; }, 10s));
  CHECK(table->find(made_by_a) == nullptr);
  CHECK(table->find(own->id) != nullptr);  // the maker's own context lives until its Context ends
  CHECK(table->join(made_by_a, 0) == nullptr);  // a late message does not bring it back
  table->take(own->id);
  own.reset();
  table.reset();
  shutdown_group(g);
}
