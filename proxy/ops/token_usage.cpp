#include "ops/token_usage.hpp"

#include <boost/json/monotonic_resource.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>

#include <array>

namespace coalescer::ops {
namespace json = boost::json;

namespace {

std::uint64_t field(const json::object& usage, std::string_view name) {
    const auto* v = usage.if_contains(name);
    if (v == nullptr)
        return 0;
    if (v->is_uint64())
        return v->as_uint64();
    if (v->is_int64() && v->as_int64() > 0)
        return static_cast<std::uint64_t>(v->as_int64());
    return 0;
}

struct partial {
    std::string model;
    std::uint64_t total = 0, prompt = 0, completion = 0, input = 0, output = 0;
    bool found = false;
};

void take(const json::object& object, partial& p) {
    if (p.model.empty()) {
        if (const auto* m = object.if_contains("model"); m != nullptr && m->is_string()) {
            p.model = std::string(m->as_string());
        }
    }
    const auto* u = object.if_contains("usage");
    if (u == nullptr || !u->is_object() || p.found) {
        return;
    }
    const auto& usage = u->as_object();
    p.total = field(usage, "total_tokens");
    p.prompt = field(usage, "prompt_tokens");
    p.completion = field(usage, "completion_tokens");
    p.input = field(usage, "input_tokens");
    p.output = field(usage, "output_tokens");
    p.found = p.total + p.prompt + p.completion + p.input + p.output != 0;
}

std::optional<token_usage> finish(const partial& p) {
    if (!p.found)
        return std::nullopt;
    const std::uint64_t tokens =
        p.total != 0
            ? p.total
            : (p.prompt + p.completion != 0 ? p.prompt + p.completion : p.input + p.output);
    return token_usage{p.model.empty() ? "unknown" : p.model, tokens};
}

// Parses `text` and hands the object to `use`. A usual completion fits the stack buffer, so
// reading usage costs no heap allocation on every proxied response.
template <class Use>
void with_object(std::string_view text, Use&& use) {
    std::array<unsigned char, 8192> stack;
    json::monotonic_resource resource(stack.data(), stack.size());
    boost::system::error_code ec;
    auto v = json::parse(text, ec, &resource);
    if (!ec && v.is_object()) {
        use(v.as_object());
    }
}

// The `data:` payloads of an SSE stream, in order.
std::vector<std::string_view> data_payloads(std::string_view stream) {
    std::vector<std::string_view> out;
    std::size_t pos = 0;
    while (pos < stream.size()) {
        auto end = stream.find('\n', pos);
        if (end == std::string_view::npos)
            end = stream.size();
        auto line = stream.substr(pos, end - pos);
        if (!line.empty() && line.back() == '\r')
            line.remove_suffix(1);
        if (line.starts_with("data:")) {
            line.remove_prefix(5);
            if (!line.empty() && line.front() == ' ')
                line.remove_prefix(1);
            if (!line.starts_with("[DONE]"))
                out.push_back(line);
        }
        pos = end + 1;
    }
    return out;
}

}  // namespace

std::optional<token_usage> extract_usage(std::string_view content_type,
                                         std::span<const std::string_view> body) {
    std::string joined;
    std::string_view text;
    if (body.size() == 1) {
        text = body.front();
    } else {
        for (const auto chunk : body) {
            joined += chunk;
        }
        text = joined;
    }
    partial p;
    if (content_type.find("event-stream") == std::string_view::npos) {
        with_object(text, [&](const json::object& object) { take(object, p); });
        return finish(p);
    }
    const auto payloads = data_payloads(text);
    for (auto it = payloads.rbegin(); it != payloads.rend() && !p.found; ++it) {
        with_object(*it, [&](const json::object& object) { take(object, p); });
    }
    if (p.found && p.total == 0 && p.prompt == 0 && p.input == 0) {
        // Anthropic: the input tokens and the model are in message_start.
        bool seen = false;
        for (const auto payload : payloads) {
            with_object(payload, [&](const json::object& object) {
                const auto* message = object.if_contains("message");
                if (seen || message == nullptr || !message->is_object()) {
                    return;
                }
                seen = true;
                partial start;
                take(message->as_object(), start);
                p.input = start.input;
                if (p.model.empty())
                    p.model = start.model;
            });
            if (seen)
                break;
        }
    }
    return finish(p);
}

}  // namespace coalescer::ops
