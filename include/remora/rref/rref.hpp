#pragma once
// RRef<T>: a reference to a value of type T that lives on one worker (its owner). Copies of an
// RRef in one process share one reference; sending an RRef in a call or a result gives the
// receiver its own reference (a fork). The owner keeps the value exactly as long as some RRef
// to it exists anywhere, following PyTorch's RRef protocol (see detail/context.hpp).
//
//   remora::RRef<torch::Tensor> r = remora::remote<&make_table>("ps", 1000, 64);
//   torch::Tensor t = r.to_here();                      // a copy, on this worker
//   int k = counter.rpc_sync().call<&Counter::add>(5);  // runs on the owner
#include <chrono>
#include <memory>
#include <string>

#include "remora/rref/detail/shims.hpp"

namespace remora {

template <class T>
class RRef;

namespace detail {
enum class ProxyKind { sync, async, remote };
template <class T, ProxyKind K>
class RRefProxy;
template <class T>
RRef<T> make_rref(std::shared_ptr<RRefCore> core);
struct RRefAccess;

// Calls of a method by name on the value an RRef refers to, for the value types whose layer
// offers them: that layer specializes this with `using provided = void;` and
//   template <class R, class... As> static R call(const RRef<T>&, std::string_view, As&&...);
// (dynamic/script_object.hpp does, for torchbind objects). The RRef layer knows no such type.
template <class T>
struct CallByName {};
template <class T>
concept HasCallByName = requires { typename CallByName<T>::provided; };
}  // namespace detail

template <class T>
class RRef {
 public:
  using value_type = T;

  RRef() = default;  // refers to nothing: valid() is false

  bool valid() const noexcept { return core_ != nullptr; }
  bool is_owner() const { return checked().owned != nullptr; }
  WorkerInfo owner() const { return context()->agent().get_worker_info(checked().owner); }
  std::string owner_name() const { return owner().name; }
  // The owner knows of this reference (always true on the owner).
  bool confirmed_by_owner() const { return checked().confirmed.load(); }

  // A copy of the value on this worker. Waits for the value to be created if need be; raises the
  // RemoteError of a failed creation, WorkerLost if the owner died, Timeout after `timeout`
  // (0: the agent's rpc_timeout).
  Future<T> to_here_async(std::chrono::milliseconds timeout = std::chrono::milliseconds(0)) const
    requires Serializable<T>;
  T to_here(std::chrono::milliseconds timeout = std::chrono::milliseconds(0)) const
    requires Serializable<T>;

  // The value itself; only on the owner (elsewhere: an Error that says to use to_here()).
  T& local_value() const;

  // Proxies that run a method of T on the owner: r.rpc_sync().call<&T::method>(args...).
  // rpc_sync gives the result, rpc_async a Future of it, remote an RRef to it (on the owner).
  detail::RRefProxy<T, detail::ProxyKind::sync> rpc_sync(std::chrono::milliseconds timeout = {}) const;
  detail::RRefProxy<T, detail::ProxyKind::async> rpc_async(std::chrono::milliseconds timeout = {}) const;
  detail::RRefProxy<T, detail::ProxyKind::remote> remote(std::chrono::milliseconds timeout = {}) const;

  // A method by name, run on the owner, for values whose layer offers it (detail::CallByName: a
  // torchbind object made by remote_object, <remora/dynamic.hpp>); R is the result as C++
  // (c10::IValue: untyped).
  template <class R = c10::IValue, class... As>
    requires detail::HasCallByName<T>
  R call(std::string_view method, As&&... args) const {
    return detail::CallByName<T>::template call<R>(*this, method, std::forward<As>(args)...);
  }

  // Sending and receiving inside remora messages (forks, as PyTorch's pickling of RRefs).
  template <class Archive>
  void save(Archive& ar) const;
  template <class Archive>
  void load(Archive& ar);

  friend bool operator==(const RRef& a, const RRef& b) {
    return a.core_ == b.core_ || (a.core_ && b.core_ && a.core_->id == b.core_->id);
  }

 private:
  template <class U>
  friend RRef<U> detail::make_rref(std::shared_ptr<detail::RRefCore> core);
  template <class U, detail::ProxyKind K>
  friend class detail::RRefProxy;
  friend struct detail::RRefAccess;

