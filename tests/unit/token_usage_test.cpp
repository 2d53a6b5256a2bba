#include "ops/token_usage.hpp"
#include "usage_reference.hpp"

#include <doctest/doctest.h>

#include <array>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

using coalescer::ops::extract_usage;
using coalescer::ops::token_usage;

namespace {

constexpr std::string_view json_type = "application/json";
constexpr std::string_view sse_type = "text/event-stream";

auto usage_of(std::string_view content_type, std::string_view body, std::string_view request = {}) {
    return extract_usage(content_type, {&body, 1}, request);
}

// input, cached_input, cache_write_input, output, reasoning
using kinds = std::array<std::uint64_t, 5>;
kinds kinds_of(const token_usage& u) {
    return {u.input, u.cached_input, u.cache_write_input, u.output, u.reasoning};
}

std::string sse(const std::vector<std::string>& payloads, bool named_events = false) {
    std::string out;
    for (const auto& p : payloads) {
        if (named_events) {
            const auto at = p.find("\"type\":\"") + 8;
            out += "event: " + p.substr(at, p.find('"', at) - at) + "\n";
        }
        out += "data: " + p + "\n\n";
    }
    return out;
}

}  // namespace

// Fixtures in each protocol's documented shape (the SDKs' types: openai-node ChatCompletion,
// ChatCompletionChunk, Responses' ResponseUsage and ResponseCompletedEvent; @anthropic-ai/sdk
// Message, RawMessageStartEvent, RawMessageDeltaEvent with MessageDeltaUsage; Perplexity's
// UsageInfo): the kinds come out disjoint and normalised.
struct fixture {
    const char* name;
    std::string_view type;
    std::string body;
    std::string model;
    kinds expected;
    std::optional<double> cost;
};

