#include "ops/token_usage.hpp"

#include <boost/json/basic_parser_impl.hpp>

#include <algorithm>
#include <array>
#include <cstdint>

namespace coalescer::ops {
namespace json = boost::json;
using boost::system::error_code;

namespace {

// The numbers of a usage object that matter, as the providers name them.
enum field : std::uint8_t {
    prompt,                // chat completions: all input, cached included
    completion,            // chat completions: all output, reasoning included
    input,                 // Responses: all input; Messages: uncached input only
    output,                // all output, reasoning included
    prompt_cached,         // prompt_tokens_details.cached_tokens (inside prompt)
    input_cached,          // input_tokens_details.cached_tokens (inside input)
    cache_hit,             // DeepSeek's prompt_cache_hit_tokens (inside prompt)
    completion_reasoning,  // completion_tokens_details.reasoning_tokens (inside completion)
    output_reasoning,      // output_tokens_details.reasoning_tokens (inside output)
    reasoning,             // Perplexity's usage.reasoning_tokens
    cache_read,            // Messages: cache_read_input_tokens (outside input)
    cache_creation,        // Messages: cache_creation_input_tokens (outside input)
    field_count
};

// Perplexity's parts of usage.cost, summed when total_cost is missing.
constexpr std::array<std::string_view, 6> cost_part_names{
    "input_tokens_cost",    "output_tokens_cost",    "request_cost",
    "citation_tokens_cost", "reasoning_tokens_cost", "search_queries_cost"};

// What one usage object and its owner say. An absent field, null or a value that is not a
// non-negative integer is nullopt: a message_delta's `"input_tokens": null` keeps what
// message_start said.
struct usage_fields {
    std::string model;
    std::array<std::optional<std::uint64_t>, field_count> n{};
    std::optional<double> cost_total;
    std::array<std::optional<double>, cost_part_names.size()> cost_parts{};
    bool has_usage = false;
    bool reports() const {
        return cost_total ||
               std::any_of(cost_parts.begin(), cost_parts.end(),
                           [](const auto& v) { return v.has_value(); }) ||
               std::any_of(n.begin(), n.end(), [](const auto& v) { return v && *v != 0; });
    }
    // total_cost, else the sum of the parts reported (in a fixed order: the same sum always).
    std::optional<double> cost() const {
        if (cost_total)
            return cost_total;
        std::optional<double> sum;
        for (const auto& part : cost_parts) {
            if (part)
                sum = sum.value_or(0) + *part;
        }
        return sum;
    }
};

// A document's own usage (top) and its model, and those of a top-level "message" (Messages'
// message_start: a partial figure) or "response" (Responses' events: the final one).
struct document_usage {
    usage_fields top;
    usage_fields nested;
    bool nested_is_final = false;
};

enum class scope : std::uint8_t { other, top, holder, usage, input_details, output_details, cost };

struct frame {
    scope kind = scope::other;
    bool nested = false;         // inside "message"/"response" rather than at the top
    field figure = field_count;  // in a details object: the field its figure goes to
};

field token_field(std::string_view key) {
    return key == "prompt_tokens"                 ? prompt
           : key == "completion_tokens"           ? completion
           : key == "input_tokens"                ? input
           : key == "output_tokens"               ? output
           : key == "reasoning_tokens"            ? reasoning
           : key == "cache_read_input_tokens"     ? cache_read
           : key == "cache_creation_input_tokens" ? cache_creation
           : key == "prompt_cache_hit_tokens"     ? cache_hit
                                                  : field_count;
}

std::size_t cost_part(std::string_view key) {
    return static_cast<std::size_t>(std::find(cost_part_names.begin(), cost_part_names.end(), key) -
                                    cost_part_names.begin());
}

// A usage member that is an object of its own, and the figure in it that matters.
struct inner_object {
    scope kind = scope::other;
    field figure = field_count;
};

inner_object inner_of(std::string_view key) {
    if (key == "prompt_tokens_details")
        return {scope::input_details, prompt_cached};
    if (key == "input_tokens_details")
        return {scope::input_details, input_cached};
    if (key == "completion_tokens_details")
        return {scope::output_details, completion_reasoning};
    if (key == "output_tokens_details")
        return {scope::output_details, output_reasoning};
    return {key == "cost" ? scope::cost : scope::other, field_count};
}

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
    bool on_array_begin(error_code&) { return open(frame{}); }
    bool on_array_end(std::size_t, error_code&) { return close(); }
    bool on_object_begin(error_code&) { return open(depth_ == 0 ? frame{scope::top} : next_); }
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
        if (v >= 0)
            count(static_cast<std::uint64_t>(v));
        return price(static_cast<double>(v));
    }
    bool on_uint64(std::uint64_t v, json::string_view, error_code&) {
        count(v);
        return price(static_cast<double>(v));
    }
    bool on_double(double v, json::string_view, error_code&) { return price(v); }
    bool on_bool(bool, error_code&) { return value_done(); }
    bool on_null(error_code&) { return value_done(); }
    bool on_comment_part(json::string_view, error_code&) { return true; }
    bool on_comment(json::string_view, error_code&) { return true; }

