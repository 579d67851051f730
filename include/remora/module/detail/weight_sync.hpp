#pragma once
// Weight sync: a trainer's named tensors (model->named_parameters(), named_buffers()) copied in
// place into remote modules, one or a whole group. Every module's names and shapes are fetched
// and checked first, so a mismatch fails before any tensor is sent; then each module's worker
// receives the tensors once and copies them into its own (on one host CPU tensors through shared
// memory, in pieces that overlap; GPU tensors straight from the caller's memory, lent by CUDA IPC
// handle for the load's duration). Both steps start on the caller's thread; later CPU loads leave
// from the agent's decoder thread (WindowedLoads), never from its pool.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <torch/ordered_dict.h>

#include "remora/core/when_all.hpp"
#include "remora/module/detail/module_shims.hpp"
#include "remora/wire/lending_calls.hpp"

namespace remora::detail {

// A module's parameter shapes and buffer shapes, by dotted name.
using StateShapes = std::pair<std::map<std::string, std::vector<std::int64_t>>,
                              std::map<std::string, std::vector<std::int64_t>>>;

template <class I>
struct StateShapesShim {
  static Future<StateShapes> call(RRefId id) {
    return typed_value<I>(rref_msg::requested_state(id)).then([](const std::shared_ptr<I>& obj) {
      return TrainableModule<I>(obj).shapes();
    });
  }
  static constexpr Identity identity{mix_id("remora/module/state_shapes", type_identity_of<I>.id),
                                     "Module::state_shapes"};
};

// `named` as a state to send: detached (the copy on the module is no step of this autograd graph).
inline std::map<std::string, torch::Tensor> state_of(const torch::OrderedDict<std::string, torch::Tensor>& named) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& item : named) out.emplace(item.key(), item.value().detach());
  return out;
}

// `state` cut into the loads sent to each module: GPU tensors first, lent in place, in pieces of at
// most `gpu_piece` bytes (few loads, one GPU wait each, side by side, none past the frame limit:
// 14.5 GB of GPU state is 15 loads); then CPU tensors in pieces of at most `cpu_piece` (a larger
// tensor alone), so that the module copies one piece out of shared memory (or the socket) while
// the next is being written (on one host a CPU state crosses by two copies, which then overlap).
// Never a piece of both kinds.
using StatePiece = std::map<std::string, torch::Tensor>;
inline constexpr std::uint64_t kLoadChunkBytes = std::uint64_t{64} << 20;
inline std::vector<StatePiece> chunks_of(const std::map<std::string, torch::Tensor>& state, std::uint64_t gpu_piece,
                                         std::uint64_t cpu_piece = kLoadChunkBytes) {
  std::vector<StatePiece> chunks;
  for (const bool gpu : {true, false}) {
    const std::uint64_t piece = gpu ? gpu_piece : cpu_piece;
    bool open = false;  // whether chunks.back() takes tensors of this kind
    std::uint64_t filled = 0;
    for (const auto& [name, t] : state) {
      if (t.device().is_cpu() == gpu) continue;
      if (!open || (!chunks.back().empty() && filled + t.nbytes() > piece)) {  // (a larger tensor: a piece of its own)
        chunks.emplace_back();
        open = true;
        filled = 0;
      }
      chunks.back().emplace(name, t);
      filled += t.nbytes();
    }
  }
  if (chunks.empty()) chunks.emplace_back();  // an empty state is still checked and loaded
  return chunks;
}
inline bool on_gpu(const StatePiece& piece) { return !piece.empty() && !piece.begin()->second.device().is_cpu(); }
inline std::uint64_t piece_bytes(const StatePiece& piece) {
  std::uint64_t n = 0;
  for (const auto& [name, t] : piece) n += t.nbytes();
  return n;
}