  detail::RRefCore& checked() const {
    if (!core_) throw Error("remora: use of an empty RRef");
    return *core_;
  }
  std::shared_ptr<detail::RRefContext> context() const {
    auto ctx = checked().ctx.lock();
    if (!ctx) throw Error("remora: the agent this RRef belongs to no longer exists");
    return ctx;
  }
  // Throws if this reference can no longer be used (creation failed, released at shutdown).
  void check_usable(std::string_view what) const {
    auto& c = checked();
    // `released` before the failure: an owner's loss sets the failure, then `released`.
    const bool released = c.released.load();
    if (auto e = c.failed()) std::rethrow_exception(e);
    if (!c.owned && released)
      throw Error("remora: " + std::string(what) + " on an RRef released by shutdown or whose owner was lost");
  }

  std::shared_ptr<detail::RRefCore> core_;
};

namespace detail {

// What the layers above the RRef layer (modules, the optimizer) use of an RRef besides its public
// interface: its shared state, its agent's context, and the check that it can still be used.
struct RRefAccess {
  template <class T>
  static RRefCore& core(const RRef<T>& r) {
    return r.checked();
  }
  template <class T>
  static const std::shared_ptr<RRefCore>& core_ptr(const RRef<T>& r) {
    return r.core_;
  }
  template <class T>
  static std::shared_ptr<RRefContext> context(const RRef<T>& r) {
    return r.context();
  }
  template <class T>
  static void check_usable(const RRef<T>& r, std::string_view what) {
    r.check_usable(what);
  }
};

template <class T>
RRef<T> make_rref(std::shared_ptr<RRefCore> core) {
  RRef<T> r;
  r.core_ = std::move(core);
  return r;
}

template <class T, ProxyKind K>
class RRefProxy {
 public:
  RRefProxy(RRef<T> rref, std::chrono::milliseconds timeout) : rref_(std::move(rref)), timeout_(timeout) {}

  template <auto M, class... As>
  auto call(As&&... args) const;

