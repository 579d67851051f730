// TorchScript modules as remote modules: ScriptRemoteModule (methods by name) and
// RemoteModule<I>::load (typed through an interface), ported from PyTorch's
// remote_module_test.py scripted cases. The modules are built and saved with libtorch's own
// TorchScript compiler (torch::jit::Module::define), as torch.jit.save would write them.
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <catch2/catch.hpp>
#include <torch/custom_class.h>

#include "agent_support.hpp"
#include "remora/dynamic.hpp"

using remora::test::shutdown_group;
using remora::test::serving_by_name;
using remora::test::start_group;

namespace sm {

struct Scorer {
  virtual ~Scorer() = default;
  virtual torch::Tensor forward(torch::Tensor x, double s) = 0;
};
struct ScaleOnly {  // passes fewer arguments: the script's default fills the rest
  virtual ~ScaleOnly() = default;
  virtual torch::Tensor forward(torch::Tensor x) = 0;
};
struct TensorsOnly {  // what an AOTInductor package can serve
  virtual ~TensorsOnly() = default;
  virtual torch::Tensor forward(torch::Tensor x) = 0;
};
struct WrongScorer {
  virtual ~WrongScorer() = default;
  virtual torch::Tensor forward(std::string name) = 0;
};

// A file name unique to this test process.
std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("remora_" + std::to_string(::getpid()) + "_" + name)).string();
}

std::string save_scorer() {
  torch::jit::Module m("Scorer");
  m.register_parameter("w", torch::full({4}, 2.0), false);
  m.register_attribute("count", c10::IntType::get(), int64_t{0});
  m.define(R"JIT(
def forward(self, x: Tensor, s: float = 1.0) -> Tensor:
    self.count += 1
    return x * self.w * s

def calls(self) -> int:
    return self.count

def fail(self, n: int) -> int:
    assert n < 0, "script failure " + str(n)
    return n

def pair(self, x: Tensor):
    return x + 1, x - 1
)JIT");
  auto path = temp_path("scorer.pt");
  m.save(path);
  return path;
}

// A torchbind class, registered in this binary as a library would register it.
struct TestStack : torch::CustomClassHolder {
  std::vector<std::string> items;
  explicit TestStack(std::vector<std::string> init) : items(std::move(init)) {}
  void push(std::string s) { items.push_back(std::move(s)); }
  std::string pop() {
    if (items.empty()) throw std::out_of_range("pop from an empty stack");
    auto s = items.back();
    items.pop_back();
    return s;
  }
  std::int64_t size() { return static_cast<std::int64_t>(items.size()); }
};

// The same with def_pickle: it travels by value.
struct PickledStack : TestStack {
  using TestStack::TestStack;
};

// A typed function that takes a torchbind object by value and gives it back.
remora::ScriptObject grow(remora::ScriptObject s, std::string item) {
  s.call("push", std::move(item));
  return s;
}

}  // namespace sm

TORCH_LIBRARY(remora_test, m) {
  m.class_<sm::TestStack>("Stack")
      .def(torch::init<std::vector<std::string>>())
      .def("push", &sm::TestStack::push)
      .def("pop", &sm::TestStack::pop)
      .def("size", &sm::TestStack::size);
  m.class_<sm::PickledStack>("PickledStack")
      .def(torch::init<std::vector<std::string>>())
      // Lambdas: a method pointer of the base class would bind `self` to Stack.
      .def("push", [](const c10::intrusive_ptr<sm::PickledStack>& self, std::string s) { self->push(std::move(s)); })
      .def("pop", [](const c10::intrusive_ptr<sm::PickledStack>& self) { return self->pop(); })
      .def("size", [](const c10::intrusive_ptr<sm::PickledStack>& self) { return self->size(); })
      .def_pickle([](const c10::intrusive_ptr<sm::PickledStack>& self) { return self->items; },
                  [](std::vector<std::string> state) { return c10::make_intrusive<sm::PickledStack>(std::move(state)); });
}

