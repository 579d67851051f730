#pragma once
// RRef<T> and remote<&fn>: values that stay on the worker that made them, with their lifetimes
// kept across the group. Includes <remora/rpc.hpp>.
#include "remora/rpc.hpp"

#include "remora/rref/remote.hpp"
#include "remora/rref/rref.hpp"
