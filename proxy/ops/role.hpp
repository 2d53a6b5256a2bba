// How a client request was served: the vocabulary the coalescing layer decides and the
// metrics and access log report.
#pragma once

#include <string_view>

namespace coalescer::ops {

// leader: its arrival created the flight; follower: joined it while it ran; hit: joined it
// completed, within result_ttl; bypass: asked not to share (Cache-Control, the bypass header);
// pass: a route that does not coalesce.
enum class role { leader, follower, hit, bypass, pass };
inline constexpr std::size_t role_count = 5;

std::string_view to_string(role r) noexcept;

}  // namespace coalescer::ops
