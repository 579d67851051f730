// Every public header of remora, header-only (the default mode), in one translation unit: its
// object file must define nothing remora-owned that two such translation units would both define
// (check_inline.py).
#include <remora/remora.hpp>
#include <remora/mesh.hpp>
