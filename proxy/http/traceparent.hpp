// W3C Trace Context: the trace id of a `traceparent` field, "00-<32 hex>-<16 hex>-<2 hex>"
// (version 00's layout; a later version may append "-…"). The field itself crosses the proxy
// like any end-to-end field: the leader's goes upstream, and it is no part of the flight key.
#pragma once

#include <string_view>

namespace coalescer::http {

// The 32 lower-case hex digits of a valid traceparent, or "" (absent, malformed, all zeros,
// version ff).
inline std::string_view trace_id_of(std::string_view traceparent) noexcept {
    const auto hex = [](std::string_view s) {
        for (const char c : s)
            if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
                return false;
        return true;
    };
    if (traceparent.size() < 55 || traceparent[2] != '-' || traceparent[35] != '-' ||
        traceparent[52] != '-' || (traceparent.size() > 55 && traceparent[55] != '-'))
        return {};
    const auto version = traceparent.substr(0, 2);
    const auto trace = traceparent.substr(3, 32);
    if (!hex(version) || version == "ff" || !hex(trace) || !hex(traceparent.substr(36, 16)) ||
        !hex(traceparent.substr(53, 2)) || (version == "00" && traceparent.size() != 55) ||
        trace.find_first_not_of('0') == std::string_view::npos)
        return {};
    return trace;
}

}  // namespace coalescer::http
