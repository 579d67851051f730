// RemoteModule<I>, in-process groups: create with constructor arguments, forward / forward_async
// with the interface's parameters and defaults, other methods, void methods, exceptions in
// forward, module_rref, remote_parameters, train/eval, passing a RemoteModule to another worker,
// adapted existing modules, bad devices, and the nested device walk. (Behaviours ported from
// PyTorch's remote_module_test.py where they apply to C++.)
#include <chrono>
#include <thread>

#include <catch2/catch.hpp>

#include "agent_support.hpp"
#include <torch/nn.h>

#include "remora/module/remote_module.hpp"
#include "remora/module/remote_module_group.hpp"

using namespace std::chrono_literals;
using remora::RemoteModule;
using remora::RRef;
using remora::test::shutdown_group;
using remora::test::eventually;
using remora::test::start_group;

namespace mt {

struct Classifier {
  virtual ~Classifier() = default;
  virtual torch::Tensor forward(torch::Tensor x, double temperature = 1.0) = 0;
  virtual void reset() = 0;
  virtual std::int64_t calls() const = 0;
};

struct Mlp : torch::nn::Module, Classifier {
  Mlp(std::int64_t in, std::int64_t out) : fc(register_module("fc", torch::nn::Linear(in, out))) {}
  torch::Tensor forward(torch::Tensor x, double temperature) override {
    ++n;
    return fc->forward(x) / temperature;
  }
  void reset() override { n = 0; }
  std::int64_t calls() const override { return n; }
  torch::nn::Linear fc;
  std::int64_t n = 0;
};

struct Failing : torch::nn::Module, Classifier {
  explicit Failing(std::string why) : why(std::move(why)) {}
  torch::Tensor forward(torch::Tensor, double) override { throw std::domain_error(why); }
  void reset() override {}
  std::int64_t calls() const override { return 0; }
  std::string why;
};
struct ThrowsInConstructor : torch::nn::Module, Classifier {
  ThrowsInConstructor() { throw std::runtime_error("no memory for the table"); }
  torch::Tensor forward(torch::Tensor x, double) override { return x; }
  void reset() override {}
  std::int64_t calls() const override { return 0; }
};

// Nested values in and out.
struct Batch {
  torch::Tensor features;
  std::vector<torch::Tensor> extras;
  std::optional<torch::Tensor> mask;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(features, extras, mask);
  }
};
struct Summarizer {
  virtual ~Summarizer() = default;
  virtual std::tuple<torch::Tensor, std::map<std::string, torch::Tensor>> forward(Batch b) = 0;
};
struct SumAll : torch::nn::Module, Summarizer {
  std::tuple<torch::Tensor, std::map<std::string, torch::Tensor>> forward(Batch b) override {
    auto total = b.features.sum();
    for (auto& e : b.extras) total = total + e.sum();
    if (b.mask) total = total * b.mask->sum();
    return {total, {{"features", b.features * 2}}};
  }
};

// An interface with only forward: existing modules can be adapted to it.
struct Linear10 {
  virtual ~Linear10() = default;
  virtual torch::Tensor forward(torch::Tensor x) = 0;
};
struct Echo : torch::nn::Module {  // no interface at all
  torch::Tensor forward(torch::Tensor x) { return x; }
};

// void forward.
struct Sink {
  virtual ~Sink() = default;
  virtual void forward(torch::Tensor x) = 0;
  virtual double total() = 0;
};
struct Accumulator : Sink {
  void forward(torch::Tensor x) override { sum += x.sum().item<double>(); }
  double total() override { return sum; }
  double sum = 0;
};

torch::Tensor call_on_other_worker(RemoteModule<Classifier> m, torch::Tensor x) { return m.forward(x, 2.0); }
std::int64_t calls_via_local_value(RRef<Classifier> r) { return r.local_value().calls(); }
RemoteModule<Classifier> hand_back(RemoteModule<Classifier> m) { return m; }
void zero_param(RRef<torch::Tensor> p) {
  torch::NoGradGuard no_grad;
  p.local_value().zero_();
}
bool is_training(RRef<Classifier> r) { return dynamic_cast<torch::nn::Module&>(r.local_value()).is_training(); }

