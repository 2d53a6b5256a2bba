// The sidecar in front of a hostile upstream (reliability checklist H-20, U-cases, D-05/D-06):
// a scripted raw-socket server (raw_upstream.hpp) answers the first request with one entry of
// the corpus (hostile/corpus.hpp) and every later request with a genuine answer of its own.
// For each entry, what a user would check:
//   (a) concurrent: 4 identical requests share one flight (the upstream holds its answer until
//       all have been sent), and every client sees the same clean outcome: the exact bytes of a
//       valid answer, a well-formed JSON error before any byte, or a cut after them;
//   (b) two tenants, one after the other over one pooled upstream connection: tenant B's
//       request gets its own answer (or a well-formed error), never bytes meant for anyone else,
//       and the connection that misbehaved never carries another request;
//   (c) nothing invalid is retained: the same request again is no hit and makes a new call;
//   (d) nobody waits past the configured timeouts (short ones; every client read is bounded).
#include "harness.hpp"
#include "hostile/corpus.hpp"
#include "raw_upstream.hpp"

#include <doctest/doctest.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/json/parse.hpp>

#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <thread>

using namespace coalescer;
using namespace coalescer::test;
using namespace coalescer::test::hostile;
using namespace std::chrono_literals;

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace beast_http = beast::http;
using boost::system::error_code;
using steady = std::chrono::steady_clock;

// --- tenants and the genuine answers the upstream gives them ------------------------------------

struct tenant {
    std::string auth;
    std::string body;
};
const tenant tenant_a{"Bearer sk-tenant-a-0123456789", chat_body("hostile upstream, tenant A")};
const tenant tenant_b{"Bearer sk-tenant-b-9876543210", chat_body("hostile upstream, tenant B")};

// The body of the genuine answer to a request: names the request, so bytes meant for another
// request can never pass for it.
std::string genuine_body(const std::string& auth, const std::string& method,
                         const std::string& body) {
    return R"({"id":"genuine","answers":")" + sha256_hex(auth + "\n" + method + "\n" + body) +
           R"("})";
}

script_step genuine(const recorded_request& r) {
    const auto body = genuine_body(r.header("authorization"), r.method, r.body);
    if (r.method == "HEAD") {
        return answer("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
                      std::to_string(body.size()) + "\r\n\r\n");
    }
    return answer(cl_response(body));
}

std::string expected_genuine(const tenant& t, const std::string& method) {
    return method == "HEAD" ? std::string() : genuine_body(t.auth, method, t.body);
}

std::string printable(const std::string& bytes, std::size_t limit = 160);

// --- a client that also reads answers to HEAD ---------------------------------------------------

class hclient {
  public:
    explicit hclient(std::uint16_t port) : stream_(io_) {
        const asio::ip::tcp::endpoint at(asio::ip::make_address("127.0.0.1"), port);
        if (run([&](auto h) { stream_.async_connect(at, h); }, 5s))
            throw std::runtime_error("connect failed");
    }

    void send(const std::string& method, const tenant& t) {
        method_ = method;
        std::string text = method +
                           " /chat/completions HTTP/1.1\r\nHost: localhost\r\n"
                           "Authorization: " +
                           t.auth + "\r\n";
        if (method != "HEAD") {
            text += "Content-Type: application/json\r\nContent-Length: " +
                    std::to_string(t.body.size()) + "\r\n\r\n" + t.body;
        } else {
            text += "\r\n";
        }
        send_error_ = run([&](auto h) { asio::async_write(stream_, asio::buffer(text), h); }, 5s);
    }

