#include "ops/token_usage.hpp"

#include <doctest/doctest.h>

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>

#include <array>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <utility>

using coalescer::ops::extract_usage;

namespace {

constexpr std::string_view json_type = "application/json";
constexpr std::string_view sse_type = "text/event-stream";

auto usage_of(std::string_view content_type, std::string_view body) {
    return extract_usage(content_type, {&body, 1});
}

}  // namespace

TEST_CASE("usage of an OpenAI completion: total_tokens and the top-level model") {
    const auto u = usage_of(json_type, R"({"id":"c1","model":"gpt-4o","choices":[{"index":0,
        "message":{"role":"assistant","content":"a \"usage\":{\"total_tokens\":999}"}}],
        "usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15}})");
    REQUIRE(u);
    CHECK(u->model == "gpt-4o");
    CHECK(u->tokens == 15);
}

TEST_CASE("usage nested below the top level is not the response's usage") {
    const auto u = usage_of(json_type, R"({"choices":[{"usage":{"total_tokens":100}}],
        "usage":{"prompt_tokens":3,"completion_tokens":4},"model":"sonar",
        "extra":{"usage":{"total_tokens":200},"model":"not-this-one"}})");
    REQUIRE(u);
    CHECK(u->model == "sonar");
    CHECK(u->tokens == 7);  // prompt + completion when there is no total
}

TEST_CASE("usage: absent, empty, malformed or not numbers gives nothing") {
    CHECK_FALSE(usage_of(json_type, R"({"model":"m","choices":[]})"));
    CHECK_FALSE(usage_of(json_type, R"({"model":"m","usage":{}})"));
    CHECK_FALSE(usage_of(json_type, R"({"model":"m","usage":{"total_tokens":12})"));
    CHECK_FALSE(
        usage_of(json_type, R"({"model":"m","usage":{"total_tokens":-3,"prompt_tokens":1.5}})"));
    CHECK_FALSE(usage_of(json_type, R"({"model":"m","usage":[{"total_tokens":3}]})"));
    CHECK_FALSE(usage_of(json_type, "not json"));
    const auto no_model = usage_of(json_type, R"({"model":7,"usage":{"total_tokens":4}})");
    REQUIRE(no_model);
    CHECK(no_model->model == "unknown");
    CHECK(no_model->tokens == 4);
}

TEST_CASE("usage of a body that arrived in pieces, with a long model name and long keys") {
    const std::array<std::string_view, 3> pieces{
        R"({"a_key_much_longer_than_any_usage_field_name":{"total_tokens":1},"mo)",
        R"(del":"a-model-name-well-past-the-small-string-size-2024-07-18","usage":{"input)",
        R"(_tokens":20,"output_tokens":22}})"};
    const auto u = extract_usage(json_type, pieces);
    REQUIRE(u);
    CHECK(u->model == "a-model-name-well-past-the-small-string-size-2024-07-18");
    CHECK(u->tokens == 42);  // input + output
}

TEST_CASE("usage of an OpenAI-style stream: the last event that carries it") {
    const auto u = usage_of(sse_type,
                            "data: {\"model\":\"sonar\",\"usage\":{\"total_tokens\":5}}\n\n"
                            "data: {\"model\":\"sonar\",\"usage\":{\"total_tokens\":9}}\r\n\r\n"
                            "data: {\"model\":\"sonar\",\"choices\":[]}\n\n"
                            "data: [DONE]\n\n");
    REQUIRE(u);
    CHECK(u->model == "sonar");
    CHECK(u->tokens == 9);
}

TEST_CASE("usage of an Anthropic stream: input from message_start, output from message_delta") {
    const auto u = usage_of(
        sse_type,
        "event: message_start\n"
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"m1\",\"model\":\"claude-x\","
        "\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n"
        "event: content_block_delta\n"
        "data: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"hi\"}}\n\n"
        "event: message_delta\n"
        "data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":15}}\n\n"
        "event: message_stop\n"
        "data: {\"type\":\"message_stop\"}\n\n");
    REQUIRE(u);
    CHECK(u->model == "claude-x");
    CHECK(u->tokens == 40);
}

