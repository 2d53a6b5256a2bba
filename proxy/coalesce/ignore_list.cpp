#include "coalesce/ignore_list.hpp"

#include <stdexcept>

namespace coalescer::coalesce {

namespace {

std::string unescape_token(std::string_view token) {
    std::string out;
    out.reserve(token.size());
    for (std::size_t i = 0; i < token.size(); ++i) {
        if (token[i] == '~') {
            out.push_back(token[i + 1] == '0' ? '~' : '/');  // validated: "~0" or "~1"
            ++i;
        } else {
            out.push_back(token[i]);
        }
    }
    return out;
}

}  // namespace

ignore_list::ignore_list() : nodes_(1) {}

bool ignore_list::is_valid_pointer(std::string_view pointer) noexcept {
    if (pointer.empty() || pointer.front() != '/')
        return false;
    for (std::size_t i = 0; i < pointer.size(); ++i) {
        if (pointer[i] != '~')
            continue;
        if (i + 1 >= pointer.size() || (pointer[i + 1] != '0' && pointer[i + 1] != '1'))
            return false;
        ++i;
    }
    return true;
}

ignore_list::ignore_list(const std::vector<std::string>& pointers)
    : nodes_(1), pointers_(pointers) {
    for (const std::string& pointer : pointers) {
        if (!is_valid_pointer(pointer))
            throw std::invalid_argument("ignore_fields: \"" + pointer +
                                        "\" is not a JSON pointer (RFC 6901, e.g. \"/user\")");
        std::uint32_t current = 0;
        std::size_t pos = 1;
        for (;;) {
            std::size_t slash = pointer.find('/', pos);
            if (slash == std::string::npos)
                slash = pointer.size();
            std::string token = unescape_token(std::string_view(pointer).substr(pos, slash - pos));
            std::uint32_t next = 0;
            for (const auto& [name, index] : nodes_[current].children)
                if (name == token)
                    next = index;
            if (next == 0) {
                next = static_cast<std::uint32_t>(nodes_.size());
                nodes_.emplace_back();  // invalidates references into nodes_: index again below
                nodes_[current].children.emplace_back(std::move(token), next);
            }
            current = next;
            if (slash == pointer.size())
                break;
            pos = slash + 1;
        }
        nodes_[current].remove = true;
    }
}

}  // namespace coalescer::coalesce
