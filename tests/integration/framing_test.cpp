// Downstream framing, limits and smuggling cases (reliability checklist §3 H and R), sent as
// raw bytes over a real socket. Each must be answered with the right status, a JSON error in
// the provider shape, and — for framing errors — a closed connection; nothing is forwarded.
#include "harness.hpp"

#include <doctest/doctest.h>

#include <boost/json/parse.hpp>

#include <sstream>
#include <thread>

using namespace coalescer;
using namespace coalescer::test;
using namespace std::chrono_literals;

namespace {

struct framing_case {
    const char* name;
    std::string bytes;
    unsigned status;
};

const std::string post_head = "POST /chat/completions HTTP/1.1\r\nHost: localhost\r\n";

std::vector<framing_case> cases() {
    const std::string long_name(9000, 'a');
    std::string many_fields;
    for (int i = 0; i < 101; ++i)
        many_fields += "x-f" + std::to_string(i) + ": v\r\n";
    return {
        {"CL and TE chunked",
         post_head + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
        {"TE gzip then CL (Beast gap)",
         post_head + "Transfer-Encoding: gzip\r\nContent-Length: 5\r\n\r\nhello", 400},
        {"TE gzip alone", post_head + "Transfer-Encoding: gzip\r\n\r\n", 501},
        {"TE identity", post_head + "Transfer-Encoding: identity\r\n\r\n", 501},
        {"TE chunked not last", post_head + "Transfer-Encoding: chunked, gzip\r\n\r\n", 400},
        {"TE chunked twice", post_head + "Transfer-Encoding: chunked, chunked\r\n\r\n", 400},
        {"two TE lines",
         post_head + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
         400},
        {"TE xchunked", post_head + "Transfer-Encoding: xchunked\r\n\r\n", 501},
        {"HTTP/1.0 chunked",
         "POST /chat/completions HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: "
         "chunked\r\n\r\n0\r\n\r\n",
         400},
        {"two different CL", post_head + "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
         400},
        {"two equal CL", post_head + "Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 400},
        {"CL list", post_head + "Content-Length: 5, 5\r\n\r\nhello", 400},
        {"CL plus sign", post_head + "Content-Length: +5\r\n\r\nhello", 400},
        {"CL negative", post_head + "Content-Length: -1\r\n\r\n", 400},
        {"CL hex", post_head + "Content-Length: 0x10\r\n\r\n", 400},
        {"CL overflow", post_head + "Content-Length: 123456789012345678901\r\n\r\n", 400},
        {"bad chunk size", post_head + "Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
         400},
        {"obs-fold", post_head + "X-A: one\r\n two\r\nContent-Length: 0\r\n\r\n", 400},
        {"bare LF lines", "GET /models HTTP/1.1\nHost: x\n\n", 400},
        {"bare CR", "GET /models HTTP/1.1\r\nHost: x\rX: y\r\n\r\n", 400},
        {"space before colon", "GET /models HTTP/1.1\r\nHost : x\r\n\r\n", 400},
        {"underscore in name", "GET /models HTTP/1.1\r\nHost: x\r\nx_api_key: k\r\n\r\n", 400},
        {"separator in name", "GET /models HTTP/1.1\r\nHost: x\r\nX{a}: k\r\n\r\n", 400},
        {"non-ASCII name", "GET /models HTTP/1.1\r\nHost: x\r\nX\xc3\xa9: k\r\n\r\n", 400},
        {"no Host", "GET /models HTTP/1.1\r\n\r\n", 400},
        {"two Hosts", "GET /models HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
        {"HTTP/2.0", "GET /models HTTP/2.0\r\nHost: x\r\n\r\n", 505},
        {"absolute form with userinfo",
         "GET http://user@evil.example/models HTTP/1.1\r\nHost: x\r\n\r\n", 400},
        {"absolute form, not http", "GET ftp://evil.example/models HTTP/1.1\r\nHost: x\r\n\r\n",
         400},
        {"non-ASCII in the target", "GET /m\xffodels HTTP/1.1\r\nHost: x\r\n\r\n", 400},
        {"control in the target", "GET /m\x01odels HTTP/1.1\r\nHost: x\r\n\r\n", 400},
        {"brace in the target", "GET /models?a={b} HTTP/1.1\r\nHost: x\r\n\r\n", 400},
        {"bad percent escape", "GET /models%zz HTTP/1.1\r\nHost: x\r\n\r\n", 400},
        {"CONNECT", "CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n", 405},
        {"asterisk form", "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", 400},
        {"two Authorization",
         "GET /models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer a\r\nAuthorization: Bearer "
         "b\r\n\r\n",
         400},
        {"Authorization vs x-api-key",
         "GET /models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer a\r\nx-api-key: b\r\n\r\n", 400},
        {"Connection names a credential",
         "GET /models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer a\r\nConnection: "
         "authorization\r\n\r\n",
         400},
        {"Connection names a vary header",
         "GET /models HTTP/1.1\r\nHost: x\r\nAnthropic-Version: 1\r\nConnection: "
         "anthropic-version\r\n\r\n",
         400},
        {"Connection names api-key",
         "GET /models HTTP/1.1\r\nHost: x\r\nConnection: api-key\r\n\r\n", 400},
        {"two api-key lines", "GET /models HTTP/1.1\r\nHost: x\r\napi-key: a\r\napi-key: b\r\n\r\n",
         400},
        {"two cookie lines",
         "GET /models HTTP/1.1\r\nHost: x\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n", 400},
        {"unknown expectation", post_head + "Expect: teapot\r\nContent-Length: 2\r\n\r\n{}", 417},
        {"header line too long",
         "GET /models HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(20000, 'b') + "\r\n\r\n", 431},
        {"101 fields", "GET /models HTTP/1.1\r\nHost: x\r\n" + many_fields + "\r\n", 431},
        {"request line too long", "GET /" + long_name + " HTTP/1.1\r\nHost: x\r\n\r\n", 414},
        {"garbage", std::string("\x16\x03\x01\x02\x00hello\r\n\r\n", 14), 400},
        {"body over the limit (CL)", post_head + "Content-Length: 5000\r\n\r\n", 413},
        {"body over the limit (chunked)",
         post_head + "Transfer-Encoding: chunked\r\n\r\n800\r\n" + std::string(2048, 'x') +
             "\r\n0\r\n\r\n",
         413},
    };
}

void check_error_body(const response& r) {
    INFO("body: " << r.body);
    CHECK(r.header("content-type") == "application/json");
    const auto json = boost::json::parse(r.body);
    CHECK(json.at("error").at("type").as_string() == "coalescer_error");
    CHECK(!json.at("error").at("message").as_string().empty());
}

}  // namespace

TEST_CASE("malformed, smuggling and oversized requests get their status and a closed connection") {
    mock_and_proxy env({}, "limits: {max_request_body: 1KiB, header_timeout: 2s}\n");
    for (const auto& c : cases()) {
        const std::string name = c.name;
        CAPTURE(name);
        client conn(env.proxy->port());
        conn.send_raw(c.bytes);
        const auto r = conn.read();
        CHECK(r.status == c.status);
        check_error_body(r);
        CHECK(r.header("connection") == "close");
        CHECK(conn.closed_by_peer());
    }
    CHECK(env.mock->stats().calls == 0);  // nothing reached the provider
}

TEST_CASE("a chunked request's trailer fields never reach the provider") {
    // A trailer arrives after the head was checked and keyed: an Authorization there would
    // reach the provider next to the checked one (H-17), so trailers are dropped.
    mock_and_proxy env;
    const auto body = chat_body("trailers");
    std::ostringstream size;
    size << std::hex << body.size();
    client conn(env.proxy->port());
    conn.send_raw(post_head +
                  "Authorization: Bearer tenant-a\r\nContent-Type: application/json\r\n"
                  "Transfer-Encoding: chunked\r\n\r\n" +
                  size.str() + "\r\n" + body +
                  "\r\n0\r\nAuthorization: Bearer tenant-b\r\nX-Trailer: t\r\n\r\n");
    const auto r = conn.read(5s);
    CHECK(r.status == 200);
    REQUIRE(env.mock->stats().calls == 1);
    const auto call = env.mock->calls().back();
    CHECK(call.body_sha256 == sha256_hex(body));
    CHECK(call.headers.at("authorization") == "Bearer tenant-a");
    CHECK(call.headers.count("x-trailer") == 0);
}

TEST_CASE("413 is sent before the body is read") {
    mock_and_proxy env({}, "limits: {max_request_body: 1KiB}\n");
    client conn(env.proxy->port());
    // Only the head: the answer must come without waiting for 10 MB that never arrives.
    conn.send_raw(post_head + "Content-Length: 10000000\r\nContent-Type: application/json\r\n\r\n");
    const auto r = conn.read(std::chrono::seconds(5));
    CHECK(r.status == 413);
    check_error_body(r);
}

TEST_CASE("Expect: 100-continue gets 100 then the answer") {
    mock_and_proxy env;
    client conn(env.proxy->port());
    const auto body = chat_body("continue");
    conn.send_raw(post_head +
                  "Expect: 100-continue\r\nContent-Type: application/json\r\nContent-Length: " +
                  std::to_string(body.size()) + "\r\n\r\n");
    const auto interim = conn.read();
    CHECK(interim.status == 100);
    conn.send_raw(body);
    const auto r = conn.read();
    CHECK(r.status == 200);
    CHECK(env.mock->stats().calls == 1);
}

TEST_CASE("a head that trickles in slower than header_timeout gets 408") {
    mock_and_proxy env({}, "limits: {header_timeout: 300ms}\n");
    client conn(env.proxy->port());
    conn.send_raw("GET /models HTTP/1.1\r\nHo");
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
    conn.send_raw("st: x\r\n");  // progress does not extend the deadline (slowloris)
    const auto r = conn.read(std::chrono::seconds(5));
    CHECK(r.status == 408);
    check_error_body(r);
    CHECK(conn.closed_by_peer());
}

TEST_CASE(
    "header_timeout counts from a head's first byte, not from the keep-alive wait before it") {
    // A keep-alive client that waits longer than header_timeout before its next request, then
    // sends the head in two pieces, is within its time: 408 only for a head that trickles.
    mock_and_proxy env({}, "limits: {header_timeout: 300ms, idle_timeout: 10s}\n");
    client conn(env.proxy->port());
    conn.send("GET", "/models", "");
    REQUIRE(conn.read(5s).status == 200);
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    conn.send_raw("GET /models HTTP/1.1\r\nHo");
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
    conn.send_raw("st: x\r\n\r\n");
    const auto r = conn.read(5s);
    CHECK(r.status == 200);  // the provider's answer: the proxy never makes a 200 itself
}

TEST_CASE("an idle keep-alive connection is closed quietly at idle_timeout") {
    mock_and_proxy env({}, "limits: {idle_timeout: 300ms}\n");
    client conn(env.proxy->port());
    conn.send("GET", "/models", "");
    CHECK(conn.read().status == 200);
    const auto answered = std::chrono::steady_clock::now();
    // The sidecar must close it: a read that merely ran out of time would also return nothing.
    const auto rest = conn.read_to_close(10s);
    const auto idle = std::chrono::steady_clock::now() - answered;
    CHECK(rest.closed);
    CHECK(rest.bytes.empty());  // no 408 for a connection that sent nothing
    // Not before idle_timeout (armed just before the answer left, so a little less here).
    CHECK(idle >= 200ms);
}

TEST_CASE("a request that arrives with the client's half-close is answered, then closed") {
    // idle_timeout (60 s) is far beyond the client's patience: the end of the stream, which
    // arrived with the request, must be noticed as soon as the response is out.
    mock_and_proxy env;
    const auto body = chat_body("half-close");
    client conn(env.proxy->port());
    conn.send_last(post_head + "Content-Type: application/json\r\nContent-Length: " +
                   std::to_string(body.size()) + "\r\n\r\n" + body);
    const auto r = conn.read(5s);
    CHECK(r.status == 200);
    CHECK(r.complete);
    CHECK(conn.closed_by_peer(5s));
    CHECK(env.mock->stats().calls == 1);
}

TEST_CASE("urgent data inside a request neither stalls its reading nor reaches the provider") {
    // header_timeout (10 s) is beyond the client's patience: the bytes queued behind the urgent
    // mark must be read without waiting for more to arrive.
    mock_and_proxy env;
    const auto body = chat_body("urgent");
    client conn(env.proxy->port());
    // A first request, so that the second one finds a connection the reactor already watches.
    conn.send("POST", "/chat/completions", chat_body("before the urgent one"));
    REQUIRE(conn.read(5s).status == 200);
    conn.send_with_urgent_byte(
        post_head + "Content-Type: application/json\r\n", '!',
        "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body);
    const auto r = conn.read(5s);
    CHECK_FALSE(r.timed_out);
    CHECK(r.status == 200);
    REQUIRE(env.mock->stats().calls == 2);
    CHECK(env.mock->calls().back().body_sha256 == sha256_hex(body));
}

TEST_CASE("a chunked body cut short by the client's close gets 400 at once, and nothing is sent") {
    mock_and_proxy env;
    client conn(env.proxy->port());
    conn.send_last(post_head + "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
    const auto r = conn.read(5s);
    CHECK_FALSE(r.timed_out);
    CHECK(r.status == 400);
    CHECK(conn.closed_by_peer(5s));
    CHECK(env.mock->stats().calls == 0);
}

TEST_CASE(
    "pipelined requests are answered in order, and bytes after an error are never forwarded") {
    mock_and_proxy env;
    client conn(env.proxy->port());
    const auto a = chat_body("first");
    const auto b = chat_body("second");
    conn.send_raw(post_head + "Content-Type: application/json\r\nContent-Length: " +
                  std::to_string(a.size()) + "\r\n\r\n" + a + post_head +
                  "Content-Type: application/json\r\nContent-Length: " + std::to_string(b.size()) +
                  "\r\n\r\n" + b);
    const auto first = conn.read();
    const auto second = conn.read();
    CHECK(first.status == 200);
    CHECK(second.status == 200);
    // In order: the first answer is the mock's first call, made for the first body.
    CHECK(answered_by(first).body_tag == body_tag(a));
    CHECK(answered_by(second).body_tag == body_tag(b));
    CHECK(answered_by(first).seq == 1);
    CHECK(answered_by(second).seq == 2);
    CHECK(env.mock->stats().calls == 2);

    client bad(env.proxy->port());
    bad.send_raw(post_head + "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello" + post_head +
                 "Content-Length: 2\r\n\r\n{}");
    CHECK(bad.read().status == 400);
    CHECK(bad.closed_by_peer());
    CHECK(env.mock->stats().calls == 2);
}
