#pragma once
// remora::optim::DistributedOptimizer: steps parameters where they live, with the gradients a
// distributed backward pass accumulated for them (PyTorch's DistributedOptimizer).
//
//   remora::optim::DistributedOptimizer<torch::optim::SGD> opt(m.remote_parameters(),
//                                                              torch::optim::SGDOptions(0.05));
//   { remora::autograd::Context ctx; ...; remora::autograd::backward(ctx, {loss}); opt.step(ctx); }
//
// The constructor makes one Opt on each worker that owns some of the parameters (a remote call
// per owner; Opt's options travel as torch's serialized archive). step(ctx) asks every owner at
// once to apply ctx's gradients there: each sets `.grad` of its parameters to them, steps, and
// clears `.grad` again, under a lock, so trainers that share a parameter server step one at a
// time. The owners must have DistributedOptimizer<Opt> compiled in (an SPMD program does).
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include <torch/optim.h>
#include <torch/serialize/archive.h>

#include "remora/autograd/context.hpp"
#include "remora/core/when_all.hpp"
#include "remora/rref/remote.hpp"
#include "remora/rref/rref.hpp"

namespace remora::optim {

namespace detail {

// Applies the gradients of autograd context `context` on this owner.
REMORA_DECL void apply_context_grads(std::uint64_t context, const std::vector<torch::Tensor>& params);

// One step at a time for all optimizers of a kind in the process, as PyTorch's _LocalOptimizer:
// two trainers' optimizers may hold the same parameters.
template <class Opt>
inline std::mutex step_lock;

// An Opt on the owner of the parameters it steps. Called through RRef proxies (only the RRef's id
// travels, no fork of it).
template <class Opt>
struct LocalOptimizer {
  std::vector<torch::Tensor> params;  // the owner's own tensors (the module's parameters)
  std::unique_ptr<Opt> optimizer;

  void ready() {}
  void step(std::uint64_t context) {
    std::lock_guard lock(step_lock<Opt>);
    apply_context_grads(context, params);
    struct ClearGrads {
      std::vector<torch::Tensor>& params;
      ~ClearGrads() {
        for (auto& p : params) p.mutable_grad() = torch::Tensor();
      }
    } clear{params};
    optimizer->step();
  }
};

template <class Options>
std::string encode_options(const Options& options) {
  torch::serialize::OutputArchive archive;
  options.serialize(archive);
  std::ostringstream out;
  archive.save_to(out);
  return out.str();
}

template <class Options>
Options decode_options(const std::string& bytes) {
  torch::serialize::InputArchive archive;
  std::istringstream in(bytes);
  archive.load_from(in);
  // Every field is read back; the constructor's argument (SGD's required lr) is overwritten.
  Options options = [] {
    if constexpr (std::is_default_constructible_v<Options>)
      return Options();
    else
      return Options(0.0);
  }();
  options.serialize(archive);
  return options;
}

template <class Opt, class Options>
std::shared_ptr<LocalOptimizer<Opt>> make_local_optimizer(std::vector<RRef<torch::Tensor>> params, std::string options) {
  auto local = std::make_shared<LocalOptimizer<Opt>>();
  for (auto& p : params) local->params.push_back(p.local_value());
  local->optimizer = std::make_unique<Opt>(local->params, decode_options<Options>(options));
  return local;
}

}  // namespace detail

template <class Opt>
class DistributedOptimizer {
 public:
  // One Opt(params owned there, options) on each owner of `params`. Throws RemoteError when one
  // cannot be made there, remora::Error for an empty list.
  template <class Options>
  DistributedOptimizer(const std::vector<RRef<torch::Tensor>>& params, const Options& options) {
    if (params.empty()) throw Error("remora::optim::DistributedOptimizer: no parameters");
    agent_ = &remora::detail::RRefAccess::context(params.front())->agent();
    std::map<std::string, std::vector<RRef<torch::Tensor>>> by_owner;
    for (const auto& p : params) by_owner[p.owner_name()].push_back(p);
    const std::string bytes = detail::encode_options(options);
    for (auto& [owner, mine] : by_owner) {
      locals_.push_back(
          remora::remote<&detail::make_local_optimizer<Opt, Options>>(*agent_, owner, std::move(mine), bytes));
    }
    // Wait for them, so that an optimizer that cannot be made is an error here.
    for (const auto& l : locals_) l.rpc_sync().template call<&detail::LocalOptimizer<Opt>::ready>();
  }

  // Every owner applies ctx's gradients to its parameters, at once; returns when all did. Throws
  // RemoteError (naming the owner) if one failed, WorkerLost if one is gone.
  void step(const autograd::Context& ctx) {
    std::vector<Future<void>> steps;
    for (const auto& l : locals_)
      steps.push_back(l.rpc_async().template call<&detail::LocalOptimizer<Opt>::step>(ctx.id()));
    auto all = when_all(std::move(steps));
    remora::detail::AgentAccess::await_sync(*agent_, all, locals_.size());
    all.get();
  }

 private:
  Agent* agent_ = nullptr;
  std::vector<RRef<detail::LocalOptimizer<Opt>>> locals_;
};

}  // namespace remora::optim

#if REMORA_HEADER_ONLY
#include "remora/optim/impl/distributed_optimizer.ipp"
#endif
