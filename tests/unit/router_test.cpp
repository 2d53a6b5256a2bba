// The router (proxy/server/router.*): which route a request target takes (first matching
// prefix, compared with the path alone), the upstream it names, the route's coalesce flag, and
// the target sent upstream (strip_prefix removed, the upstream's base path in front, the query
// as received). Configs are written here as YAML and loaded the way the sidecar loads them.
//
// The router sees only the target: the method plays no part in choosing a route, and the
// bypass role is the forwarder's (header_policy_test.cpp covers asks_not_to_share).
#include "server/router.hpp"

#include "ops/config.hpp"

#include <doctest/doctest.h>

#include <memory>
#include <optional>
#include <string>

namespace router_test {

using coalescer::ops::config;
using coalescer::server::route_match;
using coalescer::server::router;

std::shared_ptr<const config> load(const std::string& yaml) {
    return coalescer::ops::load_config_text(yaml, "router_test.yaml");
}

// Three providers told apart by a prefix that is stripped, the coalesced endpoint of each
// before its catch-all (the layout of config/multi-provider.yaml, written out here so that the
// test does not change when the shipped file does).
const std::string providers = R"(upstreams:
  - name: perplexity
    url: https://api.perplexity.ai
  - name: openai
    url: https://api.openai.com/v1
  - name: anthropic
    url: https://api.anthropic.com
routes:
  - {prefix: /perplexity/chat/completions, upstream: perplexity, strip_prefix: /perplexity}
  - {prefix: /perplexity/, upstream: perplexity, strip_prefix: /perplexity, coalesce: false}
  - {prefix: /openai/chat/completions, upstream: openai, strip_prefix: /openai, coalesce: true}
  - {prefix: /openai/, upstream: openai, strip_prefix: /openai, coalesce: false}
  - {prefix: /anthropic/v1/messages, upstream: anthropic, strip_prefix: /anthropic}
  - {prefix: /anthropic/, upstream: anthropic, strip_prefix: /anthropic, coalesce: false}
)";

// What a caller of match() looks at, in one comparable value.
struct routed {
    std::size_t route_index;
    std::string upstream;  // the upstream's name
    std::string host;      // where the request goes: from config only
    bool coalesce;
    std::string upstream_target;
    bool operator==(const routed&) const = default;
};

std::optional<routed> route(const std::shared_ptr<const config>& cfg, std::string_view target) {
    const router r(cfg);
    const auto m = r.match(target);
    if (!m) {
        return std::nullopt;
    }
    // The match points into the config it was made from, at the index it reports.
    REQUIRE(m->route_index < cfg->routes.size());
    REQUIRE(m->route == &cfg->routes[m->route_index]);
    const auto& up = cfg->upstreams.at(m->route->upstream_index);
    return routed{m->route_index, up.name, up.host, m->route->coalesce, m->upstream_target};
}

std::ostream& operator<<(std::ostream& os, const routed& r) {
    return os << "{route " << r.route_index << ", " << r.upstream << " (" << r.host << "), "
              << (r.coalesce ? "coalesce" : "pass") << ", \"" << r.upstream_target << "\"}";
}

}  // namespace router_test

namespace doctest {
template <>
struct StringMaker<std::optional<router_test::routed>> {
    static String convert(const std::optional<router_test::routed>& r) {
        if (!r) {
            return "no route";
        }
        std::ostringstream os;
        router_test::operator<<(os, *r);
        return os.str().c_str();
    }
};
}  // namespace doctest