 private:
  RRef<T> rref_;
  std::chrono::milliseconds timeout_;
};

}  // namespace detail

// ---------------------------------------------------------------------------------------------

template <class T>
Future<T> RRef<T>::to_here_async(std::chrono::milliseconds timeout) const
  requires Serializable<T>
{
  check_usable("to_here");
  auto& c = checked();
  if (c.owned) {
    return detail::typed_value<T>(c.owned).then([](const std::shared_ptr<T>& v) { return T(*v); });
  }
  using Shim = detail::FetchShim<T>;
  (void)detail::AutoRegisterAs<&Shim::call, Shim::identity>::registered;
  auto ctx = context();
  // This reference lives until the owner answered.
  return detail::call_keeping<&Shim::call>(ctx->agent(), core_, c.owner, Shim::identity, CallOptions{timeout}, c.id);
}

template <class T>
T RRef<T>::to_here(std::chrono::milliseconds timeout) const
  requires Serializable<T>
{
  auto f = to_here_async(timeout);
  if (is_owner()) {
    auto limit = timeout.count() > 0 ? timeout : context()->agent().options().rpc_timeout;
    if (!f.wait_for(limit))
      throw Timeout(owner_name(), "RRef::to_here", "the value was not created within " +
                                                       std::to_string(limit.count()) + " ms");
  }
  return std::move(f).get();
}

template <class T>
T& RRef<T>::local_value() const {
  auto& c = checked();
  if (!c.owned) {
    auto ctx = context();
    throw Error("remora: local_value() on worker '" + ctx->agent().self().name + "' for an RRef owned by '" +
                ctx->agent().get_worker_info(c.owner).name + "': only the owner has the value; use to_here()");
  }
  auto f = detail::typed_value<T>(c.owned);
  auto limit = context()->agent().options().rpc_timeout;
  if (!f.wait_for(limit))
    throw Timeout(owner_name(), "RRef::local_value",
                  "the value was not created within " + std::to_string(limit.count()) + " ms");
  return *f.get();  // the owner state keeps the value alive as long as this RRef
}

template <class T>
detail::RRefProxy<T, detail::ProxyKind::sync> RRef<T>::rpc_sync(std::chrono::milliseconds timeout) const {
  return {*this, timeout};
}
template <class T>
detail::RRefProxy<T, detail::ProxyKind::async> RRef<T>::rpc_async(std::chrono::milliseconds timeout) const {
  return {*this, timeout};
}
template <class T>
detail::RRefProxy<T, detail::ProxyKind::remote> RRef<T>::remote(std::chrono::milliseconds timeout) const {
  return {*this, timeout};
}

namespace detail {

// Makes the caller's side of a new RRef created on `owner` by the message `send(id, fork, has_fork)`.
template <class V, class Send>
RRef<V> start_remote(Agent& agent, std::uint32_t owner, Send&& send) {
  auto ctx = rref_context(agent);
  const RRefId id = ctx->new_id();
  std::shared_ptr<RRefCore> core;
  if (owner == agent.self().id) {
    core = ctx->make_owned(ctx->owner_state(id), type_identity_of<V>.id);
  } else {
    core = ctx->make_user(id, ctx->new_id(), owner, type_identity_of<V>.id);
  }
  auto f = core->owned ? send(id, ForkId{}, false) : send(id, core->fork, true);
  // The core stays alive until the owner answered, so its deletion never overtakes its creation.
  f.on_ready([f, core] { RRefContext::creation_answered(core, f.exception()); });
  return make_rref<V>(std::move(core));
}

template <class T, ProxyKind K>
template <auto M, class... As>
auto RRefProxy<T, K>::call(As&&... args) const {
  check_method<T, M, As...>();
  using Tr = method_traits<decltype(M)>;
  rref_.check_usable("an RRef proxy call");
  auto& c = rref_.checked();
  auto ctx = rref_.context();
  auto& agent = ctx->agent();
  if constexpr (K == ProxyKind::remote) {
    using Shim = RemoteMethodShim<T, M>;
    using V = rref_value_t<typename Tr::result>;
    static_assert(!std::is_void_v<V>, "remora: remote() of a method that returns void: use rpc_async()");
    (void)AutoRegisterAs<&Shim::call, Shim::identity>::registered;
    return start_remote<V>(agent, c.owner, [&](RRefId id, ForkId fork, bool has_fork) {
      return detail::call_keeping<&Shim::call>(agent, rref_.core_, c.owner, Shim::identity, CallOptions{timeout_},
                                                       c.id, id, fork, has_fork, std::forward<As>(args)...);
    });
  } else {
    using Shim = MethodShim<T, M>;
    (void)AutoRegisterAs<&Shim::call, Shim::identity>::registered;
    auto f = detail::call_keeping<&Shim::call>(agent, rref_.core_, c.owner, Shim::identity, CallOptions{timeout_},
                                                      c.id, std::forward<As>(args)...);
    if constexpr (K == ProxyKind::sync)
      return std::move(f).get();
    else
      return f;
  }
}

// An RRef owned by this worker, holding `value` (already created).
template <class T>
RRef<T> make_local_rref(RRefContext& ctx, std::shared_ptr<T> value) {
  const RRefId id = ctx.new_id();
  auto state = ctx.owner_state(id);
  state->set_value(type_identity_of<T>.id, type_identity_of<T>.name, std::move(value));
  ctx.mark_created(id);
  return make_rref<T>(ctx.make_owned(std::move(state), type_identity_of<T>.id));
}

}  // namespace detail

template <class T>
template <class Archive>
void RRef<T>::save(Archive& ar) const {
  auto ctx = detail::wire_rref_context("sent");
  auto& c = checked();
  if (c.ctx.lock() != ctx) throw SerializationError("an RRef can only be sent by the agent it belongs to");
  check_usable("sending");
  ar(ctx->fork_for_peer(core_));
}

template <class T>
template <class Archive>
void RRef<T>::load(Archive& ar) {
  detail::WireRRef w;
  ar(w);
  core_ = detail::wire_rref_context("received")->receive(w, type_identity_of<T>.id, type_identity_of<T>.name);
}

}  // namespace remora
