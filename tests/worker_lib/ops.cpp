// A library for remora-worker --load: REMORA_EXPOSE registers its functions when it is loaded.
#include "ops.hpp"

#include <remora/remora.hpp>

REMORA_EXPOSE(&worker_ops::triple, &worker_ops::where_am_i);