TEST_CASE("ScriptRemoteModule: methods by name, defaults, kwargs, results of any type", "[dynamic][script]") {
  auto path = sm::save_scorer();
  auto g = start_group({"w0", "w1"}, serving_by_name());
  auto& a0 = *g[0];
  auto x = torch::ones({4});
  {
    auto d = remora::ScriptRemoteModule::load(a0, "w1/cpu", path);
    CHECK(d.module_rref().owner_name() == "w1");
    CHECK(d.path() == path);
    CHECK(std::find(d.methods().begin(), d.methods().end(), "calls() -> int") != d.methods().end());

    CHECK(torch::equal(d.call("forward", x, 3.0).toTensor(), x * 6));
    CHECK(torch::equal(d.call("forward", x).toTensor(), x * 2));                               // s's default
    CHECK(torch::equal(d.call("forward", x, remora::kwargs({{"s", 0.5}})).toTensor(), x));    // by name
    CHECK(torch::equal(d.call("forward", x, 2).toTensor(), x * 4));                           // int widened
    CHECK(d.call_async("calls").get().toInt() == 4);  // state lives on the owner, between calls
    auto pair = d.call("pair", x);
    REQUIRE(pair.isTuple());
    CHECK(torch::equal(pair.toTupleRef().elements()[1].toTensor(), x - 1));

    // Misuse fails on the caller.
    CHECK_THROWS_WITH(d.call("nope"), Catch::Contains("has no method 'nope' (it has: "));
    CHECK_THROWS_AS(d.call("forward", std::string("x")), remora::SchemaMismatch);
    CHECK_THROWS_WITH(d.call("forward", x, 1.0, 2.0), Catch::Contains("do not fit forward(Tensor x, float s=1."));
    // An exception inside script code names the script's frame and message.
    try {
      d.call("fail", 7);
      FAIL("no error");
    } catch (const remora::RemoteError& e) {
      CHECK(e.worker() == "w1");
      CHECK_THAT(e.remote_message(), Catch::Contains("script failure 7"));
      CHECK_THAT(e.remote_message(), Catch::Contains("assert n < 0"));  // the TorchScript frame
    }
    // The owner checks what arrives as well (a caller that skipped the check, or a forged one).
    CHECK_THROWS_WITH(d.module_rref().rpc_sync().call<&remora::ScriptModule::run_method>(
                          std::string("forward"), std::vector<c10::IValue>{std::string("x")}),
                      Catch::Contains("do not fit forward(Tensor x, float s=1."));
  }
  shutdown_group(g);
  CHECK(remora::rref_stats(*g[1]).owned_values == 0);
  std::remove(path.c_str());
}

TEST_CASE("RemoteModule<I>::load: a script module behind a C++ interface, checked at load", "[dynamic][script]") {
  auto path = sm::save_scorer();
  auto g = start_group({"w0", "w1"}, serving_by_name());
  auto& a0 = *g[0];
  auto x = torch::ones({4});
  {
    auto m = remora::RemoteModule<sm::Scorer>::load(a0, "w1/cpu", path);
    CHECK(torch::equal(m.forward(x, 2.0), x * 4));
    CHECK(torch::equal(m.forward_async(x, 0.5).get(), x));
    auto fewer = remora::RemoteModule<sm::ScaleOnly>::load(a0, "w1", path);
    CHECK(torch::equal(fewer.forward(x), x * 2));

    // An interface that does not fit: both signatures and the file named, before any call.
    try {
      remora::RemoteModule<sm::WrongScorer>::load(a0, "w1/cpu", path);
      FAIL("no error");
    } catch (const remora::SchemaMismatch& e) {
      const std::string what = e.what();
      CHECK(e.name() == path);
      CHECK_THAT(what, Catch::Contains("forward(Tensor x, float s=1.) -> Tensor"));
      CHECK_THAT(what, Catch::Contains("WrongScorer::forward(str) -> Tensor"));
      CHECK_THAT(what, Catch::Contains(path));
    }
    // Files that are missing, not TorchScript, or an export package this libtorch cannot load.
    CHECK_THROWS_WITH(remora::RemoteModule<sm::Scorer>::load(a0, "w1/cpu", path + ".missing"),
                      Catch::Contains("cannot read '" + path + ".missing' on worker 'w1'"));
    const auto junk = sm::temp_path("junk.pt");
    std::ofstream(junk) << "not a zip archive";
    CHECK_THROWS_WITH(remora::ScriptRemoteModule::load(a0, "w1/cpu", junk), Catch::Contains("is not a TorchScript module"));
    const auto package = sm::temp_path("scorer.pt2");
    std::ofstream(package) << "x";
    CHECK_THROWS_WITH(remora::ScriptRemoteModule::load(a0, "w1/cpu", package), Catch::Contains("no methods by name"));
#if REMORA_AOTI
    // A package takes tensors only; a file that is not a package says so (tests/cuda_test.cpp
    // loads a real one).
    CHECK_THROWS_WITH(remora::RemoteModule<sm::Scorer>::load(a0, "w1/cpu", package),
                      Catch::Contains("takes and gives tensors only"));
    CHECK_THROWS_WITH(remora::RemoteModule<sm::TensorsOnly>::load(a0, "w1/cpu", package),
                      Catch::Contains("cannot load the AOTInductor package '" + package + "' on worker 'w1'"));
#else
    CHECK_THROWS_WITH(remora::RemoteModule<sm::TensorsOnly>::load(a0, "w1/cpu", package),
                      Catch::Contains("needs libtorch 2.8"));
#endif
    std::remove(junk.c_str());
    std::remove(package.c_str());
  }
  shutdown_group(g);
  CHECK(remora::rref_stats(*g[1]).owned_values == 0);
  std::remove(path.c_str());
}

