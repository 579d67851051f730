// The test binary is built with REMORA_SEPARATE_COMPILATION: remora's non-template code is
// compiled here, once (the examples use the header-only default).
#include <remora/impl/src.hpp>
