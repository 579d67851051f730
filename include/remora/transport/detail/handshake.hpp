#pragma once
// The mutual challenge-response that opens every connection of a group with a secret, before
// any frame: each side sends a greeting (a fresh 32-byte nonce and its worker name), then a proof
// (HMAC-SHA256 under the secret over both nonces, both names and which side it is), and checks
// the peer's proof in constant time. A peer that cannot prove it knows the secret never gets a
// byte to the frame reader. The secret itself never travels.
//
//   greeting  "RMAUTH01" | nonce (32) | name length (u8) | name
//   proof     HMAC(secret, "remora/auth/1" | side | challenger's nonce | prover's nonce |
//                  prover's name | challenger's name [| channel binding])
//             (names length-prefixed; side 'C' or 'A')
//
// Inside TLS the proof also covers 32 bytes of keying material exported from the TLS session
// (RFC 5705, label "EXPORTER-remora-auth"): both ends of one TLS session export the same bytes, the
// two sessions of a relay in the middle do not, so a relay that holds a certificate of the group's
// CA but not the secret cannot pass one side's proof on to the other. The secret proves
// membership of the group: any holder can claim any worker's name (docs/security.md).
//
// Needs OpenSSL's libcrypto: compiled when REMORA_OPENSSL is 1 (CMake sets it when it finds
// OpenSSL and links OpenSSL::Crypto). Without it, a group with a secret cannot start.
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <asio/buffer.hpp>
#include <asio/read.hpp>
#include <asio/write.hpp>

#include "remora/core/errors.hpp"

#if !defined(REMORA_OPENSSL)
#define REMORA_OPENSSL 0
#endif
#if REMORA_OPENSSL
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#endif

namespace remora::transport {

// How a connection authenticates. Copied into each connection; the secret is shared, not copied.
struct AuthOptions {
  std::shared_ptr<const std::string> secret;  // null or empty: no handshake
  std::string self_name;                      // this worker's name
  std::string expected_peer;                  // a connecting side: the worker it dialed
  std::chrono::milliseconds timeout{10'000};  // for the whole handshake
  bool enabled() const { return secret && !secret->empty(); }
};

namespace detail {

inline constexpr char kAuthMagic[8] = {'R', 'M', 'A', 'U', 'T', 'H', '0', '1'};
inline constexpr std::size_t kNonceBytes = 32;
inline constexpr std::size_t kProofBytes = 32;
inline constexpr std::size_t kGreetingFixed = sizeof kAuthMagic + kNonceBytes + 1;  // then the name
inline constexpr std::size_t kMaxAuthName = 255;

inline constexpr bool auth_available() { return REMORA_OPENSSL != 0; }

// One side of one handshake. Not thread-safe (it runs on its connection's strand).
class Handshake {
 public:
  using Proof = std::array<std::uint8_t, kProofBytes>;

  // `connector`: this side dialed (its proofs say 'C', the peer's 'A').
  Handshake(AuthOptions options, bool connector) : options_(std::move(options)), connector_(connector) {
    if (options_.self_name.size() > kMaxAuthName) throw Error("remora: worker name too long to authenticate");
#if REMORA_OPENSSL
    if (RAND_bytes(nonce_.data(), static_cast<int>(nonce_.size())) != 1)
      throw Error("remora: OpenSSL could not make a random nonce");
#else
    throw Error("remora: Options::secret needs OpenSSL: this program was built without it (REMORA_OPENSSL=0)");
#endif
  }

  // What this side sends first.
  std::vector<std::byte> greeting() const {
    std::vector<std::byte> out(kGreetingFixed + options_.self_name.size());
    std::memcpy(out.data(), kAuthMagic, sizeof kAuthMagic);
    std::memcpy(out.data() + sizeof kAuthMagic, nonce_.data(), kNonceBytes);
    out[kGreetingFixed - 1] = static_cast<std::byte>(options_.self_name.size());
    std::memcpy(out.data() + kGreetingFixed, options_.self_name.data(), options_.self_name.size());
    return out;
  }

  // The fixed part of the peer's greeting: returns the length of the name that follows, or why
  // the greeting is refused.
  std::optional<std::string> take_greeting_head(const std::byte* head, std::size_t* name_bytes) {
    if (std::memcmp(head, kAuthMagic, sizeof kAuthMagic) != 0)
      return std::string("the peer did not authenticate (is its Options::secret set?)");
    std::memcpy(peer_nonce_.data(), head + sizeof kAuthMagic, kNonceBytes);
    if (peer_nonce_ == nonce_) return std::string("the peer sent this side's own nonce back");
    *name_bytes = static_cast<std::size_t>(head[kGreetingFixed - 1]);
    if (*name_bytes == 0) return std::string("the peer sent no worker name");
    return std::nullopt;
  }
  // The peer's name; refused if this side dialed someone else.
  std::optional<std::string> take_greeting_name(const std::byte* name, std::size_t bytes) {
    peer_name_.assign(reinterpret_cast<const char*>(name), bytes);
    if (!options_.expected_peer.empty() && peer_name_ != options_.expected_peer)
      return "the peer says it is '" + peer_name_ + "', not '" + options_.expected_peer + "'";
    return std::nullopt;
  }

