// The grammars of the config's scalar values (numbers, durations, sizes, addresses, URLs, header
// names, JSON pointers, file paths) and their readers, which refuse a field with a message that
// says what was expected. What each field of the schema means is config.cpp's business.
#pragma once

#include "ops/config.hpp"
#include "ops/yaml_walk.hpp"

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace coalescer::ops::detail {

// Typed scalars. Each refuses what it cannot use: an empty string, a quoted number or boolean,
// a value out of range.
std::string text(const loader& l, const field& f);
std::uint64_t integer(const loader& l, const field& f, std::uint64_t min, std::uint64_t max);
bool boolean(const loader& l, const field& f);
double number(const loader& l, const field& f);
duration read_duration(const loader& l, const field& f, bool zero_allowed);
std::size_t read_size(const loader& l, const field& f, std::size_t min);

template <class T>
T one_of(const loader& l, const field& f,
         std::initializer_list<std::pair<std::string_view, T>> choices) {
    std::string names;
    for (const auto& [name, value] : choices) {
        if (f.node.IsScalar() && f.node.Scalar() == name)
            return value;
        names += names.empty() ? "" : ", ";
        names += name;
    }
    l.fail(f, "expected one of " + names + ", got " + describe(f.node));
}

// Durations and sizes as a message shows them: the largest unit that divides them exactly.
std::string format_duration(duration d);
std::string format_size(std::size_t n);

// Letters, digits, '_', '.' and '-'.
bool valid_name(std::string_view s);

// An address the listeners can bind: its candidate IPs ("localhost" may be either loopback).
struct ip_address {
    bool v6 = false;
    std::array<unsigned char, 16> bytes{};
};
std::optional<std::vector<ip_address>> ip_literal(const std::string& s);
// Whether two binds on the same port collide; [::] is taken as dual-stack.
bool overlap(const ip_address& a, const ip_address& b);
std::string read_address(const loader& l, const field& f);

// Splits u.url, http(s)://host[:port][/path] without userinfo, query or fragment, into https,
// host, port and base_path.
void parse_url(const loader& l, const field& f, upstream_config& u);

// A prefix as the router compares it with request targets.
bool valid_route_path(std::string_view p);

// Lower case, as the header rules compare names.
std::string read_header_name(const loader& l, const field& f);
std::vector<std::string> read_header_list(const loader& l, const field& f);
// RFC 6901 pointers, each one once.
std::vector<std::string> read_json_pointers(const loader& l, const field& f);

// Splits c.url, redis://host[:port][/db] or rediss://… without credentials, into host, port,
// database and tls.
void parse_redis_url(const loader& l, const field& f, cluster_config& c);
// A secret held in a file: the whole file less its trailing newline; never empty, never echoed.
std::string read_secret_file(const loader& l, const field& f, const std::string& path);

void check_readable_file(const loader& l, const field& f, const std::string& path);
std::string errno_text(int err);

}  // namespace coalescer::ops::detail
