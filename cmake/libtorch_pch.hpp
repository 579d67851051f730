// What the tests, the examples and the compile-fail snippets precompile: the expensive, stable
// headers (libtorch's parse is most of a remora TU's compile time).
#include <torch/types.h>
#include <torch/nn.h>
#include <ATen/core/ivalue.h>
#include <asio.hpp>
#include <cereal/cereal.hpp>
