// Precompiled for every test TU: the expensive, stable headers.
// Catch2 comes last: libtorch pulls in glog, whose CHECK macro would otherwise replace Catch's.
#include "../cmake/libtorch_pch.hpp"
#ifdef CHECK
#undef CHECK
#endif
#include <catch2/catch.hpp>
