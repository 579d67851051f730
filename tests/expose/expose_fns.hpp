#pragma once
// Functions a serve-only binary (server.cpp) exposes and the test binary calls.
#include <cstdint>
#include <string>

#include <torch/types.h>

namespace expose_fns {
inline int add(int a, int b) { return a + b; }
inline std::string greet(std::string who) { return "hello, " + who; }
inline torch::Tensor make_table(std::int64_t rows, std::int64_t cols) { return torch::ones({rows, cols}); }
inline int not_exposed(int x) { return x; }
}  // namespace expose_fns