  // This side's proof (after the peer's greeting).
  Proof proof() const { return mac(connector_ ? 'C' : 'A', peer_nonce_, nonce_, options_.self_name, peer_name_); }
  // Whether the peer's proof is right (constant time).
  bool check(const std::uint8_t* peer_proof) const {
    const Proof want = mac(connector_ ? 'A' : 'C', nonce_, peer_nonce_, peer_name_, options_.self_name);
#if REMORA_OPENSSL
    return CRYPTO_memcmp(want.data(), peer_proof, kProofBytes) == 0;
#else
    return false;
#endif
  }

  const std::string& peer_name() const { return peer_name_; }

  // Binds both proofs to the channel they travel on (TLS exported keying material): before
  // proof() and check().
  void bind_channel(std::vector<std::uint8_t> binding) { binding_ = std::move(binding); }

 private:
  using Nonce = std::array<std::uint8_t, kNonceBytes>;

  Proof mac(char side, const Nonce& challenge, const Nonce& own, const std::string& prover,
            const std::string& challenger) const {
    std::vector<std::uint8_t> msg;
    const char label[] = "remora/auth/1";
    msg.insert(msg.end(), label, label + sizeof label - 1);
    msg.push_back(static_cast<std::uint8_t>(side));
    msg.insert(msg.end(), challenge.begin(), challenge.end());
    msg.insert(msg.end(), own.begin(), own.end());
    for (const std::string* s : {&prover, &challenger}) {
      msg.push_back(static_cast<std::uint8_t>(s->size()));
      msg.insert(msg.end(), s->begin(), s->end());
    }
    msg.insert(msg.end(), binding_.begin(), binding_.end());
    Proof out{};
#if REMORA_OPENSSL
    unsigned int len = 0;
    if (!HMAC(EVP_sha256(), options_.secret->data(), static_cast<int>(options_.secret->size()), msg.data(), msg.size(),
              out.data(), &len) ||
        len != kProofBytes)
      throw Error("remora: OpenSSL could not compute an HMAC");
#endif
    return out;
  }

  AuthOptions options_;
  bool connector_;
  Nonce nonce_{}, peer_nonce_{};
  std::string peer_name_;
  std::vector<std::uint8_t> binding_;  // empty: not bound (TCP, local)
};

// Runs `handshake` on `socket` (on the socket's strand): greeting out, the peer's in, proof out,
// the peer's in. `done(failure)` gets nullopt once the peer proved itself, or why not. Reads
// exactly what the handshake expects (at most 328 bytes), nothing more: the frame reader starts
// on the byte after the peer's proof. `done` must keep the socket alive.
template <class Socket, class Done>
void run_handshake(Socket& socket, std::shared_ptr<Handshake> handshake, Done done) {
  struct State {
    std::shared_ptr<Handshake> hs;
    std::vector<std::byte> out, in;
    Done done;
  };
  auto st = std::make_shared<State>(State{std::move(handshake), {}, {}, std::move(done)});
  auto failed = [](const std::error_code& ec) {
    return ec == asio::error::eof ? std::string("the peer closed the connection") : ec.message();
  };
  st->out = st->hs->greeting();
  asio::async_write(socket, asio::buffer(st->out), [&socket, st, failed](std::error_code ec, std::size_t) {
    if (ec) return st->done(failed(ec));
    st->in.resize(kGreetingFixed);
    asio::async_read(socket, asio::buffer(st->in), [&socket, st, failed](std::error_code ec, std::size_t) {
      if (ec) return st->done(failed(ec));
      std::size_t name_bytes = 0;
      if (auto why = st->hs->take_greeting_head(st->in.data(), &name_bytes)) return st->done(why);
      st->in.resize(name_bytes);
      asio::async_read(socket, asio::buffer(st->in), [&socket, st, failed](std::error_code ec, std::size_t) {
        if (ec) return st->done(failed(ec));
        if (auto why = st->hs->take_greeting_name(st->in.data(), st->in.size())) return st->done(why);
        Handshake::Proof proof;
        try {  // OpenSSL may fail: the connection fails, the I/O thread goes on
          proof = st->hs->proof();
        } catch (const std::exception& e) {
          return st->done(std::optional<std::string>(e.what()));
        }
        st->out.assign(reinterpret_cast<const std::byte*>(proof.data()),
                       reinterpret_cast<const std::byte*>(proof.data()) + proof.size());
        asio::async_write(socket, asio::buffer(st->out), [&socket, st, failed](std::error_code ec, std::size_t) {
          if (ec) return st->done(failed(ec));
          st->in.resize(kProofBytes);
          asio::async_read(socket, asio::buffer(st->in), [st, failed](std::error_code ec, std::size_t) {
            if (ec) return st->done(failed(ec));
            bool right = false;
            try {
              right = st->hs->check(reinterpret_cast<const std::uint8_t*>(st->in.data()));
            } catch (const std::exception& e) {
              return st->done(std::optional<std::string>(e.what()));
            }
            if (!right)
              return st->done(std::optional<std::string>(
                  "the peer's proof is wrong (a different secret, or a relay between two TLS sessions)"));
            st->done(std::nullopt);
          });
        });
      });
    });
  });
}

}  // namespace detail
}  // namespace remora::transport
