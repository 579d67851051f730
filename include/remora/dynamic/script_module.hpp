#pragma once
// A TorchScript module (saved by torch.jit.save from Python or C++) loaded on its owner: what
// ScriptRemoteModule and RemoteModule<I>::load hold there. Its methods run by name, their
// arguments checked against the method's schema; a method that returns a TorchScript Future
// (torch.jit._fork) answers when that completes, without holding a pool thread.
#include <string>
#include <vector>

#include <torch/csrc/jit/api/module.h>

#include "remora/config.hpp"
#include "remora/core/future.hpp"
#include "remora/dynamic/detail/script_access.hpp"

namespace remora {

class ScriptModule : public detail::ScriptAccess {
 public:
  ScriptModule(torch::jit::Module module, std::string path) : module_(std::move(module)), path_(std::move(path)) {}
  virtual ~ScriptModule() = default;

  // The module's forward with `args` by position (what RemoteModule<ScriptModule>::forward runs).
  virtual c10::IValue forward(std::vector<c10::IValue> args) { return run_method("forward", std::move(args)).get(); }

  // `method` with the full argument list `stack` (self excluded), checked against its schema
  // first: a SchemaMismatch names the method, its schema and the file.
  REMORA_DECL Future<c10::IValue> run_method(std::string method, std::vector<c10::IValue> stack);
  // `method` with a stack already fitted to its schema (by fit_schema): what a caller in this
  // process that checked its arguments runs, without the check run_method makes.
  REMORA_DECL Future<c10::IValue> run_fitted(torch::jit::Method& method, std::vector<c10::IValue> stack);
  // Each method's schema without self, as text: "forward(Tensor x, float s) -> Tensor".
  REMORA_DECL std::vector<std::string> method_schemas() const;

  torch::jit::Module& module() { return module_; }
  torch::jit::Module& jit_module() override { return module_; }
  const std::string& path() const { return path_; }

 private:
  torch::jit::Module module_;
  std::string path_;
};

namespace detail {
// Whether `path` names a torch.export / AOTInductor package (.pt2) rather than a TorchScript file.
inline bool is_exported_package(const std::string& path) {
  return path.size() > 4 && path.compare(path.size() - 4, 4, ".pt2") == 0;
}
// Loads `path` (checked against the serving policy by its caller, ScriptFactory) on this worker onto `device` (a SchemaMismatch-free Error naming the file and the
// worker if it cannot be read; a .pt2 package is refused: it loads only as RemoteModule<I>).
REMORA_DECL torch::jit::Module load_script_file(const std::string& path, const c10::Device& device);
// A method's schema without its self argument.
REMORA_DECL c10::FunctionSchema without_self(const c10::FunctionSchema& method);
}  // namespace detail

}  // namespace remora

#if REMORA_HEADER_ONLY
#include "remora/dynamic/impl/script_module.ipp"
#endif
