// Picks the route for a request path (first matching prefix wins) and builds the upstream
// target. The upstream host never comes from the client: only from the route's config.
#pragma once

#include "ops/config.hpp"

#include <optional>
#include <string>
#include <string_view>

namespace coalescer::server {

struct route_match {
    const ops::route_config* route;
    std::size_t route_index;
    std::string upstream_target;  // base_path + path without strip_prefix + query
};

class router {
  public:
    explicit router(std::shared_ptr<const ops::config> cfg) : config_(std::move(cfg)) {}
    std::optional<route_match> match(std::string_view target) const;

  private:
    std::shared_ptr<const ops::config> config_;
};

}  // namespace coalescer::server
