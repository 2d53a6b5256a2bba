// Small, allocation-free rules about HTTP header names and values (RFC 9110).
#pragma once

#include <boost/beast/http/field.hpp>

#include <string>
#include <string_view>

namespace coalescer::http {

bool iequals(std::string_view a, std::string_view b) noexcept;
// A header name in lower case (ASCII letters only; names are tokens).
std::string lower_case(std::string_view name);

// RFC 9110 §7.6.1: headers that describe one connection and never cross a proxy.
bool is_hop_by_hop(std::string_view name) noexcept;
// The same by the parser's field code (every hop-by-hop name has one): no string compares.
bool is_hop_by_hop(boost::beast::http::field name) noexcept;

// A credential by name alone (authorization, proxy-authorization, x-api-key, api-key,
// x-goog-api-key, cookie), in any case.
bool is_known_credential(std::string_view name) noexcept;
// Fails closed: a known credential, or a name that looks like one (ends in key, token or
// secret, with or without a hyphen, or contains "auth" or "password"). `idempotency-key` is the one
// such name that is not a credential: it names a logical call (the same on every retry of it), and
// treating it as a tenant would keep one tenant's identical calls apart for nothing.
bool looks_like_credential(std::string_view name) noexcept;

// token = 1*tchar (RFC 9110 §5.6.2).
bool is_token(std::string_view text) noexcept;

// A field value we may put on the wire: no CR, LF, NUL or other control character but HTAB.
bool is_safe_value(std::string_view value) noexcept;

// Trims optional whitespace (SP, HTAB) on both ends.
std::string_view trim(std::string_view text) noexcept;

// Calls f(token) for each element of a comma-separated list, trimmed, empty ones skipped.
template <class F>
void for_each_list_item(std::string_view list, F&& f) {
    while (!list.empty()) {
        const auto comma = list.find(',');
        const auto item = trim(list.substr(0, comma));
        if (!item.empty()) {
            f(item);
        }
        if (comma == std::string_view::npos) {
            break;
        }
        list.remove_prefix(comma + 1);
    }
}

}  // namespace coalescer::http
