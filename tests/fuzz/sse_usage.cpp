// ops::extract_usage on a response body that arrived in pieces, JSON or SSE.
//
// Input: byte 0 picks the content type (application/json or text/event-stream, with or without
// parameters), byte 1 how the body is cut (0: one piece; otherwise a seed for pieces of 1..97
// bytes), the rest is the body.
//
// Properties: no crash, leak or unbounded allocation; the answer does not depend on how the
// body was cut; a reported usage has a model ("unknown" at least); and for a JSON body the
// event-driven reading agrees with a plain reading of Boost.JSON's document tree (the top-level
// "usage" object: total_tokens, else prompt + completion, else input + output; the top-level
// "model" string), as the header and the unit tests describe it.
#include "fuzz_common.hpp"

#include "ops/token_usage.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>

#include <array>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace {

using namespace coalescer;
namespace json = boost::json;

constexpr std::array<std::string_view, 4> content_types{"application/json", "text/event-stream",
                                                        "text/event-stream; charset=utf-8",
                                                        "application/json; charset=utf-8"};

std::uint64_t number_field(const json::object& usage, std::string_view name) {
    const auto* v = usage.if_contains(name);
    if (v != nullptr && v->is_uint64()) {
        return v->as_uint64();
    }
    if (v != nullptr && v->is_int64() && v->as_int64() > 0) {
        return static_cast<std::uint64_t>(v->as_int64());
    }
    return 0;
}

// The reading of a JSON completion on a document tree (tests/unit/token_usage_test.cpp).
std::optional<ops::token_usage> reference_usage(std::string_view text) {
    json::error_code ec;
    json::parse_options options;
    options.allow_invalid_utf8 = true;
    const auto v = json::parse(text, ec, {}, options);
    if (ec || !v.is_object()) {
        return std::nullopt;
    }
    const auto& o = v.get_object();
    std::string model = "unknown";
    if (const auto* m = o.if_contains("model");
        m != nullptr && m->is_string() && !m->get_string().empty()) {
        model = std::string(m->get_string());
    }
    const auto* u = o.if_contains("usage");
    if (u == nullptr || !u->is_object()) {
        return std::nullopt;
    }
    const auto& usage = u->get_object();
    const auto total = number_field(usage, "total_tokens");
    const auto pc = number_field(usage, "prompt_tokens") + number_field(usage, "completion_tokens");
    const auto io = number_field(usage, "input_tokens") + number_field(usage, "output_tokens");
    if (total + pc + io == 0) {
        return std::nullopt;
    }
    return ops::token_usage{model, total != 0 ? total : (pc != 0 ? pc : io)};
}

bool same(const std::optional<ops::token_usage>& a, const std::optional<ops::token_usage>& b) {
    return a.has_value() == b.has_value() &&
           (!a || (a->model == b->model && a->tokens == b->tokens));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 2) {
        return 0;
    }
    const auto content_type = content_types[data[0] % content_types.size()];
    const auto body = fuzz::as_text(data + 2, size - 2);
    fuzz::splitter split(data[1], 97);
    const auto pieces = split.split(body);
    const auto in_pieces = ops::extract_usage(content_type, pieces);
    const std::string_view whole[] = {body};
    const auto at_once = ops::extract_usage(content_type, whole);
    FUZZ_CHECK(same(in_pieces, at_once));
    if (at_once) {
        FUZZ_CHECK(!at_once->model.empty());
    }
    if (content_type.find("event-stream") == std::string_view::npos) {
        FUZZ_CHECK(same(at_once, reference_usage(body)));
    }
    return 0;
}
