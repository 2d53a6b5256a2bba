// coalesce::canonicalize_json against Boost.JSON.
//
// Input: one mode byte (bits 0-1 pick an ignore list), then JSON text; a 0xFF byte (never part of
// valid UTF-8, so never of acceptable JSON) splits it into two documents a and b.
//
// Properties, each as promised by coalesce/canonical_json.hpp:
// 1. Verdict: the text is canonicalisable exactly when Boost.JSON accepts it (strict, depth 64)
//    and no object repeats a name. Boost reports exponent_overflow for exponents past 2^31,
//    which the canonical form keeps exactly (up to 10^15): no verdict is checked then. The
//    ignore list never changes the verdict (removed members count as duplicates too).
// 2. The canonical text is JSON to Boost.JSON, and canonicalising it again (without an ignore
//    list) gives the same bytes.
// 3. Without an ignore list, the canonical text means what the input means: both parse with
//    Boost.JSON to equal values. When Boost's tree holds no double, Boost's own serialisation
//    of it also canonicalises to the same bytes (strings, escapes, member order, integers).
// 4. a and b with equal canonical bytes (no ignore list) parse with Boost.JSON to equal values.
//
// Equal values: objects compare as sets of members, arrays element by element, strings, bools
// and null exactly. Numbers: integers (int64/uint64) exactly; otherwise Boost 1.81 converts to
// double and is not correctly rounded for long mantissas (the spelling "1.50" and "15e-1" may
// land an ulp or so apart), so two doubles are equal within a relative 1e-14, and two values
// both below 1e-290 in magnitude (subnormals, where Boost's error is larger) count as equal.
// Boost 1.81 also reads a zero with an exponent past 308 ("0e400") as NaN: a NaN is not compared.
// Exact decimal equality is what the canonical bytes already say.
#include "fuzz_common.hpp"

#include "coalesce/canonical_json.hpp"

#include <boost/json/basic_parser_impl.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <array>
#include <cmath>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace {

using namespace coalescer;
namespace json = boost::json;
using coalesce::canonicalize_json;
using coalesce::ignore_list;

const std::array<ignore_list, 4>& ignore_lists() {
    static const std::array<ignore_list, 4> lists{
        ignore_list(),
        ignore_list({"/user", "/metadata/trace_id", "/stream_options"}),
        ignore_list({"/messages/0", "/messages/1/content", "/a~1b", "/~0"}),
        ignore_list({"/0", "/1/2", "/", "/x/0/y"}),
    };
    return lists;
}

// Boost.JSON's strict parser, plus the rule Boost does not have: no repeated member names.
class oracle_handler {
  public:
    static constexpr std::size_t max_object_size = std::size_t(-1);
    static constexpr std::size_t max_array_size = std::size_t(-1);
    static constexpr std::size_t max_key_size = std::size_t(-1);
    static constexpr std::size_t max_string_size = std::size_t(-1);
    using ec_t = json::error_code;
    using sv = json::string_view;

    bool duplicate = false;

    bool on_document_begin(ec_t&) { return true; }
    bool on_document_end(ec_t&) { return true; }
    bool on_object_begin(ec_t&) {
        names_.emplace_back();
        return true;
    }
    bool on_object_end(std::size_t, ec_t&) {
        names_.pop_back();
        return true;
    }
    bool on_array_begin(ec_t&) { return true; }
    bool on_array_end(std::size_t, ec_t&) { return true; }
    bool on_key_part(sv s, std::size_t, ec_t&) {
        key_.append(s.data(), s.size());
        return true;
    }
    bool on_key(sv s, std::size_t, ec_t&) {
        key_.append(s.data(), s.size());
        duplicate = duplicate || !names_.back().insert(key_).second;
        key_.clear();
        return true;
    }
    bool on_string_part(sv, std::size_t, ec_t&) { return true; }
    bool on_string(sv, std::size_t, ec_t&) { return true; }
    bool on_number_part(sv, ec_t&) { return true; }
    bool on_int64(std::int64_t, sv, ec_t&) { return true; }
    bool on_uint64(std::uint64_t, sv, ec_t&) { return true; }
    bool on_double(double, sv, ec_t&) { return true; }
    bool on_bool(bool, ec_t&) { return true; }
    bool on_null(ec_t&) { return true; }
    bool on_comment_part(sv, ec_t&) { return true; }
    bool on_comment(sv, ec_t&) { return true; }

  private:
    std::vector<std::set<std::string>> names_;
    std::string key_;
};

json::parse_options strict_options() {
    json::parse_options options;
    options.max_depth = coalesce::max_json_depth;
    return options;
}

enum class verdict { accept, reject, no_verdict };

