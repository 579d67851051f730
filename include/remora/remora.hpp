#pragma once
// remora: typed remote calls for libtorch programs. Everything a program calls: functions
// (<remora/rpc.hpp>), RRefs (<remora/rref.hpp>), remote modules (<remora/module.hpp>) and what
// runs by name (<remora/dynamic.hpp>: builtin operators), and training through remote calls
// (<remora/autograd.hpp>: distributed autograd, DistributedOptimizer).
// Waiting for a Future from an Asio coroutine is in <remora/asio_await.hpp>; the wire format, for
// tools that read frames, in <remora/wire/...>.
#include "remora/autograd.hpp"
#include "remora/dynamic.hpp"
#include "remora/module.hpp"