TEST_CASE("usage of every protocol, JSON and SSE, in disjoint kinds") {
    const std::string chat_usage =
        R"({"prompt_tokens":2006,"completion_tokens":300,"total_tokens":2306,)"
        R"("prompt_tokens_details":{"cached_tokens":1920,"audio_tokens":0},)"
        R"("completion_tokens_details":{"reasoning_tokens":192,"audio_tokens":0}})";
    const std::string responses_usage =
        R"({"input_tokens":1200,"input_tokens_details":{"cached_tokens":1000},)"
        R"("output_tokens":283,"output_tokens_details":{"reasoning_tokens":64},"total_tokens":1483})";
    const std::string response_object =
        R"({"id":"resp_1","object":"response","status":"completed",)"
        R"("model":"gpt-5-2025-08-07","output":[{"type":"message",)"
        R"("content":[{"type":"output_text","text":"Hi"}]}],"usage":)" +
        responses_usage + "}";
    const std::string anthropic_usage =
        R"({"input_tokens":21,"cache_creation_input_tokens":19000,"cache_read_input_tokens":26731,)"
        R"("cache_creation":{"ephemeral_5m_input_tokens":19000,"ephemeral_1h_input_tokens":0},)"
        R"("output_tokens":393,"service_tier":"standard"})";
    const std::string perplexity_cost =
        R"("cost":{"input_tokens_cost":0.00002,"output_tokens_cost":0.00004,"request_cost":0.005,"total_cost":0.00506})";
    const std::vector<fixture> fixtures{
        {"chat completion JSON, cached and reasoning details",
         json_type,
         R"({"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o-2024-08-06","choices":[{"index":0,)"
         R"("message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}],"usage":)" +
             chat_usage + "}",
         "gpt-4o-2024-08-06",
         {86, 1920, 0, 300, 192},
         std::nullopt},
        {"chat stream, include_usage: a last choices: [] chunk",
         sse_type,
         sse({R"({"id":"c","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":{"content":"Hi"}}],"usage":null})",
              R"({"id":"c","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null})",
              R"({"id":"c","object":"chat.completion.chunk","model":"gpt-4o","choices":[],"usage":)" +
                  chat_usage + "}",
              "[DONE]"}),
         "gpt-4o",
         {86, 1920, 0, 300, 192},
         std::nullopt},
        {"Perplexity stream: cumulative usage in every chunk, cost in the last, no [DONE]",
         sse_type,
         sse({R"({"id":"p","model":"sonar","object":"chat.completion","usage":{"prompt_tokens":18,"completion_tokens":1,"total_tokens":19},"choices":[]})",
              R"({"id":"p","model":"sonar","object":"chat.completion","usage":{"prompt_tokens":18,"completion_tokens":41,"total_tokens":59,"search_context_size":"low",)" +
                  perplexity_cost +
                  R"(},"choices":[{"delta":{"content":""},"finish_reason":"stop"}]})"}),
         "sonar",
         {18, 0, 0, 41, 0},
         0.00506},
        {"Perplexity JSON: cost parts without a total",
         json_type,
         R"({"model":"sonar-pro","usage":{"prompt_tokens":5,"completion_tokens":7,"reasoning_tokens":3,)"
         R"("cost":{"input_tokens_cost":0.25,"output_tokens_cost":0.5,"request_cost":0.125}}})",
         "sonar-pro",
         {5, 0, 0, 7, 3},
         0.875},
        {"Responses JSON",
         json_type,
         response_object,
         "gpt-5-2025-08-07",
         {200, 1000, 0, 283, 64},
         std::nullopt},
        {"Responses stream: response.completed",
         sse_type,
         sse({R"({"type":"response.created","sequence_number":0,"response":{"id":"resp_1","model":"gpt-5-2025-08-07","status":"in_progress","output":[],"usage":null}})",
              R"({"type":"response.output_text.delta","sequence_number":1,"item_id":"m","output_index":0,"content_index":0,"delta":"Hi"})",
              R"({"type":"response.completed","sequence_number":2,"response":)" + response_object +
                  "}"},
             true),
         "gpt-5-2025-08-07",
         {200, 1000, 0, 283, 64},
         std::nullopt},
        {"Responses stream: response.incomplete (max_output_tokens)",
         sse_type,
         sse({R"({"type":"response.created","sequence_number":0,"response":{"id":"r","model":"o4-mini","usage":null}})",
              R"({"type":"response.incomplete","sequence_number":5,"response":{"id":"r","status":"incomplete","incomplete_details":{"reason":"max_output_tokens"},"model":"o4-mini","usage":{"input_tokens":40,"input_tokens_details":{"cached_tokens":0},"output_tokens":16,"output_tokens_details":{"reasoning_tokens":16},"total_tokens":56}}})"},
             true),
         "o4-mini",
         {40, 0, 0, 16, 16},
         std::nullopt},
        {"Messages JSON with prompt caching",
         json_type,
         R"({"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"Hi"}],)"
         R"("stop_reason":"end_turn","usage":)" +
             anthropic_usage + "}",
         "claude-sonnet-4-5",
         {21, 26731, 19000, 393, 0},
         std::nullopt},
        {"Messages stream: input and cache in message_start, output in message_delta",
         sse_type,
         sse({R"({"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"usage":{"input_tokens":21,"cache_creation_input_tokens":19000,"cache_read_input_tokens":26731,"output_tokens":1}}})",
              R"({"type":"ping"})",
              R"({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}})",
              R"({"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":393}})",
              R"({"type":"message_stop"})"},
             true),
         "claude-sonnet-4-5",
         {21, 26731, 19000, 393, 0},
         std::nullopt},
        {"Messages stream: message_delta carries input too (cumulative), nulls keep "
         "message_start's",
         sse_type,
         sse({R"({"type":"message_start","message":{"id":"msg_1","model":"claude-opus-4-1","content":[],"usage":{"input_tokens":5,"cache_creation_input_tokens":100,"cache_read_input_tokens":0,"output_tokens":1}}})",
              R"({"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"input_tokens":21,"cache_creation_input_tokens":null,"cache_read_input_tokens":7,"output_tokens":50}})",
              R"({"type":"message_stop"})"},
             true),
         "claude-opus-4-1",
         {21, 7, 100, 50, 0},
         std::nullopt},
        {"DeepSeek: prompt_cache_hit_tokens inside prompt_tokens",
         json_type,
         R"({"model":"deepseek-chat","usage":{"prompt_tokens":100,"completion_tokens":10,"prompt_cache_hit_tokens":64,"prompt_cache_miss_tokens":36}})",
         "deepseek-chat",
         {36, 64, 0, 10, 0},
         std::nullopt},
    };
    for (const auto& f : fixtures) {
        INFO(f.name);
        const auto u = usage_of(f.type, f.body);
        REQUIRE(u);
        CHECK(u->model == f.model);
        CHECK(kinds_of(*u) == f.expected);
        CHECK(u->total() == f.expected[0] + f.expected[1] + f.expected[2] + f.expected[3]);
        CHECK(u->provider_cost_usd == f.cost);
        // Cut anywhere into pieces, the answer is the same.
        for (std::size_t size : {1u, 7u, 64u}) {
            std::vector<std::string_view> pieces;
            for (std::size_t at = 0; at < f.body.size(); at += size)
                pieces.push_back(std::string_view(f.body).substr(at, size));
            CHECK(coalescer::test::same_usage(extract_usage(f.type, pieces), u));
        }
        if (f.type == json_type)
            CHECK(coalescer::test::same_usage(u, coalescer::test::reference_usage(f.body)));
    }
}

