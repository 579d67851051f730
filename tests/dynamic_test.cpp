// The dynamic path: builtin operators by name (ported from PyTorch's rpc_test.py builtin cases:
// test_builtin_remote_ret, test_py_built_in, test_rpc_sync_kwargs, nonexistent ops), checked on
// the caller before sending and again on the callee.
#include <unistd.h>

#include <catch2/catch.hpp>

#include "agent_support.hpp"
#include "remora/dynamic.hpp"

using remora::test::shutdown_group;
using remora::test::serving_by_name;
using remora::test::start_group;

namespace dyn {
torch::Tensor typed_add(torch::Tensor a, torch::Tensor b) { return a + b; }
}  // namespace dyn

TEST_CASE("Builtin operators by name: typed, untyped, async, remote, kwargs", "[dynamic]") {
  auto g = start_group({"w0", "w1"}, serving_by_name());
  auto& a0 = *g[0];
  auto a = torch::rand({2, 3});
  auto b = torch::rand({2, 3});

  torch::Tensor c = remora::rpc_sync<torch::Tensor>(a0, "w1", "aten::add", a, b);
  CHECK(torch::allclose(c, a + b));

  // Keyword arguments, as Python's alpha=2.
  auto s = remora::rpc_sync<torch::Tensor>(a0, "w1", "aten::add", a, b, remora::kwargs({{"alpha", 2}}));
  CHECK(torch::allclose(s, a + 2 * b));

  remora::Future<torch::Tensor> f = remora::rpc_async<torch::Tensor>(a0, "w1", "aten::mm", a, b.t());
  CHECK(torch::allclose(f.get(), a.mm(b.t())));

  // Several results come back as a tuple.
  auto x = torch::tensor({5.0, 1.0, 4.0, 2.0});
  c10::IValue v = remora::rpc_sync(a0, "w1", "aten::topk", x, 3);
  REQUIRE(v.isTuple());
  auto elems = v.toTupleRef().elements();
  REQUIRE(elems.size() == 2);
  CHECK(torch::equal(elems[0].toTensor(), torch::tensor({5.0, 4.0, 2.0})));
  CHECK(torch::equal(elems[1].toTensor(), torch::tensor({0, 2, 3}, torch::kLong)));
  // ... and convert to a std::tuple when asked for one.
  auto [values, indices] = remora::rpc_sync<std::tuple<torch::Tensor, torch::Tensor>>(a0, "w1", "aten::topk", x, 2);
  CHECK(torch::equal(values, torch::tensor({5.0, 4.0})));
  CHECK(torch::equal(indices, torch::tensor({0, 2}, torch::kLong)));

  // remote() of an operator: the value stays on w1.
  remora::RRef<torch::Tensor> r = remora::remote<torch::Tensor>(a0, "w1", "aten::ones", std::vector<int64_t>{2, 2});
  CHECK(r.owner_name() == "w1");
  CHECK(torch::equal(r.to_here(), torch::ones({2, 2})));
  // An untyped RRef holds the IValue.
  auto rv = remora::remote<c10::IValue>(a0, "w1", "aten::topk", x, 1);
  CHECK(rv.to_here().isTuple());

  // The dynamic path reaches the same result as the typed one.
  CHECK(torch::equal(a0.rpc_sync<&dyn::typed_add>("w1", a, b), c));

  r = {};
  rv = {};
  shutdown_group(g);
  CHECK(remora::rref_stats(*g[1]).owned_values == 0);
}

