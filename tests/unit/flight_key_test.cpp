#include "coalesce/flight_key.hpp"

#include <doctest/doctest.h>
#include <openssl/evp.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

using namespace coalescer::coalesce;
using coalescer::ops::coalesce_config;

namespace {

using header_list = std::vector<std::pair<std::string_view, std::string_view>>;

const std::string chat_body =
    R"({"model":"gpt-4o","messages":[{"role":"user","content":"Hello"}],"temperature":0.7,"user":"alice"})";

struct request_parts {
    std::string upstream = "openai";
    std::string method = "POST";
    std::string target = "/v1/chat/completions";
    header_list headers{{"Authorization", "Bearer sk-one"},
                        {"Content-Type", "application/json"},
                        {"User-Agent", "OpenAI/Python 1.30.1"},
                        {"x-stainless-retry-count", "0"}};
    std::string body = chat_body;

    key_request view() const { return key_request{upstream, method, target, &headers, body}; }
};

flight_key key_of(const flight_key_builder& builder, const request_parts& parts) {
    return builder.make(parts.view());
}

std::string hex_of(const std::array<unsigned char, 32>& d) {
    flight_key k;
    k.digest = d;
    return k.hex();
}

void field(std::string& out, std::string_view bytes) {
    for (int i = 0; i < 8; ++i)
        out.push_back(static_cast<char>((std::uint64_t(bytes.size()) >> (8 * i)) & 0xff));
    out.append(bytes);
}

std::array<unsigned char, 32> sha256(std::string_view data) {
    std::array<unsigned char, 32> out{};
    unsigned int n = 0;
    REQUIRE(EVP_Digest(data.data(), data.size(), out.data(), &n, EVP_sha256(), nullptr) == 1);
    return out;
}

}  // namespace

TEST_CASE("flight key: the body's member order and whitespace do not matter") {
    const flight_key_builder builder{coalesce_config{}};
    request_parts a, b;
    b.body =
        " {\"user\":\"alice\", "
        "\"temperature\":0.70,\n\"messages\":[{\"content\":\"Hel\\u006co\",\"role\":\"user\"}],"
        "\"model\":\"gpt-4o\"} ";
    CHECK(key_of(builder, a) == key_of(builder, b));
    body_kind kind = body_kind::raw;
    builder.make(a.view(), kind);
    CHECK(kind == body_kind::json);
}

TEST_CASE("flight key: any difference in meaning changes the key") {
    const flight_key_builder builder{coalesce_config{}};
    const request_parts base;
    const flight_key k = key_of(builder, base);
    CHECK(key_of(builder, base) == k);  // deterministic

    auto changed = [&](auto edit) {
        request_parts p;
        edit(p);
        return key_of(builder, p) != k;
    };
    CHECK(changed([](request_parts& p) { p.body[p.body.find("Hello") + 1] = 'a'; }));  // one byte
    CHECK(changed([](request_parts& p) { p.body.replace(p.body.find("0.7"), 3, "0.71"); }));
    CHECK(changed([](request_parts& p) { p.upstream = "anthropic"; }));
    CHECK(changed([](request_parts& p) { p.method = "PUT"; }));
    CHECK(changed([](request_parts& p) { p.target = "/v1/completions"; }));
    CHECK(changed([](request_parts& p) { p.target += "?x=1"; }));
    CHECK(changed([](request_parts& p) { p.body.clear(); }));
}

TEST_CASE(
    "flight key: fields are length-prefixed, so shifting bytes between them changes the key") {
    const flight_key_builder builder{coalesce_config{}};
    request_parts a, b;
    a.upstream = "ab";
    a.method = "c";
    b.upstream = "a";
    b.method = "bc";
    CHECK(key_of(builder, a) != key_of(builder, b));
    a.target = "/x";
    a.body = "y";
    b = a;
    b.target = "/";
    b.body = "xy";
    CHECK(key_of(builder, a) != key_of(builder, b));
}