    // One whole response, or what came before `bound` passed or the connection ended. After a
    // complete answer to HEAD it also waits 200 ms for bytes that should not come (a body), and
    // counts any as body bytes.
    response read(std::chrono::milliseconds bound = client_bound) {
        response r;
        if (send_error_) {
            r.error = "the request could not be sent: " + send_error_.message();
            return r;
        }
        beast_http::response_parser<beast_http::string_body> p;
        p.header_limit(1024 * 1024);  // whatever the sidecar relays, the test sees it
        p.body_limit(boost::none);
        if (method_ == "HEAD")
            p.skip(true);
        const auto ec = run([&](auto h) { beast_http::async_read(stream_, buffer_, p, h); }, bound);
        if (p.is_header_done()) {
            const auto& msg = p.get();
            r.status = msg.result_int();
            for (const auto& f : msg) {
                std::string name(f.name_string());
                std::transform(name.begin(), name.end(), name.begin(),
                               [](unsigned char c) { return std::tolower(c); });
                auto& slot = r.headers[name];
                slot = slot.empty() ? std::string(f.value()) : slot + ", " + std::string(f.value());
            }
            r.body = msg.body();
        }
        r.complete = !ec && p.is_done();
        r.error = ec ? ec.message() : "";
        if (ec && !p.is_header_done() && buffer_.size() != 0) {
            // A head the client could not parse: show what came.
            r.error += "; received '" +
                       printable(std::string(static_cast<const char*>(buffer_.data().data()),
                                             buffer_.size())) +
                       "'";
        }
        r.timed_out = ec == beast::error::timeout;
        reusable_ = r.complete && r.header("connection") != "close";
        if (r.complete && method_ == "HEAD")
            r.body += unexpected_bytes(200ms);
        return r;
    }

    // Whether another request may follow on this connection.
    bool reusable() const { return reusable_; }

  private:
    // Bytes that arrive within `wait` (without the stream's timeout, which would close it).
    std::string unexpected_bytes(std::chrono::milliseconds wait) {
        std::string out(static_cast<const char*>(buffer_.data().data()), buffer_.size());
        buffer_.consume(buffer_.size());
        const int fd = stream_.socket().native_handle();
        const auto until = steady::now() + wait;
        for (auto left = wait; left.count() > 0;
             left = std::chrono::duration_cast<std::chrono::milliseconds>(until - steady::now())) {
            pollfd p{fd, POLLIN, 0};
            if (::poll(&p, 1, static_cast<int>(left.count())) <= 0)
                break;
            char chunk[4096];
            const auto n = ::recv(fd, chunk, sizeof chunk, MSG_DONTWAIT);
            if (n <= 0) {
                reusable_ = false;  // the sidecar closed it
                break;
            }
            out.append(chunk, static_cast<std::size_t>(n));
        }
        if (!out.empty())
            reusable_ = false;
        return out;
    }

    template <class Start>
    error_code run(Start start, std::chrono::milliseconds timeout) {
        std::optional<error_code> result;
        stream_.expires_after(timeout);
        start([&](error_code ec, std::size_t = 0) { result = ec; });
        io_.restart();
        io_.run();
        return result.value_or(asio::error::timed_out);
    }

    asio::io_context io_;
    beast::tcp_stream stream_;
    beast::flat_buffer buffer_;
    std::string method_ = "POST";
    error_code send_error_;
    bool reusable_ = false;
};

// --- describing and judging what a client saw ---------------------------------------------------

std::string printable(const std::string& bytes, std::size_t limit) {
    std::string out;
    for (const char c : bytes.substr(0, limit)) {
        if (c == '\r')
            out += "\\r";
        else if (c == '\n')
            out += "\\n";
        else if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f)
            out += "\\x" + hex(static_cast<unsigned char>(c));
        else
            out += c;
    }
    if (bytes.size() > limit)
        out += "...(" + std::to_string(bytes.size()) + " bytes)";
    return out;
}

std::string describe(const response& r) {
    std::ostringstream s;
    s << "status " << r.status << (r.complete ? ", complete" : ", not complete")
      << (r.timed_out ? " (the client gave up)" : "")
      << (r.error.empty() ? "" : " [" + r.error + "]") << ", x-coalesce '" << r.header("x-coalesce")
      << "', body '" << printable(r.body) << "'";
    return s.str();
}

bool has_injected(const response& r) {
    return r.body.find("INJECTED") != std::string::npos;
}

