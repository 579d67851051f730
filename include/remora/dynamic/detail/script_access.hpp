#pragma once
// Lets the owner reach the TorchScript module behind an interface object (RemoteModule<I>::load
// of a script, and ScriptRemoteModule's ScriptModule): remote_parameters() and train() of such a
// module are the script's (module/detail/module_shims.hpp).
#include <torch/csrc/jit/api/module.h>

namespace remora::detail {

struct ScriptAccess {
  virtual ~ScriptAccess() = default;
  virtual torch::jit::Module& jit_module() = 0;
};

}  // namespace remora::detail
