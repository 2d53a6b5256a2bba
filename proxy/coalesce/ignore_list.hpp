// The ignore list: RFC 6901 pointers to the parts of a JSON body that take no part in its
// coalesce key (a per-request user id, a trace id), compiled into a trie that the canonical
// parser (canonical_json.cpp) walks as it reads, so a body is read once whatever the list holds.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace coalescer::coalesce {

namespace detail {
class canonical_parser;
}

// A compiled list of RFC 6901 pointers naming members (or array elements) to remove before
// canonicalising, e.g. "/user", "/metadata/trace_id", "/messages/0", "/a~1b" (member "a/b").
class ignore_list {
  public:
    ignore_list();
    // Throws std::invalid_argument for a malformed pointer (see is_valid_pointer).
    explicit ignore_list(const std::vector<std::string>& pointers);

    bool empty() const noexcept { return nodes_.empty() || nodes_[0].children.empty(); }
    // The pointers as given (for logs and for fingerprinting a configuration).
    const std::vector<std::string>& pointers() const noexcept { return pointers_; }

    // RFC 6901 syntax: "/" followed by tokens separated by "/", '~' only as "~0" or "~1".
    // The empty pointer (the whole document) is refused: removing the document would make every
    // JSON body share one key.
    static bool is_valid_pointer(std::string_view pointer) noexcept;

  private:
    friend class detail::canonical_parser;

    struct node {
        // (unescaped reference token, index into nodes_)
        std::vector<std::pair<std::string, std::uint32_t>> children;
        bool remove = false;  // a pointer ends here: drop this value
    };
    // Defined here, not in ignore_list.cpp: the parser asks for every member name and array
    // index under a listed path, and the call must stay inline there.
    const node* child(const node& parent, std::string_view token) const noexcept {
        for (const auto& [name, index] : parent.children)
            if (name == token)
                return &nodes_[index];
        return nullptr;
    }

    std::vector<node> nodes_;  // nodes_[0] is the document root
    std::vector<std::string> pointers_;
};

}  // namespace coalescer::coalesce