// Empty when `r` is a complete well-formed JSON error of `status` (any 5xx when 0) with `code`
// (any when empty).
std::string error_problem(const response& r, unsigned status, const std::string& code) {
    if (status != 0 ? r.status != status : r.status < 500 || r.status > 599)
        return "expected a " + (status != 0 ? std::to_string(status) : std::string("5xx")) +
               " error";
    if (!r.complete)
        return "the error response is not complete";
    try {
        const auto json = boost::json::parse(r.body);
        const auto& error = json.at("error").as_object();
        const auto got = error.contains("code") && error.at("code").is_string()
                             ? std::string(error.at("code").as_string())
                             : std::string();
        if (!code.empty() && got != code)
            return "error code '" + got + "' instead of '" + code + "'";
    } catch (const std::exception& e) {
        return std::string("the error body is not a JSON error object: ") + e.what();
    }
    return "";
}

std::string cut_problem(const hostile_case& c, const response& r) {
    if (r.timed_out)
        return "expected a cut; nothing ended the response";
    if (r.status != c.status)
        return "expected a cut " + std::to_string(c.status) + " response";
    if (r.complete)
        return "expected a cut; the response ended cleanly";
    if (c.body.compare(0, r.body.size(), r.body) != 0)
        return "the cut body is not a prefix of the upstream's";
    return "";
}

std::string answer_problem(const hostile_case& c, const response& r) {
    if (r.status != c.status || !r.complete || r.body != c.body)
        return "expected exactly the upstream's " + std::to_string(c.status) + " answer '" +
               printable(c.body, 60) + "'";
    return "";
}

// Empty when `r` is what the entry says every client of the faulty exchange must see.
std::string outcome_problem(const hostile_case& c, const response& r) {
    std::string problem;
    switch (c.outcome) {
        case expect::answer:
            problem = answer_problem(c, r);
            break;
        case expect::answer_or_protocol_error:
            problem = answer_problem(c, r);
            if (!problem.empty() && error_problem(r, 502, "upstream_protocol_error").empty())
                problem.clear();
            if (!problem.empty())
                problem += ", or a 502 upstream_protocol_error";
            break;
        case expect::error:
            problem = error_problem(r, c.error_status, c.code);
            break;
        case expect::cut:
            problem = cut_problem(c, r);
            break;
        case expect::error_or_cut:
            if (r.status == c.error_status)
                problem = error_problem(r, c.error_status, c.code);
            else
                problem = cut_problem(c, r);
            break;
    }
    if (problem.empty() && has_injected(r))
        problem = "the response carries the INJECTED bytes";
    return problem.empty() ? "" : problem + "; got " + describe(r);
}

// Empty when `r` is `t`'s own genuine answer, or (unless `strict`) a well-formed error.
std::string next_problem(const response& r, const tenant& t, const std::string& method,
                         bool strict) {
    if (has_injected(r))
        return "got the INJECTED bytes: " + describe(r);
    if (r.status == 200 && r.complete && r.body == expected_genuine(t, method))
        return "";
    if (!strict && error_problem(r, 0, "").empty())
        return "";
    return std::string(strict ? "expected its own genuine answer"
                              : "expected its own genuine answer or a well-formed error") +
           "; got " + describe(r);
}

// --- running the sidecar in front of the scripted upstream --------------------------------------

const std::string pass_route = "  - {prefix: /, upstream: mock, coalesce: false}\n";

std::string config_for(const hostile_case& c, const raw_upstream& up, int workers, bool pass) {
    auto yaml = proxy_yaml(up.url(), c.extra, c.timeouts, pass ? pass_route : "");
    const std::string two = "workers: 2\n";
    yaml.replace(yaml.find(two), two.size(), "workers: " + std::to_string(workers) + "\n");
    return yaml;
}

// The first request gets the entry's answer (held until release() when `hold`), every other
// one a genuine answer of its own.
responder script_for(const hostile_case& c, bool hold) {
    auto step = c.step;
    step.hold = hold;
    return on_call(0, step, genuine);
}

// With HOSTILE_VERBOSE=1 in the environment, one line per client outcome on stderr: what each
// client saw in the runs that pass too.
void note(const std::string& line) {
    static const bool verbose = std::getenv("HOSTILE_VERBOSE") != nullptr;
    if (verbose)
        std::fprintf(stderr, "hostile: %s\n", line.c_str());
}

