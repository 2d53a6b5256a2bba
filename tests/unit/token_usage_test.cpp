#include "ops/token_usage.hpp"

#include <doctest/doctest.h>

#include <array>
#include <string>
#include <string_view>

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