TEST_CASE("Builtin operators: every overload kind", "[dynamic]") {
  auto g = start_group({"w0", "w1"}, serving_by_name());
  auto& a0 = *g[0];
  auto t = torch::arange(6, torch::kFloat).reshape({2, 3});

  // Scalar: (Tensor, int) fits aten::add.Scalar, not aten::add.Tensor.
  CHECK(torch::equal(remora::rpc_sync<torch::Tensor>(a0, "w1", "aten::add", t, 3), t + 3));
  // A float where a Scalar goes; an exact overload name.
  CHECK(torch::allclose(remora::rpc_sync<torch::Tensor>(a0, "w1", "aten::mul.Scalar", t, 0.5), t * 0.5));
  // int[] and a bool keyword; optional ScalarType by keyword.
  auto summed = remora::rpc_sync<torch::Tensor>(a0, "w1", "aten::sum.dim_IntList", t, std::vector<int64_t>{1},
                                                remora::kwargs({{"keepdim", true}, {"dtype", at::kDouble}}));
  CHECK(summed.sizes() == torch::IntArrayRef({2, 1}));
  CHECK(summed.scalar_type() == torch::kDouble);
  CHECK(torch::allclose(summed, t.sum(1, true).to(torch::kDouble)));
  // An int where a float goes is widened (aten::dropout's p), as Python's argument parser does.
  CHECK(torch::equal(remora::rpc_sync<torch::Tensor>(a0, "w1", "aten::dropout", t, 0, false), t));
  // An int where a Scalar goes.
  CHECK(torch::allclose(remora::rpc_sync<torch::Tensor>(a0, "w1", "aten::pow", t, 2), t.pow(2)));
  // Results of other types: a float, an int, a bool.
  CHECK(remora::rpc_sync<std::int64_t>(a0, "w1", "aten::size", t, 1) == 3);
  CHECK(remora::rpc_sync<int>(a0, "w1", "aten::size", t, 0) == 2);
  CHECK(remora::rpc_sync<bool>(a0, "w1", "aten::is_floating_point", t));
  // A list of tensors in, one out.
  CHECK(torch::equal(remora::rpc_sync<torch::Tensor>(a0, "w1", "aten::cat", std::vector<torch::Tensor>{t, t}, 0),
                     torch::cat({t, t}, 0)));
  // A list of tensors out.
  auto parts = remora::rpc_sync<std::vector<torch::Tensor>>(a0, "w1", "aten::chunk", t, 2, 1);
  REQUIRE(parts.size() == 2);
  CHECK(torch::equal(parts[1], t.chunk(2, 1)[1]));
  shutdown_group(g);
}

TEST_CASE("Builtin operators: misuse fails on the caller, before anything is sent", "[dynamic]") {
  auto g = start_group({"w0", "w1"}, serving_by_name());
  auto& a0 = *g[0];
  auto t = torch::ones({2});

  // An operator that does not exist.
  try {
    remora::rpc_sync<torch::Tensor>(a0, "w1", "aten::no_such_op", t);
    FAIL("no error");
  } catch (const remora::UnknownFunction& e) {
    CHECK(e.function() == "aten::no_such_op");
    CHECK(e.worker() == "w1");
  }
  CHECK_THROWS_AS(remora::rpc_sync(a0, "w1", "not_qualified", t), remora::UnknownFunction);
  CHECK_THROWS_AS(remora::rpc_sync(a0, "w1", "aten::add.NoSuchOverload", t, t), remora::UnknownFunction);

  // Arguments no overload accepts: the error lists the overloads and why each refused.
  try {
    remora::rpc_sync<torch::Tensor>(a0, "w1", "aten::add", t, std::string("x"));
    FAIL("no error");
  } catch (const remora::SchemaMismatch& e) {
    const std::string what = e.what();
    CHECK(e.name() == "aten::add");
    CHECK_THAT(what, Catch::Contains("(Tensor, str)"));
    CHECK_THAT(what, Catch::Contains("aten::add.Tensor(Tensor self, Tensor other, *, Scalar alpha=1) -> Tensor"));
    CHECK_THAT(what, Catch::Contains("argument 'other' must be Tensor, not str"));
  }
  // Too many positional arguments (alpha is keyword-only), an unknown keyword, a missing argument.
  CHECK_THROWS_WITH(remora::rpc_sync(a0, "w1", "aten::add.Tensor", t, t, 2),
                    Catch::Contains("takes 2 positional argument(s), 3 given"));
  CHECK_THROWS_WITH(remora::rpc_sync(a0, "w1", "aten::add.Tensor", t, t, remora::kwargs({{"beta", 2}})),
                    Catch::Contains("has no argument named 'beta'"));
  CHECK_THROWS_WITH(remora::rpc_sync(a0, "w1", "aten::add.Tensor", t), Catch::Contains("argument 'other' is missing"));
  // A typed call whose operator gives something else.
  CHECK_THROWS_WITH(remora::rpc_sync<torch::Tensor>(a0, "w1", "aten::topk", t, 1),
                    Catch::Contains("returns Tuple[Tensor, Tensor], not"));
  CHECK_THROWS_AS(remora::remote<std::string>(a0, "w1", "aten::ones", std::vector<int64_t>{1}), remora::SchemaMismatch);
  CHECK(a0.pending_calls() == 0);
  shutdown_group(g);
  CHECK(remora::rref_stats(*g[1]).owned_values == 0);
}

