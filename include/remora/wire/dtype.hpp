#pragma once
// Tensor element types as they travel. The wire numbers are remora's own, not c10::ScalarType's,
// so peers built against different libtorch versions agree; a dtype one side lacks is a clear
// error rather than a silent reinterpretation.
#include <cstdint>
#include <optional>

#include <c10/core/ScalarType.h>
#include <torch/version.h>

namespace remora::wire {

#define REMORA_WIRE_DTYPES_BASE(_) \
  _(Bool, 1)                       \
  _(Byte, 2)                       \
  _(Char, 3)                       \
  _(Short, 4)                      \
  _(Int, 5)                        \
  _(Long, 6)                       \
  _(Half, 7)                       \
  _(BFloat16, 8)                   \
  _(Float, 9)                      \
  _(Double, 10)                    \
  _(ComplexHalf, 11)               \
  _(ComplexFloat, 12)              \
  _(ComplexDouble, 13)

#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 3)
#define REMORA_WIRE_DTYPES_NEW(_) \
  _(Float8_e5m2, 14)              \
  _(Float8_e4m3fn, 15)            \
  _(UInt16, 16)                   \
  _(UInt32, 17)                   \
  _(UInt64, 18)
#elif TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 1
#define REMORA_WIRE_DTYPES_NEW(_) \
  _(Float8_e5m2, 14)              \
  _(Float8_e4m3fn, 15)
#else
#define REMORA_WIRE_DTYPES_NEW(_)
#endif

// The wire number of a dtype, or nullopt for one that cannot travel (quantized, bit-packed).
inline std::optional<std::uint8_t> to_wire(c10::ScalarType t) {
  switch (t) {
#define REMORA_CASE(name, n) \
  case c10::ScalarType::name: return std::uint8_t{n};
    REMORA_WIRE_DTYPES_BASE(REMORA_CASE)
    REMORA_WIRE_DTYPES_NEW(REMORA_CASE)
#undef REMORA_CASE
    default: return std::nullopt;
  }
}

// The dtype of a wire number, or nullopt for a number this build does not know.
inline std::optional<c10::ScalarType> from_wire(std::uint8_t n) {
  switch (n) {
#define REMORA_CASE(name, n) \
  case n: return c10::ScalarType::name;
    REMORA_WIRE_DTYPES_BASE(REMORA_CASE)
    REMORA_WIRE_DTYPES_NEW(REMORA_CASE)
#undef REMORA_CASE
    default: return std::nullopt;
  }
}

}  // namespace remora::wire

// The tables are this header's own: users' code never sees them.
#undef REMORA_WIRE_DTYPES_BASE
#undef REMORA_WIRE_DTYPES_NEW
