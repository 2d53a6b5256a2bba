#include "upstream/budget.hpp"

#include <array>
#include <charconv>

namespace coalescer::upstream {
namespace {

constexpr std::size_t bytes_per_token = 4;

bool blank(char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

// The number after the first `"name":` in the body holding one; nullopt when none does. A text
// search, not a parse: the name in quotes followed by a colon is a key wherever it appears (in
// a string it would be escaped), and a key whose value is no number (a schema) is passed over.
std::optional<std::uint64_t> number_after(std::string_view body, std::string_view quoted) {
    for (auto at = body.find(quoted); at != std::string_view::npos;
         at = body.find(quoted, at + 1)) {
        auto i = at + quoted.size();
        while (i < body.size() && blank(body[i]))
            ++i;
        if (i >= body.size() || body[i] != ':')
            continue;
        ++i;
        while (i < body.size() && blank(body[i]))
            ++i;
        std::uint64_t value = 0;
        const auto [end, ec] = std::from_chars(body.data() + i, body.data() + body.size(), value);
        if (ec == std::errc() && end != body.data() + i)
            return value;
    }
    return std::nullopt;
}

}  // namespace

std::uint64_t estimate_tokens(std::string_view body) {
    static constexpr std::array<std::string_view, 3> caps{"\"max_tokens\"", "\"max_output_tokens\"",
                                                          "\"max_completion_tokens\""};
    std::uint64_t output = default_output_tokens;
    for (const auto name : caps) {
        if (const auto n = number_after(body, name)) {
            output = *n;
            break;
        }
    }
    return output + (body.size() + bytes_per_token - 1) / bytes_per_token;
}

}  // namespace coalescer::upstream