TEST_CASE("Builtin operators: the callee checks what arrives and reports what the operator throws", "[dynamic]") {
  auto g = start_group({"w0", "w1"}, serving_by_name());
  auto& a0 = *g[0];
  // The operator's own error, with the worker and the operator named.
  try {
    remora::rpc_sync<torch::Tensor>(a0, "w1", "aten::mm", torch::ones({2, 3}), torch::ones({2, 3}));
    FAIL("no error");
  } catch (const remora::RemoteError& e) {
    CHECK(e.worker() == "w1");
    CHECK(e.function() == "aten::mm");
    CHECK(e.remote_type() == "c10::Error");
  }
  // A stack that does not fit the schema, as a forged or foreign caller could send: refused, the
  // worker stays up.
  using remora::detail::run_builtin;
  auto call = [&](std::string op, std::vector<c10::IValue> stack) {
    return remora::detail::call_as<&run_builtin>(a0, 1, remora::function_identity<&run_builtin>, remora::CallOptions{},
                                                 std::move(op), std::move(stack))
        .get();
  };
  CHECK_THROWS_WITH(call("aten::add.Tensor", {torch::ones({1})}), Catch::Contains("takes 3 arguments, 1 arrived"));
  CHECK_THROWS_WITH(call("aten::add.Tensor", {torch::ones({1}), std::string("x"), 1}),
                    Catch::Contains("argument 'other' must be Tensor, not str"));
  CHECK_THROWS_WITH(call("aten::nothing.here", {}), Catch::Contains("no operator of this name"));
  CHECK(torch::equal(call("aten::add.Tensor", {torch::ones({1}), torch::ones({1}), 1}).toTensor(), torch::full({1}, 2.0)));
  shutdown_group(g);
}

TEST_CASE("JIT operators by name: prim:: operators and generic list operators", "[dynamic]") {
  auto g = start_group({"w0", "w1"}, serving_by_name());
  auto& a0 = *g[0];
  // Overloads the JIT registers beside the dispatcher's: aten::add.int, prim::max.int.
  CHECK(remora::rpc_sync<std::int64_t>(a0, "w1", "aten::add", 2, 3) == 5);
  CHECK(remora::rpc_sync<std::int64_t>(a0, "w1", "prim::max", 4, 9) == 9);
  CHECK(remora::rpc_sync<bool>(a0, "w1", "prim::is_sparse", torch::ones({2})) == false);
  CHECK(remora::rpc_sync<std::vector<std::int64_t>>(a0, "w1", "prim::rangelist", 4) ==
        std::vector<std::int64_t>{0, 1, 2, 3});
  // Generic operators: the type variable t binds to what the arguments carry.
  CHECK(remora::rpc_sync<std::int64_t>(a0, "w1", "aten::len", std::vector<std::int64_t>{1, 2, 3}) == 3);
  CHECK(remora::rpc_sync<std::string>(a0, "w1", "aten::__getitem__", std::vector<std::string>{"a", "b"}, 1) == "b");
  c10::IValue got = remora::rpc_sync(a0, "w1", "aten::__getitem__", std::vector<double>{0.5, 1.5}, 0);
  CHECK(got.isDouble());
  // A type variable bound twice to different types: refused on the caller.
  CHECK_THROWS_WITH(remora::rpc_sync(a0, "w1", "aten::append", std::vector<std::int64_t>{1}, std::string("x")),
                    Catch::Contains("Type variable 't' previously matched to type int is matched to type str"));
  // Operators that only exist inside a graph (variable argument lists, interpreter special
  // cases) cannot be called by name.
  CHECK_THROWS_AS(remora::rpc_sync(a0, "w1", "prim::TupleConstruct", 1, 2), remora::UnknownFunction);
  CHECK_THROWS_AS(remora::rpc_sync(a0, "w1", "aten::format", std::string("{}"), 1), remora::UnknownFunction);
  CHECK(a0.pending_calls() == 0);
  shutdown_group(g);
}

