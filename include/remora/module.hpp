#pragma once
// RemoteModule<I>: a torch::nn::Module that lives on another worker, on its CPU or a GPU, called
// through the interface I. Includes <remora/rref.hpp>.
#include "remora/rref.hpp"

#include "remora/module/remote_device.hpp"
#include "remora/module/remote_module.hpp"
#include "remora/module/to_device.hpp"