// An Mlp with a buffer: weight sync may leave buffers out.
struct Scaled : torch::nn::Module, Classifier {
  Scaled(std::int64_t in, std::int64_t out)
      : fc(register_module("fc", torch::nn::Linear(in, out))), scale(register_buffer("scale", torch::full({out}, 3.0))) {}
  torch::Tensor forward(torch::Tensor x, double temperature) override { return fc->forward(x) * scale / temperature; }
  void reset() override {}
  std::int64_t calls() const override { return 0; }
  torch::nn::Linear fc;
  torch::Tensor scale;
};

// `layers` square layers of `width`: a state of many tensors.
struct Deep : torch::nn::Module, Classifier {
  Deep(std::int64_t layers, std::int64_t width) {
    for (std::int64_t i = 0; i < layers; ++i)
      fcs.push_back(register_module("l" + std::to_string(i), torch::nn::Linear(width, width)));
  }
  torch::Tensor forward(torch::Tensor x, double temperature) override {
    for (auto& fc : fcs) x = fc->forward(x);
    return x / temperature;
  }
  void reset() override {}
  std::int64_t calls() const override { return 0; }
  std::vector<torch::nn::Linear> fcs;
};

// A weight sync started inside a served call, on the worker's pool (the test's group and model).
remora::RemoteModuleGroup<Classifier>* sync_group = nullptr;
std::shared_ptr<Deep> sync_model;
bool load_from_handler() {
  sync_group->load_state_dict(sync_model->named_parameters());
  return true;
}

}  // namespace mt

namespace {
std::int64_t owned(remora::Agent& a) { return remora::rref_stats(a).owned_values; }
void check_no_leaks(std::vector<std::unique_ptr<remora::Agent>>& g) {
  for (auto& a : g) {
    INFO("worker " << a->self().name);
    CHECK(remora::rref_stats(*a).owned_values == 0);
    CHECK(remora::rref_stats(*a).forks == 0);
  }
}
}  // namespace

TEST_CASE("RemoteModule: create, forward, forward_async, other methods", "[module]") {
  auto g = start_group({"trainer", "ps"});
  auto& trainer = *g[0];
  {
    auto m = RemoteModule<mt::Classifier>::create<mt::Mlp>(trainer, "ps/cpu", 4, 3);
    CHECK(m.owner_name() == "ps");
    CHECK(m.device() == c10::Device(c10::kCPU));
    auto x = torch::ones({2, 4});
    torch::Tensor y = m.forward(x, 0.5);
    CHECK(y.sizes() == torch::IntArrayRef({2, 3}));
    torch::Tensor y1 = m.forward(x);  // the interface's default temperature (1.0)
    CHECK(torch::allclose(y, y1 * 2));
    remora::Future<torch::Tensor> f = m.forward_async(x, 2);  // int converts to double, as in a direct call
    CHECK(torch::allclose(f.get(), y1 / 2));
    CHECK(m.call<&mt::Classifier::calls>() == 3);
    m.call<&mt::Classifier::reset>();
    m.call_async<&mt::Classifier::reset>().get();
    CHECK(m.call<&mt::Classifier::calls>() == 0);
    // The same module seen through its RRef, on the owner.
    m.forward(x);
    CHECK(trainer.rpc_sync<&mt::calls_via_local_value>("ps", m.module_rref()) == 1);
    CHECK(m.module_rref().rpc_sync().call<&mt::Classifier::calls>() == 1);
    // Copies are the same module.
    auto copy = m;
    copy.forward(x);
    CHECK(m.call<&mt::Classifier::calls>() == 2);
  }
  CHECK(eventually([&] { return owned(*g[1]) == 0; }));
  shutdown_group(g);
  check_no_leaks(g);
}

