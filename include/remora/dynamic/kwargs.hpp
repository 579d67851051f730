#pragma once
// Keyword arguments for what is called by name (builtin operators, script methods), as Python's
// `alpha=2`: pass them as the last argument of the call.
//
//   auto s = remora::rpc_sync<torch::Tensor>("w1", "aten::add", a, b, remora::kwargs({{"alpha", 2}}));
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/ivalue.h>

namespace remora {

struct Kwargs {
  std::vector<std::pair<std::string, c10::IValue>> values;
};

inline Kwargs kwargs(std::initializer_list<std::pair<std::string, c10::IValue>> values) {
  return Kwargs{{values.begin(), values.end()}};
}

}  // namespace remora