TEST_CASE("Torchbind objects: created on the owner, methods by name, checked there", "[dynamic][torchbind]") {
  auto g = start_group({"w0", "w1"}, serving_by_name());
  auto& a0 = *g[0];
  {
    remora::RRef<remora::ScriptObject> st =
        remora::remote_object(a0, "w1", "remora_test.Stack", std::vector<std::string>{"a"});
    CHECK(st.owner_name() == "w1");
    st.call("push", std::string("b"));
    CHECK(st.call<std::int64_t>("size") == 2);
    CHECK(st.call<std::string>("pop") == "b");
    CHECK(st.call<std::string>("pop") == "a");
    // The object's own exception, a method it lacks, arguments that do not fit.
    CHECK_THROWS_WITH(st.call("pop"), Catch::Contains("pop from an empty stack"));
    CHECK_THROWS_WITH(st.call("peek"), Catch::Contains("has no method 'peek' (it has: "));
    CHECK_THROWS_WITH(st.call("push", 3), Catch::Contains("do not fit push(str _1) -> NoneType _0: argument '_1' must be str, not int"));
    // On the owner, the value is the object itself.
    CHECK(remora::rref_stats(*g[1]).owned_values == 1);
    // A class nobody registered there fails the RRef's first use, naming the worker.
    auto missing = remora::remote_object(a0, "w1", "nowhere.Nothing");
    CHECK_THROWS_WITH(missing.call("size"), Catch::Contains("no torchbind class 'nowhere.Nothing' is registered on worker 'w1'"));
    auto bad = remora::remote_object(a0, "w1", "remora_test.Stack", 5);
    CHECK_THROWS_WITH(bad.call("size"), Catch::Contains("do not fit its constructor"));
  }
  shutdown_group(g);
  CHECK(remora::rref_stats(*g[1]).owned_values == 0);
}

TEST_CASE("Torchbind objects by value: a def_pickle class travels, one without stays on its owner", "[dynamic][torchbind]") {
  auto g = start_group({"w0", "w1"}, serving_by_name());
  auto& a0 = *g[0];
  {
    auto st = remora::remote_object(a0, "w1", "remora_test.PickledStack", std::vector<std::string>{"a", "b"});
    remora::ScriptObject copy = st.to_here();
    CHECK(copy.class_name() == "remora_test.PickledStack");
    CHECK(copy.call<std::string>("pop") == "b");
    CHECK(copy.call<std::int64_t>("size") == 1);
    CHECK(st.call<std::int64_t>("size") == 2);  // the owner's object is its own
    // As the argument and the result of a typed call.
    remora::ScriptObject grown = a0.rpc_sync<&sm::grow>("w1", copy, std::string("z"));
    CHECK(grown.call<std::int64_t>("size") == 2);
    CHECK(grown.call<std::string>("pop") == "z");
    CHECK(copy.call<std::int64_t>("size") == 1);
    // A class without def_pickle: to_here fails naming it, and the RRef stays usable.
    auto plain = remora::remote_object(a0, "w1", "remora_test.Stack", std::vector<std::string>{"a"});
    CHECK_THROWS_WITH(plain.to_here(),
                      Catch::Contains("the torchbind class 'remora_test.Stack' cannot travel by value"));
    CHECK(plain.call<std::int64_t>("size") == 1);
    // ... and sending one fails on the caller, before anything leaves.
    remora::ScriptObject local(torch::make_custom_class<sm::TestStack>(std::vector<std::string>{}).toObject(),
                               "remora_test.Stack");
    CHECK_THROWS_AS(a0.rpc_sync<&sm::grow>("w1", local, std::string("x")), remora::SerializationError);
    CHECK_THROWS_WITH(remora::ScriptObject{}.call("size"), Catch::Contains("empty ScriptObject"));
  }
  shutdown_group(g);
  CHECK(remora::rref_stats(*g[1]).owned_values == 0);
}

// Saved by Python's torch.jit (Debian's python3-torch, as scripts/bootstrap installs it): the C++
// TorchScript frontend cannot spell torch.jit._fork.
TEST_CASE("A script method that returns a Future answers when the Future completes", "[dynamic][script]") {
  const auto path = sm::temp_path("later.pt");
  const std::string script = R"PY(
import sys, torch
class Later(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x
    @torch.jit.export
    def later(self, x: torch.Tensor) -> torch.jit.Future[torch.Tensor]:
        return torch.jit._fork(torch.neg, x)
torch.jit.save(torch.jit.script(Later()), sys.argv[1])
)PY";
  const auto script_path = sm::temp_path("later.py");
  std::ofstream(script_path) << script;
  if (std::system(("/usr/bin/python3 " + script_path + " " + path + " 2>/dev/null").c_str()) != 0) {
    WARN("skipped: /usr/bin/python3 with torch is not available to save the module");
    return;
  }
  auto g = start_group({"w0", "w1"}, serving_by_name());
  {
    auto d = remora::ScriptRemoteModule::load(*g[0], "w1/cpu", path);
    auto x = torch::arange(3, torch::kFloat);
    CHECK(torch::equal(d.call("later", x).toTensor(), -x));
    CHECK(torch::equal(d.call_async("later", x).get().toTensor(), -x));
  }
  shutdown_group(g);
  std::remove(path.c_str());
  std::remove(script_path.c_str());
}
