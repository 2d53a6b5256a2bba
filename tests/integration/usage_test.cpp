// Usage accounting through the sidecar process, one scripted upstream speaking each protocol's
// wire format (chat completions, Perplexity, Anthropic Messages, OpenAI Responses; JSON and SSE):
// a burst of identical requests moves the spent counters by the answer's usage once and the
// saved counters by it for every other client, kind by kind, and every access-log line carries
// the tokens of its answer.
#include "child_process.hpp"
#include "harness.hpp"
#include "raw_upstream.hpp"

#include <doctest/doctest.h>

#include <boost/json/parse.hpp>

#include <array>
#include <map>
#include <optional>
#include <sstream>
#include <thread>

using namespace coalescer;
using namespace coalescer::test;
using namespace std::chrono_literals;

namespace {

constexpr std::string_view json_type = "application/json";
constexpr std::string_view sse_type = "text/event-stream";
constexpr std::array<const char*, 4> kind_names{"input", "cached_input", "cache_write_input",
                                                "output"};

struct usage_case {
    std::string name;
    std::string path;
    std::string request_model;  // the request's "model"; the series is labelled with `model`
    std::string_view type;
    std::string body;  // the upstream's answer
    std::string model;
    std::array<std::uint64_t, 4> kinds;  // input, cached_input, cache_write_input, output
    std::uint64_t reasoning = 0;
    std::optional<double> cost;
};

// The upstream's price table in the test, and what a case's call costs by it (by hand): the
// provider's own figure first, the table where there is none.
constexpr const char* prices_yaml =
    "    prices:\n"
    "      gpt-4o-2024-08-06: {input_per_mtok: 2.5, output_per_mtok: 10, "
    "cached_input_per_mtok: 1.25}\n"
    "      claude-sonnet-4-5*: {input_per_mtok: 3, output_per_mtok: 15, cached_input_per_mtok: "
    "0.3, "
    "cache_write_input_per_mtok: 3.75, per_request: 0.001}\n"
    "      sonar*: {input_per_mtok: 1, output_per_mtok: 1, per_request: 0.005}\n";

std::string request_body(const usage_case& c) {
    return R"({"model":")" + c.request_model + R"(","messages":[{"role":"user","content":")" +
           c.name + R"("}],"stream":)" + (c.type == sse_type ? "true" : "false") + "}";
}

std::string sse(const std::vector<std::string>& payloads) {
    std::string out;
    for (const auto& p : payloads)
        out += "data: " + p + "\n\n";
    return out;
}

std::string head_for(std::string_view type, std::size_t length) {
    return "HTTP/1.1 200 OK\r\nContent-Type: " + std::string(type) +
           "\r\nContent-Length: " + std::to_string(length) + "\r\n\r\n";
}