TEST_CASE("flight key: credentials separate tenants") {
    const flight_key_builder builder{coalesce_config{}};
    request_parts a, b;
    CHECK(key_of(builder, a) == key_of(builder, b));  // same Authorization

    b.headers[0].second = "Bearer sk-two";
    CHECK(key_of(builder, a) != key_of(builder, b));  // different Authorization

    request_parts none;
    none.headers.erase(none.headers.begin());
    CHECK(key_of(builder, none) != key_of(builder, a));  // absent

    request_parts empty;
    empty.headers[0].second = "";
    CHECK(key_of(builder, empty) != key_of(builder, none));  // empty is not absent
    CHECK(key_of(builder, empty) != key_of(builder, a));

    request_parts api_key = none, api_key2 = none;
    api_key.headers.emplace_back("x-api-key", "k1");
    api_key2.headers.emplace_back("x-api-key", "k2");
    CHECK(key_of(builder, api_key) != key_of(builder, api_key2));
    CHECK(key_of(builder, api_key) != key_of(builder, none));

    // The same secret under another identity header is another key.
    request_parts as_auth = none, as_api_key = none;
    as_auth.headers.emplace_back("authorization", "s");
    as_api_key.headers.emplace_back("x-api-key", "s");
    CHECK(key_of(builder, as_auth) != key_of(builder, as_api_key));

    // Several lines of one header: all of them count, in order.
    request_parts two = none, two_swapped = none, first_only = none;
    two.headers.emplace_back("authorization", "a");
    two.headers.emplace_back("authorization", "b");
    two_swapped.headers.emplace_back("authorization", "b");
    two_swapped.headers.emplace_back("authorization", "a");
    first_only.headers.emplace_back("authorization", "a");
    CHECK(key_of(builder, two) != key_of(builder, two_swapped));
    CHECK(key_of(builder, two) != key_of(builder, first_only));
    request_parts split1 = none, split2 = none;  // lines are kept apart: "ab"+"c" is not "a"+"bc"
    split1.headers.emplace_back("authorization", "ab");
    split1.headers.emplace_back("authorization", "c");
    split2.headers.emplace_back("authorization", "a");
    split2.headers.emplace_back("authorization", "bc");
    CHECK(key_of(builder, split1) != key_of(builder, split2));
}

TEST_CASE("flight key: header names match case-insensitively") {
    const flight_key_builder builder{coalesce_config{}};
    request_parts lower, upper, mixed;
    lower.headers[0].first = "authorization";
    upper.headers[0].first = "AUTHORIZATION";
    mixed.headers[0].first = "AuThOrIzAtIoN";
    CHECK(key_of(builder, lower) == key_of(builder, upper));
    CHECK(key_of(builder, lower) == key_of(builder, mixed));
    upper.headers[0].second = "Bearer sk-two";
    CHECK(key_of(builder, lower) != key_of(builder, upper));

    request_parts v1, v2;
    v1.headers.emplace_back("anthropic-version", "2023-06-01");
    v2.headers.emplace_back("Anthropic-Version", "2023-06-01");
    CHECK(key_of(builder, v1) == key_of(builder, v2));

    coalesce_config cfg;
    cfg.identity_headers.push_back("X-Org-Id");  // configured in mixed case
    const flight_key_builder tenant_builder{cfg};
    request_parts o1, o2, o3;
    o1.headers.emplace_back("x-org-id", "org-1");
    o2.headers.emplace_back("X-ORG-ID", "org-2");
    o3.headers.emplace_back("X-Org-Id", "org-1");
    CHECK(key_of(tenant_builder, o1) != key_of(tenant_builder, o2));
    CHECK(key_of(tenant_builder, o1) == key_of(tenant_builder, o3));
}

TEST_CASE("flight key: every credential-like header separates tenants unless shared") {
    const flight_key_builder builder{coalesce_config{}};
    request_parts base;
    base.headers.erase(base.headers.begin());  // no Authorization
    for (const char* name :
         {"api-key", "x-goog-api-key", "cookie", "proxy-authorization", "x-custom-key",
          "X-Session-Token", "x-client-secret", "x-authed-as", "X-Amz-Security-Token"}) {
        CAPTURE(name);
        request_parts a = base, b = base;
        a.headers.emplace_back(name, "A");
        b.headers.emplace_back(name, "B");
        CHECK(key_of(builder, a) != key_of(builder, b));
        CHECK(key_of(builder, a) != key_of(builder, base));
    }
    // The order tenant headers arrive in does not matter; the name they arrive under does.
    request_parts ab = base, ba = base, renamed = base;
    ab.headers.emplace_back("api-key", "A");
    ab.headers.emplace_back("x-goog-api-key", "G");
    ba.headers.emplace_back("x-goog-api-key", "G");
    ba.headers.emplace_back("API-KEY", "A");
    renamed.headers.emplace_back("x-goog-api-key", "A");
    renamed.headers.emplace_back("api-key", "G");
    CHECK(key_of(builder, ab) == key_of(builder, ba));
    CHECK(key_of(builder, ab) != key_of(builder, renamed));

    coalesce_config shared_cfg;
    shared_cfg.shared_headers = {"x-gateway-token"};
    const flight_key_builder sharing{shared_cfg};
    request_parts g1 = base, g2 = base;
    g1.headers.emplace_back("X-Gateway-Token", "one");
    g2.headers.emplace_back("x-gateway-token", "two");
    CHECK(key_of(sharing, g1) == key_of(sharing, g2));
    CHECK(key_of(builder, g1) != key_of(builder, g2));  // not shared by default
}

