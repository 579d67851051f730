// remora::compiled: remora's non-template code, built once into a library that programs link
// instead of compiling it in every translation unit (CMake target remora::compiled, which carries
// REMORA_SEPARATE_COMPILATION and the configuration macros to every user of it).
#include <remora/impl/src.hpp>
