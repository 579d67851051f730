// Precompiled for every test TU: the expensive, stable headers.
// Catch2 comes last: libtorch pulls in glog, whose CHECK macro would otherwise replace Catch's.
#include <torch/types.h>
#include <torch/nn.h>
#include <ATen/core/ivalue.h>
#include <asio.hpp>
#include <cereal/cereal.hpp>
#ifdef CHECK
#undef CHECK
#endif
#include <catch2/catch.hpp>