TEST_CASE("usage: the model from the request when the answer names none, never \"unknown\" then") {
    const std::string request =
        R"({"messages":[{"role":"user","content":"model"}],"model":"sonar-pro"})";
    const auto u =
        usage_of(json_type, R"({"usage":{"prompt_tokens":3,"completion_tokens":4}})", request);
    REQUIRE(u);
    CHECK(u->model == "sonar-pro");
    CHECK(
        usage_of(json_type, R"({"model":"answer","usage":{"prompt_tokens":3}})", request)->model ==
        "answer");
    CHECK(usage_of(json_type, R"({"usage":{"prompt_tokens":3}})", "not json")->model == "unknown");
    // A Messages stream whose message_delta carries the input: the model is message_start's.
    const auto stream = usage_of(
        sse_type,
        sse({R"({"type":"message_start","message":{"model":"claude-x","usage":{"input_tokens":9,"output_tokens":1}}})",
             R"({"type":"message_delta","usage":{"input_tokens":9,"output_tokens":4}})"}));
    REQUIRE(stream);
    CHECK(stream->model == "claude-x");
    CHECK(kinds_of(*stream) == kinds{9, 0, 0, 4, 0});
}

TEST_CASE("usage: a stream cut before its usage counts nothing") {
    // Cut after message_start: the input figure alone is not the call's usage.
    CHECK_FALSE(usage_of(
        sse_type,
        sse({R"({"type":"message_start","message":{"model":"claude-x","usage":{"input_tokens":9,"output_tokens":1}}})",
             R"({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}})"})));
    // include_usage asked for, the last chunk never came.
    CHECK_FALSE(usage_of(
        sse_type,
        sse({R"({"model":"gpt-4o","choices":[{"delta":{"content":"Hi"}}],"usage":null})"})));
    // response.created carries usage: null; the stream ended before response.completed.
    CHECK_FALSE(usage_of(
        sse_type,
        sse({R"({"type":"response.created","response":{"model":"gpt-5","usage":null}})"})));
    // The last event cut mid-way: the previous cumulative usage is the one read.
    const auto u = usage_of(
        sse_type,
        "data: {\"model\":\"sonar\",\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2}}\n\n"
        "data: {\"model\":\"sonar\",\"usage\":{\"prompt_tok");
    REQUIRE(u);
    CHECK(kinds_of(*u) == kinds{5, 0, 0, 2, 0});
}