  private:
    bool open(frame f) {
        if (depth_ < frames_.size()) {
            frames_[depth_] = f;
        }
        ++depth_;
        if (f.kind == scope::usage) {
            fields(f).has_usage = true;
        }
        return value_done();
    }
    bool close() {
        --depth_;
        return true;
    }
    frame current() const {
        return depth_ == 0 || depth_ > frames_.size() ? frame{} : frames_[depth_ - 1];
    }
    usage_fields& fields(frame f) { return f.nested ? found.nested : found.top; }
    void on_member(std::string_view key) {
        const auto at = current();
        auto& f = fields(at);
        switch (at.kind) {
            case scope::top:
            case scope::holder:
                // A repeated key replaces what the earlier one said, as in a parsed document.
                if (key == "usage") {
                    auto model = std::move(f.model);
                    f = usage_fields{};
                    f.model = std::move(model);
                    next_ = {scope::usage, at.nested};
                } else if (at.kind == scope::top && (key == "message" || key == "response")) {
                    found.nested = usage_fields{};
                    found.nested_is_final = key == "response";
                    next_ = {scope::holder, true};
                } else if (key == "model") {
                    f.model.clear();
                    model_ = &f.model;
                }
                break;
            case scope::usage:
                if (const auto which = token_field(key); which != field_count) {
                    number(f, which);
                } else if (const auto inner = inner_of(key); inner.kind != scope::other) {
                    // A repeated object replaces the earlier one: its figure starts afresh.
                    next_ = {inner.kind, at.nested, inner.figure};
                    if (inner.figure != field_count) {
                        f.n[inner.figure].reset();
                    } else {
                        f.cost_total.reset();
                        f.cost_parts = {};
                    }
                }
                break;
            case scope::input_details:
            case scope::output_details:
                if (key == (at.kind == scope::input_details ? "cached_tokens" : "reasoning_tokens"))
                    number(f, at.figure);
                break;
            case scope::cost:
                if (key == "total_cost") {
                    f.cost_total.reset();
                    cost_ = &f.cost_total;
                } else if (const auto part = cost_part(key); part < cost_part_names.size()) {
                    f.cost_parts[part].reset();
                    cost_ = &f.cost_parts[part];
                }
                break;
            case scope::other:
                break;
        }
    }
    void number(usage_fields& f, field which) {
        f.n[which].reset();  // a later non-number counts as nothing
        number_ = &f.n[which];
    }
    void count(std::uint64_t v) {
        if (number_ != nullptr) {
            *number_ = v;
        }
    }
    bool price(double v) {
        if (cost_ != nullptr) {
            *cost_ = v;
        }
        return value_done();
    }
    // A member's value is over (or a container opened): what the key pointed at no longer applies.
    bool value_done() {
        next_ = frame{};
        model_ = nullptr;
        number_ = nullptr;
        cost_ = nullptr;
        return true;
    }

    std::array<frame, 6> frames_{};
    std::size_t depth_ = 0;
    std::array<char, 32> key_{};
    std::size_t key_size_ = 0;
    frame next_{};
    std::string* model_ = nullptr;
    std::optional<std::uint64_t>* number_ = nullptr;
    std::optional<double>* cost_ = nullptr;
};

