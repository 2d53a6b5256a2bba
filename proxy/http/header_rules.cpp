#include "http/header_rules.hpp"

#include <algorithm>
#include <array>

namespace coalescer::http {
namespace {

constexpr char lower(char c) noexcept {
    return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c;
}

constexpr std::array<bool, 256> make_tchar_table() {
    std::array<bool, 256> t{};
    for (int c = '0'; c <= '9'; ++c)
        t[c] = true;
    for (int c = 'a'; c <= 'z'; ++c)
        t[c] = true;
    for (int c = 'A'; c <= 'Z'; ++c)
        t[c] = true;
    for (char c : std::string_view("!#$%&'*+-.^_`|~"))
        t[static_cast<unsigned char>(c)] = true;
    return t;
}
constexpr auto tchar = make_tchar_table();

}  // namespace

bool iequals(std::string_view a, std::string_view b) noexcept {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(),
                                              [](char x, char y) { return lower(x) == lower(y); });
}

std::string lower_case(std::string_view name) {
    std::string out(name);
    for (char& c : out)
        c = lower(c);
    return out;
}

bool is_hop_by_hop(std::string_view name) noexcept {
    static constexpr std::array<std::string_view, 9> names{
        "connection",       "keep-alive",          "te",
        "trailer",          "transfer-encoding",   "upgrade",
        "proxy-connection", "proxy-authorization", "proxy-authenticate"};
    return std::any_of(names.begin(), names.end(),
                       [&](std::string_view n) { return iequals(n, name); });
}

bool is_hop_by_hop(boost::beast::http::field name) noexcept {
    using boost::beast::http::field;
    switch (name) {
        case field::connection:
        case field::keep_alive:
        case field::te:
        case field::trailer:
        case field::transfer_encoding:
        case field::upgrade:
        case field::proxy_connection:
        case field::proxy_authorization:
        case field::proxy_authenticate:
            return true;
        default:
            return false;
    }
}

namespace {

bool iends_with(std::string_view name, std::string_view suffix) noexcept {
    return name.size() >= suffix.size() &&
           iequals(name.substr(name.size() - suffix.size()), suffix);
}

bool icontains(std::string_view name, std::string_view part) noexcept {
    for (std::size_t i = 0; i + part.size() <= name.size(); ++i)
        if (iequals(name.substr(i, part.size()), part))
            return true;
    return false;
}

}  // namespace

bool is_known_credential(std::string_view name) noexcept {
    static constexpr std::array<std::string_view, 6> names{
        "authorization", "proxy-authorization", "x-api-key", "api-key", "x-goog-api-key", "cookie"};
    return std::any_of(names.begin(), names.end(),
                       [&](std::string_view n) { return iequals(n, name); });
}

bool looks_like_credential(std::string_view name) noexcept {
    if (is_known_credential(name))
        return true;
    if (iequals(name, "idempotency-key"))
        return false;
    // Without the hyphen too: apikey (Kong, Supabase), x-apikey, token, accesstoken.
    return iends_with(name, "key") || iends_with(name, "token") || iends_with(name, "secret") ||
           icontains(name, "auth") || icontains(name, "password");
}

bool is_token(std::string_view text) noexcept {
    return !text.empty() && std::all_of(text.begin(), text.end(), [](char c) {
        return tchar[static_cast<unsigned char>(c)];
    });
}

bool is_safe_value(std::string_view value) noexcept {
    return std::none_of(value.begin(), value.end(), [](char c) {
        const auto u = static_cast<unsigned char>(c);
        return (u < 0x20 && u != '\t') || u == 0x7f;
    });
}

std::string_view trim(std::string_view text) noexcept {
    while (!text.empty() && (text.front() == ' ' || text.front() == '\t'))
        text.remove_prefix(1);
    while (!text.empty() && (text.back() == ' ' || text.back() == '\t'))
        text.remove_suffix(1);
    return text;
}

}  // namespace coalescer::http