std::chrono::milliseconds since(steady::time_point t) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - t);
}

// Whether the clients got the upstream's answer (a valid one, which may be retained).
bool valid_outcome(const hostile_case& c, const response& first) {
    return (c.outcome == expect::answer || c.outcome == expect::answer_or_protocol_error) &&
           answer_problem(c, first).empty();
}

// Every request the upstream received carries the credential of the tenant whose body it has.
void check_tenants(const raw_upstream& up) {
    for (const auto& r : up.requests()) {
        const bool is_b = r.body == tenant_b.body && r.method != "HEAD";
        const auto& auth = r.header("authorization");
        INFO("upstream request " << r.call << " on connection " << r.connection);
        CHECK_MESSAGE(auth == (is_b ? tenant_b.auth : tenant_a.auth),
                      "a request went upstream with another tenant's credential");
    }
}

// The repeat of the faulty request after the failure (c): no hit unless the answer was valid
// (then the same bytes), a new upstream call otherwise, and never on the poisoned connection.
void check_repeat(const hostile_case& c, const raw_upstream& up, const response& first,
                  const response& repeat, std::size_t calls_before) {
    INFO("(c) the same request again: " << describe(repeat));
    CHECK_FALSE(repeat.timed_out);
    CHECK_FALSE(has_injected(repeat));
    if (repeat.header("x-coalesce") == "hit") {
        note(c.name + " | repeat: " + describe(repeat));
        CHECK_MESSAGE(valid_outcome(c, first),
                      "an invalid outcome was retained and served as a hit");
        CHECK_MESSAGE(repeat.body == first.body, "the hit's bytes differ from the answer's");
        CHECK(repeat.status == first.status);
        return;
    }
    const bool called = eventually([&] { return up.calls() > calls_before; }, 1s);
    std::string where;
    for (const auto& r : up.requests()) {
        if (r.call >= calls_before) {
            where += " " + std::to_string(r.connection);
            if (c.poisons) {
                CHECK_MESSAGE(r.connection != 0,
                              "the repeat went out on the connection that misbehaved");
            }
        }
    }
    note(c.name + " | repeat: " + describe(repeat) + ", upstream connection(s):" + where);
    CHECK_MESSAGE(called, "no new upstream call for the repeat");
    const auto problem = next_problem(repeat, tenant_a, c.method, false);
    CHECK_MESSAGE(problem.empty(), problem);
}