// A document given in pieces is read as it lies: the parser takes one piece after another.
std::optional<document_usage> read_document(std::span<const std::string_view> pieces) {
    // Only a few numbers and the model are wanted: the text need not be checked for UTF-8.
    json::parse_options options;
    options.allow_invalid_utf8 = true;
    json::basic_parser<usage_handler> parser(options);
    error_code ec;
    for (const auto piece : pieces) {
        const auto used = parser.write_some(true, piece.data(), piece.size(), ec);
        if (ec || used != piece.size()) {
            return std::nullopt;  // not JSON, or something after the document
        }
    }
    parser.write_some(false, nullptr, 0, ec);
    if (ec) {
        return std::nullopt;
    }
    return std::move(parser.handler().found);
}

std::optional<document_usage> read_document(std::string_view text) {
    return read_document(std::span(&text, 1));
}

// The bytes [begin, end) of a body that arrived in pieces: a view into the piece that holds
// them all, else a copy of just those bytes.
class pieces_text {
  public:
    explicit pieces_text(std::span<const std::string_view> pieces) : pieces_(pieces) {
        for (const auto piece : pieces)
            size_ += piece.size();
    }
    std::size_t size() const { return size_; }
    std::string_view range(std::size_t begin, std::size_t end) {
        copy_.clear();
        std::size_t at = 0;
        for (const auto piece : pieces_) {
            const auto piece_end = at + piece.size();
            if (begin >= at && end <= piece_end)
                return piece.substr(begin - at, end - begin);
            if (piece_end > begin && at < end) {
                const auto from = std::max(begin, at) - at;
                copy_.append(piece.substr(from, std::min(end, piece_end) - at - from));
            }
            at = piece_end;
        }
        return copy_;
    }

  private:
    std::span<const std::string_view> pieces_;
    std::size_t size_ = 0;
    std::string copy_;
};

// Usage sits at the end of a stream (message_start at its start): windows of this size, then
// four times larger each time, up to the whole stream, until the answer is found.
constexpr std::size_t first_window = 64 * 1024;

// The final usage a document reports, with the model beside it: its own, or a Responses
// event's. Messages' message_start alone is not final (message_delta follows with the output).
std::optional<usage_fields> final_usage(document_usage& doc) {
    if (doc.top.has_usage && doc.top.reports())
        return std::move(doc.top);
    if (doc.nested_is_final && doc.nested.has_usage && doc.nested.reports()) {
        if (doc.nested.model.empty())
            doc.nested.model = std::move(doc.top.model);
        return std::move(doc.nested);
    }
    return std::nullopt;
}

std::uint64_t value(const usage_fields& f, field which) {
    return f.n[which].value_or(0);
}

// One set of provider fields in the disjoint kinds: OpenAI counts cached input inside its
// input figure, Anthropic counts cache reads and writes beside it.
token_usage normalise(const usage_fields& f) {
    token_usage u;
    u.model = f.model;
    const auto all_input = f.n[prompt] ? *f.n[prompt] : value(f, input);
    const auto cached = f.n[prompt_cached] ? *f.n[prompt_cached] : value(f, input_cached);
    const auto cached_inside = std::min(all_input, cached + value(f, cache_hit));
    u.input = all_input - cached_inside;
    u.cached_input = cached_inside + value(f, cache_read);
    u.cache_write_input = value(f, cache_creation);
    u.output = f.n[completion] ? *f.n[completion] : value(f, output);
    u.reasoning = f.n[completion_reasoning] ? *f.n[completion_reasoning]
                  : f.n[output_reasoning]   ? *f.n[output_reasoning]
                                            : value(f, reasoning);
    u.provider_cost_usd = f.cost();
    return u;
}

// Whether an SSE line is a `data:` line with a payload other than [DONE]; `payload` views it.
bool data_payload(std::string_view line, std::string_view& payload) {
    if (!line.empty() && line.back() == '\r')
        line.remove_suffix(1);
    if (!line.starts_with("data:"))
        return false;
    line.remove_prefix(5);
    if (!line.empty() && line.front() == ' ')
        line.remove_prefix(1);
    payload = line;
    return !line.starts_with("[DONE]");
}

