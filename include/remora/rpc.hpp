#pragma once
// Typed remote calls of functions: init_rpc, rpc_sync / rpc_async, the Agent, Options, Future,
// and the errors. Include this when a translation unit makes or serves calls and nothing more.
#include "remora/version.hpp"

#include "remora/agent/agent.hpp"
#include "remora/agent/options.hpp"
#include "remora/agent/rpc.hpp"
#include "remora/core/errors.hpp"
#include "remora/core/future.hpp"
#include "remora/core/task.hpp"
#include "remora/core/when_all.hpp"
