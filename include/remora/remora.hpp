#pragma once
// remora: typed remote calls for libtorch programs. This is the one header users include.
#include "remora/version.hpp"

#include "remora/core/asio_await.hpp"
#include "remora/core/concepts.hpp"
#include "remora/core/errors.hpp"
#include "remora/core/future.hpp"
#include "remora/core/task.hpp"
#include "remora/core/type_id.hpp"
#include "remora/core/when_all.hpp"

#include "remora/wire/frame.hpp"
#include "remora/wire/value_codec.hpp"

#include "remora/agent/agent.hpp"
#include "remora/agent/rpc.hpp"

#include "remora/rref/remote.hpp"
#include "remora/rref/rref.hpp"

#include "remora/module/remote_device.hpp"
#include "remora/module/remote_module.hpp"
#include "remora/module/to_device.hpp"
