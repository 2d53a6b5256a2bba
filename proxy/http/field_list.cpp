#include "http/field_list.hpp"

#include "http/header_rules.hpp"

#include <cstring>

namespace coalescer::http {

const std::string_view* field_list::find(boost::beast::http::field name) const noexcept {
    for (const auto& f : fields_) {
        if (f.name == name) {
            return &f.value;
        }
    }
    return nullptr;
}

const std::string_view* field_list::find(std::string_view name) const noexcept {
    for (const auto& f : fields_) {
        if (iequals(f.name_text, name)) {
            return &f.value;
        }
    }
    return nullptr;
}

void field_list::add(boost::beast::http::field name, std::string_view name_text,
                     std::string_view value) {
    // Name and value in one piece of the arena: one (virtual) allocation per field, not two.
    const auto size = name_text.size() + value.size();
    auto* copy = static_cast<char*>(arena_->allocate(size == 0 ? 1 : size, 1));
    if (!name_text.empty()) {
        std::memcpy(copy, name_text.data(), name_text.size());
    }
    if (!value.empty()) {
        std::memcpy(copy + name_text.size(), value.data(), value.size());
    }
    fields_.push_back({name, {copy, name_text.size()}, {copy + name_text.size(), value.size()}});
}

std::string_view field_list::keep(std::string_view text) {
    if (text.empty()) {
        return {};
    }
    auto* copy = static_cast<char*>(arena_->allocate(text.size(), 1));
    std::memcpy(copy, text.data(), text.size());
    return {copy, text.size()};
}

}  // namespace coalescer::http
