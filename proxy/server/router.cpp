#include "server/router.hpp"

namespace coalescer::server {
namespace {

// A prefix matches whole path segments: /search takes /search and /search/x, not /searches
// (the config loader refuses a route an earlier one shadows by the same rule).
bool matches(std::string_view path, std::string_view prefix) noexcept {
    return path.starts_with(prefix) &&
           (path.size() == prefix.size() || prefix.back() == '/' || path[prefix.size()] == '/');
}

}  // namespace

std::optional<route_match> router::match(std::string_view target) const {
    const auto query_at = target.find('?');
    const auto path = target.substr(0, query_at);
    const auto query =
        query_at == std::string_view::npos ? std::string_view{} : target.substr(query_at);
    const auto& routes = config_->routes;
    for (std::size_t i = 0; i < routes.size(); ++i) {
        const auto& r = routes[i];
        if (!matches(path, r.prefix)) {
            continue;
        }
        auto rest = path;
        if (!r.strip_prefix.empty() && rest.starts_with(r.strip_prefix)) {
            rest.remove_prefix(r.strip_prefix.size());
        }
        const auto& base = config_->upstreams[r.upstream_index].base_path;
        std::string upstream_target;
        upstream_target.reserve(base.size() + rest.size() + query.size() + 1);
        upstream_target += base;
        if (rest.empty() || rest.front() != '/') {
            upstream_target += '/';
        }
        upstream_target += rest;
        upstream_target += query;
        return route_match{&r, i, std::move(upstream_target)};
    }
    return std::nullopt;
}

}  // namespace coalescer::server
