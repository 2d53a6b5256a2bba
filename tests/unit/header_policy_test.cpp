// Which header fields cross the proxy (proxy/http/header_policy.*): Connection's tokens, what a
// client's request takes upstream, what an upstream's answer takes to clients, what in an answer
// forbids sharing it and what in a request asks not to share. Fields are made as the parsers make
// them: Beast's field code for the name (field::unknown when Beast does not know it), the name as
// received, the value without its surrounding whitespace.
#include "http/header_policy.hpp"

#include <doctest/doctest.h>

#include <boost/beast/http/field.hpp>

#include <initializer_list>
#include <string_view>
#include <vector>

namespace header_policy_test {

namespace http = coalescer::http;
using http::header_field;

constexpr std::string_view bypass = "x-coalesce-bypass";  // the config's default

header_field field(std::string_view name, std::string_view value = "v") {
    return {boost::beast::http::string_to_field(name), name, value};
}

// A message's fields (views of string literals: they outlive the test).
struct fields {
    fields(std::initializer_list<header_field> f) : all(f) {}
    std::vector<header_field> all;
    http::connection_tokens connection() const { return http::connection_tokens(all); }
};

bool forwarded(const header_field& f, const fields& message = {},
               std::string_view bypass_header = bypass) {
    return http::forwarded_upstream(f, message.connection(), bypass_header);
}

bool relayed(const header_field& f, const fields& message = {}) {
    return http::relayed_to_clients(f, message.connection());
}

bool asks(const fields& message, std::string_view bypass_header = bypass) {
    return http::asks_not_to_share(message.all, bypass_header);
}

bool forbids(std::string_view name, std::string_view value) {
    return http::forbids_sharing(field(name, value));
}

TEST_CASE("header policy: the parsers' field codes are Beast's, whatever the name's case") {
    // The rules below compare codes for the fields Beast knows: a test field must get the code
    // the parser would give it.
    CHECK(field("CONNECTION").name == boost::beast::http::field::connection);
    CHECK(field("cache-control").name == boost::beast::http::field::cache_control);
    CHECK(field("Set-Cookie").name == boost::beast::http::field::set_cookie);
    CHECK(field("x-coalesce-bypass").name == boost::beast::http::field::unknown);
}

TEST_CASE("header policy: Connection tokens other than keep-alive and close name fields") {
    SUBCASE("no Connection field, or only keep-alive and close: nothing is named") {
        for (const fields& message :
             {fields{}, fields{field("Connection", "close")},
              fields{field("Connection", "keep-alive")},
              fields{field("connection", "Keep-Alive, CLOSE"), field("Connection", " close ")},
              fields{field("Connection", "")}, fields{field("Connection", " , ,")}}) {
            const auto tokens = message.connection();
            CHECK_FALSE(tokens.names_others());
            CHECK_FALSE(tokens.names("x-trace"));
            CHECK_FALSE(tokens.names("close"));
            CHECK_FALSE(tokens.names("keep-alive"));
        }
    }
    SUBCASE("a named field, in any case, from any of several Connection fields") {
        const fields message{field("Connection", "keep-alive"), field("Host", "h"),
                             field("connection", " X-Trace ,\tx-debug,,close")};
        const auto tokens = message.connection();
        CHECK(tokens.names_others());
        CHECK(tokens.names("x-trace"));
        CHECK(tokens.names("X-TRACE"));
        CHECK(tokens.names("x-debug"));
        CHECK_FALSE(tokens.names("x-tra"));
        CHECK_FALSE(tokens.names("x-trace-id"));
        CHECK_FALSE(tokens.names("host"));
        CHECK_FALSE(tokens.names(""));
    }
    SUBCASE("only Connection counts: a field that merely looks like it does not") {
        const fields message{field("Proxy-Connection", "x-trace"), field("X-Connection", "x-trace"),
                             field("Keep-Alive", "x-trace")};
        const auto tokens = message.connection();
        CHECK_FALSE(tokens.names_others());
        CHECK_FALSE(tokens.names("x-trace"));
    }
}

TEST_CASE("header policy: what a client's request takes upstream") {
    for (const char* name :
         {"Authorization", "x-api-key", "Content-Type", "Accept", "User-Agent", "Cookie",
          "OpenAI-Organization", "anthropic-version", "Idempotency-Key", "X-Request-Id",
          "Cache-Control", "Pragma", "Forwarded", "X-Forwarded-For", "x-coalesce-bypass-not",
          "Date", "Range"}) {
        CAPTURE(name);
        CHECK(forwarded(field(name)));
    }
    // Ours to set (Host from config, Content-Length from the body we send, Accept-Encoding:
    // identity), answered here (Expect), hop-by-hop, the bypass header in any case.
    for (const char* name :
         {"Host", "host", "Content-Length", "CONTENT-LENGTH", "Accept-Encoding", "Expect",
          "Connection", "Keep-Alive", "TE", "Trailer", "Transfer-Encoding", "Upgrade",
          "Proxy-Connection", "Proxy-Authorization", "Proxy-Authenticate", "x-coalesce-bypass",
          "X-Coalesce-Bypass"}) {
        CAPTURE(name);
        CHECK_FALSE(forwarded(field(name)));
    }
}

TEST_CASE("header policy: the bypass header is the configured name, and only that name") {
    CHECK_FALSE(forwarded(field("X-No-Share", "1"), {}, "x-no-share"));
    CHECK(forwarded(field("x-coalesce-bypass", "1"), {}, "x-no-share"));
}

TEST_CASE("header policy: a field the request's Connection names stays on the client's hop") {
    const fields message{field("Connection", "close, X-Client-Hint"), field("X-Client-Hint"),
                         field("X-Other")};
    CHECK_FALSE(forwarded(field("x-client-hint"), message));
    CHECK_FALSE(forwarded(field("X-Client-Hint"), message));
    CHECK(forwarded(field("X-Other"), message));
    CHECK(forwarded(field("Content-Type"), message));
}

TEST_CASE("header policy: what an upstream's answer takes to clients") {
    for (const char* name :
         {"Content-Type", "Set-Cookie", "Cache-Control", "Age", "Date", "Server", "Retry-After",
          "X-Request-Id", "Vary", "WWW-Authenticate", "Content-Encoding", "ETag",
          "x-ratelimit-remaining-requests", "openai-processing-ms"}) {
        CAPTURE(name);
        CHECK(relayed(field(name)));
    }
    // Each client's framing is its own; hop-by-hop fields describe the upstream's connection.
    for (const char* name :
         {"Content-Length", "content-length", "Transfer-Encoding", "Connection", "Keep-Alive", "TE",
          "Trailer", "Upgrade", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization"}) {
        CAPTURE(name);
        CHECK_FALSE(relayed(field(name)));
    }
    const fields answer{field("Connection", "keep-alive, X-Backend-Node"),
                        field("X-Backend-Node", "n7")};
    CHECK_FALSE(relayed(field("x-backend-node"), answer));
    CHECK(relayed(field("x-backend"), answer));
    CHECK(relayed(field("Content-Type"), answer));
}

TEST_CASE(
    "header policy: an answer's Set-Cookie, Cache-Control no-store or private forbid sharing") {
    CHECK(forbids("Set-Cookie", "session=abc; Path=/; HttpOnly"));
    CHECK(forbids("set-cookie", ""));
    CHECK(forbids("Cache-Control", "no-store"));
    CHECK(forbids("cache-control", "No-Store"));
    CHECK(forbids("Cache-Control", "private"));
    CHECK(forbids("Cache-Control", "PRIVATE"));
    CHECK(forbids("Cache-Control", "max-age=0, private"));
    CHECK(forbids("Cache-Control", "public,no-store,max-age=60"));
    CHECK(forbids("Cache-Control", " , no-store ,"));
    CHECK(forbids("Cache-Control", "\tno-store\t"));
    // Arguments are ignored: private with field names is still private.
    CHECK(forbids("Cache-Control", "private=\"Set-Cookie\""));
    CHECK(forbids("Cache-Control", "private=\"set-cookie, x-user\", max-age=60"));
    CHECK(forbids("Cache-Control", "private = \"x\""));

    CHECK_FALSE(forbids("Cache-Control", ""));
    CHECK_FALSE(forbids("Cache-Control", "public, max-age=60"));
    CHECK_FALSE(forbids("Cache-Control", "no-cache"));
    CHECK_FALSE(forbids("Cache-Control", "s-maxage=0, must-revalidate"));
    CHECK_FALSE(forbids("Cache-Control", "no-storex"));
    CHECK_FALSE(forbids("Cache-Control", "x-no-store"));
    CHECK_FALSE(forbids("Cache-Control", "privateer"));
    CHECK_FALSE(forbids("Cache-Control", "no store"));
    // A directive named inside another's quoted argument is not a directive ...
    CHECK_FALSE(forbids("Cache-Control", "no-cache=\"private\""));
    CHECK_FALSE(forbids("Cache-Control", "no-cache=\"set-cookie, private-note\", max-age=60"));
    CHECK_FALSE(forbids("Cache-Control", "no-cache=\"x, private\""));
    // ... unless a comma stands on both sides of it: the list is split on every comma, quoted
    // or not, so this reads as private. The mistake errs towards not sharing.
    CHECK(forbids("Cache-Control", "no-cache=\"x, private, y\""));
    // Only Cache-Control and Set-Cookie are read.
    for (const char* name : {"Pragma", "Expires", "Surrogate-Control", "CDN-Cache-Control",
                             "X-Cache-Control", "Vary", "Cookie", "Authorization"}) {
        CAPTURE(name);
        CHECK_FALSE(forbids(name, "no-store, private"));
    }
}

TEST_CASE("header policy: a request asks not to share with the bypass header set") {
    CHECK_FALSE(asks({}));
    CHECK_FALSE(asks({field("Content-Type", "application/json"), field("Authorization", "k")}));
    for (const char* value : {"1", "true", "TRUE", "yes", "on", "00", "0.0", "no", "0, 0", ""}) {
        CAPTURE(value);
        CHECK(asks({field("x-coalesce-bypass", value)}));
    }
    // Set to "0" or "false" (any case, with surrounding whitespace) it is not set.
    for (const char* value : {"0", "false", "False", "FALSE", " 0 ", "\tfalse "}) {
        CAPTURE(value);
        CHECK_FALSE(asks({field("x-coalesce-bypass", value)}));
    }
    CHECK(asks({field("X-Coalesce-Bypass", "1")}));
    // Any one of several fields is enough.
    CHECK(asks({field("x-coalesce-bypass", "0"), field("x-coalesce-bypass", "1")}));
    CHECK(asks({field("x-coalesce-bypass", "false"), field("Cache-Control", "no-cache")}));
    // The configured name, not the default one.
    CHECK(asks({field("X-Skip-Coalescing", "1")}, "x-skip-coalescing"));
    CHECK_FALSE(asks({field("x-coalesce-bypass", "1")}, "x-skip-coalescing"));
    CHECK_FALSE(asks({field("x-coalesce-bypass-x", "1")}));
}

TEST_CASE("header policy: a request asks not to share with Cache-Control no-cache or no-store") {
    for (const char* value : {"no-cache", "no-store", "NO-CACHE", "No-Store", "max-age=0, no-cache",
                              "no-store,no-transform", " , no-cache , ", "no-cache=\"x\""}) {
        CAPTURE(value);
        CHECK(asks({field("Cache-Control", value)}));
        CHECK(asks({field("cache-control", value)}));
    }
    for (const char* value : {"", "max-age=0", "no-transform", "only-if-cached", "private",
                              "public", "max-stale=10", "no-cachex", "x-no-store", "no cache"}) {
        CAPTURE(value);
        CHECK_FALSE(asks({field("Cache-Control", value)}));
    }
    // Pragma (deprecated, RFC 9111 §5.4) is not read, nor a look-alike of Cache-Control.
    CHECK_FALSE(asks({field("Pragma", "no-cache")}));
    CHECK_FALSE(asks({field("X-Cache-Control", "no-store")}));
}

}  // namespace header_policy_test