// Throws Error naming the first mismatch of `state` against the module at `where` ("worker/device"):
// a name the module has no parameter or buffer of, a shape that differs, or a parameter left out
// (buffers may be left out: named_parameters() carries none).
inline void check_state_fits(const StateShapes& module, const std::map<std::string, torch::Tensor>& state,
                             const std::string& where) {
  const auto fail = [&](const std::string& why) {
    throw Error("remora: load_state_dict on " + where + ": " + why + "; nothing was sent");
  };
  for (const auto& [name, t] : state) {
    const std::vector<std::int64_t>* shape = nullptr;
    if (auto p = module.first.find(name); p != module.first.end()) shape = &p->second;
    if (auto b = module.second.find(name); b != module.second.end()) shape = &b->second;
    if (!shape) fail("the module has no parameter or buffer '" + name + "'");
    if (!t.sizes().equals(*shape))
      fail("'" + name + "' has shape " + c10::str(t.sizes()) + " here and " + c10::str(c10::IntArrayRef(*shape)) +
           " in the module");
  }
  for (const auto& entry : module.first)
    if (!state.count(entry.first)) fail("the state has no parameter '" + entry.first + "'");
}

// Lists Shim's function as one that only reads its GPU tensors while it runs, in every program
// that sends or serves it (wire/lending_calls.hpp).
template <class Shim>
struct LendsTo {
  static inline const bool allowed = (wire::LendingCalls::allow(Shim::identity.id), true);
};

// Flags the call `frame` as lending its GPU tensors (wire::kLendsDeviceTensors).
inline void offer_device_tensors(wire::OutFrame& frame) {
  wire::FrameHeader h;
  std::memcpy(&h, frame.head.data(), sizeof h);
  h.flags |= wire::kLendsDeviceTensors;
  std::memcpy(frame.head.data(), &h, sizeof h);
}

// Sends `piece` to `module` as one load. A load that cannot be sent (no device map to that worker,
// say) fails its own future.
template <class I>
Future<void> send_load(const RRef<I>& module, const StatePiece& piece) {
  using Load = LoadStateShim<I>;
  try {
    const auto& core = RRefAccess::core(module);
    Agent& agent = RRefAccess::context(module)->agent();
    const auto rid = AgentAccess::next_request_id(agent);
    WireScope scope(&agent, core.owner);
    auto frame = encode_call<&Load::call>(agent, rid, Load::identity, core.id, piece, true);
    // The module reads the tensors only while the load runs: on the caller's host its GPU
    // copies them straight from the caller's memory (cuda_ipc.hpp), with no copy in between.
    offer_device_tensors(frame);
    bool sent = false;
    auto f = start_call<void>(agent, core.owner, Load::identity.name, rid, std::move(frame), CallOptions{}.timeout,
                              nullptr, &sent);
    if (sent) scope.commit();
    return f;
  } catch (...) {
    return make_exceptional_future<void>(std::current_exception());
  }
}

// The CPU loads to the modules of one worker, at most `window` bytes of them in flight at once (a
// piece alone may be more): the worker counts a load's bytes against its budget for this worker
// (Options::max_pending_bytes_per_peer) until it has copied them, and sent all at once a state
// past that budget was refused as Overloaded. An answer is counted on the thread that completes
// it, and the next loads leave from the agent's decoder thread: never from the pool, whose threads
// may all be waiting in load_state_dict. The first failure stops the sending and is the result.
template <class I>
class WindowedLoads : public std::enable_shared_from_this<WindowedLoads<I>> {
 public:
  // `loads`: each module with the index of a piece of `pieces` to send it.
  WindowedLoads(Agent& agent, std::vector<std::pair<RRef<I>, std::size_t>> loads,
                std::shared_ptr<const std::vector<StatePiece>> pieces, std::uint64_t window)
      : agent_(agent), loads_(std::move(loads)), pieces_(std::move(pieces)), window_(window) {
    done_.set_dispatch(&AgentAccess::dispatch_to_pool, &agent_);  // users' continuations: on the pool
  }

  Future<void> start() {
    auto f = done_.get_future();
    send_more();
    return f;
  }

 private:
  void send_more() {
    for (;;) {
      std::size_t k;
      std::uint64_t bytes;
      {
        std::lock_guard lock(mu_);
        if (next_ == loads_.size() || error_) return;
        bytes = piece_bytes((*pieces_)[loads_[next_].second]);
        if (in_flight_ > 0 && in_flight_ + bytes > window_) return;  // an answer sends more
        in_flight_ += bytes;
        ++outstanding_;
        k = next_++;
      }
      auto f = send_load(loads_[k].first, (*pieces_)[loads_[k].second]);
      FutureAccess::on_ready_inline(f, [self = this->shared_from_this(), f, bytes] { self->answered(bytes, f.exception()); });
    }
  }
  void answered(std::uint64_t bytes, std::exception_ptr error) {
    bool finished = false, more = false;
    {
      std::lock_guard lock(mu_);
      in_flight_ -= bytes;
      --outstanding_;
      if (error && !error_) error_ = error;  // nothing more is sent
      finished = outstanding_ == 0 && (error_ || next_ == loads_.size());
      more = !finished && !error_ && next_ < loads_.size();
      error = error_;
    }
    if (more) return AgentAccess::decode_off_io(agent_, [self = this->shared_from_this()] { self->send_more(); });
    if (!finished) return;
    if (error) return done_.set_exception(error);
    done_.set_value();
  }

