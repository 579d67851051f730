#pragma once
// The dynamic path: what a worker runs by name, with no user code there. Builtin operators of
// the c10 dispatcher (remora::rpc_sync<R>(to, "aten::add", a, b)), with keyword arguments
// (remora::kwargs). Includes <remora/rref.hpp>.
#include "remora/rref.hpp"

#include "remora/dynamic/builtin.hpp"
#include "remora/dynamic/kwargs.hpp"