TEST_CASE("RemoteModule: a value that travels to other workers", "[module]") {
  auto g = start_group({"trainer", "ps", "other"});
  {
    auto m = RemoteModule<mt::Classifier>::create<mt::Mlp>(*g[0], "ps", 4, 2);
    auto x = torch::ones({1, 4});
    auto here = m.forward(x, 2.0);
    CHECK(torch::allclose(g[0]->rpc_sync<&mt::call_on_other_worker>("other", m, x), here));
    auto back = g[0]->rpc_sync<&mt::hand_back>("other", m);
    CHECK(back.owner_name() == "ps");
    CHECK(torch::allclose(back.forward(x, 2.0), here));
    CHECK(m.call<&mt::Classifier::calls>() == 3);
    auto again = RemoteModule<mt::Classifier>::from_module_rref("ps/cpu", m.module_rref());
    CHECK(torch::allclose(again.forward(x, 2.0), here));
    CHECK_THROWS_WITH(RemoteModule<mt::Classifier>::from_module_rref("other/cpu", m.module_rref()),
                      Catch::Contains("does not name the owner"));
  }
  CHECK(eventually([&] { return owned(*g[1]) == 0; }));
  shutdown_group(g);
  check_no_leaks(g);
}

TEST_CASE("RemoteModule: parameters, train and eval on the owner", "[module]") {
  auto g = start_group({"trainer", "ps"});
  {
    auto m = RemoteModule<mt::Classifier>::create<mt::Mlp>(*g[0], "rank:1/cpu", 4, 3);
    auto params = m.remote_parameters();
    REQUIRE(params.size() == 2);  // weight and bias
    CHECK(params[0].owner_name() == "ps");
    CHECK(params[0].to_here().sizes() == torch::IntArrayRef({3, 4}));
    CHECK(params[1].to_here().sizes() == torch::IntArrayRef({3}));
    // They are the module's own tensors: zeroing them there changes forward's result.
    for (auto& p : params) g[0]->rpc_sync<&mt::zero_param>("ps", p);
    CHECK(torch::equal(m.forward(torch::ones({2, 4})), torch::zeros({2, 3})));
    CHECK(g[0]->rpc_sync<&mt::is_training>("ps", m.module_rref()));
    m.eval();
    CHECK_FALSE(g[0]->rpc_sync<&mt::is_training>("ps", m.module_rref()));
    m.train();
    CHECK(g[0]->rpc_sync<&mt::is_training>("ps", m.module_rref()));
  }
  CHECK(eventually([&] { return owned(*g[1]) == 0; }));
  shutdown_group(g);
  check_no_leaks(g);
}

TEST_CASE("Weight sync of a CPU state past the module worker's byte budget goes a window at a time, and is not "
          "refused",
          "[module][weight_sync]") {
  remora::Options o;
  o.max_pending_bytes_per_peer = std::uint64_t{4} << 20;  // a window of 2 MiB: pieces of 1 MiB
  o.num_worker_threads = 1;
  o.rpc_timeout = std::chrono::seconds(10);
  auto g = start_group({"trainer", "w1", "w2"}, o);
  {
    auto trainer = std::make_shared<mt::Deep>(24, 512);  // 24 weights of 1 MiB: 24 loads each
    const auto x = torch::rand({2, 512});
    // Two members on w1: one window for both (the budget is w1's, for the trainer).
    auto group = remora::RemoteModuleGroup<mt::Classifier>::create<mt::Deep>(
        *g[0], remora::DeviceMesh({"w1/cpu", "w1/cpu:0", "w2/cpu"}), std::int64_t{24}, std::int64_t{512});
    group.load_state_dict(trainer->named_parameters());
    for (std::size_t i = 0; i < group.size(); ++i)
      CHECK(torch::allclose(group.member(i).forward(x), trainer->forward(x, 1.0)));
    // From inside a served call on the trainer's one pool thread: the next loads do not need it.
    {
      torch::NoGradGuard no_grad;
      for (auto& p : trainer->parameters()) p.add_(1.0);
    }
    mt::sync_group = &group;
    mt::sync_model = trainer;
    CHECK(g[0]->rpc_sync<&mt::load_from_handler>("trainer"));
    mt::sync_group = nullptr;
    mt::sync_model.reset();
    for (std::size_t i = 0; i < group.size(); ++i)
      CHECK(torch::allclose(group.member(i).forward(x), trainer->forward(x, 1.0)));
  }
  shutdown_group(g);
}