namespace {

// The straightforward reading, on a parsed document tree: what the event-driven reader (and
// its fast path for plain ASCII) must agree with.
std::uint64_t number_field(const boost::json::object& usage, std::string_view name) {
    const auto* v = usage.if_contains(name);
    if (v != nullptr && v->is_uint64())
        return v->as_uint64();
    if (v != nullptr && v->is_int64() && v->as_int64() > 0)
        return static_cast<std::uint64_t>(v->as_int64());
    return 0;
}

std::optional<std::pair<std::string, std::uint64_t>> reference_usage(std::string_view text) {
    boost::system::error_code ec;
    boost::json::parse_options options;
    options.allow_invalid_utf8 = true;  // usage is read whatever the text's encoding
    const auto v = boost::json::parse(text, ec, {}, options);
    if (ec || !v.is_object())
        return std::nullopt;
    const auto& o = v.as_object();
    std::string model = "unknown";
    if (const auto* m = o.if_contains("model");
        m != nullptr && m->is_string() && !m->as_string().empty())
        model = std::string(m->as_string());
    const auto* u = o.if_contains("usage");
    if (u == nullptr || !u->is_object())
        return std::nullopt;
    const auto& usage = u->as_object();
    const auto total = number_field(usage, "total_tokens");
    const auto pc = number_field(usage, "prompt_tokens") + number_field(usage, "completion_tokens");
    const auto io = number_field(usage, "input_tokens") + number_field(usage, "output_tokens");
    if (total + pc + io == 0)
        return std::nullopt;
    return std::pair{model, total != 0 ? total : (pc != 0 ? pc : io)};
}

// The event-driven reading of `doc` gives what the document-tree reading gives.
void reads_like_reference(const std::string& doc) {
    INFO("document: " << doc);
    const auto expected = reference_usage(doc);
    const auto got = usage_of(json_type, doc);
    REQUIRE(got.has_value() == expected.has_value());
    if (got) {
        CHECK(got->model == expected->first);
        CHECK(got->tokens == expected->second);
    }
}

}  // namespace

TEST_CASE("usage reading agrees with a document-tree reading on 30,000 mutated completions") {
    const std::array<std::string, 4> samples{
        R"({"id":"c1","model":"gpt-4o","choices":[{"message":{"content":"Paris."}}],)"
        R"("usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15}})",
        R"({"model":"sonar","citations":["https://e.example/a?b=1"],"choices":[{"index":0,)"
        R"("message":{"content":"Caf\u00e9 \"quoted\" é"}}],"usage":{"total_tokens":123,)"
        R"("prompt_tokens":100,"completion_tokens":23,"extra":[1,2.5,-3,true,false,null]}})",
        R"({"usage":{"input_tokens":7,"output_tokens":9},"model":"claude-x","stop":null})",
        R"( { "model" : "m" , "usage" : { "total_tokens" : 18446744073709551615 } } )"};
    const std::string alphabet =
        std::string("{}[]\":,\\ 0123456789-.eEtrunfals_ku\xc3\xa9\x01") + std::string(1, '\0');
    std::mt19937 rng(20261127);
    for (int round = 0; round < 30000; ++round) {
        std::string doc = samples[rng() % samples.size()];
        const int edits = static_cast<int>(rng() % 4);
        for (int e = 0; e < edits; ++e) {
            const auto at = rng() % doc.size();
            const char c = alphabet[rng() % alphabet.size()];
            switch (rng() % 3) {
                case 0:
                    doc[at] = c;
                    break;
                case 1:
                    doc.insert(doc.begin() + static_cast<std::ptrdiff_t>(at), c);
                    break;
                default:
                    doc.erase(at, 1);
                    break;
            }
        }
        reads_like_reference(doc);
    }
}

TEST_CASE("usage is read past text that is not valid UTF-8") {
    // A provider that cuts a multi-byte character still billed the tokens.
    const std::string body =
        "{\"model\":\"sonar\",\"choices\":[{\"message\":{\"content\":\"caf\xC3\"}}],"
        "\"usage\":{\"total_tokens\":9}}";
    const auto u = usage_of(json_type, body);
    REQUIRE(u);
    CHECK(u->model == "sonar");
    CHECK(u->tokens == 9);
}

TEST_CASE("usage: escapes, exponents, long numbers, surrogates, depth: read as a tree does") {
    const auto nest = [](int depth) {
        return R"({"model":"m","usage":{"total_tokens":5},"x":)" + std::string(depth, '[') +
               std::string(depth, ']') + "}";
    };
    const std::array<std::string, 10> docs{
        R"({"model":"m","us\u0061ge":{"total_tokens":5}})",                 // escaped key
        R"({"model":"gpt\u002d4o","usage":{"total_tokens":6}})",            // escaped model
        R"({"model":"m","usage":{"total_tokens":1e2,"prompt_tokens":3}})",  // exponent
        R"({"model":"m","usage":{"total_tokens":12345678901234567890}})",   // 20 digits
        R"({"model":"m","usage":{"total_tokens":7},"c":"\ud83d\ude00"})",   // surrogate pair
        R"({"model":"m","usage":{"total_tokens":7},"c":"\ud83d"})",         // lone surrogate
        R"({"model":"m","usage":{"total_tokens":-0,"prompt_tokens":2.50}})",
        R"({"model":"m","usage":{"total_tokens":8},})",  // trailing comma
        nest(20),
        nest(40),  // deeper than Boost.JSON's limit: not read
    };
    for (const auto& doc : docs) {
        reads_like_reference(doc);
    }
    CHECK(usage_of(json_type, docs[0])->tokens == 5);
    CHECK(usage_of(json_type, docs[1])->model == "gpt-4o");
    CHECK(usage_of(json_type, docs[2])->tokens == 3);
    CHECK_FALSE(usage_of(json_type, docs[5]));
    CHECK_FALSE(usage_of(json_type, docs[9]));
}