// (a) Four identical requests share one flight; every client sees the same clean outcome.
void run_concurrent(const hostile_case& c) {
    raw_upstream up(script_for(c, true));
    running_proxy proxy(config_for(c, up, 2, false));
    constexpr std::size_t n = 4;
    std::vector<response> out(n);
    std::vector<steady::time_point> ended(n);
    std::atomic<std::size_t> sent{0};
    std::vector<std::thread> clients;
    auto start = [&](std::size_t i) {
        clients.emplace_back([&, i] {
            try {
                hclient cl(proxy.port());
                cl.send(c.method, tenant_a);
                ++sent;
                out[i] = cl.read();
            } catch (const std::exception& e) {
                ++sent;
                out[i].error = e.what();
            }
            ended[i] = steady::now();
        });
    };
    start(0);
    const bool leader_arrived = eventually([&] { return up.calls() >= 1; }, 3s);
    for (std::size_t i = 1; i < n; ++i)
        start(i);
    eventually([&] { return sent.load() == n; }, 3s);
    std::this_thread::sleep_for(200ms);  // the followers' heads are read and they join
    const auto released = steady::now();
    up.release();
    for (auto& t : clients)
        t.join();
    REQUIRE_MESSAGE(leader_arrived, "the first request never reached the upstream");

    INFO("(a) 4 concurrent identical requests");
    CHECK_MESSAGE(up.calls() == 1, "the 4 clients made " << up.calls() << " upstream calls");
    std::map<std::string, int> roles;
    for (std::size_t i = 0; i < n; ++i) {
        INFO("client " << i << ": " << describe(out[i]));
        const auto problem = outcome_problem(c, out[i]);
        CHECK_MESSAGE(problem.empty(), problem);
        CHECK_MESSAGE(out[i].status == out[0].status, "not the same status as client 0");
        CHECK_MESSAGE(out[i].body == out[0].body, "not the same bytes as client 0");
        CHECK_MESSAGE(out[i].complete == out[0].complete, "not the same completeness as client 0");
        const auto took =
            std::chrono::duration_cast<std::chrono::milliseconds>(ended[i] - released);
        CHECK_MESSAGE(took <= c.within,
                      "the outcome came " << took.count() << " ms after the upstream's release");
        ++roles[out[i].header("x-coalesce")];
        note(c.name + " | concurrent | client " + std::to_string(i) + ": " + describe(out[i]) +
             " after " + std::to_string(took.count()) + " ms");
    }
    note(c.name + " | concurrent | upstream calls: " + std::to_string(up.calls()));
    if (out[0].status == c.status && c.outcome != expect::error) {
        CHECK_MESSAGE(roles["leader"] == 1, "roles: " << roles["leader"] << " leader(s)");
        CHECK_MESSAGE(roles["leader"] + roles["follower"] == static_cast<int>(n),
                      "roles: " << roles["follower"] << " follower(s)");
    }

    const auto calls_before = up.calls();
    hclient again(proxy.port());
    again.send(c.method, tenant_a);
    const auto repeat = again.read();
    check_repeat(c, up, out[0], repeat, calls_before);
    check_tenants(up);
}

// (b) + (c): tenant A's request meets the misbehaviour; then tenant B's request (on A's client
// connection when it is still open: the same worker, so the same pool) goes up over the pooled
// connection, if one was kept; then B again, then A again.
void run_two_tenants(const hostile_case& c, int workers, bool pass) {
    raw_upstream up(script_for(c, false));
    running_proxy proxy(config_for(c, up, workers, pass));
    const bool strict = c.group == 1;

    auto a_client = std::make_unique<hclient>(proxy.port());
    const auto a_sent = steady::now();
    a_client->send(c.method, tenant_a);
    const auto a = a_client->read();
    const auto label = c.name + " | two tenants, " + (pass ? "pass" : "coalescing") + ", workers " +
                       std::to_string(workers) + " | ";
    note(label + "A: " + describe(a));
    {
        INFO("(b) tenant A's request, answered by the misbehaving upstream");
        const auto problem = outcome_problem(c, a);
        CHECK_MESSAGE(problem.empty(), problem);
        CHECK_MESSAGE(since(a_sent) <= c.within,
                      "A's outcome took " << since(a_sent).count() << " ms");
    }
    // Everything the script says is on the wire (delayed trailing bytes too) before B asks.
    CHECK(eventually([&] { return up.steps_done() >= 1; }, 3s));
    const auto connections_before_b = up.connections();
    const auto calls_before_b = up.calls();

    auto b_client =
        a_client->reusable() ? std::move(a_client) : std::make_unique<hclient>(proxy.port());
    const auto b_sent = steady::now();
    b_client->send("POST", tenant_b);
    const auto b = b_client->read();
    {
        eventually([&] { return up.calls() > calls_before_b; }, 1s);
        std::string where;
        for (const auto& r : up.requests())
            if (r.call >= calls_before_b)
                where += " " + std::to_string(r.connection);
        note(label + "B: " + describe(b) + ", upstream connection(s):" + where);
        INFO("(b) tenant B's request after it: " << describe(b));
        const auto problem = next_problem(b, tenant_b, "POST", strict);
        CHECK_MESSAGE(problem.empty(), problem);
        CHECK_FALSE(b.timed_out);
        CHECK_MESSAGE(since(b_sent) <= c.within,
                      "B's answer took " << since(b_sent).count() << " ms");
        CHECK(b.header("x-coalesce") != "hit");
        // (The upstream records a request as it reads it: a sidecar that answered B from bytes
        // it already had may have been quicker than that, hence the wait above.)
        const auto requests = up.requests();
        std::size_t b_calls = 0;
        for (const auto& r : requests) {
            if (r.call < calls_before_b)
                continue;
            ++b_calls;
            CHECK_MESSAGE(r.body == tenant_b.body, "an unexpected request went upstream");
            if (c.poisons) {
                CHECK_MESSAGE(r.connection != 0,
                              "B's request went out on the connection that misbehaved ("
                                  << up.connections() - connections_before_b
                                  << " new upstream connection(s) opened after A)");
            }
        }
        CHECK_MESSAGE(b_calls == 1, "B's request made " << b_calls << " upstream calls");
        if (c.poisons && (c.step.then == ending::keep_open || c.step.then == ending::half_close)) {
            CHECK_MESSAGE(eventually([&] { return up.closed_by_peer(0); }, 2s),
                          "the sidecar kept the connection that misbehaved open");
        }
    }
    {
        if (!b_client->reusable())
            b_client = std::make_unique<hclient>(proxy.port());
        const auto calls_before_b2 = up.calls();
        b_client->send("POST", tenant_b);
        const auto b2 = b_client->read();
        INFO("(b) tenant B's same request again: " << describe(b2));
        if (b2.header("x-coalesce") != "hit")
            eventually([&] { return up.calls() > calls_before_b2; }, 1s);
        std::string where;
        for (const auto& r : up.requests())
            if (r.call >= calls_before_b2)
                where += " " + std::to_string(r.connection);
        note(label + "B again: " + describe(b2) + ", upstream connection(s):" + where);
        if (b2.header("x-coalesce") == "hit") {
            CHECK_MESSAGE(b2.body == expected_genuine(tenant_b, "POST"),
                          "a hit for B that is not B's own answer");
        } else {
            const auto problem = next_problem(b2, tenant_b, "POST", strict);
            CHECK_MESSAGE(problem.empty(), problem);
        }
    }
    const auto calls_before = up.calls();
    hclient again(proxy.port());
    again.send(c.method, tenant_a);
    const auto repeat = again.read();
    check_repeat(c, up, a, repeat, calls_before);
    check_tenants(up);
}

