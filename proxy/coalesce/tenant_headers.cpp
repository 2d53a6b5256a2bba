#include "coalesce/tenant_headers.hpp"

#include "http/header_rules.hpp"

#include <algorithm>

namespace coalescer::coalesce {
namespace {

bool listed(const std::vector<std::string>& names, std::string_view name) noexcept {
    return std::any_of(names.begin(), names.end(),
                       [&](const std::string& n) { return http::iequals(n, name); });
}

}  // namespace

tenant_headers::tenant_headers(const ops::coalesce_config& cfg) {
    for (const auto& n : cfg.identity_headers)
        identity_.push_back(http::lower_case(n));
    for (const auto& n : cfg.shared_headers)
        shared_.push_back(http::lower_case(n));
    for (const auto& n : cfg.vary_headers)
        vary_.push_back(http::lower_case(n));
}

bool tenant_headers::is_identity(std::string_view name) const noexcept {
    if (listed(identity_, name))
        return true;
    return http::looks_like_credential(name) && !listed(shared_, name);
}

std::uint64_t tenant_headers::tag(std::span<const http::header_field> fields) const noexcept {
    std::uint64_t sum = 0;
    for (const auto& field : fields) {
        if (!is_identity(field.name_text)) {
            continue;
        }
        // FNV-1a over the lower-case name and the value; summed, so order does not matter.
        std::uint64_t h = 14695981039346656037ull;
        auto mix = [&h](unsigned char c) {
            h ^= c;
            h *= 1099511628211ull;
        };
        for (const char c : field.name_text)
            mix(static_cast<unsigned char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c));
        mix(0);
        for (const char c : field.value)
            mix(static_cast<unsigned char>(c));
        sum += h | 1;
    }
    return sum;
}

bool tenant_headers::is_vary(std::string_view name) const noexcept {
    return listed(vary_, name);
}

}  // namespace coalescer::coalesce