TEST_CASE("Weight sync: a model's named parameters loaded in place into a module and into every member of a group",
          "[module][weight_sync]") {
  auto g = start_group({"trainer", "w1", "w2", "w3"});
  {
    auto trainer = std::make_shared<mt::Scaled>(4, 3);  // the model trained here
    const auto x = torch::rand({2, 4});
    const auto expected = [&] { return trainer->forward(x, 1.0); };
    auto group = remora::RemoteModuleGroup<mt::Classifier>::create<mt::Scaled>(
        *g[0], remora::DeviceMesh({"w1/cpu", "w2/cpu"}), std::int64_t{4}, std::int64_t{3});
    auto single = RemoteModule<mt::Classifier>::create<mt::Scaled>(*g[0], "w3/cpu", 4, 3);
    CHECK_FALSE(torch::allclose(single.forward(x), expected()));  // made with other random weights
    for (int step = 0; step < 3; ++step) {
      {
        torch::NoGradGuard no_grad;
        for (auto& p : trainer->parameters()) p.add_(torch::rand_like(p));  // a training step
      }
      group.load_state_dict(trainer->named_parameters());
      single.load_state_dict(trainer->named_parameters());
      for (std::size_t i = 0; i < group.size(); ++i) CHECK(torch::allclose(group.member(i).forward(x), expected()));
      CHECK(torch::allclose(single.forward(x), expected()));
    }
    // A state larger than one load (64 MiB of CPU tensors) goes in pieces that overlap:
    // fc.bias (first by name), then fc.weight alone.
    {
      auto big = std::make_shared<mt::Scaled>(4096, 4096);
      CHECK(remora::detail::chunks_of(remora::detail::state_of(big->named_parameters()), 1 << 30).size() == 2);
      auto wide = remora::RemoteModuleGroup<mt::Classifier>::create<mt::Scaled>(
          *g[0], remora::DeviceMesh({"w1/cpu", "w2/cpu"}), std::int64_t{4096}, std::int64_t{4096});
      wide.load_state_dict(big->named_parameters());
      const auto xb = torch::rand({2, 4096});
      for (std::size_t i = 0; i < wide.size(); ++i)
        CHECK(torch::allclose(wide.member(i).forward(xb), big->forward(xb, 1.0)));
    }
    // Tensors off the CPU (meta tensors stand in for GPU ones here) go in pieces of at most the
    // bound, a larger one alone, and never with CPU tensors: 14.5 GB of GPU state fits no frame.
    {
      std::map<std::string, torch::Tensor> state;
      const auto gib = [](std::int64_t n) { return torch::empty({n << 28}, torch::dtype(torch::kFloat).device(torch::kMeta)); };
      state["a"] = gib(1);  // 1 GiB
      state["b"] = gib(1);
      state["c"] = gib(3);  // past the bound: alone
      state["d"] = torch::zeros({4});
      const auto chunks = remora::detail::chunks_of(state, std::uint64_t{3} << 29);  // 1.5 GiB
      REQUIRE(chunks.size() == 4);
      CHECK(chunks[0].size() == 1);
      CHECK(chunks[1].size() == 1);
      CHECK(chunks[2].count("c") == 1);
      CHECK(chunks[3].count("d") == 1);
      std::size_t named = 0;
      for (const auto& c : chunks) named += c.size();
      CHECK(named == state.size());
    }
    // Buffers too, when sent with the parameters; asynchronously.
    trainer->scale.fill_(5.0);
    auto everything = trainer->named_parameters();
    for (const auto& b : trainer->named_buffers()) everything.insert(b.key(), b.value());
    remora::Future<void> f = group.load_state_dict_async(everything);
    f.get();
    CHECK(torch::allclose(group.member(1).forward(x), expected()));
    // A mismatch is found on every member before anything is sent: nothing changes.
    const auto before = group.member(0).forward(x);
    const auto single_before = single.forward(x);
    auto other = std::make_shared<mt::Scaled>(4, 5);
    CHECK_THROWS_WITH(group.load_state_dict(other->named_parameters()),
                      Catch::Contains("load_state_dict on w1/cpu: 'fc.bias' has shape [5] here and [3] in the module") &&
                          Catch::Contains("nothing was sent"));
    torch::OrderedDict<std::string, torch::Tensor> partial;
    partial.insert("fc.bias", torch::zeros({3}));
    CHECK_THROWS_WITH(single.load_state_dict(partial), Catch::Contains("the state has no parameter 'fc.weight'"));
    partial.insert("fc.weight", torch::zeros({3, 4}));
    partial.insert("gate", torch::zeros({1}));
    CHECK_THROWS_WITH(single.load_state_dict_async(partial).get(),
                      Catch::Contains("w3/cpu: the module has no parameter or buffer 'gate'"));
    CHECK(torch::equal(group.member(0).forward(x), before));
    CHECK(torch::equal(single.forward(x), single_before));
    // Only the last member does not fit: the first is not loaded either.
    auto mixed = remora::RemoteModuleGroup<mt::Classifier>::from_members(
        remora::DeviceMesh({"w3/cpu", "w2/cpu"}),
        {single, RemoteModule<mt::Classifier>::create<mt::Scaled>(*g[0], "w2/cpu", 4, 5)});
    {
      torch::NoGradGuard no_grad;
      for (auto& p : trainer->parameters()) p.add_(1.0);
    }
    CHECK_THROWS_WITH(mixed.load_state_dict(trainer->named_parameters()),
                      Catch::Contains("load_state_dict on w2/cpu: 'fc.bias' has shape [3] here and [5] in the module"));
    CHECK(torch::equal(single.forward(x), single_before));
  }
  CHECK(eventually([&] { return owned(*g[1]) == 0 && owned(*g[3]) == 0; }));
  shutdown_group(g);
  check_no_leaks(g);
}

