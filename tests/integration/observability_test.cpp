// /metrics after a scripted scenario equals the expected numbers exactly, parses as strict
// Prometheus text, counts tokens from the provider's usage per role, and no secret appears.
#include "harness.hpp"

#include <doctest/doctest.h>

#include <boost/json/parse.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

using namespace coalescer;
using namespace coalescer::test;
using namespace std::chrono_literals;

namespace {

// A strict reader of the text exposition format: every sample belongs to a family declared by
// HELP and TYPE before it, names and labels are well formed, histograms are cumulative and
// end in +Inf equal to _count.
std::map<std::string, double> parse_exposition(const std::string& text) {
    static const std::regex sample_line(
        R"(^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*"(,[a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*")*)\})? (-?[0-9.eE+-]+|\+Inf|NaN)$)");
    static const std::regex help_line(R"(^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) .+$)");
    static const std::regex type_line(
        R"(^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$)");
    std::map<std::string, std::string> types;
    std::set<std::string> helped;
    std::map<std::string, double> samples;
    std::istringstream in(text);
    std::string line;
    std::map<std::string, double> last_bucket;
    while (std::getline(in, line)) {
        std::smatch m;
        if (std::regex_match(line, m, help_line)) {
            helped.insert(m[1]);
            continue;
        }
        if (std::regex_match(line, m, type_line)) {
            REQUIRE_MESSAGE(helped.count(m[1]) == 1, "TYPE before HELP: " << line);
            REQUIRE_MESSAGE(types.count(m[1]) == 0, "family declared twice: " << line);
            types[m[1]] = m[2];
            continue;
        }
        REQUIRE_MESSAGE(std::regex_match(line, m, sample_line),
                        "not a valid sample line: " << line);
        std::string name = m[1];
        std::string family = name;
        for (const char* suffix : {"_bucket", "_sum", "_count"}) {
            if (types.count(family) == 0 && name.size() > std::strlen(suffix) &&
                name.ends_with(suffix)) {
                family = name.substr(0, name.size() - std::strlen(suffix));
            }
        }
        REQUIRE_MESSAGE(types.count(family) == 1, "sample of an undeclared family: " << line);
        const double value = m[7] == "+Inf" ? INFINITY : std::stod(m[7]);
        samples[name + (m[2].matched ? std::string(m[2]) : "")] = value;
        if (name.ends_with("_bucket")) {
            std::string labels = m[3];
            const auto series =
                name + "{" + std::regex_replace(labels, std::regex(R"(,?le="[^"]*")"), "") + "}";
            CHECK_MESSAGE(value >= last_bucket[series], "buckets not cumulative: " << line);
            last_bucket[series] = value;
        }
    }
    return samples;
}

// A series that is not there is a failure, not a 0: a renamed or lost series must not pass
// for a counter that stayed at zero.
double value(const std::map<std::string, double>& samples, const std::string& key) {
    auto it = samples.find(key);
    if (it == samples.end()) {
        FAIL_CHECK("/metrics has no series " << key);
        return std::nan("");
    }
    return it->second;
}

std::uint64_t total_tokens(const response& r) {
    return boost::json::parse(r.body).at("usage").at("total_tokens").to_number<std::uint64_t>();
}

}  // namespace

TEST_CASE("a scripted scenario leaves exactly the expected numbers in /metrics") {
    mock::mock_options options;
    options.latency_ms = 300;
    mock_and_proxy env(options, "",
                       "    retries: {max_attempts: 1, base_delay: 100ms, max_delay: 1s}\n");
    const auto port = env.proxy->port();

    // 20 identical requests at once: 1 leader, 19 followers.
    const auto burst_body = chat_body("scenario burst");
    std::vector<response> burst(20);
    {
        std::vector<std::thread> threads;
        std::atomic<int> ready{0};
        for (int i = 0; i < 20; ++i) {
            threads.emplace_back([&, i] {
                client c(port);
                ++ready;
                while (ready.load() < 20)
                    std::this_thread::yield();
                c.send("POST", "/chat/completions", burst_body);
                burst[i] = c.read();
            });
        }
        for (auto& t : threads)
            t.join();
    }
    std::vector<response> distinct;
    for (int i = 0; i < 3; ++i)
        distinct.push_back(
            request(port, "POST", "/chat/completions", chat_body("distinct " + std::to_string(i))));
    const auto hit = request(port, "POST", "/chat/completions", chat_body("distinct 0"));
    const auto bypass =
        request(port, "POST", "/chat/completions", burst_body, {{"x-coalesce-bypass", "1"}});
    const auto limited = request(port, "POST", "/chat/completions",
                                 chat_body("limited", false, R"({"status":429})"));

    std::map<std::string, int> roles;
    for (const auto& r : burst) {
        REQUIRE(r.status == 200);
        ++roles[r.header("x-coalesce")];
    }
    REQUIRE(roles["leader"] == 1);
    REQUIRE(roles["follower"] == 19);
    REQUIRE(hit.header("x-coalesce") == "hit");
    REQUIRE(bypass.header("x-coalesce") == "bypass");
    REQUIRE(limited.status == 429);
    REQUIRE(env.mock->stats().calls == 6);

    // Each request is counted just after its answer is written: wait for the last one.
    const std::string route = R"(route="/chat/completions")";
    auto scrape = [&] {
        return parse_exposition(request(env.proxy->admin_port(), "GET", "/metrics", "").body);
    };
    std::map<std::string, double> m;
    CHECK(eventually([&] {
        m = scrape();
        return value(m, "coalescer_request_duration_seconds_count{" + route + "}") >= 26;
    }));
    CHECK(value(m, "coalescer_requests_total{" + route + R"(,role="leader",status_class="2xx"})") ==
          4);
    CHECK(value(m, "coalescer_requests_total{" + route +
                       R"(,role="follower",status_class="2xx"})") == 19);
    CHECK(value(m, "coalescer_requests_total{" + route + R"(,role="hit",status_class="2xx"})") ==
          1);
    CHECK(value(m, "coalescer_requests_total{" + route + R"(,role="bypass",status_class="2xx"})") ==
          1);
    CHECK(value(m, "coalescer_requests_total{" + route + R"(,role="leader",status_class="4xx"})") ==
          1);
    CHECK(value(m, R"(coalescer_upstream_calls_total{upstream="mock",status="200"})") == 5);
    CHECK(value(m, R"(coalescer_upstream_calls_total{upstream="mock",status="429"})") == 1);
    CHECK(value(m, R"(coalescer_upstream_retries_total{upstream="mock"})") == 0);
    CHECK(value(m, "coalescer_request_duration_seconds_count{" + route + "}") == 26);
    CHECK(value(m, "coalescer_flights_in_flight") == 0);
    CHECK(value(m, "coalescer_retained_entries") == 4);  // the burst and the 3 distinct answers
    // Their bodies, and a little bookkeeping for each.
    double bodies = static_cast<double>(burst.front().body.size());
    for (const auto& r : distinct)
        bodies += static_cast<double>(r.body.size());
    CHECK(value(m, "coalescer_retained_bytes") >= bodies);
    CHECK(value(m, "coalescer_retained_bytes") <= bodies + 4 * 8192);
    CHECK(value(m, "coalescer_evictions_total") == 0);
    CHECK(value(m, "coalescer_slow_subscribers_dropped_total") == 0);
    // Six calls, each through the pacer once, none waiting now.
    CHECK(value(m, R"(coalescer_pacer_wait_seconds_count{upstream="mock"})") == 6);
    CHECK(value(m, R"(coalescer_pacer_wait_seconds_bucket{upstream="mock",le="+Inf"})") == 6);
    CHECK(value(m, R"(coalescer_pacer_in_use{upstream="mock"})") == 0);
    CHECK(value(m, R"(coalescer_pacer_queue_depth{upstream="mock"})") == 0);
    // Shared flights: the burst (20 clients), 3 distinct (1 each), the 429 (1).
    CHECK(value(m, "coalescer_subscribers_per_flight_count") == 5);
    CHECK(value(m, "coalescer_subscribers_per_flight_sum") == 24);
    CHECK(value(m, R"(coalescer_subscribers_per_flight_bucket{le="1"})") == 4);
    // Bucket bounds as written in the config of a dashboard: the shortest decimal.
    CHECK(m.count("coalescer_request_duration_seconds_bucket{" + route + R"(,le="0.0025"})") == 1);
    CHECK(m.count("coalescer_upstream_ttfb_seconds_bucket{upstream=\"mock\",le=\"0.05\"}") == 1);

    const auto burst_tokens = total_tokens(burst.front());
    std::uint64_t spent = 2 * burst_tokens;  // the burst's call and the bypass call
    for (const auto& r : distinct)
        spent += total_tokens(r);
    const std::uint64_t saved = 19 * burst_tokens + total_tokens(hit);
    // The mock reports no cached input: its total is input and output.
    const auto all_kinds = [&](const std::string& family) {
        return value(m, family + R"({upstream="mock",model="sonar",kind="input"})") +
               value(m, family + R"({upstream="mock",model="sonar",kind="output"})");
    };
    CHECK(all_kinds("coalescer_tokens_spent_total") == static_cast<double>(spent));
    CHECK(all_kinds("coalescer_tokens_saved_total") == static_cast<double>(saved));
    CHECK(
        value(
            m,
            R"(coalescer_tokens_saved_total{upstream="mock",model="sonar",kind="cached_input"})") ==
        0);
}

TEST_CASE("streamed usage is counted once, from the last event") {
    mock_and_proxy env;
    client c(env.proxy->port());
    c.send("POST", "/chat/completions", chat_body("stream usage", true, R"({"chunks":5})"));
    const auto r = c.read();
    REQUIRE(r.complete);
    // The last data event carrying usage holds the final, cumulative figure.
    const auto last = r.body.rfind("data: {");
    const auto event = r.body.substr(last + 6, r.body.find('\n', last) - last - 6);
    const auto tokens =
        boost::json::parse(event).at("usage").at("total_tokens").to_number<double>();
    const auto m = parse_exposition(request(env.proxy->admin_port(), "GET", "/metrics", "").body);
    CHECK(
        value(m, R"(coalescer_tokens_spent_total{upstream="mock",model="sonar",kind="input"})") +
            value(m,
                  R"(coalescer_tokens_spent_total{upstream="mock",model="sonar",kind="output"})") ==
        tokens);
}

TEST_CASE("a planted API key appears nowhere the process prints or serves") {
    const std::string sentinel = "sk-TEST-SENTINEL-8f3a91c2d7e4";
    mock::mock_server mock({});
    mock.start();
    boost::asio::io_context io;
    boost::asio::ip::tcp::acceptor probe(io, {boost::asio::ip::make_address("127.0.0.1"), 0});
    const auto dead_port = probe.local_endpoint().port();
    probe.close();
    const std::string routes =
        "  - {prefix: /dead/, upstream: dead, strip_prefix: /dead, coalesce: true}\n"
        "  - {prefix: /chat/completions, upstream: mock, coalesce: true}\n"
        "  - {prefix: /, upstream: mock, coalesce: false}\n";
    const std::string dead =
        "  - name: dead\n    url: http://127.0.0.1:" + std::to_string(dead_port) +
        "\n    retries: {max_attempts: 1, base_delay: 100ms, max_delay: 1s}\n";
    std::string yaml = proxy_yaml("http://127.0.0.1:" + std::to_string(mock.port()),
                                  "log: {level: debug, format: json}\n", dead, routes);
    // Capture everything the sidecar writes to stdout and stderr while it runs.
    std::fflush(stdout);
    std::fflush(stderr);
    const auto capture = "/tmp/coalescer-secret-" + std::to_string(::getpid());
    const int saved_out = ::dup(1);
    const int saved_err = ::dup(2);
    const int fd = ::open(capture.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    std::string served;
    {
        running_proxy proxy(yaml);
        const auto port = proxy.port();
        const std::vector<std::pair<std::string, std::string>> auth{
            {"Authorization", "Bearer " + sentinel}};
        served += request(port, "POST", "/chat/completions?api_key=" + sentinel,
                          chat_body("secret"), auth)
                      .body;
        served += request(port, "POST", "/chat/completions",
                          chat_body("secret 429", false, R"({"status":429})"), auth)
                      .body;
        served +=
            request(port, "POST", "/dead/chat/completions", chat_body("secret dead"), auth).body;
        served += request(port, "POST", "/chat/completions", chat_body("secret two"),
                          {{"Authorization", "Bearer " + sentinel}, {"x-api-key", "other"}})
                      .body;
        served += request(port, "GET", "/models", "", {{"x-api-key", sentinel}}).body;
        client raw(port);
        raw.send_raw("POST /chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                     sentinel + "\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!");
        served += raw.read().body;
        served += request(proxy.admin_port(), "GET", "/metrics", "").body;
    }
    std::fflush(stdout);
    std::fflush(stderr);
    ::dup2(saved_out, 1);
    ::dup2(saved_err, 2);
    ::close(fd);
    ::close(saved_out);
    ::close(saved_err);
    std::ifstream in(capture);
    std::stringstream printed;
    printed << in.rdbuf();
    ::unlink(capture.c_str());
    CHECK(printed.str().find("\"route\"") != std::string::npos);  // the access log did run
    CHECK(printed.str().find(sentinel) == std::string::npos);
    CHECK(served.find(sentinel) == std::string::npos);
    CHECK(mock.calls().front().headers.at("authorization") ==
          "Bearer " + sentinel);  // it was forwarded
}

TEST_CASE("pass and bypass exchanges count in coalescer_flights_in_flight while they run") {
    mock_and_proxy env({}, "", "",
                       "  - {prefix: /chat/completions, upstream: mock, coalesce: true}\n"
                       "  - {prefix: /, upstream: mock, coalesce: false}\n");
    auto in_flight = [&] {
        const auto m =
            parse_exposition(request(env.proxy->admin_port(), "GET", "/metrics", "").body);
        return value(m, "coalescer_flights_in_flight");
    };
    const auto slow = chat_body("slow", false, R"({"latency_ms": 1500})");
    client pass(env.proxy->port());
    pass.send("POST", "/v1/chat/completions", slow);
    client bypass(env.proxy->port());
    bypass.send("POST", "/chat/completions", slow, {{"x-coalesce-bypass", "1"}});
    // Both exchanges are at the provider (which answers after 1.5 s).
    REQUIRE(eventually([&] { return env.mock->stats().in_flight == 2; }));
    CHECK(in_flight() == 2);
    CHECK(pass.read(10s).header("x-coalesce") == "pass");
    CHECK(bypass.read(10s).header("x-coalesce") == "bypass");
    // The exchange ends just after its last byte is written (then it is logged and counted),
    // so a client can read its answer a moment before the gauge drops.
    CHECK(eventually([&] { return in_flight() == 0; }));
}
