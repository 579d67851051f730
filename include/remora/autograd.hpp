#pragma once
// Distributed autograd: remora::autograd::Context, backward, get_gradients
// (<remora/autograd/context.hpp>), and the DistributedOptimizer that steps parameters where they
// live (<remora/optim/distributed_optimizer.hpp>). Includes <remora/rref.hpp>.
#include "remora/rref.hpp"

#include "remora/autograd/context.hpp"
#include "remora/optim/distributed_optimizer.hpp"