std::vector<usage_case> cases() {
    const std::string chat_usage =
        R"({"prompt_tokens":2006,"completion_tokens":300,"total_tokens":2306,)"
        R"("prompt_tokens_details":{"cached_tokens":1920},)"
        R"("completion_tokens_details":{"reasoning_tokens":192}})";
    const auto response_object = [](const std::string& model, const std::string& status) {
        return R"({"id":"resp_1","object":"response","status":")" + status + R"(","model":")" +
               model +
               R"(","output":[{"type":"message","content":[{"type":"output_text","text":"Hi"}]}],)"
               R"("usage":{"input_tokens":1200,"input_tokens_details":{"cached_tokens":1000},)"
               R"("output_tokens":283,"output_tokens_details":{"reasoning_tokens":64},)"
               R"("total_tokens":1483}})";
    };
    const std::string pplx_usage =
        R"("usage":{"prompt_tokens":18,"completion_tokens":41,"total_tokens":59,"cost":)"
        R"({"input_tokens_cost":0.00002,"output_tokens_cost":0.00004,"request_cost":0.005,)"
        R"("total_cost":0.00506}})";
    return {
        {"chat JSON",
         "/v1/chat/completions",
         "gpt-4o",
         json_type,
         R"({"object":"chat.completion","model":"gpt-4o-2024-08-06","choices":[{"index":0,)"
         R"("message":{"role":"assistant","content":"Hi"}}],"usage":)" +
             chat_usage + "}",
         "gpt-4o-2024-08-06",
         {86, 1920, 0, 300},
         192},
        {"chat SSE, include_usage",
         "/v1/chat/completions",
         "gpt-4o-mini",
         sse_type,
         sse({R"({"model":"gpt-4o-mini-s","choices":[{"index":0,"delta":{"content":"Hi"}}],"usage":null})",
              R"({"model":"gpt-4o-mini-s","choices":[],"usage":)" + chat_usage + "}", "[DONE]"}),
         "gpt-4o-mini-s",
         {86, 1920, 0, 300},
         192},
        {"chat JSON, no model in the answer",
         "/v1/chat/completions",
         "request-named",
         json_type,
         R"({"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3}})",
         "request-named",
         {7, 0, 0, 3}},
        {"Perplexity SSE, cumulative",
         "/chat/completions",
         "sonar",
         sse_type,
         sse({R"({"model":"sonar-s","object":"chat.completion","usage":{"prompt_tokens":18,"completion_tokens":1},"choices":[]})",
              R"({"model":"sonar-s","object":"chat.completion",)" + pplx_usage +
                  R"(,"choices":[{"finish_reason":"stop","delta":{"content":""}}]})"}),
         "sonar-s",
         {18, 0, 0, 41},
         0,
         0.00506},
        {"Perplexity JSON",
         "/chat/completions",
         "sonar",
         json_type,
         R"({"model":"sonar-j","object":"chat.completion",)" + pplx_usage + R"(,"choices":[]})",
         "sonar-j",
         {18, 0, 0, 41},
         0,
         0.00506},
        {"Messages JSON, prompt caching",
         "/v1/messages",
         "claude",
         json_type,
         R"({"type":"message","model":"claude-sonnet-4-5-j","content":[{"type":"text","text":"Hi"}],)"
         R"("usage":{"input_tokens":21,"cache_creation_input_tokens":19000,)"
         R"("cache_read_input_tokens":26731,"output_tokens":393}})",
         "claude-sonnet-4-5-j",
         {21, 26731, 19000, 393}},
        {"Messages SSE, input in message_delta",
         "/v1/messages",
         "claude",
         sse_type,
         "event: message_start\n" +
             sse({R"({"type":"message_start","message":{"model":"claude-sonnet-4-5-s","content":[],"usage":{"input_tokens":21,"cache_creation_input_tokens":19000,"cache_read_input_tokens":26731,"output_tokens":1}}})"}) +
             "event: ping\n" + sse({R"({"type":"ping"})"}) + "event: message_delta\n" +
             sse({R"({"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"input_tokens":21,"cache_creation_input_tokens":null,"cache_read_input_tokens":26731,"output_tokens":393}})"}) +
             "event: message_stop\n" + sse({R"({"type":"message_stop"})"}),
         "claude-sonnet-4-5-s",
         {21, 26731, 19000, 393}},
        {"Responses JSON",
         "/v1/responses",
         "gpt-5",
         json_type,
         response_object("gpt-5-j", "completed"),
         "gpt-5-j",
         {200, 1000, 0, 283},
         64},
        {"Responses SSE, response.completed",
         "/v1/responses",
         "gpt-5",
         sse_type,
         sse({R"({"type":"response.created","response":{"model":"gpt-5-s","usage":null}})",
              R"({"type":"response.output_text.delta","delta":"Hi"})",
              R"({"type":"response.completed","response":)" +
                  response_object("gpt-5-s", "completed") + "}"}),
         "gpt-5-s",
         {200, 1000, 0, 283},
         64},
        {"Responses SSE, response.incomplete",
         "/v1/responses",
         "gpt-5",
         sse_type,
         sse({R"({"type":"response.created","response":{"model":"gpt-5-i","usage":null}})",
              R"({"type":"response.incomplete","response":)" +
                  response_object("gpt-5-i", "incomplete") + "}"}),
         "gpt-5-i",
         {200, 1000, 0, 283},
         64},
    };
}

double metric(std::uint16_t admin, const std::string& name, const std::string& labels) {
    return metric_value(admin, name + "{" + labels + "}");
}