// An exception in one run fails that run alone (doctest would skip the rest of the group).
template <class Run>
void guarded(Run run) {
    try {
        run();
    } catch (const std::exception& e) {
        FAIL_CHECK("the run threw: " << e.what());
    }
}

// Runs every entry of `group`: concurrent (a), then two tenants (b, c) with workers: 1 on a
// coalescing and on a pass-through route; group 1 with workers: 2 as well.
void run_group(int group) {
    bool any = false;
    for (const auto& c : corpus()) {
        if (c.group != group)
            continue;
        any = true;
        SUBCASE(c.name.c_str()) {
            INFO("case: " << c.name);
            SUBCASE("concurrent identical requests, coalescing route, workers: 2") {
                guarded([&] { run_concurrent(c); });
            }
            for (const int workers : {1, 2}) {
                if (workers == 2 && group != 1)
                    continue;
                for (const bool pass : {false, true}) {
                    const auto name = std::string("two tenants, ") +
                                      (pass ? "pass-through" : "coalescing") +
                                      " route, workers: " + std::to_string(workers);
                    SUBCASE(name.c_str()) {
                        guarded([&] { run_two_tenants(c, workers, pass); });
                    }
                }
            }
        }
    }
    REQUIRE(any);
}

}  // namespace

TEST_CASE("hostile upstream: 0. the scripted upstream records and answers as scripted") {
    // The tool first: requests parsed and recorded per connection, steps chosen by position,
    // pieces written apart, held steps waiting for release(), and each ending as scripted.
    raw_upstream up(
        on_request(0, 1, answer("second").after(100ms, "-later").ending_with(ending::reset),
                   [](const recorded_request& r) {
                       return answer("[" + r.method + " " + r.target + " " + r.body + "]");
                   }));
    asio::io_context io;
    auto open = [&](std::uint16_t port) {
        asio::ip::tcp::socket socket(io);
        socket.connect({asio::ip::make_address("127.0.0.1"), port});
        timeval limit{.tv_sec = 5, .tv_usec = 0};
        ::setsockopt(socket.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
        return socket;
    };
    auto read_some = [](asio::ip::tcp::socket& socket, error_code& ec) {
        char buf[256];
        const auto n = socket.read_some(asio::buffer(buf), ec);
        return std::string(buf, n);
    };
    auto first = open(up.port());
    // Two requests in one write: the second is read from what the first left over.
    asio::write(first, asio::buffer(std::string(
                           "POST /x HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer k\r\n"
                           "Content-Length: 5\r\n\r\nhelloGET /y HTTP/1.1\r\nHost: h\r\n\r\n")));
    error_code ec;
    std::string got;
    while (!ec && got.size() < std::string("[POST /x hello]second").size())
        got += read_some(first, ec);
    CHECK(got == "[POST /x hello]second");
    const auto before_later = steady::now();
    got = read_some(first, ec);
    CHECK(got == "-later");  // a segment of its own, 100 ms later
    CHECK(since(before_later) >= 80ms);
    read_some(first, ec);
    CHECK(ec == asio::error::connection_reset);

    auto second = open(up.port());
    asio::write(second, asio::buffer(std::string("GET /z HTTP/1.1\r\nHost: h\r\n\r\n")));
    CHECK(read_some(second, ec) == "[GET /z ]");
    second.close();
    CHECK(eventually([&] { return up.closed_by_peer(1); }, 2s));
    CHECK_FALSE(up.closed_by_peer(0));  // the upstream reset that one itself

    const auto requests = up.requests();
    REQUIRE(requests.size() == 3);
    CHECK(requests[0].connection == 0);
    CHECK(requests[0].index == 0);
    CHECK(requests[0].header("Authorization") == "Bearer k");
    CHECK(requests[0].body == "hello");
    CHECK(requests[1].connection == 0);
    CHECK(requests[1].index == 1);
    CHECK(requests[1].target == "/y");
    CHECK(requests[2].connection == 1);
    CHECK(requests[2].call == 2);
    CHECK(up.steps_done() == 3);

    raw_upstream held(on_call(
        0,
        [] {
            auto s = answer("held");
            s.hold = true;
            return s;
        }(),
        [](const recorded_request&) { return answer("other"); }));
    auto third = open(held.port());
    asio::write(third, asio::buffer(std::string("GET / HTTP/1.1\r\nHost: h\r\n\r\n")));
    CHECK(eventually([&] { return held.calls() == 1; }, 2s));
    std::this_thread::sleep_for(100ms);
    CHECK(held.steps_done() == 0);
    held.release();
    CHECK(read_some(third, ec) == "held");
}

TEST_CASE("hostile upstream: 1. a pooled connection out of step never answers another request") {
    run_group(1);
}

TEST_CASE("hostile upstream: 2. an unrequested 101 is a 502 for every subscriber, at once") {
    run_group(2);
}

TEST_CASE("hostile upstream: 3. interim 100 and 103 answers are consumed") {
    run_group(3);
}

TEST_CASE("hostile upstream: 4. a status outside 100-599 is a 502") {
    run_group(4);
}

TEST_CASE("hostile upstream: 5. transfer codings other than chunked are a 502") {
    run_group(5);
}

TEST_CASE("hostile upstream: 6. a header section over max_header_bytes is a 502") {
    run_group(6);
}

TEST_CASE("hostile upstream: 7. bare LF, NUL and bare CR in the head are a 502") {
    run_group(7);
}

TEST_CASE("hostile upstream: 8. conflicting Content-Length, or CL with chunked, is a 502") {
    run_group(8);
}

TEST_CASE("hostile upstream: 9. a body shorter or longer than its Content-Length") {
    run_group(9);
}

TEST_CASE("hostile upstream: 10. chunked framing errors cut or 502, never pass") {
    run_group(10);
}

TEST_CASE("hostile upstream: 11. a close or reset at every point of an answer") {
    run_group(11);
}

TEST_CASE("hostile upstream: 12. stalls end at their own timeout") {
    run_group(12);
}
