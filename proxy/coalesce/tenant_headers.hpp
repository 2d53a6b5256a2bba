// Which request headers name the tenant and which change the answer (DESIGN.md "Coalesce key").
//
// A header names the tenant — its value is keyed as an HMAC, and it may appear only once — when
// its name is or looks like a credential's (http::looks_like_credential), or when the
// configuration lists it in identity_headers; unless the configuration lists it in
// shared_headers (credential-like, but the same for every tenant). The rule fails closed: a
// provider's new credential header is keyed before anyone configures it.
#pragma once

#include "http/field_list.hpp"
#include "ops/config.hpp"

#include <cstdint>
#include <span>

#include <string>
#include <string_view>
#include <vector>

namespace coalescer::coalesce {

class tenant_headers {
  public:
    explicit tenant_headers(const ops::coalesce_config& cfg);

    // Names compare in any case.
    bool is_identity(std::string_view name) const noexcept;
    bool is_vary(std::string_view name) const noexcept;
    // A tag of the tenant a request's headers name, the same whatever their order and letter
    // case; 0 without any tenant header. Not a secret (a hash to partition connections by,
    // never shown): the key uses HMACs.
    std::uint64_t tag(std::span<const http::header_field> fields) const noexcept;

    // The configured vary headers, lower case, in configuration order.
    const std::vector<std::string>& vary() const noexcept { return vary_; }

  private:
    std::vector<std::string> identity_;  // configured additions, lower case
    std::vector<std::string> shared_;    // configured exemptions, lower case
    std::vector<std::string> vary_;      // lower case
};

}  // namespace coalescer::coalesce