std::vector<boost::json::object> log_lines(const child& sidecar) {
    std::vector<boost::json::object> out;
    std::istringstream in(sidecar.out());
    for (std::string line; std::getline(in, line);)
        out.push_back(boost::json::parse(line).as_object());
    return out;
}

// The answer's tokens as an access-log line gives them.
std::array<std::uint64_t, 4> logged_kinds(const boost::json::object& line) {
    std::array<std::uint64_t, 4> out{};
    const auto& tokens = line.at("tokens").as_object();
    for (std::size_t k = 0; k < kind_names.size(); ++k)
        out[k] = tokens.at(kind_names[k]).to_number<std::uint64_t>();
    return out;
}

// `n` clients at once, each sending `body`.
std::vector<response> burst(std::uint16_t port, const std::string& path, const std::string& body,
                            std::size_t n) {
    std::vector<response> out(n);
    std::vector<std::thread> clients;
    for (std::size_t i = 0; i < n; ++i)
        clients.emplace_back([&, i] { out[i] = request(port, "POST", path, body); });
    for (auto& t : clients)
        t.join();
    return out;
}

std::optional<double> usd_for(const usage_case& c) {
    if (c.cost)
        return c.cost;
    const auto [input, cached, written, output] = c.kinds;
    const auto per_mtok = [](std::uint64_t tokens, double price) { return tokens * price / 1e6; };
    if (c.model == "gpt-4o-2024-08-06")
        return per_mtok(input, 2.5) + per_mtok(cached, 1.25) + per_mtok(written, 2.5) +
               per_mtok(output, 10);
    if (c.model.starts_with("claude-sonnet-4-5"))
        return 0.001 + per_mtok(input, 3) + per_mtok(cached, 0.3) + per_mtok(written, 3.75) +
               per_mtok(output, 15);
    return std::nullopt;
}

}  // namespace