TEST_CASE("A worker serves by name only the operators and model directories its program listed", "[dynamic][serve]") {
  namespace fs = std::filesystem;
  const auto dir = fs::temp_directory_path() / ("remora_serve_" + std::to_string(::getpid()));
  fs::create_directories(dir / "models");
  const auto model = (dir / "models" / "half.pt").string();
  const auto stray = (dir / "stray.pt").string();
  {
    torch::jit::Module m("Half");
    m.define("def forward(self, x: Tensor) -> Tensor:\n    return x / 2\n");
    m.save(model);
    m.save(stray);
  }
  const auto x = torch::ones({2});
  SECTION("the default serves nothing by name, and says which option would") {
    auto g = start_group({"w0", "w1"});
    auto& a0 = *g[0];
    try {
      remora::rpc_sync<torch::Tensor>(a0, "w1", "aten::add", x, x);
      FAIL("served");
    } catch (const remora::UnknownFunction& e) {
      CHECK(e.worker() == "w1");
      CHECK_THAT(e.what(), Catch::Contains("Options::serve_operators on worker 'w1'") && Catch::Contains("aten::add"));
    }
    CHECK_THROWS_WITH(remora::remote<torch::Tensor>(a0, "w1", "aten::ones", std::vector<int64_t>{2}).to_here(),
                      Catch::Contains("Options::serve_operators"));
    CHECK_THROWS_WITH(remora::ScriptRemoteModule::load(a0, "w1/cpu", model),
                      Catch::Contains("Options::model_dirs on worker 'w1'"));
    // What a worker asks of itself is its own program's choice.
    CHECK(torch::equal(remora::rpc_sync<torch::Tensor>(a0, "w0", "aten::add", x, x), x * 2));
    CHECK(torch::equal(remora::ScriptRemoteModule::load(a0, "w0/cpu", stray).call("forward", x).toTensor(), x / 2));
    shutdown_group(g);
  }
  SECTION("a list serves those operators, every overload or one") {
    remora::Options o;
    o.serve_operators = {"aten::add", "aten::mul.Tensor"};
    auto g = start_group({"w0", "w1"}, o);
    auto& a0 = *g[0];
    CHECK(torch::equal(remora::rpc_sync<torch::Tensor>(a0, "w1", "aten::add", x, x), x * 2));
    CHECK(remora::rpc_sync<std::int64_t>(a0, "w1", "aten::add", 2, 3) == 5);
    CHECK(torch::equal(remora::rpc_sync<torch::Tensor>(a0, "w1", "aten::mul", x, x), x));
    CHECK_THROWS_AS(remora::rpc_sync<torch::Tensor>(a0, "w1", "aten::mul", x, 2), remora::UnknownFunction);
    CHECK_THROWS_AS(remora::rpc_sync<torch::Tensor>(a0, "w1", "aten::sub", x, x), remora::UnknownFunction);
    shutdown_group(g);
  }
  SECTION("\"*\" leaves out what touches files; model_dirs bounds loads after resolving the path") {
    remora::Options o;
    o.serve_operators = {"*"};
    o.model_dirs = {(dir / "models").string()};
    auto g = start_group({"w0", "w1"}, o);
    auto& a0 = *g[0];
    CHECK(torch::equal(remora::rpc_sync<torch::Tensor>(a0, "w1", "aten::sub", x, x), x * 0));
    const auto written = (dir / "written.pt").string();
    CHECK_THROWS_WITH(remora::rpc_sync(a0, "w1", "aten::save", x, written),
                      Catch::Contains("touches files") && Catch::Contains("aten::save"));
    CHECK_FALSE(fs::exists(written));
    CHECK_THROWS_AS(remora::rpc_sync<torch::Tensor>(a0, "w1", "aten::from_file", stray), remora::UnknownFunction);
    CHECK(torch::equal(remora::ScriptRemoteModule::load(a0, "w1/cpu", model).call("forward", x).toTensor(), x / 2));
    CHECK_THROWS_AS(remora::ScriptRemoteModule::load(a0, "w1/cpu", stray), remora::UnknownFunction);
    CHECK_THROWS_AS(remora::ScriptRemoteModule::load(a0, "w1/cpu", (dir / "models" / ".." / "stray.pt").string()),
                    remora::UnknownFunction);
    fs::create_symlink(stray, dir / "models" / "link.pt");
    CHECK_THROWS_AS(remora::ScriptRemoteModule::load(a0, "w1/cpu", (dir / "models" / "link.pt").string()),
                    remora::UnknownFunction);
    // A missing component before ".." is not tidied away as text (the link would then be followed).
    CHECK_THROWS_AS(remora::ScriptRemoteModule::load(a0, "w1/cpu", (dir / "models" / "nope" / ".." / "link.pt").string()),
                    remora::UnknownFunction);
    CHECK(remora::test::eventually([&] { return a0.pending_calls() == 0; }));
    shutdown_group(g);
  }
  SECTION("naming a file operator serves it") {
    remora::Options o;
    o.serve_operators = {"*", "aten::save"};
    auto g = start_group({"w0", "w1"}, o);
    const auto written = (dir / "written.pt").string();
    remora::rpc_sync(*g[0], "w1", "aten::save", x, written);
    CHECK(fs::exists(written));
    shutdown_group(g);
  }
  fs::remove_all(dir);
}