TEST_CASE("flight key: headers outside identity and vary do not change the key") {
    const flight_key_builder builder{coalesce_config{}};
    const request_parts base;
    request_parts p = base;
    p.headers[2].second = "OpenAI/Python 9.9";  // user-agent
    p.headers[3].second = "3";                  // x-stainless-retry-count
    p.headers[1].second = "text/plain";         // content-type is not consulted
    p.headers.emplace_back("x-stainless-timeout", "600");
    p.headers.emplace_back("idempotency-key", "stainless-python-retry-123");
    p.headers.emplace_back("traceparent",
                           "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    p.headers.emplace_back("Cache-Control", "max-age=0");
    std::swap(p.headers[1], p.headers[2]);  // order of unrelated headers
    CHECK(key_of(builder, p) == key_of(builder, base));
}

TEST_CASE("flight key: vary headers change the key") {
    const flight_key_builder builder{coalesce_config{}};
    const request_parts base;
    auto with = [&](std::string_view name, std::string_view value) {
        request_parts p = base;
        p.headers.emplace_back(name, value);
        return key_of(builder, p);
    };
    const flight_key k = key_of(builder, base);
    CHECK(with("anthropic-version", "2023-06-01") != k);
    CHECK(with("anthropic-version", "2023-06-01") != with("anthropic-version", "2023-01-01"));
    CHECK(with("anthropic-version", "2023-06-01") == with("anthropic-version", "2023-06-01"));
    CHECK(with("anthropic-version", "") != k);  // present but empty is not absent
    CHECK(with("anthropic-beta", "tools-2024-04-04") != k);
    CHECK(with("OpenAI-Organization", "org-a") != with("OpenAI-Organization", "org-b"));
    CHECK(with("openai-project", "p") != with("openai-organization", "p"));
    request_parts split1 = base, split2 = base;
    split1.headers.emplace_back("anthropic-beta", "ab");
    split1.headers.emplace_back("anthropic-beta", "c");
    split2.headers.emplace_back("anthropic-beta", "a");
    split2.headers.emplace_back("anthropic-beta", "bc");
    CHECK(key_of(builder, split1) != key_of(builder, split2));

    coalesce_config cfg;
    cfg.vary_headers.clear();
    const flight_key_builder no_vary{cfg};
    request_parts p = base;
    p.headers.emplace_back("anthropic-version", "2023-06-01");
    CHECK(key_of(no_vary, p) == key_of(no_vary, base));
}

TEST_CASE("flight key: bodies that are not JSON are keyed on their raw bytes") {
    const flight_key_builder builder{coalesce_config{}};
    request_parts a, b, c;
    a.body = R"({"a":1,})";
    b.body = R"({"a":1, })";
    c.body = R"({"a":1,})";
    CHECK(key_of(builder, a) != key_of(builder, b));
    CHECK(key_of(builder, a) == key_of(builder, c));
    body_kind kind = body_kind::json;
    builder.make(a.view(), kind);
    CHECK(kind == body_kind::raw);

    request_parts d1, d2;  // duplicate names: raw, so order matters
    d1.body = R"({"a":1,"a":2})";
    d2.body = R"({"a":2,"a":1})";
    CHECK(key_of(builder, d1) != key_of(builder, d2));
    builder.make(d1.view(), kind);
    CHECK(kind == body_kind::raw);

    request_parts empty;
    empty.body.clear();
    builder.make(empty.view(), kind);
    CHECK(kind == body_kind::raw);
    request_parts empty_string;
    empty_string.body = R"("")";
    CHECK(key_of(builder, empty) != key_of(builder, empty_string));

    request_parts form;  // not JSON at all
    form.body = "a=1&b=2";
    builder.make(form.view(), kind);
    CHECK(kind == body_kind::raw);
    CHECK(key_of(builder, form) != key_of(builder, empty));
}

TEST_CASE("flight key: ignore_fields lets bodies differing only there share a key") {
    coalesce_config cfg;
    cfg.ignore_fields = {"/user", "/metadata/trace_id"};
    const flight_key_builder ignoring{cfg};
    const flight_key_builder strict{coalesce_config{}};
    request_parts a, b, c;
    b.body =
        R"({"model":"gpt-4o","messages":[{"role":"user","content":"Hello"}],"temperature":0.7,"user":"bob"})";
    c.body =
        R"({"model":"gpt-4o","messages":[{"role":"user","content":"Hello"}],"temperature":0.7})";
    CHECK(key_of(ignoring, a) == key_of(ignoring, b));
    CHECK(key_of(ignoring, a) == key_of(ignoring, c));
    CHECK(key_of(strict, a) != key_of(strict, b));
    CHECK(key_of(strict, a) != key_of(strict, c));

    request_parts m1, m2;
    m1.body = R"({"metadata":{"trace_id":"1","app":"x"}})";
    m2.body = R"({"metadata":{"app":"x","trace_id":"2"}})";
    CHECK(key_of(ignoring, m1) == key_of(ignoring, m2));
    m2.body = R"({"metadata":{"app":"y","trace_id":"1"}})";
    CHECK(key_of(ignoring, m1) != key_of(ignoring, m2));

    // Removing a member must not let a body meet one whose JSON path was never taken.
    request_parts raw_like;
    raw_like.body =
        R"({"model":"gpt-4o","messages":[{"role":"user","content":"Hello"}],"temperature":0.7,"user":"bob",})";
    CHECK(key_of(ignoring, raw_like) != key_of(ignoring, a));

    coalesce_config bad;
    bad.ignore_fields = {"user"};
    CHECK_THROWS_AS(flight_key_builder{bad}, std::invalid_argument);
}

TEST_CASE("flight key: the field layout (no identity headers present, so no secret involved)") {
    coalesce_config cfg;
    cfg.vary_headers = {"anthropic-version"};
    cfg.identity_headers = {"authorization"};
    const flight_key_builder builder{cfg};
    header_list headers{{"Anthropic-Version", "2023-06-01"}, {"user-agent", "x"}};
    const std::string body = R"({ "b" : 1, "a" : 2 })";
    const key_request request{"anthropic", "POST", "/v1/messages", &headers, body};

    std::string expected;
    field(expected, "coalescer-key-v2");
    field(expected, "");  // the ignore-list fingerprint: no pointers
    field(expected, "anthropic");
    field(expected, "POST");
    field(expected, "/v1/messages");
    expected.append(8, '\0');  // no tenant header present: a count of 0
    field(expected, "anthropic-version");
    field(expected, "\x01");
    field(expected, "2023-06-01");
    field(expected, "json");
    field(expected, R"({"a":2,"b":1})");
    CHECK(builder.make(request).hex() == hex_of(sha256(expected)));
}

TEST_CASE("flight key: the same credential gives the same key on every thread") {
    const flight_key_builder builder{coalesce_config{}};
    const request_parts parts;
    const flight_key here = key_of(builder, parts);
    flight_key there;
    std::thread t([&] { there = key_of(builder, parts); });
    t.join();
    CHECK(here == there);
    const flight_key_builder another{coalesce_config{}};  // one secret per process, not per builder
    CHECK(key_of(another, parts) == here);
}

TEST_CASE("flight key: a configured secret gives the same keys in every builder that has it") {
    request_parts a;
    const flight_key_builder one{coalesce_config{}, "shared secret of the fleet"};
    const flight_key_builder two{coalesce_config{}, "shared secret of the fleet"};
    const flight_key_builder other{coalesce_config{}, "another fleet"};
    const flight_key_builder random{coalesce_config{}};
    CHECK(key_of(one, a) == key_of(two, a));
    CHECK(key_of(one, a) != key_of(other, a));
    CHECK(key_of(one, a) != key_of(random, a));
    // Keying alternately with builders of different secrets on one thread stays right.
    CHECK(key_of(other, a) != key_of(two, a));
    CHECK(key_of(one, a) == key_of(two, a));
    // Without credentials the secret is not involved: every builder agrees.
    request_parts anonymous;
    anonymous.headers.erase(anonymous.headers.begin());
    CHECK(key_of(one, anonymous) == key_of(random, anonymous));
}

TEST_CASE("flight key: hex, prefix and hash") {
    const flight_key_builder builder{coalesce_config{}};
    request_parts a, b;
    b.body = "x";
    const flight_key ka = key_of(builder, a), kb = key_of(builder, b);
    const std::string hex = ka.hex();
    CHECK(hex.size() == 64);
    CHECK(hex.find_first_not_of("0123456789abcdef") == std::string::npos);
    CHECK(ka.prefix().size() == 12);
    CHECK(hex.substr(0, 12) == ka.prefix());
    CHECK(ka.hex() != kb.hex());

    flight_key k;
    k.digest[0] = 0xab;
    k.digest[31] = 0x01;
    CHECK(k.hex() == "ab" + std::string(60, '0') + "01");
    CHECK(k.prefix() == "ab0000000000");

    const flight_key_hash hash;
    CHECK(hash(ka) == hash(key_of(builder, a)));
    CHECK(hash(ka) != hash(kb));
    std::unordered_set<flight_key, flight_key_hash> set{ka, kb, key_of(builder, a)};
    CHECK(set.size() == 2);
}

TEST_CASE("flight key: HMAC-SHA256 matches RFC 4231") {
    CHECK(hex_of(detail::hmac_sha256(std::string(20, '\x0b'), "Hi There")) ==
          "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
    CHECK(hex_of(detail::hmac_sha256("Jefe", "what do ya want for nothing?")) ==
          "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    CHECK(hex_of(detail::hmac_sha256(std::string(131, '\xaa'),
                                     "Test Using Larger Than Block-Size Key - Hash Key First")) ==
          "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
}