TEST_CASE("usage of every protocol: spent once, saved N-1 times, by kind, in the access log") {
    const auto all = cases();
    std::map<std::string, std::string> answers;  // by request body
    for (const auto& c : all)
        answers[request_body(c)] = head_for(c.type, c.body.size()) + c.body;
    // A stream that ends cleanly before its usage, and one broken off mid-way.
    const std::string no_usage_body = R"({"model":"gpt-5","input":"no usage","stream":true})";
    const std::string no_usage =
        sse({R"({"type":"response.created","response":{"model":"gpt-5","usage":null}})"});
    answers[no_usage_body] = head_for(sse_type, no_usage.size()) + no_usage;
    const std::string cut_body = R"({"model":"gpt-5","input":"cut","stream":true})";
    raw_upstream up([&](const recorded_request& r) {
        if (r.body == cut_body)
            return answer(head_for(sse_type, 4096) + no_usage, ending::close);
        const auto it = answers.find(r.body);
        // The body comes a little after the head: clients of a burst join while it streams.
        return it == answers.end()
                   ? answer("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                   : answer(it->second.substr(0, it->second.find("\r\n\r\n") + 4))
                         .after(100ms, it->second.substr(it->second.find("\r\n\r\n") + 4));
    });
    const auto config = temp_path("usage.yaml");
    write_file(config, proxy_yaml(up.url(), "log: {level: info, format: json}\n", prices_yaml,
                                  "  - {prefix: /pass/, upstream: mock, strip_prefix: /pass, "
                                  "coalesce: false}\n"
                                  "  - {prefix: /, upstream: mock, coalesce: true}\n"));
    child sidecar({COALESCER_BINARY, "--config", config}, "usage");
    const auto [port, admin] = sidecar.ports();
    INFO("sidecar stderr: " << sidecar.err());

    constexpr std::size_t n = 4;
    for (const auto& c : all) {
        INFO(c.name);
        for (const auto& r : burst(port, c.path, request_body(c), n)) {
            CHECK(r.status == 200);
            CHECK(r.body == c.body);
        }
    }
    const auto pass = all[6];  // Messages SSE, relayed alone: spent, nothing saved
    REQUIRE(request(port, "POST", "/pass" + pass.path, request_body(pass)).status == 200);
    CHECK(burst(port, "/v1/responses", no_usage_body, 1).front().status == 200);
    CHECK_FALSE(burst(port, "/v1/responses", cut_body, 1).front().complete);
    CHECK(up.calls() == all.size() + 3);  // one per burst, the pass, the two without usage

    for (const auto& c : all) {
        INFO(c.name);
        const auto series = R"(upstream="mock",model=")" + c.model + "\"";
        const std::uint64_t calls = &c == &all[6] ? 2 : 1;  // its burst and the pass
        for (std::size_t k = 0; k < kind_names.size(); ++k) {
            INFO(kind_names[k]);
            const auto labels = series + R"(,kind=")" + kind_names[k] + "\"";
            CHECK(metric(admin, "coalescer_tokens_spent_total", labels) == calls * c.kinds[k]);
            CHECK(metric(admin, "coalescer_tokens_saved_total", labels) == (n - 1) * c.kinds[k]);
        }
        CHECK(metric(admin, "coalescer_reasoning_tokens_spent_total", series) == c.reasoning);
        CHECK(metric(admin, "coalescer_reasoning_tokens_saved_total", series) ==
              (n - 1) * c.reasoning);
        const auto spent_usd =
            find_metric(admin, "coalescer_provider_cost_spent_usd_total{" + series + "}");
        CHECK(spent_usd.has_value() == c.cost.has_value());
        if (c.cost) {
            CHECK(*spent_usd == doctest::Approx(*c.cost).epsilon(1e-9));
            CHECK(metric(admin, "coalescer_provider_cost_saved_usd_total", series) ==
                  doctest::Approx(*c.cost * (n - 1)).epsilon(1e-9));
        }
        const auto usd = usd_for(c);
        const auto spent_total =
            find_metric(admin, "coalescer_cost_spent_usd_total{" + series + "}");
        CHECK(spent_total.has_value() == usd.has_value());
        if (usd && spent_total) {
            CHECK(*spent_total == doctest::Approx(calls * *usd).epsilon(1e-9));
            CHECK(metric(admin, "coalescer_cost_saved_usd_total", series) ==
                  doctest::Approx((n - 1) * *usd).epsilon(1e-9));
        }
    }
    CHECK(metric(admin, "coalescer_usage_missing_total", R"(upstream="mock",reason="absent")") ==
          1);
    CHECK(metric(admin, "coalescer_usage_missing_total", R"(upstream="mock",reason="cut")") == 1);
    CHECK(metric(admin, "coalescer_usage_missing_total", R"(upstream="mock",reason="too_large")") ==
          0);

    // Every client's line: its answer's tokens (a follower's or hit's: what it saved).
    std::vector<boost::json::object> lines;
    REQUIRE(eventually([&] { return (lines = log_lines(sidecar)).size() == all.size() * n + 3; }));
    for (const auto& c : all) {
        INFO(c.name);
        std::map<std::string, int> roles;
        for (const auto& line : lines) {
            if (!line.contains("model") || line.at("model").as_string() != c.model)
                continue;
            ++roles[std::string(line.at("role").as_string())];
            CHECK(logged_kinds(line) == c.kinds);
            CHECK(line.at("tokens").at("reasoning").to_number<std::uint64_t>() == c.reasoning);
            CHECK(line.contains("provider_cost_usd") == c.cost.has_value());
            if (c.cost)
                CHECK(line.at("provider_cost_usd").to_number<double>() == doctest::Approx(*c.cost));
            const auto usd = usd_for(c);
            CHECK(line.contains("cost_usd") == usd.has_value());
            if (usd && line.contains("cost_usd"))
                CHECK(line.at("cost_usd").to_number<double>() == doctest::Approx(*usd));
        }
        CHECK(roles["leader"] == 1);
        CHECK(roles["follower"] + roles["hit"] == static_cast<int>(n - 1));
        CHECK(roles["pass"] == (&c == &all[6] ? 1 : 0));
    }
    // The answers without usage: lines without tokens.
    int without = 0;
    for (const auto& line : lines)
        without += line.contains("tokens") ? 0 : 1;
    CHECK(without == 2);
    ::unlink(config.c_str());
}