namespace router_test {

TEST_CASE("router: each provider's prefix picks its upstream, its mode and its upstream path") {
    const auto cfg = load(providers);
    CHECK(route(cfg, "/perplexity/chat/completions") ==
          routed{0, "perplexity", "api.perplexity.ai", true, "/chat/completions"});
    CHECK(route(cfg, "/perplexity/models") ==
          routed{1, "perplexity", "api.perplexity.ai", false, "/models"});
    // The upstream URL's path (/v1) goes in front of what is left after strip_prefix.
    CHECK(route(cfg, "/openai/chat/completions") ==
          routed{2, "openai", "api.openai.com", true, "/v1/chat/completions"});
    CHECK(route(cfg, "/openai/embeddings") ==
          routed{3, "openai", "api.openai.com", false, "/v1/embeddings"});
    CHECK(route(cfg, "/openai/files/file-abc/content") ==
          routed{3, "openai", "api.openai.com", false, "/v1/files/file-abc/content"});
    CHECK(route(cfg, "/anthropic/v1/messages") ==
          routed{4, "anthropic", "api.anthropic.com", true, "/v1/messages"});
    CHECK(route(cfg, "/anthropic/v1/models") ==
          routed{5, "anthropic", "api.anthropic.com", false, "/v1/models"});
}

TEST_CASE(
    "router: routes are tried in order and the first whose prefix the path starts with wins") {
    const auto cfg = load(providers);
    // Below a coalesced endpoint's prefix is still that endpoint's route, not the catch-all.
    CHECK(route(cfg, "/anthropic/v1/messages/count_tokens") ==
          routed{4, "anthropic", "api.anthropic.com", true, "/v1/messages/count_tokens"});
    CHECK(route(cfg, "/openai/chat/completions/chatcmpl-1") ==
          routed{2, "openai", "api.openai.com", true, "/v1/chat/completions/chatcmpl-1"});
    // The catch-all takes its bare prefix too.
    CHECK(route(cfg, "/openai/") == routed{3, "openai", "api.openai.com", false, "/v1/"});

    // With "/" last, every path no earlier route takes goes there, unchanged.
    const auto with_default = load(R"(upstreams:
  - {name: special, url: 'http://special.internal:8000'}
  - {name: general, url: 'https://general.example/api'}
routes:
  - {prefix: /v1/chat/completions, upstream: special}
  - {prefix: /, upstream: general, coalesce: false}
)");
    CHECK(route(with_default, "/v1/chat/completions") ==
          routed{0, "special", "special.internal", true, "/v1/chat/completions"});
    CHECK(route(with_default, "/v1/embeddings") ==
          routed{1, "general", "general.example", false, "/api/v1/embeddings"});
    CHECK(route(with_default, "/") == routed{1, "general", "general.example", false, "/api/"});
}

TEST_CASE("router: a path no prefix starts with has no route") {
    const auto cfg = load(providers);
    CHECK(route(cfg, "/gemini/v1beta/models") == std::nullopt);
    CHECK(route(cfg, "/") == std::nullopt);
    // "/openai/" is the prefix: the path without its slash is not below it.
    CHECK(route(cfg, "/openai") == std::nullopt);
    CHECK(route(cfg, "/perplexity") == std::nullopt);
    // Paths compare byte for byte: no case folding, no percent-decoding.
    CHECK(route(cfg, "/OpenAI/chat/completions") == std::nullopt);
    CHECK(route(cfg, "/openai%2Fchat/completions") == std::nullopt);
    CHECK(route(cfg, "//openai/chat/completions") == std::nullopt);
    // Not origin-form: an absolute-form target (the session makes it origin-form before
    // routing), an asterisk, nothing at all. The client never chooses the upstream host.
    CHECK(route(cfg, "http://api.openai.com/openai/chat/completions") == std::nullopt);
    CHECK(route(cfg, "*") == std::nullopt);
    CHECK(route(cfg, "") == std::nullopt);
}

TEST_CASE("router: the prefix is compared with the path, never with the query") {
    const auto cfg = load(providers);
    // The query goes upstream as received, '?' included, after the rewritten path.
    CHECK(route(cfg, "/openai/chat/completions?stream=true&n=2") ==
          routed{2, "openai", "api.openai.com", true, "/v1/chat/completions?stream=true&n=2"});
    CHECK(route(cfg, "/openai/models?") ==
          routed{3, "openai", "api.openai.com", false, "/v1/models?"});
    // A query that spells a route's prefix or strip_prefix is left alone.
    CHECK(route(cfg, "/openai/models?next=/openai/chat/completions") ==
          routed{3, "openai", "api.openai.com", false, "/v1/models?next=/openai/chat/completions"});
    // The path ends at the first '?': "/openai?/chat/completions" has the path "/openai".
    CHECK(route(cfg, "/openai?/chat/completions") == std::nullopt);
    CHECK(route(cfg, "/?openai/") == std::nullopt);
}

TEST_CASE("router: strip_prefix and the upstream's base path make the upstream target") {
    SUBCASE("no strip_prefix: the whole path, after the base path") {
        const auto cfg = load(R"(upstreams:
  - {name: a, url: 'https://a.example/base/v2'}
  - {name: b, url: 'http://b.example:8081'}
routes:
  - {prefix: /x/, upstream: a}
  - {prefix: /y/, upstream: b}
)");
        CHECK(route(cfg, "/x/chat") == routed{0, "a", "a.example", true, "/base/v2/x/chat"});
        CHECK(route(cfg, "/y/chat?q=1") == routed{1, "b", "b.example", true, "/y/chat?q=1"});
    }
    SUBCASE("a strip_prefix that ends in '/' leaves a path without its slash: one is put back") {
        const auto cfg = load(R"(upstreams:
  - {name: a, url: 'https://a.example/v1'}
  - {name: b, url: 'https://b.example'}
routes:
  - {prefix: /a/, upstream: a, strip_prefix: /a/}
  - {prefix: /b/, upstream: b, strip_prefix: /b/}
)");
        CHECK(route(cfg, "/a/models") == routed{0, "a", "a.example", true, "/v1/models"});
        CHECK(route(cfg, "/a/") == routed{0, "a", "a.example", true, "/v1/"});
        CHECK(route(cfg, "/b/models") == routed{1, "b", "b.example", true, "/models"});
        CHECK(route(cfg, "/b/?x") == routed{1, "b", "b.example", true, "/?x"});
    }
    SUBCASE("stripping the whole path leaves \"/\" after the base path") {
        const auto cfg = load(R"(upstreams:
  - {name: a, url: 'https://a.example/v1'}
  - {name: b, url: 'https://b.example'}
routes:
  - {prefix: /a, upstream: a, strip_prefix: /a}
  - {prefix: /b, upstream: b, strip_prefix: /b}
)");
        CHECK(route(cfg, "/a") == routed{0, "a", "a.example", true, "/v1/"});
        CHECK(route(cfg, "/a?q") == routed{0, "a", "a.example", true, "/v1/?q"});
        CHECK(route(cfg, "/a/chat") == routed{0, "a", "a.example", true, "/v1/chat"});
        CHECK(route(cfg, "/b") == routed{1, "b", "b.example", true, "/"});
        CHECK(route(cfg, "/b/chat") == routed{1, "b", "b.example", true, "/chat"});
    }
    SUBCASE("a strip_prefix shorter than the prefix strips only itself") {
        const auto cfg = load(R"(upstreams:
  - {name: a, url: 'https://a.example/v1'}
routes:
  - {prefix: /tenant/openai/chat, upstream: a, strip_prefix: /tenant}
)");
        CHECK(route(cfg, "/tenant/openai/chat/completions") ==
              routed{0, "a", "a.example", true, "/v1/openai/chat/completions"});
    }
    SUBCASE("the strip_prefix \"/\" of the prefix \"/\"") {
        const auto cfg = load(R"(upstreams:
  - {name: a, url: 'https://a.example/v1'}
routes:
  - {prefix: /, upstream: a, strip_prefix: /}
)");
        CHECK(route(cfg, "/chat/completions") ==
              routed{0, "a", "a.example", true, "/v1/chat/completions"});
        CHECK(route(cfg, "/") == routed{0, "a", "a.example", true, "/v1/"});
    }
}

TEST_CASE("router: coalesce defaults to true, and a config built in code routes the same way") {
    coalescer::ops::config c;
    coalescer::ops::upstream_config first;
    first.name = "first";
    first.host = "first.example";
    coalescer::ops::upstream_config second;
    second.name = "second";
    second.host = "second.example";
    second.base_path = "/v3";
    c.upstreams = {first, second};
    c.routes = {
        coalescer::ops::route_config{.prefix = "/s/",
                                     .upstream = "second",
                                     .upstream_index = 1,
                                     .strip_prefix = "/s",
                                     .coalesce = false},
        coalescer::ops::route_config{.prefix = "/", .upstream = "first", .upstream_index = 0},
    };
    const auto cfg = std::make_shared<const config>(std::move(c));
    CHECK(cfg->routes[1].coalesce);
    CHECK(route(cfg, "/s/items?page=2") ==
          routed{0, "second", "second.example", false, "/v3/items?page=2"});
    CHECK(route(cfg, "/items") == routed{1, "first", "first.example", true, "/items"});

    const auto loaded = load(R"(upstreams: [{name: u, url: 'https://u.example'}]
routes: [{prefix: /, upstream: u}]
)");
    CHECK(route(loaded, "/chat") == routed{0, "u", "u.example", true, "/chat"});
}

TEST_CASE("router: one router answers many targets, each match independent of the last") {
    const auto cfg = load(providers);
    const router r(cfg);
    const auto a = r.match("/openai/chat/completions?x=1");
    const auto b = r.match("/nowhere");
    const auto c = r.match("/perplexity/models");
    REQUIRE(a);
    CHECK_FALSE(b);
    REQUIRE(c);
    CHECK(a->route_index == 2);
    CHECK(a->upstream_target == "/v1/chat/completions?x=1");
    CHECK(c->route_index == 1);
    CHECK(c->upstream_target == "/models");
}

// Prefixes match whole path segments, the rule the config loader's "never matches" check
// uses: every route the loader accepts is the one a request for exactly its own prefix gets
// ("/search" does not take "/searches").
TEST_CASE("router: every route the config loader accepts is reachable by its own prefix") {
    const auto cfg = load(R"(upstreams: [{name: a, url: 'http://a'}, {name: b, url: 'http://b'}]
routes:
  - {prefix: /search, upstream: a}
  - {prefix: /searches, upstream: b}
  - {prefix: /v1, upstream: a}
  - {prefix: /v1beta/models, upstream: b}
)");
    for (std::size_t i = 0; i < cfg->routes.size(); ++i) {
        const auto& prefix = cfg->routes[i].prefix;
        CAPTURE(prefix);
        const auto m = router(cfg).match(prefix);
        REQUIRE(m);
        CHECK(m->route_index == i);
    }
}

}  // namespace router_test
