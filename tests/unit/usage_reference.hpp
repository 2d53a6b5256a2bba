// The straightforward reading of a JSON answer's usage, on Boost.JSON's document tree: what
// ops::extract_usage's event-driven reading must agree with (unit tests and the sse_usage fuzz
// target). Top-level "usage" first, else a top-level "response" (a Responses event); kinds as
// token_usage.hpp describes them.
#pragma once

#include "ops/token_usage.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>

#include <algorithm>
#include <optional>
#include <string>
#include <string_view>

namespace coalescer::test {

inline std::optional<std::uint64_t> reference_number(const boost::json::object& o,
                                                     std::string_view name) {
    const auto* v = o.if_contains(name);
    if (v != nullptr && v->is_uint64())
        return v->as_uint64();
    if (v != nullptr && v->is_int64() && v->as_int64() >= 0)
        return static_cast<std::uint64_t>(v->as_int64());
    return std::nullopt;
}

inline std::optional<std::uint64_t> reference_detail(const boost::json::object& usage,
                                                     std::string_view object,
                                                     std::string_view name) {
    const auto* d = usage.if_contains(object);
    return d != nullptr && d->is_object() ? reference_number(d->get_object(), name) : std::nullopt;
}

// nullopt: this usage object reports nothing.
inline std::optional<ops::token_usage> reference_kinds(const boost::json::object& u) {
    const auto get = [&](std::string_view n) { return reference_number(u, n); };
    const auto cached = reference_detail(u, "prompt_tokens_details", "cached_tokens")
                            ? reference_detail(u, "prompt_tokens_details", "cached_tokens")
                            : reference_detail(u, "input_tokens_details", "cached_tokens");
    const auto reasoning =
        reference_detail(u, "completion_tokens_details", "reasoning_tokens")
            ? reference_detail(u, "completion_tokens_details", "reasoning_tokens")
            : reference_detail(u, "output_tokens_details", "reasoning_tokens");
    std::optional<double> total_cost, parts;
    if (const auto* c = u.if_contains("cost"); c != nullptr && c->is_object()) {
        const auto& cost = c->get_object();
        const auto price = [&](std::string_view key) -> std::optional<double> {
            const auto* v = cost.if_contains(key);
            return v != nullptr && v->is_number() ? std::optional(v->to_number<double>())
                                                  : std::nullopt;
        };
        total_cost = price("total_cost");
        for (const auto* key :
             {"input_tokens_cost", "output_tokens_cost", "request_cost", "citation_tokens_cost",
              "reasoning_tokens_cost", "search_queries_cost"}) {
            if (const auto v = price(key))
                parts = parts.value_or(0) + *v;
        }
    }
    const std::optional<std::uint64_t> all[] = {
        get("prompt_tokens"),
        get("completion_tokens"),
        get("input_tokens"),
        get("output_tokens"),
        reference_detail(u, "prompt_tokens_details", "cached_tokens"),
        reference_detail(u, "input_tokens_details", "cached_tokens"),
        get("prompt_cache_hit_tokens"),
        reference_detail(u, "completion_tokens_details", "reasoning_tokens"),
        reference_detail(u, "output_tokens_details", "reasoning_tokens"),
        get("reasoning_tokens"),
        get("cache_read_input_tokens"),
        get("cache_creation_input_tokens")};
    if (!total_cost && !parts &&
        std::none_of(std::begin(all), std::end(all), [](auto v) { return v && *v != 0; }))
        return std::nullopt;
    ops::token_usage r;
    const auto in = get("prompt_tokens") ? *get("prompt_tokens") : get("input_tokens").value_or(0);
    const auto inside =
        std::min(in, cached.value_or(0) + get("prompt_cache_hit_tokens").value_or(0));
    r.input = in - inside;
    r.cached_input = inside + get("cache_read_input_tokens").value_or(0);
    r.cache_write_input = get("cache_creation_input_tokens").value_or(0);
    r.output =
        get("completion_tokens") ? *get("completion_tokens") : get("output_tokens").value_or(0);
    r.reasoning = reasoning ? *reasoning : get("reasoning_tokens").value_or(0);
    r.provider_cost_usd = total_cost ? total_cost : parts;
    return r;
}

inline std::string reference_model(const boost::json::object& o) {
    const auto* m = o.if_contains("model");
    return m != nullptr && m->is_string() ? std::string(m->get_string()) : std::string();
}

inline std::optional<ops::token_usage> reference_usage(std::string_view text) {
    boost::system::error_code ec;
    boost::json::parse_options options;
    options.allow_invalid_utf8 = true;  // usage is read whatever the text's encoding
    const auto v = boost::json::parse(text, ec, {}, options);
    if (ec || !v.is_object())
        return std::nullopt;
    const auto& o = v.get_object();
    std::optional<ops::token_usage> found;
    std::string model = reference_model(o);
    if (const auto* u = o.if_contains("usage"); u != nullptr && u->is_object())
        found = reference_kinds(u->get_object());
    const auto* r = o.if_contains("response");
    const auto* m = o.if_contains("message");
    // The later of "message" and "response" is the nested object that counts.
    const bool response_last =
        r != nullptr && (m == nullptr || std::find_if(o.begin(), o.end(), [](const auto& kv) {
                                             return kv.key() == "message";
                                         }) < std::find_if(o.begin(), o.end(), [](const auto& kv) {
                                             return kv.key() == "response";
                                         }));
    if (!found && response_last && r->is_object()) {
        const auto& ro = r->get_object();
        if (const auto* u = ro.if_contains("usage"); u != nullptr && u->is_object())
            found = reference_kinds(u->get_object());
        if (found && !reference_model(ro).empty())
            model = reference_model(ro);
    }
    if (found)
        found->model = model.empty() ? "unknown" : model;
    return found;
}

// Equal, or both not a number (1e999 + -1e999 in the parts of a cost).
inline bool same_cost(std::optional<double> a, std::optional<double> b) {
    return a.has_value() == b.has_value() && (!a || *a == *b || (*a != *a && *b != *b));
}

inline bool same_usage(const std::optional<ops::token_usage>& a,
                       const std::optional<ops::token_usage>& b) {
    return a.has_value() == b.has_value() &&
           (!a ||
            (a->model == b->model && a->input == b->input && a->cached_input == b->cached_input &&
             a->cache_write_input == b->cache_write_input && a->output == b->output &&
             a->reasoning == b->reasoning &&
             same_cost(a->provider_cost_usd, b->provider_cost_usd)));
}

}  // namespace coalescer::test
