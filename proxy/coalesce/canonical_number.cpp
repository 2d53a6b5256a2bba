#include "coalesce/canonical_number.hpp"

#include <charconv>
#include <cstdint>
#include <optional>

namespace coalescer::coalesce {

namespace {

constexpr std::int64_t max_exponent = 1'000'000'000'000'000;

bool is_digit(char c) noexcept {
    return c >= '0' && c <= '9';
}

std::size_t skip_digits(std::string_view text, std::size_t i) noexcept {
    while (i < text.size() && is_digit(text[i]))
        ++i;
    return i;
}

void append_int(std::string& out, std::int64_t v) {
    char buf[24];
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
    out.append(buf, end);
}

// A number's text taken apart; its value is (-1 if negative) × integer.fraction × 10^exponent.
struct number_parts {
    bool negative = false;
    std::string_view integer;   // digits, at least one
    std::string_view fraction;  // digits after the point, maybe none
    std::int64_t exponent = 0;
};

// The exponent's optional sign and digits, from text[i] (just past the 'e') on. False when
// there are no digits, or when they run so far past max_exponent that they would overflow.
bool read_exponent(std::string_view text, std::size_t& i, std::int64_t& exponent) noexcept {
    bool negative = false;
    if (i < text.size() && (text[i] == '+' || text[i] == '-'))
        negative = text[i++] == '-';
    const std::size_t begin = i;
    exponent = 0;
    for (; i < text.size() && is_digit(text[i]); ++i) {
        exponent = exponent * 10 + (text[i] - '0');
        if (exponent > 100'000'000'000'000'000)  // far past the limit, short of overflow
            return false;
    }
    if (i == begin)
        return false;
    if (negative)
        exponent = -exponent;
    return true;
}

std::optional<number_parts> split_number(std::string_view text) noexcept {
    number_parts parts;
    std::size_t i = 0;
    if (i < text.size() && text[i] == '-') {
        parts.negative = true;
        ++i;
    }
    const std::size_t int_end = skip_digits(text, i);
    if (int_end == i)
        return std::nullopt;
    parts.integer = text.substr(i, int_end - i);
    i = int_end;
    if (i < text.size() && text[i] == '.') {
        const std::size_t frac_end = skip_digits(text, ++i);
        if (frac_end == i)
            return std::nullopt;
        parts.fraction = text.substr(i, frac_end - i);
        i = frac_end;
    }
    if (i < text.size() && (text[i] == 'e' || text[i] == 'E') &&
        !read_exponent(text, ++i, parts.exponent))
        return std::nullopt;
    if (i != text.size())
        return std::nullopt;
    return parts;
}

// Appends d × 10^q, d being digits without leading or trailing zeros, as the header spells it.
void append_spelling(std::string& out, std::string_view d, std::int64_t q) {
    const auto n = static_cast<std::int64_t>(d.size());
    if (q >= 0 && q <= 20) {
        out.append(d);
        out.append(static_cast<std::size_t>(q), '0');
    } else if (q < 0 && n > -q) {
        out.append(d.substr(0, static_cast<std::size_t>(n + q)));
        out.push_back('.');
        out.append(d.substr(static_cast<std::size_t>(n + q)));
    } else if (q < 0 && -q - n < 6) {
        out.append("0.");
        out.append(static_cast<std::size_t>(-q - n), '0');
        out.append(d);
    } else {
        out.push_back(d[0]);
        if (n > 1) {
            out.push_back('.');
            out.append(d.substr(1));
        }
        const std::int64_t x = q + n - 1;
        out.push_back('e');
        out.push_back(x < 0 ? '-' : '+');
        append_int(out, x < 0 ? -x : x);
    }
}

}  // namespace

bool append_canonical_number(std::string_view text, std::string& out, std::string& digits) {
    const std::optional<number_parts> parts = split_number(text);
    if (!parts)
        return false;
    digits.assign(parts->integer);
    digits.append(parts->fraction);
    const std::size_t first = digits.find_first_not_of('0');
    if (first == std::string::npos) {
        out.push_back('0');  // every zero, -0 included
        return true;
    }
    const std::size_t last = digits.find_last_not_of('0');
    const auto trailing_zeros = static_cast<std::int64_t>(digits.size() - 1 - last);
    const std::string_view d(digits.data() + first, last + 1 - first);
    // value = d × 10^q
    const std::int64_t q =
        parts->exponent - static_cast<std::int64_t>(parts->fraction.size()) + trailing_zeros;
    const std::int64_t scientific = q + static_cast<std::int64_t>(d.size()) - 1;
    if (scientific > max_exponent || scientific < -max_exponent)
        return false;
    if (parts->negative)
        out.push_back('-');
    append_spelling(out, d, q);
    return true;
}

}  // namespace coalescer::coalesce