verdict oracle(std::string_view text) {
    json::basic_parser<oracle_handler> parser(strict_options());
    json::error_code ec;
    const auto used = parser.write_some(false, text.data(), text.size(), ec);
    if (ec == json::error::exponent_overflow) {
        return verdict::no_verdict;
    }
    const bool ok = !ec && used == text.size() && parser.done() && !parser.handler().duplicate;
    return ok ? verdict::accept : verdict::reject;
}

std::optional<json::value> boost_parse(std::string_view text) {
    json::error_code ec;
    auto v = json::parse(text, ec, {}, strict_options());
    if (ec) {
        return std::nullopt;
    }
    return v;
}

bool same_number(const json::value& x, const json::value& y) {
    const bool x_integer = x.is_int64() || x.is_uint64();
    const bool y_integer = y.is_int64() || y.is_uint64();
    if (x_integer && y_integer) {
        return x == y;  // Boost compares int64 and uint64 by value
    }
    const double a = x.to_number<double>();
    const double b = y.to_number<double>();
    if (a == b) {
        return true;
    }
    if (std::isnan(a) || std::isnan(b)) {
        return true;  // Boost 1.81 reads 0e400 as 0 x inf = NaN (the canonical form says "0")
    }
    if (std::isinf(a) || std::isinf(b)) {
        return false;
    }
    const double scale = std::max(std::fabs(a), std::fabs(b));
    return scale < 1e-290 || std::fabs(a - b) <= 1e-14 * scale;
}

bool same_value(const json::value& x, const json::value& y) {
    if (x.is_number() && y.is_number()) {
        return same_number(x, y);
    }
    if (x.kind() != y.kind()) {
        return false;
    }
    if (x.is_object()) {
        const auto& a = x.get_object();
        const auto& b = y.get_object();
        if (a.size() != b.size()) {
            return false;
        }
        for (const auto& member : a) {
            const auto* other = b.if_contains(member.key());
            if (other == nullptr || !same_value(member.value(), *other)) {
                return false;
            }
        }
        return true;
    }
    if (x.is_array()) {
        const auto& a = x.get_array();
        const auto& b = y.get_array();
        if (a.size() != b.size()) {
            return false;
        }
        for (std::size_t i = 0; i < a.size(); ++i) {
            if (!same_value(a[i], b[i])) {
                return false;
            }
        }
        return true;
    }
    return x == y;  // string, bool, null
}

bool has_double(const json::value& v) {
    if (v.is_double()) {
        return true;
    }
    if (v.is_object()) {
        for (const auto& member : v.get_object()) {
            if (has_double(member.value())) {
                return true;
            }
        }
    }
    if (v.is_array()) {
        for (const auto& element : v.get_array()) {
            if (has_double(element)) {
                return true;
            }
        }
    }
    return false;
}

// Properties 1-3 for one document; returns its canonical text without an ignore list.
std::optional<std::string> check_document(std::string_view text, const ignore_list& ignore) {
    const auto plain = canonicalize_json(text, ignore_list());
    const auto expected = oracle(text);
    if (expected != verdict::no_verdict) {
        FUZZ_CHECK(plain.has_value() == (expected == verdict::accept));
    }
    if (!ignore.empty()) {
        const auto ignored = canonicalize_json(text, ignore);
        FUZZ_CHECK(ignored.has_value() == plain.has_value());
        if (ignored) {
            FUZZ_CHECK(oracle(*ignored) != verdict::reject);
            FUZZ_CHECK(canonicalize_json(*ignored, ignore_list()) == ignored);
        }
    }
    if (!plain) {
        return plain;
    }
    FUZZ_CHECK(oracle(*plain) != verdict::reject);
    FUZZ_CHECK(canonicalize_json(*plain, ignore_list()) == plain);
    const auto original = boost_parse(text);
    const auto canonical = boost_parse(*plain);
    if (original && canonical) {
        FUZZ_CHECK(same_value(*original, *canonical));
        if (!has_double(*original)) {
            FUZZ_CHECK(canonicalize_json(json::serialize(*original), ignore_list()) == plain);
        }
    }
    return plain;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) {
        return 0;
    }
    const auto& ignore = ignore_lists()[data[0] % ignore_lists().size()];
    const auto text = fuzz::as_text(data + 1, size - 1);
    const auto separator = text.find('\xff');
    if (separator == std::string_view::npos) {
        check_document(text, ignore);
        return 0;
    }
    const auto a = text.substr(0, separator);
    const auto b = text.substr(separator + 1);
    const auto canonical_a = check_document(a, ignore);
    const auto canonical_b = check_document(b, ignore);
    if (canonical_a && canonical_b && *canonical_a == *canonical_b) {
        const auto value_a = boost_parse(a);
        const auto value_b = boost_parse(b);
        if (value_a && value_b) {
            FUZZ_CHECK(same_value(*value_a, *value_b));
        }
    }
    return 0;
}
