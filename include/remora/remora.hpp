#pragma once
// remora: typed remote calls for libtorch programs. Everything a program calls: functions
// (<remora/rpc.hpp>), RRefs (<remora/rref.hpp>) and remote modules (<remora/module.hpp>).
// Waiting for a Future from an Asio coroutine is in <remora/asio_await.hpp>; the wire format, for
// tools that read frames, in <remora/wire/...>.
#include "remora/module.hpp"