TEST_CASE("RemoteModule: exceptions in forward and in the constructor", "[module]") {
  auto g = start_group({"trainer", "ps"});
  {
    auto m = RemoteModule<mt::Classifier>::create<mt::Failing>(*g[0], "ps", std::string("bad input"));
    try {
      m.forward(torch::ones({1}));
      FAIL("forward did not throw");
    } catch (const remora::RemoteError& e) {
      CHECK(e.worker() == "ps");
      CHECK(e.function() == "mt::Classifier::forward");
      CHECK(e.remote_type() == "std::domain_error");
      CHECK(e.remote_message() == "bad input");
    }
    CHECK_THROWS_AS(m.forward_async(torch::ones({1}), 1.0).get(), remora::RemoteError);
    CHECK_THROWS_WITH(RemoteModule<mt::Classifier>::create<mt::ThrowsInConstructor>(*g[0], "ps"),
                      Catch::Contains("no memory for the table"));
  }
  CHECK(eventually([&] { return owned(*g[1]) == 0; }));
  shutdown_group(g);
  check_no_leaks(g);
}

TEST_CASE("RemoteModule: unknown workers and devices fail at create", "[module]") {
  auto g = start_group({"trainer", "ps"});
  CHECK_THROWS_WITH(RemoteModule<mt::Classifier>::create<mt::Mlp>(*g[0], "nobody/cpu", 4, 3),
                    Catch::Contains("'nobody' is not part of this group"));
  CHECK_THROWS_WITH(RemoteModule<mt::Classifier>::create<mt::Mlp>(*g[0], "rank:7/cpu", 4, 3),
                    Catch::Contains("not a rank"));
  CHECK_THROWS_WITH(RemoteModule<mt::Classifier>::create<mt::Mlp>(*g[0], "ps/gpu:0", 4, 3),
                    Catch::Contains("is not a device"));
  if (!torch::cuda::is_available())
    CHECK_THROWS_WITH(RemoteModule<mt::Classifier>::create<mt::Mlp>(*g[0], "ps/cuda:0", 4, 3),
                      Catch::Contains("cuda:0 does not exist on worker 'ps'"));
  CHECK(eventually([&] { return owned(*g[1]) == 0; }));
  shutdown_group(g);
  check_no_leaks(g);
}

