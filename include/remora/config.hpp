#pragma once
// How remora is compiled into a program, decided once for every translation unit.
//
// Header-only (the default): every function is inline and each translation unit that uses the
// agent compiles the networking code too.
//
// Separate compilation (as Asio's ASIO_SEPARATE_COMPILATION): define REMORA_SEPARATE_COMPILATION
// for the whole program and compile <remora/impl/src.hpp> in exactly one source file; the CMake
// target remora::compiled is that file built into a library, and carries the definition (and
// REMORA_CUDA_IPC, REMORA_AOTI) to every translation unit that links it. Translation units then see declarations of
// the agent, the transports and the rendezvous, not their code, nor Asio.
#if defined(REMORA_SEPARATE_COMPILATION)
#define REMORA_HEADER_ONLY 0
#define REMORA_DECL
#else
#define REMORA_HEADER_ONLY 1
#define REMORA_DECL inline
#endif

// GPU tensors between processes by CUDA IPC handle, and through pinned memory in chunks: compiled
// when libtorch has CUDA (its runtime header is on the include path), decided here for every
// translation unit. Define REMORA_CUDA_IPC to 0 or 1 for the whole program to decide it yourself.
#if !defined(REMORA_CUDA_IPC)
#if __has_include(<cuda_runtime_api.h>) && __has_include(<c10/cuda/CUDAStream.h>)
#define REMORA_CUDA_IPC 1
#else
#define REMORA_CUDA_IPC 0
#endif
#endif
