// The small rules about header names and values (proxy/http/header_rules.*): ASCII case
// folding, the hop-by-hop names (by text and by Beast's field code), which names are
// credentials, tokens, values safe to write, trimming and comma-separated lists.
#include "http/header_rules.hpp"

#include <doctest/doctest.h>

#include <boost/beast/http/field.hpp>

#include <string>
#include <string_view>
#include <vector>

namespace header_rules_test {

namespace http = coalescer::http;
using boost::beast::http::field;
using boost::beast::http::string_to_field;

const char* const hop_by_hop_names[] = {
    "connection",       "keep-alive",          "te",
    "trailer",          "transfer-encoding",   "upgrade",
    "proxy-connection", "proxy-authorization", "proxy-authenticate"};

std::vector<std::string> list_items(std::string_view list) {
    std::vector<std::string> out;
    http::for_each_list_item(list, [&](std::string_view item) { out.emplace_back(item); });
    return out;
}

using items = std::vector<std::string>;

TEST_CASE("header rules: iequals folds ASCII letters only") {
    CHECK(http::iequals("Content-Type", "content-type"));
    CHECK(http::iequals("X-API-KEY", "x-api-key"));
    CHECK(http::iequals("", ""));
    CHECK_FALSE(http::iequals("content-type", "content-typ"));
    CHECK_FALSE(http::iequals("x-api-key", "x_api_key"));
    CHECK_FALSE(http::iequals("a", ""));
    // Bytes that differ by 0x20 but are not letters stay different: '[' and '{', '@' and '`'.
    CHECK_FALSE(http::iequals("[", "{"));
    CHECK_FALSE(http::iequals("@", "`"));
    CHECK_FALSE(http::iequals("^", "~"));
    // Latin-1 and UTF-8 bytes are compared as they are.
    CHECK_FALSE(http::iequals("\xc4", "\xe4"));
    CHECK(http::iequals("x-\xc3\xa9", "X-\xc3\xa9"));
    CHECK_FALSE(http::iequals("x-\xc3\xa9", "x-\xc3\x89"));
}

TEST_CASE("header rules: lower_case lowers ASCII letters and nothing else") {
    CHECK(http::lower_case("X-API-Key") == "x-api-key");
    CHECK(http::lower_case("already-lower_1") == "already-lower_1");
    CHECK(http::lower_case("") == "");
    CHECK(http::lower_case("[@]^~") == "[@]^~");
    CHECK(http::lower_case("X-\xc3\x89T\xc3\x89") == "x-\xc3\x89t\xc3\x89");
}

TEST_CASE("header rules: the nine hop-by-hop names, in any case, and nothing else") {
    for (const char* name : hop_by_hop_names) {
        CAPTURE(name);
        CHECK(http::is_hop_by_hop(std::string_view(name)));
        std::string upper(name);
        for (char& c : upper)
            c = (c >= 'a' && c <= 'z') ? static_cast<char>(c - 32) : c;
        CHECK(http::is_hop_by_hop(std::string_view(upper)));
    }
    CHECK(http::is_hop_by_hop(std::string_view("Keep-Alive")));
    CHECK(http::is_hop_by_hop(std::string_view("TE")));
    for (const char* name :
         {"authorization", "content-length", "host", "trailers", "connections", "keep-alive-x",
          "x-connection", "upgrade-insecure-requests", "proxy-status", "te ", " te", ""}) {
        CAPTURE(name);
        CHECK_FALSE(http::is_hop_by_hop(std::string_view(name)));
    }
}

TEST_CASE("header rules: every hop-by-hop name has a field code, and both overloads agree") {
    for (const char* name : hop_by_hop_names) {
        CAPTURE(name);
        const auto code = string_to_field(name);
        REQUIRE(code != field::unknown);
        CHECK(http::is_hop_by_hop(code));
    }
    // Names that parse to a code and are not hop-by-hop, and the unknown code.
    for (const char* name : {"authorization", "content-length", "content-type", "host", "cookie",
                             "set-cookie", "cache-control", "expect", "accept-encoding", "age",
                             "proxy-authentication-info", "upgrade-insecure-requests"}) {
        CAPTURE(name);
        const auto code = string_to_field(name);
        CHECK(http::is_hop_by_hop(code) == http::is_hop_by_hop(std::string_view(name)));
        CHECK_FALSE(http::is_hop_by_hop(code));
    }
    CHECK_FALSE(http::is_hop_by_hop(field::unknown));
}

TEST_CASE("header rules: the known credentials, by name alone, in any case") {
    for (const char* name :
         {"authorization", "Authorization", "PROXY-AUTHORIZATION", "x-api-key", "X-Api-Key",
          "api-key", "Api-Key", "x-goog-api-key", "X-Goog-Api-Key", "cookie", "Cookie"}) {
        CAPTURE(name);
        CHECK(http::is_known_credential(name));
        CHECK(http::looks_like_credential(name));
    }
    // Close is not the same name.
    for (const char* name :
         {"set-cookie", "x-api-key2", "api_key", "x-goog-api", "authorization ", " cookie",
          "cookies", "www-authenticate", "x-auth-token", "apikey", ""}) {
        CAPTURE(name);
        CHECK_FALSE(http::is_known_credential(name));
    }
}

TEST_CASE("header rules: looks_like_credential fails closed on suffixes and on \"auth\"") {
    // Ends in key, token or secret, with or without a separator, in any case.
    for (const char* name : {"ocp-apim-subscription-key", "X-Functions-Key", "anthropic-api-key",
                             "-key", "Private-Token", "x-csrf-token", "X-ACCESS-TOKEN",
                             "x-client-secret", "Webhook-Secret", "x-idempotency-key", "apikey",
                             "X-ApiKey", "key", "token", "secret", "x_api_key", "AccessToken"}) {
        CAPTURE(name);
        CHECK(http::looks_like_credential(name));
        CHECK_FALSE(http::is_known_credential(name));
    }
    // Contains "auth" or "password" anywhere, in any case: wrongly or not, it counts.
    for (const char* name :
         {"x-auth", "X-Amz-Security-Auth-Info", "oauth-scope", "x-author", "www-authenticate",
          "authentication-info", "AUTH", "x-password", "Password-Hint"}) {
        CAPTURE(name);
        CHECK(http::looks_like_credential(name));
    }
    // idempotency-key, exactly (any case), is the one -key name that is not a credential.
    CHECK_FALSE(http::looks_like_credential("idempotency-key"));
    CHECK_FALSE(http::looks_like_credential("Idempotency-Key"));
    CHECK_FALSE(http::looks_like_credential("IDEMPOTENCY-KEY"));
    // Neither a known name nor the suffixes nor "auth" or "password".
    for (const char* name :
         {"content-type", "x-request-id", "openai-organization", "anthropic-version", "x-keys",
          "keyboard", "x-tokens", "x-secrets", "x-key-id", "x-aut", "x-pass", ""}) {
        CAPTURE(name);
        CHECK_FALSE(http::looks_like_credential(name));
    }
}

TEST_CASE("header rules: a token is one or more tchar") {
    CHECK(http::is_token("x-api-key"));
    CHECK(http::is_token("gzip"));
    CHECK(http::is_token("!#$%&'*+-.^_`|~09azAZ"));
    CHECK_FALSE(http::is_token(""));
    for (const char* bad : {"a b", "a:b", "a,b", "\"a\"", "a(b)", "a/b", "a;b", "a=b", "a\tb",
                            "a@b", "a[b]", "a{b}", "a\\b", "a?b", "\x7f", "\xc3\xa9"}) {
        CAPTURE(bad);
        CHECK_FALSE(http::is_token(bad));
    }
    CHECK_FALSE(http::is_token(std::string_view("a\0b", 3)));
}

TEST_CASE("header rules: a safe value has no control character but HTAB") {
    CHECK(http::is_safe_value(""));
    CHECK(http::is_safe_value("Bearer sk-123"));
    CHECK(http::is_safe_value("a\tb"));
    CHECK(http::is_safe_value(" "));
    CHECK(http::is_safe_value("caf\xc3\xa9 \x80\xff"));  // obs-text is not a control character
    for (const char* bad : {"a\rb", "a\nb", "\r\n", "a\x01", "\x1f", "x\x7f"}) {
        CAPTURE(bad);
        CHECK_FALSE(http::is_safe_value(bad));
    }
    CHECK_FALSE(http::is_safe_value(std::string_view("a\0b", 3)));
    CHECK_FALSE(http::is_safe_value("ok\r\nX-Injected: 1"));
}

TEST_CASE("header rules: trim removes spaces and tabs at both ends, nothing inside") {
    CHECK(http::trim("  a b \t") == "a b");
    CHECK(http::trim("\t\tvalue") == "value");
    CHECK(http::trim("value ") == "value");
    CHECK(http::trim(" \t \t") == "");
    CHECK(http::trim("") == "");
    CHECK(http::trim("a") == "a");
    // Only optional whitespace: CR, LF and other bytes stay.
    CHECK(http::trim("\ra\n") == "\ra\n");
    CHECK(http::trim(" \va\v ") == "\va\v");
    // A view into the same text.
    const std::string_view text = "  inner  ";
    CHECK(http::trim(text).data() == text.data() + 2);
}

TEST_CASE("header rules: list items are trimmed and empty ones skipped") {
    CHECK(list_items("a, b,,c ,\t d") == items{"a", "b", "c", "d"});
    CHECK(list_items("close") == items{"close"});
    CHECK(list_items("keep-alive,") == items{"keep-alive"});
    CHECK(list_items(",keep-alive") == items{"keep-alive"});
    CHECK(list_items("") == items{});
    CHECK(list_items(" ") == items{});
    CHECK(list_items(" , ,\t,") == items{});
    CHECK(list_items("x-a , x-b") == items{"x-a", "x-b"});
    // Inner spaces stay; quotes mean nothing to the splitter: every comma separates.
    CHECK(list_items("private = \"a b\", no-store") == items{"private = \"a b\"", "no-store"});
    CHECK(list_items("no-cache=\"set-cookie, x-a\", max-age=0") ==
          items{"no-cache=\"set-cookie", "x-a\"", "max-age=0"});
}

}  // namespace header_rules_test
