// A message head's fields as one flat list, names and values copied into an arena: what the
// request and response parsers keep instead of Beast's case-insensitive multiset (a node and a
// tree insertion per field), for heads that are read once, front to back.
#pragma once

#include <boost/beast/http/field.hpp>

#include <memory_resource>
#include <span>
#include <string_view>
#include <vector>

namespace coalescer::http {

struct header_field {
    boost::beast::http::field name;  // field::unknown for a name Beast does not know
    std::string_view name_text;      // as received
    std::string_view value;
};

class field_list {
  public:
    explicit field_list(std::pmr::memory_resource* arena) : arena_(arena), fields_(arena) {
        fields_.reserve(16);  // most heads: no regrowth
    }

    std::span<const header_field> all() const noexcept { return fields_; }
    // The first value of a field (by code, or by name in any case), or nullptr.
    const std::string_view* find(boost::beast::http::field name) const noexcept;
    const std::string_view* find(std::string_view name) const noexcept;

    void add(boost::beast::http::field name, std::string_view name_text, std::string_view value);
    // A copy of `text` in the arena.
    std::string_view keep(std::string_view text);

  private:
    std::pmr::memory_resource* arena_;
    std::pmr::vector<header_field> fields_;
};

}  // namespace coalescer::http
