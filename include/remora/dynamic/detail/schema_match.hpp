#pragma once
// Arguments against FunctionSchemas: which overload of an operator accepts a call, as
// torch.distributed.rpc's matchBuiltinOp does on the caller, and the same check again where the
// call runs (the stack came from the network).
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <ATen/core/function_schema.h>
#include <ATen/core/ivalue.h>
#include <ATen/core/jit_type.h>

#include "remora/config.hpp"
#include "remora/dynamic/kwargs.hpp"

namespace remora::detail {

// Makes `stack` (the positional arguments) the full argument list of `schema`: keyword
// arguments and defaults appended, ints widened where a float is wanted. Returns why not if the
// arguments do not fit (then `stack` is unspecified). `complete`: `stack` is already the full
// list (keyword-only arguments included), as a callee receives it.
REMORA_DECL std::optional<std::string> fit_schema(const c10::FunctionSchema& schema, std::vector<c10::IValue>& stack,
                                                  const Kwargs* kwargs, bool complete = false);

// "Tensor, int, float[]": the types of `values`, for messages.
REMORA_DECL std::string describe_types(std::span<const c10::IValue> values, const Kwargs* kwargs);

// What a call of `schema` gives: its one return, a tuple of several, None for none.
REMORA_DECL c10::TypePtr result_type(const c10::FunctionSchema& schema);

// The result type of `schema` against what the caller asked for (`wanted`, null: IValue):
// a SchemaMismatch naming both unless one is a subtype of the other.
REMORA_DECL void check_result(const c10::FunctionSchema& schema, const c10::TypePtr& wanted,
                              std::string_view wanted_name);

// Whether an int passed for an argument of type `t` is widened to a float (float, float?).
REMORA_DECL bool wants_float(const c10::TypePtr& t);

// "aten::add.Tensor" for the schema's operator and overload.
REMORA_DECL std::string qualified_name(const c10::FunctionSchema& schema);

}  // namespace remora::detail

#if REMORA_HEADER_ONLY
#include "remora/dynamic/impl/schema_match.ipp"
#endif
