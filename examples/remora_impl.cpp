// remora's non-template code, compiled once for every example (REMORA_SEPARATE_COMPILATION, set
// by examples/CMakeLists.txt): the way a program of many files builds remora.
#include <remora/impl/src.hpp>