TEST_CASE("usage nested below the top level is not the response's usage") {
    const auto u = usage_of(json_type, R"({"choices":[{"usage":{"prompt_tokens":100}}],
        "usage":{"prompt_tokens":3,"completion_tokens":4},"model":"sonar",
        "extra":{"usage":{"prompt_tokens":200},"model":"not-this-one"}})");
    REQUIRE(u);
    CHECK(u->model == "sonar");
    CHECK(kinds_of(*u) == kinds{3, 0, 0, 4, 0});
}

TEST_CASE("usage: absent, empty, malformed or not numbers gives nothing") {
    CHECK_FALSE(usage_of(json_type, R"({"model":"m","choices":[]})"));
    CHECK_FALSE(usage_of(json_type, R"({"model":"m","usage":{}})"));
    CHECK_FALSE(usage_of(json_type, R"({"model":"m","usage":{"prompt_tokens":12})"));
    CHECK_FALSE(usage_of(json_type,
                         R"({"model":"m","usage":{"prompt_tokens":-3,"completion_tokens":1.5}})"));
    CHECK_FALSE(usage_of(json_type, R"({"model":"m","usage":[{"prompt_tokens":3}]})"));
    CHECK_FALSE(usage_of(json_type, "not json"));
    const auto no_model = usage_of(json_type, R"({"model":7,"usage":{"output_tokens":4}})");
    REQUIRE(no_model);
    CHECK(no_model->model == "unknown");
    CHECK(no_model->total() == 4);
}

TEST_CASE("usage of a body that arrived in pieces, with a long model name and long keys") {
    const std::array<std::string_view, 3> pieces{
        R"({"a_key_much_longer_than_any_usage_field_name":{"input_tokens":1},"mo)",
        R"(del":"a-model-name-well-past-the-small-string-size-2024-07-18","usage":{"input)",
        R"(_tokens":20,"output_tokens":22}})"};
    const auto u = extract_usage(json_type, pieces);
    REQUIRE(u);
    CHECK(u->model == "a-model-name-well-past-the-small-string-size-2024-07-18");
    CHECK(kinds_of(*u) == kinds{20, 0, 0, 22, 0});
}

namespace {

// The event-driven reading of `doc` gives what the document-tree reading gives.
void reads_like_reference(const std::string& doc) {
    INFO("document: " << doc);
    CHECK(coalescer::test::same_usage(usage_of(json_type, doc),
                                      coalescer::test::reference_usage(doc)));
}

}  // namespace

TEST_CASE("usage reading agrees with a document-tree reading on 30,000 mutated completions") {
    const std::array<std::string, 7> samples{
        R"({"id":"c1","model":"gpt-4o","choices":[{"message":{"content":"Paris."}}],)"
        R"("usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15}})",
        R"({"model":"sonar","citations":["https://e.example/a?b=1"],"choices":[{"index":0,)"
        R"("message":{"content":"Caf\u00e9 \"quoted\" é"}}],"usage":{"total_tokens":123,)"
        R"("prompt_tokens":100,"completion_tokens":23,"extra":[1,2.5,-3,true,false,null],)"
        R"("cost":{"request_cost":0.005,"total_cost":0.5}}})",
        R"({"usage":{"input_tokens":7,"output_tokens":9},"model":"claude-x","stop":null})",
        R"( { "model" : "m" , "usage" : { "prompt_tokens" : 18446744073709551615 } } )",
        R"({"usage":{"input_tokens":7,"cache_read_input_tokens":3,"cache_creation_input_tokens":2,)"
        R"("output_tokens":9},"model":"claude-x"})",
        R"({"type":"response.completed","response":{"model":"gpt-5","usage":{"input_tokens":9,)"
        R"("input_tokens_details":{"cached_tokens":4},"output_tokens":5,)"
        R"("output_tokens_details":{"reasoning_tokens":2}}},"model":"top"})",
        R"({"model":"o3","usage":{"prompt_tokens":9,"prompt_tokens_details":{"cached_tokens":4},)"
        R"("completion_tokens":5,"completion_tokens_details":{"reasoning_tokens":2}}})"};
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
        "\"usage\":{\"prompt_tokens\":9}}";
    const auto u = usage_of(json_type, body);
    REQUIRE(u);
    CHECK(u->model == "sonar");
    CHECK(u->total() == 9);
}

