#pragma once
// The exceptions remora throws. Every what() says who (worker), what (function or frame) and why,
// so a log line alone is enough to find the failing call.
#include <stdexcept>
#include <string>
#include <utility>

namespace remora {

// Base of every remora exception: catch this to handle all of them.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// Fields shared by errors that concern a call on a worker.
class CallError : public Error {
 public:
  CallError(std::string worker, std::string function, const std::string& what)
      : Error(what), worker_(std::move(worker)), function_(std::move(function)) {}
  const std::string& worker() const noexcept { return worker_; }
  const std::string& function() const noexcept { return function_; }

 private:
  std::string worker_;
  std::string function_;
};

// The callee threw: carries the remote exception's type name and message.
class RemoteError : public CallError {
 public:
  RemoteError(std::string worker, std::string function, std::string type, std::string message)
      : CallError(worker, function,
                  "remora: " + function + " on worker '" + worker + "' threw " + type + ": " + message),
        type_(std::move(type)), message_(std::move(message)) {}
  const std::string& remote_type() const noexcept { return type_; }
  const std::string& remote_message() const noexcept { return message_; }

 private:
  std::string type_;
  std::string message_;
};

// No reply within the call's deadline.
class Timeout : public CallError {
 public:
  Timeout(std::string worker, std::string function, const std::string& why)
      : CallError(worker, function,
                  "remora: " + function + " on worker '" + worker + "' timed out: " + why) {}
};

// The peer died, closed its connection, or was never reachable.
class WorkerLost : public CallError {
 public:
  WorkerLost(std::string worker, std::string function, const std::string& why)
      : CallError(worker, function,
                  "remora: " + function + " on worker '" + worker + "' failed, worker lost: " + why) {}
};

// The callee refused the call without running it: too many of this worker's calls, or too many
// of their bytes, are pending there (Options::max_pending_calls_per_peer, _bytes_per_peer).
// Retrying later can succeed.
class Overloaded : public CallError {
 public:
  Overloaded(std::string worker, std::string function, const std::string& why)
      : CallError(worker, function,
                  "remora: " + function + " on worker '" + worker + "' was refused, worker overloaded: " + why) {}
};

// The peer does not know the function or type id it was asked for, or does not serve it to
// this caller (an operator by name, a model file: Options::serve_operators, model_dirs).
class UnknownFunction : public CallError {
 public:
  UnknownFunction(std::string worker, std::string function, const std::string& why)
      : CallError(worker, function,
                  "remora: worker '" + worker + "' does not expose " + function + ": " + why),
        why_(why) {}
  // Why, without the worker and function.
  const std::string& reason() const noexcept { return why_; }

 private:
  std::string why_;
};

// Bytes that are not a valid remora frame. `peer` is who sent them, when known.
class ProtocolError : public Error {
 public:
  explicit ProtocolError(const std::string& why, std::string peer = {})
      : Error("remora: protocol error" + (peer.empty() ? std::string() : " from '" + peer + "'") +
              ": " + why),
        peer_(std::move(peer)), reason_(why) {}
  const std::string& peer() const noexcept { return peer_; }
  const std::string& reason() const noexcept { return reason_; }

 private:
  std::string peer_;
  std::string reason_;
};

// A value cannot be sent (sparse or quantized tensor, unsupported IValue, frame over the limit).
// Raised on the sending side, before anything reaches the network.
class SerializationError : public Error {
 public:
  explicit SerializationError(const std::string& why)
      : Error("remora: cannot serialize value: " + why) {}
};

// Arguments that fit no schema of what is called by name (an operator's overloads, a script
// method), or an interface that does not fit a loaded module. Raised where it is detected, before
// anything is sent: `name` is the operator, method or file, what() lists the schemas and why each
// does not fit.
class SchemaMismatch : public Error {
 public:
  SchemaMismatch(std::string name, const std::string& why) : Error("remora: " + why), name_(std::move(name)) {}
  const std::string& name() const noexcept { return name_; }

 private:
  std::string name_;
};

}  // namespace remora