// The last event with a final usage in `stream`, read from its end backwards.
std::optional<usage_fields> last_usage_in(std::string_view stream) {
    std::size_t end = stream.size();
    while (end > 0) {
        const auto newline = stream.rfind('\n', end - 1);
        const auto start = newline == std::string_view::npos ? 0 : newline + 1;
        std::string_view payload;
        if (data_payload(stream.substr(start, end - start), payload)) {
            if (auto doc = read_document(payload)) {
                if (auto fields = final_usage(*doc))
                    return fields;
            }
        }
        if (newline == std::string_view::npos)
            break;
        end = newline;
    }
    return std::nullopt;
}

// The same over a growing tail of the stream, from a line's start: the start of a long stream
// is neither copied nor read when its end holds the usage.
std::optional<usage_fields> last_usage(pieces_text& stream) {
    for (std::size_t window = first_window;; window *= 4) {
        const bool whole = window >= stream.size();
        auto tail = stream.range(whole ? 0 : stream.size() - window, stream.size());
        if (!whole) {
            const auto newline = tail.find('\n');
            tail.remove_prefix(newline == std::string_view::npos ? tail.size() : newline + 1);
        }
        if (auto found = last_usage_in(tail))
            return found;
        if (whole)
            return std::nullopt;
    }
}

// Messages' message_start, the stream's first event (a few pings may precede it at most).
// `ran_out`: `stream` ended before that many events were seen.
std::optional<usage_fields> message_start_in(std::string_view stream, bool& ran_out) {
    constexpr int max_events = 8;
    int seen = 0;
    std::size_t pos = 0;
    while (pos < stream.size() && seen < max_events) {
        auto end = stream.find('\n', pos);
        if (end == std::string_view::npos)
            end = stream.size();
        std::string_view payload;
        if (data_payload(stream.substr(pos, end - pos), payload)) {
            ++seen;
            auto doc = read_document(payload);
            if (doc && !doc->nested_is_final && doc->nested.has_usage)
                return std::move(doc->nested);
        }
        pos = end + 1;
    }
    ran_out = seen < max_events;
    return std::nullopt;
}

std::optional<usage_fields> message_start(pieces_text& stream) {
    for (std::size_t window = first_window;; window *= 4) {
        const bool whole = window >= stream.size();
        auto head = stream.range(0, whole ? stream.size() : window);
        if (!whole)
            head = head.substr(0, head.rfind('\n') + 1);  // whole lines only (npos + 1 is 0)
        bool ran_out = false;
        if (auto found = message_start_in(head, ran_out))
            return found;
        if (whole || !ran_out)
            return std::nullopt;
    }
}

// message_delta's cumulative usage over message_start's: a field the delta leaves out (or
// sends as null) is message_start's.
void fill_from_start(usage_fields& last, pieces_text& stream) {
    if (!last.model.empty() && (last.n[prompt] || last.n[input]))
        return;  // a chat completions chunk or a complete Messages delta: nothing to add
    auto start = message_start(stream);
    if (!start)
        return;
    for (std::size_t i = 0; i < field_count; ++i) {
        if (!last.n[i])
            last.n[i] = start->n[i];
    }
    if (last.model.empty())
        last.model = std::move(start->model);
}

std::string request_model(std::string_view request_body) {
    if (request_body.empty())
        return {};
    auto doc = read_document(request_body);
    return doc ? std::move(doc->top.model) : std::string();
}

}  // namespace

std::optional<token_usage> extract_usage(std::string_view content_type,
                                         std::span<const std::string_view> body,
                                         std::string_view request_body) {
    std::optional<usage_fields> found;
    if (content_type.find("event-stream") == std::string_view::npos) {
        if (auto doc = read_document(body))
            found = final_usage(*doc);
    } else {
        pieces_text text(body);
        if ((found = last_usage(text)))
            fill_from_start(*found, text);
    }
    if (!found)
        return std::nullopt;
    auto usage = normalise(*found);
    if (usage.model.empty())
        usage.model = request_model(request_body);
    if (usage.model.empty())
        usage.model = "unknown";
    return usage;
}

}  // namespace coalescer::ops
