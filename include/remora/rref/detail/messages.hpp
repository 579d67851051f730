#pragma once
// The RRef protocol's messages. They are ordinary remora calls to the library's own functions:
// they get request ids, timeouts, WorkerLost on a dead peer, and graceful shutdown waits for
// them like for any call.
//   fork_request(rref, fork)        user -> owner   a third worker received a fork; owner records it
//   child_accept(fork)              user -> parent  the owner knows the fork; the parent may let go
//   user_delete(rref, fork, abandon) user -> owner  the fork is gone (abandon: the creation failed)
// They are compiled once (rref/impl/context.ipp), not in every translation unit that uses RRefs.
#include <memory>

#include "remora/rref/detail/context.hpp"

namespace remora::detail {

// The agent's RRef tables, made on first use.
REMORA_DECL std::shared_ptr<RRefContext> rref_context(Agent& agent);
// The RRef tables of the agent serving the call this thread runs (an Error outside one).
REMORA_DECL std::shared_ptr<RRefContext> serving_rref_context();
// The RRef tables of the agent whose message this thread encodes or decodes; `what` ("sent",
// "received") says which for the SerializationError outside a message.
REMORA_DECL std::shared_ptr<RRefContext> wire_rref_context(const char* what);

namespace rref_msg {

REMORA_DECL void fork_request(RRefId id, ForkId fork);
REMORA_DECL void child_accept(ForkId fork);
REMORA_DECL void user_delete(RRefId id, ForkId fork, bool abandon);

// The state a served call refers to (made if the call overtook the creation).
REMORA_DECL std::shared_ptr<OwnerState> requested_state(const RRefId& id);

}  // namespace rref_msg
}  // namespace remora::detail

#if REMORA_HEADER_ONLY
#include "remora/rref/impl/context.ipp"
#endif
