// Which header fields cross the proxy, decided in one place: what goes upstream from a client's
// request, what reaches clients from an upstream's answer, and what in either says "don't
// share" (RFC 9110 §7.6.1 hop-by-hop fields, Connection's tokens, cache directives).
#pragma once

#include "http/field_list.hpp"

#include <span>
#include <string_view>

namespace coalescer::http {

// The tokens of a message's Connection fields: a field they name is hop-by-hop too.
class connection_tokens {
  public:
    explicit connection_tokens(std::span<const header_field> fields) noexcept;
    bool names(std::string_view field_name) const noexcept;
    // Names something besides keep-alive and close (most messages: nothing to look up).
    bool names_others() const noexcept { return others_; }

  private:
    std::span<const header_field> fields_;
    bool others_ = false;
};

// A client request's field the upstream gets: not Host (the upstream's comes from config), not
// the client's framing (Content-Length is ours, Transfer-Encoding hop-by-hop), not its encoding
// preference (Accept-Encoding: identity is ours: shared bytes every client can read), not
// Expect (answered here), not hop-by-hop or named by Connection, not the bypass header.
bool forwarded_upstream(const header_field& field, const connection_tokens& connection,
                        std::string_view bypass_header) noexcept;

// An upstream answer's field the clients get: not hop-by-hop or named by Connection, not
// Content-Length (each client's framing is its own).
bool relayed_to_clients(const header_field& field, const connection_tokens& connection) noexcept;

// An answer's field that forbids keeping it for other clients: Cache-Control no-store or
// private, or Set-Cookie (one client's cookie must never reach another).
bool forbids_sharing(const header_field& field) noexcept;

// A request that asks not to share: the bypass header set (not "0" or "false"), or
// Cache-Control no-cache or no-store.
bool asks_not_to_share(std::span<const header_field> fields,
                       std::string_view bypass_header) noexcept;

}  // namespace coalescer::http
