#pragma once
// The dynamic path: what a worker runs by name, with no user code there. Builtin operators of
// the c10 dispatcher (remora::rpc_sync<R>(to, "aten::add", a, b)) with keyword arguments
// (remora::kwargs), TorchScript modules (ScriptRemoteModule::load, RemoteModule<I>::load) and
// torchbind objects (remote_object).
// Includes <remora/module.hpp>.
#include "remora/module.hpp"

#include "remora/dynamic/builtin.hpp"
#include "remora/dynamic/kwargs.hpp"
#include "remora/dynamic/script_module.hpp"
#include "remora/dynamic/script_object.hpp"
#include "remora/module/script_remote_module.hpp"
