#include "ops/token_usage.hpp"

#include <boost/json/basic_parser_impl.hpp>

#include <array>
#include <cstdint>

namespace coalescer::ops {
namespace json = boost::json;
using boost::system::error_code;

namespace {

// What one JSON document says about usage: at its top level, and inside a top-level "message"
// (Anthropic's message_start).
struct usage_fields {
    std::string model;
    std::uint64_t total = 0, prompt = 0, completion = 0, input = 0, output = 0;
    bool has_usage = false;
};

struct document_usage {
    usage_fields top;
    usage_fields message;
    bool has_message = false;  // a top-level "message" object
};

// Reads usage with Boost.JSON's event parser: no document tree is built, nothing is allocated
// (beyond a long model name), and everything outside the few fields of interest is skipped.
// This runs on every completed response, so it is on the proxy's hot path.
class usage_handler {
  public:
    static constexpr std::size_t max_object_size = std::size_t(-1);
    static constexpr std::size_t max_array_size = std::size_t(-1);
    static constexpr std::size_t max_key_size = std::size_t(-1);
    static constexpr std::size_t max_string_size = std::size_t(-1);

    document_usage found;

    bool on_document_begin(error_code&) { return true; }
    bool on_document_end(error_code&) { return true; }
    bool on_array_begin(error_code&) { return open(scope::other); }
    bool on_array_end(std::size_t, error_code&) { return close(); }
    bool on_object_begin(error_code&) { return open(depth_ == 0 ? scope::top : next_object_); }
    bool on_object_end(std::size_t, error_code&) { return close(); }
    bool on_string_part(json::string_view s, std::size_t, error_code&) {
        if (model_ != nullptr) {
            model_->append(s.data(), s.size());
        }
        return true;
    }
    bool on_string(json::string_view s, std::size_t, error_code& ec) {
        on_string_part(s, 0, ec);
        return value_done();
    }
    bool on_key_part(json::string_view s, std::size_t, error_code&) {
        if (key_size_ + s.size() <= key_.size()) {
            std::copy(s.begin(), s.end(), key_.begin() + static_cast<std::ptrdiff_t>(key_size_));
        }
        key_size_ += s.size();
        return true;
    }
    bool on_key(json::string_view s, std::size_t, error_code& ec) {
        if (key_size_ == 0) {  // the usual case: the whole key in one piece, no copy
            on_member(s);
            return true;
        }
        on_key_part(s, 0, ec);
        const std::string_view key =
            key_size_ <= key_.size() ? std::string_view(key_.data(), key_size_) : "";
        key_size_ = 0;
        on_member(key);
        return true;
    }
    bool on_number_part(json::string_view, error_code&) { return true; }
    bool on_int64(std::int64_t v, json::string_view, error_code&) {
        return count(v > 0 ? static_cast<std::uint64_t>(v) : 0);
    }
    bool on_uint64(std::uint64_t v, json::string_view, error_code&) { return count(v); }
    bool on_double(double, json::string_view, error_code&) { return value_done(); }
    bool on_bool(bool, error_code&) { return value_done(); }
    bool on_null(error_code&) { return value_done(); }
    bool on_comment_part(json::string_view, error_code&) { return true; }
    bool on_comment(json::string_view, error_code&) { return true; }

  private:
    enum class scope : std::uint8_t { other, top, usage, message, message_usage };

    bool open(scope s) {
        if (depth_ < scopes_.size()) {
            scopes_[depth_] = s;
        }
        ++depth_;
        if (s == scope::usage || s == scope::message_usage) {
            (s == scope::usage ? found.top : found.message).has_usage = true;
        }
        found.has_message = found.has_message || s == scope::message;
        return value_done();
    }
    bool close() {
        --depth_;
        return true;
    }
    scope current() const {
        return depth_ == 0 || depth_ > scopes_.size() ? scope::other : scopes_[depth_ - 1];
    }
    void on_member(std::string_view key) {
        switch (current()) {
            case scope::top:
            case scope::message: {
                // A repeated key replaces what the earlier one said, as in a parsed document.
                auto& fields = current() == scope::top ? found.top : found.message;
                if (key == "usage") {
                    auto model = std::move(fields.model);
                    fields = usage_fields{};
                    fields.model = std::move(model);
                    next_object_ = current() == scope::top ? scope::usage : scope::message_usage;
                } else if (key == "message" && current() == scope::top) {
                    found.message = usage_fields{};
                    found.has_message = false;
                    next_object_ = scope::message;
                } else if (key == "model") {
                    fields.model.clear();
                    model_ = &fields.model;
                }
                break;
            }
            case scope::usage:
            case scope::message_usage: {
                auto& fields = current() == scope::usage ? found.top : found.message;
                number_ = key == "total_tokens"        ? &fields.total
                          : key == "prompt_tokens"     ? &fields.prompt
                          : key == "completion_tokens" ? &fields.completion
                          : key == "input_tokens"      ? &fields.input
                          : key == "output_tokens"     ? &fields.output
                                                       : nullptr;
                if (number_ != nullptr) {
                    *number_ = 0;  // a later non-number counts as nothing
                }
                break;
            }
            case scope::other:
                break;
        }
    }
    bool count(std::uint64_t v) {
        if (number_ != nullptr) {
            *number_ = v;
        }
        return value_done();
    }
    // A member's value is over (or a container opened): what the key pointed at no longer applies.
    bool value_done() {
        next_object_ = scope::other;
        model_ = nullptr;
        number_ = nullptr;
        return true;
    }

    std::array<scope, 4> scopes_{};
    std::size_t depth_ = 0;
    std::array<char, 24> key_{};
    std::size_t key_size_ = 0;
    scope next_object_ = scope::other;
    std::string* model_ = nullptr;
    std::uint64_t* number_ = nullptr;
};

std::optional<document_usage> read_document(std::string_view text) {
    // Only a few numbers and the model are wanted: the text need not be checked for UTF-8.
    json::parse_options options;
    options.allow_invalid_utf8 = true;
    json::basic_parser<usage_handler> parser(options);
    error_code ec;
    const auto used = parser.write_some(false, text.data(), text.size(), ec);
    if (ec || used != text.size()) {
        return std::nullopt;  // not JSON, or something after the document
    }
    return std::move(parser.handler().found);
}

struct partial {
    std::string model;
    std::uint64_t total = 0, prompt = 0, completion = 0, input = 0, output = 0;
    bool found = false;
};

void take(usage_fields& fields, partial& p) {
    if (p.model.empty()) {
        p.model = std::move(fields.model);
    }
    if (!fields.has_usage || p.found) {
        return;
    }
    p.total = fields.total;
    p.prompt = fields.prompt;
    p.completion = fields.completion;
    p.input = fields.input;
    p.output = fields.output;
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
        if (auto doc = read_document(text)) {
            take(doc->top, p);
        }
        return finish(p);
    }
    const auto payloads = data_payloads(text);
    for (auto it = payloads.rbegin(); it != payloads.rend() && !p.found; ++it) {
        if (auto doc = read_document(*it)) {
            take(doc->top, p);
        }
    }
    if (p.found && p.total == 0 && p.prompt == 0 && p.input == 0) {
        // Anthropic: the input tokens and the model are in message_start.
        for (const auto payload : payloads) {
            auto doc = read_document(payload);
            if (!doc || !doc->has_message) {
                continue;
            }
            partial start;
            take(doc->message, start);
            p.input = start.input;
            if (p.model.empty())
                p.model = start.model;
            break;
        }
    }
    return finish(p);
}

}  // namespace coalescer::ops
