#pragma once
// The parts of remora that are not templates, for programs built with
// REMORA_SEPARATE_COMPILATION (remora/config.hpp): include this header in exactly one source file
// of the program, as Asio's <asio/impl/src.hpp>:
//
//   // remora.cpp, compiled with -DREMORA_SEPARATE_COMPILATION like the rest of the program
//   #include <remora/impl/src.hpp>
#if !defined(REMORA_SEPARATE_COMPILATION)
#error "<remora/impl/src.hpp> is for programs built with REMORA_SEPARATE_COMPILATION defined"
#endif

// First, as every public header does by way of core/concepts.hpp: with clang 14 and libstdc++ 12
// in C++20, <torch/types.h> compiles only once c10::IValue is complete.
#include <ATen/core/ivalue.h>

#include "remora/wire/impl/codec.ipp"
#include "remora/wire/impl/torchbind_codec.ipp"
#include "remora/agent/impl/registry.ipp"
#include "remora/agent/impl/agent.ipp"
#include "remora/agent/impl/rpc.ipp"
#include "remora/rref/impl/context.ipp"
#include "remora/module/impl/module.ipp"
#include "remora/dynamic/impl/schema_match.ipp"
#include "remora/dynamic/impl/serve_policy.ipp"
#include "remora/dynamic/impl/builtin.ipp"
#include "remora/dynamic/impl/script_module.ipp"
#include "remora/module/impl/script_adapter.ipp"
#include "remora/module/impl/script_remote_module.ipp"
#include "remora/dynamic/impl/script_object.ipp"
#include "remora/autograd/impl/grad_contexts.ipp"
#include "remora/autograd/impl/backward_pass.ipp"
#include "remora/autograd/impl/context.ipp"
#include "remora/optim/impl/distributed_optimizer.ipp"