  Agent& agent_;
  const std::vector<std::pair<RRef<I>, std::size_t>> loads_;
  std::shared_ptr<const std::vector<StatePiece>> pieces_;
  const std::uint64_t window_;
  std::mutex mu_;
  std::size_t next_ = 0;  // the next of loads_ to send
  std::uint64_t in_flight_ = 0;
  std::size_t outstanding_ = 0;
  std::exception_ptr error_;  // the first load that failed
  Promise<void> done_;
};

// Loads `named` into every module of `modules` (`points[i]` names module i in errors). First,
// on this thread, every module's shapes are fetched (one small call each, waited for here) and
// checked: a mismatch throws before any tensor is sent. Then the GPU loads are encoded and sent
// from this thread, so their tensors are exported after the work queued on its current stream,
// and the CPU loads start, at most half of this worker's Options::max_pending_bytes_per_peer in
// flight to each worker (the modules' workers are assumed to have this worker's budget). The
// returned future completes when every module has copied, or holds the first failure. `named`'s
// tensors are read until then: leave them unchanged until the future completes.
template <class I>
Future<void> load_named_state(const std::vector<RRef<I>>& modules, const std::vector<std::string>& points,
                              const torch::OrderedDict<std::string, torch::Tensor>& named) {
  using Shapes = StateShapesShim<I>;
  using Load = LoadStateShim<I>;
  (void)AutoRegisterAs<&Shapes::call, Shapes::identity>::registered;
  (void)AutoRegisterAs<&Load::call, Load::identity>::registered;
  (void)LendsTo<Load>::allowed;
  std::vector<Future<StateShapes>> asked;
  for (const auto& m : modules) {
    RRefAccess::check_usable(m, "load_state_dict");
    const auto& core = RRefAccess::core(m);
    asked.push_back(call_as<&Shapes::call>(RRefAccess::context(m)->agent(), core.owner, Shapes::identity,
                                           CallOptions{}, core.id));
  }
  const std::vector<StateShapes> shapes = when_all(std::move(asked)).get();
  const auto state = state_of(named);
  for (std::size_t i = 0; i < modules.size(); ++i) check_state_fits(shapes[i], state, points.at(i));
  // GPU pieces: 1 GiB, or less under a lower frame limit (a piece carries a little more than its
  // tensors). CPU pieces: 64 MiB, or less where the window holds fewer than two.
  if (modules.empty()) return make_ready_future();
  const Options& options = RRefAccess::context(modules[0])->agent().options();
  const std::uint64_t window = std::max<std::uint64_t>(options.max_pending_bytes_per_peer / 2, 1);
  const auto pieces = std::make_shared<const std::vector<StatePiece>>(
      chunks_of(state, std::min<std::uint64_t>(std::uint64_t{1} << 30, options.limits.max_frame_bytes / 2),
                std::min(kLoadChunkBytes, std::max<std::uint64_t>(window / 2, 1))));
  std::vector<Future<void>> loads;
  std::map<std::uint32_t, std::vector<std::pair<RRef<I>, std::size_t>>> cpu_loads;  // by worker: one window each
  for (const auto& m : modules) {
    std::size_t k = 0;
    for (; k < pieces->size() && on_gpu((*pieces)[k]); ++k) loads.push_back(send_load(m, (*pieces)[k]));
    for (; k < pieces->size(); ++k) cpu_loads[RRefAccess::core(m).owner].emplace_back(m, k);
  }
  for (auto& [owner, to_owner] : cpu_loads) {
    Agent& agent = RRefAccess::context(to_owner.front().first)->agent();
    loads.push_back(std::make_shared<WindowedLoads<I>>(agent, std::move(to_owner), pieces, window)->start());
  }
  return when_all(std::move(loads));
}

}  // namespace remora::detail
