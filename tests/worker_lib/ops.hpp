#pragma once
// Functions a shared library serves through remora-worker --load. Callers need their addresses
// (rpc_sync<&worker_ops::triple>), so they are defined here, inline; only the library exposes them.
#include <string>

#include <torch/types.h>

namespace worker_ops {
inline torch::Tensor triple(torch::Tensor x) { return x * 3; }
inline std::string where_am_i() { return "a library loaded by remora-worker"; }
}  // namespace worker_ops