TEST_CASE("RemoteModule: nested arguments and results, void forward, adapted modules", "[module]") {
  auto g = start_group({"trainer", "ps"});
  {
    auto s = RemoteModule<mt::Summarizer>::create<mt::SumAll>(*g[0], "ps");
    mt::Batch b{torch::ones({2}), {torch::ones({3})}, torch::ones({2})};
    auto [total, parts] = s.forward(b);
    CHECK(total.item<double>() == 10.0);  // (2 + 3) * 2
    CHECK(torch::equal(parts.at("features"), 2 * torch::ones({2})));

    auto sink = RemoteModule<mt::Sink>::create<mt::Accumulator>(*g[0], "ps");
    sink.forward(torch::ones({4}));
    sink.forward_async(torch::ones({2})).get();
    CHECK(sink.call<&mt::Sink::total>() == 6.0);

    // Existing modules that do not derive from the interface are adapted.
    auto echo = RemoteModule<mt::Linear10>::create<mt::Echo>(*g[0], "ps");
    CHECK(torch::equal(echo.forward(torch::arange(3)), torch::arange(3)));
    auto linear = RemoteModule<mt::Linear10>::create<torch::nn::Linear>(*g[0], "ps", 10, 2);  // a TORCH_MODULE holder
    CHECK(linear.forward(torch::ones({1, 10})).sizes() == torch::IntArrayRef({1, 2}));
    CHECK(linear.remote_parameters().size() == 2);
  }
  CHECK(eventually([&] { return owned(*g[1]) == 0; }));
  shutdown_group(g);
  check_no_leaks(g);
}

TEST_CASE("To_device walks nested values and user structs", "[module]") {
  const c10::Device meta("meta");  // a device every build has: tensors without storage
  mt::Batch b{torch::ones({2}), {torch::ones({1}), torch::zeros({3})}, torch::ones({2})};
  auto moved = remora::to_device(b, meta);
  CHECK(moved.features.device() == meta);
  CHECK(moved.extras[1].device() == meta);
  CHECK(moved.mask->device() == meta);
  CHECK(b.features.device().is_cpu());  // the original is untouched

  std::tuple<std::vector<torch::Tensor>, std::map<std::string, torch::Tensor>, std::optional<torch::Tensor>, int>
      nested{{torch::ones({1})}, {{"k", torch::ones({1})}}, std::nullopt, 7};
  auto n2 = remora::to_device(nested, meta);
  CHECK(std::get<0>(n2)[0].device() == meta);
  CHECK(std::get<1>(n2).at("k").device() == meta);
  CHECK(std::get<3>(n2) == 7);

  c10::IValue iv(c10::ivalue::Tuple::create({torch::ones({1}), c10::IValue(3)}));
  auto iv2 = remora::to_device(iv, meta);
  CHECK(iv2.toTupleRef().elements()[0].toTensor().device() == meta);

  std::variant<int, torch::Tensor> v = torch::ones({1});
  CHECK(std::get<torch::Tensor>(remora::to_device(v, meta)).device() == meta);
}