TEST_CASE("usage: escapes, exponents, long numbers, surrogates, depth: read as a tree does") {
    const auto nest = [](int depth) {
        return R"({"model":"m","usage":{"prompt_tokens":5},"x":)" + std::string(depth, '[') +
               std::string(depth, ']') + "}";
    };
    const std::array<std::string, 10> docs{
        R"({"model":"m","us\u0061ge":{"prompt_tokens":5}})",                 // escaped key
        R"({"model":"gpt\u002d4o","usage":{"prompt_tokens":6}})",            // escaped model
        R"({"model":"m","usage":{"prompt_tokens":1e2,"output_tokens":3}})",  // exponent
        R"({"model":"m","usage":{"prompt_tokens":12345678901234567890}})",   // 20 digits
        R"({"model":"m","usage":{"prompt_tokens":7},"c":"\ud83d\ude00"})",   // surrogate pair
        R"({"model":"m","usage":{"prompt_tokens":7},"c":"\ud83d"})",         // lone surrogate
        R"({"model":"m","usage":{"prompt_tokens":-0,"completion_tokens":2.50}})",
        R"({"model":"m","usage":{"prompt_tokens":8},})",  // trailing comma
        nest(20),
        nest(40),  // deeper than Boost.JSON's limit: not read
    };
    for (const auto& doc : docs) {
        reads_like_reference(doc);
    }
    CHECK(usage_of(json_type, docs[0])->total() == 5);
    CHECK(usage_of(json_type, docs[1])->model == "gpt-4o");
    CHECK(usage_of(json_type, docs[2])->total() == 3);
    CHECK_FALSE(usage_of(json_type, docs[5]));
    CHECK_FALSE(usage_of(json_type, docs[9]));
}

TEST_CASE("usage of long streams: read from a tail that grows until it holds the usage") {
    std::string messages = sse(
        {R"({"type":"message_start","message":{"model":"claude-x","usage":{"input_tokens":9,"cache_read_input_tokens":4,"output_tokens":1}}})"});
    std::string delta = sse({R"({"type":"content_block_delta","delta":{"text":"0123456789"}})"});
    for (int i = 0; i < 4000; ++i)  // about 300 KiB
        messages += delta;
    messages += sse({R"({"type":"message_delta","usage":{"output_tokens":4000}})",
                     R"({"type":"message_stop"})"});
    // A cumulative chat stream whose last chunks (past several windows) carry no usage.
    std::string chat =
        sse({R"({"model":"sonar","usage":{"prompt_tokens":5,"completion_tokens":7}})"});
    for (int i = 0; i < 20000; ++i)
        chat += sse({R"({"model":"sonar","choices":[{"delta":{"content":"more"}}]})"});
    for (const auto& [body, expected] :
         {std::pair{messages, kinds{9, 4, 0, 4000, 0}}, std::pair{chat, kinds{5, 0, 0, 7, 0}}}) {
        REQUIRE(body.size() > 256 * 1024);
        const auto whole = usage_of(sse_type, body);
        REQUIRE(whole);
        CHECK(kinds_of(*whole) == expected);
        for (std::size_t size : {16384u, 65536u, 1000u}) {
            std::vector<std::string_view> pieces;
            for (std::size_t at = 0; at < body.size(); at += size)
                pieces.push_back(std::string_view(body).substr(at, size));
            CHECK(coalescer::test::same_usage(extract_usage(sse_type, pieces), whole));
        }
    }
}
