// Canonical JSON: a strict RFC 8259 parser builds a flat arena of items (scalars refer to their
// canonical bytes in the input or in a side arena; containers refer to a contiguous range of their
// children), objects are sorted when they close, and one pass writes the canonical text into a
// reused buffer.
//
// Why not boost::json::basic_parser: Boost 1.81 unescapes the rest of a string byte by byte once
// it has seen one escape, and LLM request contents are long strings full of "\n": measured, that
// loop alone cost more than half of the key budget. Here strings are scanned 16 bytes at a time,
// a string without escapes is never copied before the final write, and a string with escapes is
// copied run by run straight into its canonical spelling. The unit tests check this parser's
// verdicts against Boost.JSON's on mutated inputs.
#include "coalesce/canonical_json.hpp"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <stdexcept>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace coalescer::coalesce {

// ---------------------------------------------------------------------------------------------
// ignore_list

ignore_list::ignore_list() : nodes_(1) {}

bool ignore_list::is_valid_pointer(std::string_view pointer) noexcept {
    if (pointer.empty() || pointer.front() != '/')
        return false;
    for (std::size_t i = 0; i < pointer.size(); ++i) {
        if (pointer[i] != '~')
            continue;
        if (i + 1 >= pointer.size() || (pointer[i + 1] != '0' && pointer[i + 1] != '1'))
            return false;
        ++i;
    }
    return true;
}

namespace {

std::string unescape_token(std::string_view token) {
    std::string out;
    out.reserve(token.size());
    for (std::size_t i = 0; i < token.size(); ++i) {
        if (token[i] == '~') {
            out.push_back(token[i + 1] == '0' ? '~' : '/');  // validated: "~0" or "~1"
            ++i;
        } else {
            out.push_back(token[i]);
        }
    }
    return out;
}

}  // namespace

ignore_list::ignore_list(const std::vector<std::string>& pointers)
    : nodes_(1), pointers_(pointers) {
    for (const std::string& pointer : pointers) {
        if (!is_valid_pointer(pointer))
            throw std::invalid_argument("ignore_fields: \"" + pointer +
                                        "\" is not a JSON pointer (RFC 6901, e.g. \"/user\")");
        std::uint32_t current = 0;
        std::size_t pos = 1;
        for (;;) {
            std::size_t slash = pointer.find('/', pos);
            if (slash == std::string::npos)
                slash = pointer.size();
            std::string token = unescape_token(std::string_view(pointer).substr(pos, slash - pos));
            std::uint32_t next = 0;
            for (const auto& [name, index] : nodes_[current].children)
                if (name == token)
                    next = index;
            if (next == 0) {
                next = static_cast<std::uint32_t>(nodes_.size());
                nodes_.emplace_back();  // invalidates references into nodes_: index again below
                nodes_[current].children.emplace_back(std::move(token), next);
            }
            current = next;
            if (slash == pointer.size())
                break;
            pos = slash + 1;
        }
        nodes_[current].remove = true;
    }
}

const ignore_list::node* ignore_list::child(const node& parent,
                                            std::string_view token) const noexcept {
    for (const auto& [name, index] : parent.children)
        if (name == token)
            return &nodes_[index];
    return nullptr;
}

// ---------------------------------------------------------------------------------------------
// Numbers

namespace {

bool is_digit(char c) noexcept {
    return c >= '0' && c <= '9';
}

void append_int(std::string& out, std::int64_t v) {
    char buf[24];
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
    out.append(buf, end);
}

// Appends the canonical spelling of the JSON number `text` (see the header). `digits` is scratch.
// False when `text` is not a JSON number or its exponent is beyond any sane range (|e| > 10^15).
bool append_canonical_number(std::string_view text, std::string& out, std::string& digits) {
    std::size_t i = 0;
    const std::size_t size = text.size();
    bool negative = false;
    if (i < size && text[i] == '-') {
        negative = true;
        ++i;
    }
    const std::size_t int_begin = i;
    while (i < size && is_digit(text[i]))
        ++i;
    const std::size_t int_end = i;
    if (int_end == int_begin)
        return false;
    std::size_t frac_begin = i, frac_end = i;
    if (i < size && text[i] == '.') {
        frac_begin = ++i;
        while (i < size && is_digit(text[i]))
            ++i;
        frac_end = i;
        if (frac_end == frac_begin)
            return false;
    }
    std::int64_t exponent = 0;
    if (i < size && (text[i] == 'e' || text[i] == 'E')) {
        ++i;
        bool exponent_negative = false;
        if (i < size && (text[i] == '+' || text[i] == '-'))
            exponent_negative = text[i++] == '-';
        const std::size_t exp_begin = i;
        while (i < size && is_digit(text[i])) {
            exponent = exponent * 10 + (text[i] - '0');
            if (exponent > 1'000'000'000'000'000)
                return false;
            ++i;
        }
        if (i == exp_begin)
            return false;
        if (exponent_negative)
            exponent = -exponent;
    }
    if (i != size)
        return false;

    digits.assign(text.data() + int_begin, int_end - int_begin);
    digits.append(text.data() + frac_begin, frac_end - frac_begin);
    const std::size_t first = digits.find_first_not_of('0');
    if (first == std::string::npos) {
        out.push_back('0');  // every zero, -0 included
        return true;
    }
    const std::size_t last = digits.find_last_not_of('0');
    const auto trailing_zeros = static_cast<std::int64_t>(digits.size() - 1 - last);
    const std::string_view d(digits.data() + first, last + 1 - first);
    const auto n = static_cast<std::int64_t>(d.size());
    // value = d × 10^q
    const std::int64_t q =
        exponent - static_cast<std::int64_t>(frac_end - frac_begin) + trailing_zeros;

    if (negative)
        out.push_back('-');
    if (q >= 0 && q <= 20) {
        out.append(d);
        out.append(static_cast<std::size_t>(q), '0');
    } else if (q < 0 && n > -q) {
        out.append(d.substr(0, static_cast<std::size_t>(n + q)));
        out.push_back('.');
        out.append(d.substr(static_cast<std::size_t>(n + q)));
    } else if (q < 0 && -q - n < 6) {
        out.append("0.");
        out.append(static_cast<std::size_t>(-q - n), '0');
        out.append(d);
    } else {
        out.push_back(d[0]);
        if (n > 1) {
            out.push_back('.');
            out.append(d.substr(1));
        }
        const std::int64_t x = q + n - 1;
        out.push_back('e');
        out.push_back(x < 0 ? '-' : '+');
        append_int(out, x < 0 ? -x : x);
    }
    return true;
}

// Bytes that must be escaped in a canonical string: '"', '\\', U+0000..U+001F.
constexpr bool needs_escape(unsigned char c) noexcept {
    return c < 0x20 || c == '"' || c == '\\';
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// The parser and the writer

namespace detail {

namespace {

bool is_space(char c) noexcept {
    return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

int hex_value(char c) noexcept {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

// Four hex digits at p (p + 4 <= end checked by the caller); -1 when not hex.
long hex4(const char* p) noexcept {
    const int a = hex_value(p[0]), b = hex_value(p[1]), c = hex_value(p[2]), d = hex_value(p[3]);
    if ((a | b | c | d) < 0)
        return -1;
    return (a << 12) | (b << 8) | (c << 4) | d;
}

// Length of the well-formed UTF-8 sequence (RFC 3629 table) starting at p, whose first byte is
// >= 0x80; 0 when ill-formed (overlong, surrogate, beyond U+10FFFF, truncated).
std::size_t utf8_sequence(const unsigned char* p, const unsigned char* end) noexcept {
    const unsigned c = p[0];
    const auto avail = static_cast<std::size_t>(end - p);
    auto cont = [](unsigned b) { return (b & 0xc0) == 0x80; };
    if (c < 0xc2)
        return 0;
    if (c < 0xe0)
        return avail >= 2 && cont(p[1]) ? 2 : 0;
    if (c < 0xf0) {
        if (avail < 3)
            return 0;
        const unsigned lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
        return p[1] >= lo && p[1] <= hi && cont(p[2]) ? 3 : 0;
    }
    if (c < 0xf5) {
        if (avail < 4)
            return 0;
        const unsigned lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
        return p[1] >= lo && p[1] <= hi && cont(p[2]) && cont(p[3]) ? 4 : 0;
    }
    return 0;
}

void append_utf8(std::string& out, std::uint32_t cp) {
    char b[4];
    if (cp < 0x80) {
        out.push_back(static_cast<char>(cp));
        return;
    }
    if (cp < 0x800) {
        b[0] = static_cast<char>(0xc0 | (cp >> 6));
        b[1] = static_cast<char>(0x80 | (cp & 0x3f));
        out.append(b, 2);
    } else if (cp < 0x10000) {
        b[0] = static_cast<char>(0xe0 | (cp >> 12));
        b[1] = static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
        b[2] = static_cast<char>(0x80 | (cp & 0x3f));
        out.append(b, 3);
    } else {
        b[0] = static_cast<char>(0xf0 | (cp >> 18));
        b[1] = static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
        b[2] = static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
        b[3] = static_cast<char>(0x80 | (cp & 0x3f));
        out.append(b, 4);
    }
}

constexpr char hex_digits[] = "0123456789abcdef";

// The canonical spelling of a code point inside a string.
void append_canonical(std::string& out, std::uint32_t cp) {
    switch (cp) {
        case '"':
            out.append("\\\"", 2);
            return;
        case '\\':
            out.append("\\\\", 2);
            return;
        case '\b':
            out.append("\\b", 2);
            return;
        case '\f':
            out.append("\\f", 2);
            return;
        case '\n':
            out.append("\\n", 2);
            return;
        case '\r':
            out.append("\\r", 2);
            return;
        case '\t':
            out.append("\\t", 2);
            return;
        default:
            if (cp < 0x20) {
                const char u[6] = {'\\', 'u', '0', '0', hex_digits[cp >> 4], hex_digits[cp & 0xf]};
                out.append(u, 6);
            } else {
                append_utf8(out, cp);
            }
    }
}

// The first byte in [p, end) that ends a plain run inside a string: '"', '\\', a control
// character or a non-ASCII byte (which must be validated); end when there is none.
const char* find_string_special(const char* p, const char* end) noexcept {
#if defined(__SSE2__)
    const __m128i quote = _mm_set1_epi8('"');
    const __m128i backslash = _mm_set1_epi8('\\');
    const __m128i control = _mm_set1_epi8(0x1f);
    while (end - p >= 16) {
        const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
        const __m128i special =
            _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),
                         _mm_cmpeq_epi8(_mm_min_epu8(v, control), v));
        // movemask(v) adds the bytes >= 0x80
        const unsigned mask =
            static_cast<unsigned>(_mm_movemask_epi8(special) | _mm_movemask_epi8(v));
        if (mask != 0)
            return p + __builtin_ctz(mask);
        p += 16;
    }
#endif
    for (; p != end; ++p) {
        const auto c = static_cast<unsigned char>(*p);
        if (c == '"' || c == '\\' || c < 0x20 || c >= 0x80)
            return p;
    }
    return end;
}

}  // namespace

class canonical_parser {
  public:
    bool run(std::string_view text, const ignore_list& ignore) {
        start(text, ignore);
        if (!parse())
            return false;
        write();
        return true;
    }

    std::string_view result() const noexcept { return {out_.get(), len_}; }

  private:
    enum class item_kind : std::uint8_t { string, number, true_, false_, null, object, array };

    // Bytes in the input (stable for the whole call) or in arena_ (an offset: arena_ grows).
    struct ref {
        std::size_t off = 0;
        std::size_t len = 0;
        bool arena = false;
    };
    struct item {
        ref key;    // object members: the unescaped name
        ref value;  // strings, numbers: canonical bytes (strings without quotes);
                    // containers: off = first child in items_, len = count
        item_kind kind = item_kind::null;
        bool dropped = false;  // named by the ignore list: validated, not written
    };
    struct frame {
        std::size_t base = 0;                     // its first child in stack_
        const ignore_list::node* trie = nullptr;  // nullptr: nothing below is removed
        ref key;                                  // its own name, when a member
        ref pending_key;                          // objects: the name of the next member
        bool is_object = false;
        bool dropped = false;
    };
    struct placement {
        const ignore_list::node* trie = nullptr;
        ref key;
        bool dropped = false;
    };

    void start(std::string_view text, const ignore_list& ignore) {
        trim();
        input_begin_ = text.data();
        input_end_ = text.data() + text.size();
        ignore_ = &ignore;
        arena_.clear();
        stack_.clear();
        items_.clear();
        frames_.clear();
        len_ = 0;
    }

    // --- parsing

    bool parse() {
        const char* p = input_begin_;
        const char* const end = input_end_;
        auto skip_space = [&] {
            while (p != end && is_space(*p))
                ++p;
        };
        enum class expect { value, member, after_value };
        expect next = expect::value;
        for (;;) {
            switch (next) {
                case expect::value: {
                    skip_space();
                    if (p == end)
                        return false;
                    const char c = *p;
                    if (c == '"') {
                        ++p;
                        ref r;
                        if (!scan_string<false>(p, r))
                            return false;
                        push_scalar(item_kind::string, r);
                        next = expect::after_value;
                    } else if (c == '{' || c == '[') {
                        if (frames_.size() == max_json_depth)
                            return false;
                        open(c == '{');
                        ++p;
                        skip_space();
                        if (p != end && *p == (c == '{' ? '}' : ']')) {
                            ++p;
                            close(c == '{' ? item_kind::object : item_kind::array);
                            next = expect::after_value;
                        } else {
                            next = c == '{' ? expect::member : expect::value;
                        }
                    } else if (c == '-' || is_digit(c)) {
                        ref r;
                        if (!scan_number(p, r))
                            return false;
                        push_scalar(item_kind::number, r);
                        next = expect::after_value;
                    } else if (c == 't' && end - p >= 4 && std::memcmp(p, "true", 4) == 0) {
                        p += 4;
                        push_scalar(item_kind::true_, ref{});
                        next = expect::after_value;
                    } else if (c == 'f' && end - p >= 5 && std::memcmp(p, "false", 5) == 0) {
                        p += 5;
                        push_scalar(item_kind::false_, ref{});
                        next = expect::after_value;
                    } else if (c == 'n' && end - p >= 4 && std::memcmp(p, "null", 4) == 0) {
                        p += 4;
                        push_scalar(item_kind::null, ref{});
                        next = expect::after_value;
                    } else {
                        return false;
                    }
                    break;
                }
                case expect::member: {  // whitespace already skipped
                    if (p == end || *p != '"')
                        return false;
                    ++p;
                    ref name;
                    if (!scan_string<true>(p, name))
                        return false;
                    frames_.back().pending_key = name;
                    skip_space();
                    if (p == end || *p != ':')
                        return false;
                    ++p;
                    next = expect::value;
                    break;
                }
                case expect::after_value: {
                    skip_space();
                    if (frames_.empty())
                        return p == end;
                    if (p == end)
                        return false;
                    const bool in_object = frames_.back().is_object;
                    if (*p == ',') {
                        ++p;
                        skip_space();
                        next = in_object ? expect::member : expect::value;
                    } else if (*p == (in_object ? '}' : ']')) {
                        ++p;
                        if (!close(in_object ? item_kind::object : item_kind::array))
                            return false;
                    } else {
                        return false;
                    }
                    break;
                }
            }
        }
    }

    // p: just after the opening quote; on success just after the closing one. Names (IsKey) are
    // stored unescaped, for sorting; values are stored in their canonical spelling, which is the
    // input itself unless it uses \/ or \u escapes.
    template <bool IsKey>
    bool scan_string(const char*& p, ref& out) {
        const char* const end = input_end_;
        const char* run = p;  // the first byte not yet copied to the arena
        bool escaped = false;
        std::size_t arena_start = 0;
        for (;;) {
            p = find_string_special(p, end);
            if (p == end)
                return false;
            const auto c = static_cast<unsigned char>(*p);
            if (c == '"') {
                if (!escaped) {
                    out = {static_cast<std::size_t>(run - input_begin_),
                           static_cast<std::size_t>(p - run), false};
                } else {
                    arena_.append(run, static_cast<std::size_t>(p - run));
                    out = {arena_start, arena_.size() - arena_start, true};
                }
                ++p;
                return true;
            }
            if (c >= 0x80) {
                do {  // non-Latin text: whole runs of sequences without going back to the scan
                    const std::size_t n =
                        utf8_sequence(reinterpret_cast<const unsigned char*>(p),
                                      reinterpret_cast<const unsigned char*>(end));
                    if (n == 0)
                        return false;
                    p += n;
                } while (p != end && static_cast<unsigned char>(*p) >= 0x80);
                continue;
            }
            if (c != '\\')
                return false;  // a raw control character
            if constexpr (!IsKey) {
                // \" \\ \b \f \n \r \t are already canonical: they stay in the run, so a
                // value written by a JSON.stringify-like serialiser is never copied here.
                if (end - p >= 2) {
                    const char e = p[1];
                    if (e == '"' || e == '\\' || e == 'n' || e == 't' || e == 'r' || e == 'b' ||
                        e == 'f') {
                        p += 2;
                        continue;
                    }
                }
            }
            if (!escaped) {
                escaped = true;
                arena_start = arena_.size();
            }
            arena_.append(run, static_cast<std::size_t>(p - run));
            if (!decode_escape<IsKey>(p))
                return false;
            run = p;
        }
    }

    // p at a backslash: appends the character it escapes (raw for names, canonical for values)
    // and moves p past the escape.
    template <bool IsKey>
    bool decode_escape(const char*& p) {
        const char* const end = input_end_;
        if (end - p < 2)
            return false;
        std::uint32_t cp = 0;
        switch (p[1]) {
            case '"':
                cp = '"';
                break;
            case '\\':
                cp = '\\';
                break;
            case '/':
                cp = '/';
                break;
            case 'b':
                cp = '\b';
                break;
            case 'f':
                cp = '\f';
                break;
            case 'n':
                cp = '\n';
                break;
            case 'r':
                cp = '\r';
                break;
            case 't':
                cp = '\t';
                break;
            case 'u': {
                if (end - p < 6)
                    return false;
                const long u = hex4(p + 2);
                if (u < 0)
                    return false;
                if (u >= 0xdc00 && u <= 0xdfff)
                    return false;  // a lone trailing surrogate
                if (u >= 0xd800 && u <= 0xdbff) {
                    if (end - p < 12 || p[6] != '\\' || p[7] != 'u')
                        return false;  // lone leading
                    const long low = hex4(p + 8);
                    if (low < 0xdc00 || low > 0xdfff)
                        return false;
                    cp = 0x10000 + ((static_cast<std::uint32_t>(u) - 0xd800) << 10) +
                         (static_cast<std::uint32_t>(low) - 0xdc00);
                    p += 12;
                } else {
                    cp = static_cast<std::uint32_t>(u);
                    p += 6;
                }
                if constexpr (IsKey)
                    append_utf8(arena_, cp);
                else
                    append_canonical(arena_, cp);
                return true;
            }
            default:
                return false;
        }
        p += 2;
        if constexpr (IsKey)
            arena_.push_back(static_cast<char>(cp));
        else
            append_canonical(arena_, cp);
        return true;
    }

    // RFC 8259 number grammar; an integer's text is already canonical (no leading zeros in JSON),
    // except "-0".
    bool scan_number(const char*& p, ref& out) {
        const char* const end = input_end_;
        const char* const begin = p;
        if (*p == '-')
            ++p;
        if (p == end)
            return false;
        if (*p == '0') {
            ++p;
        } else if (*p >= '1' && *p <= '9') {
            while (p != end && is_digit(*p))
                ++p;
        } else {
            return false;
        }
        bool integer = true;
        if (p != end && *p == '.') {
            integer = false;
            ++p;
            const char* digits = p;
            while (p != end && is_digit(*p))
                ++p;
            if (p == digits)
                return false;
        }
        if (p != end && (*p == 'e' || *p == 'E')) {
            integer = false;
            ++p;
            if (p != end && (*p == '+' || *p == '-'))
                ++p;
            const char* digits = p;
            while (p != end && is_digit(*p))
                ++p;
            if (p == digits)
                return false;
        }
        const std::string_view text(begin, static_cast<std::size_t>(p - begin));
        if (integer && text != "-0") {
            out = {static_cast<std::size_t>(begin - input_begin_), text.size(), false};
            return true;
        }
        const std::size_t off = arena_.size();
        if (!append_canonical_number(text, arena_, digits_))
            return false;
        out = {off, arena_.size() - off, true};
        return true;
    }

    // --- building

    std::string_view view(const ref& r) const noexcept {
        return {(r.arena ? arena_.data() : input_begin_) + r.off, r.len};
    }

    // Where the value that starts now goes: its name, and whether the ignore list removes it.
    placement place() const {
        placement p;
        if (frames_.empty())
            return p;  // the document itself: never removed (no empty pointer)
        const frame& f = frames_.back();
        if (f.is_object)
            p.key = f.pending_key;
        const ignore_list::node* parent = f.trie;
        if (parent == nullptr)
            return p;
        const ignore_list::node* c = nullptr;
        if (f.is_object) {
            c = ignore_->child(*parent, view(f.pending_key));
        } else {
            char buf[24];
            auto [end, ec] = std::to_chars(buf, buf + sizeof buf, stack_.size() - f.base);
            c = ignore_->child(*parent, std::string_view(buf, static_cast<std::size_t>(end - buf)));
        }
        if (c == nullptr)
            return p;
        if (c->remove)
            p.dropped = true;
        else if (!c->children.empty())
            p.trie = c;
        return p;
    }

    void push_scalar(item_kind kind, ref value) {
        const placement p = place();
        stack_.push_back(item{p.key, value, kind, p.dropped});
    }

    void open(bool is_object) {
        frame f;
        f.base = stack_.size();
        f.is_object = is_object;
        if (frames_.empty()) {
            if (!ignore_->empty())
                f.trie = &ignore_->nodes_[0];
        } else {
            const placement p = place();
            f.trie = p.dropped ? nullptr : p.trie;
            f.key = p.key;
            f.dropped = p.dropped;
        }
        frames_.push_back(f);
    }

    int compare_keys(const item& a, const item& b) const noexcept {
        const std::string_view x = view(a.key), y = view(b.key);
        const std::size_t n = std::min(x.size(), y.size());
        if (n != 0) {
            if (const int c = std::memcmp(x.data(), y.data(), n); c != 0)
                return c;
        }
        return x.size() < y.size() ? -1 : (x.size() > y.size() ? 1 : 0);
    }

    // Sorts an object's members by name; false on a duplicate name.
    bool sort_members(item* begin, item* end) const {
        const std::size_t n = static_cast<std::size_t>(end - begin);
        if (n < 2)
            return true;
        bool sorted = true;
        for (std::size_t i = 1; i < n; ++i) {
            const int c = compare_keys(begin[i - 1], begin[i]);
            if (c == 0)
                return false;
            if (c > 0) {
                sorted = false;
                break;
            }
        }
        if (sorted)
            return true;
        std::sort(begin, end,
                  [this](const item& a, const item& b) { return compare_keys(a, b) < 0; });
        for (std::size_t i = 1; i < n; ++i)
            if (compare_keys(begin[i - 1], begin[i]) == 0)
                return false;
        return true;
    }

    bool close(item_kind kind) {
        const frame f = frames_.back();
        frames_.pop_back();
        item* first = stack_.data() + f.base;
        item* last = stack_.data() + stack_.size();
        if (kind == item_kind::object && !sort_members(first, last))
            return false;
        const std::size_t at = items_.size();
        items_.insert(items_.end(), first, last);
        stack_.resize(f.base);
        stack_.push_back(item{f.key, ref{at, items_.size() - at, false}, kind, f.dropped});
        return true;
    }

    // Releases buffers that a rare huge body grew, so one 16 MiB request does not pin memory.
    void trim() {
        constexpr std::size_t keep = 4 * 1024 * 1024;
        if (arena_.capacity() > keep)
            std::string().swap(arena_);
        if (digits_.capacity() > keep)
            std::string().swap(digits_);
        if (stack_.capacity() * sizeof(item) > keep)
            std::vector<item>().swap(stack_);
        if (items_.capacity() * sizeof(item) > keep)
            std::vector<item>().swap(items_);
        if (cap_ > keep) {
            out_.reset();
            cap_ = 0;
        }
    }

    // --- writing

    void write() {
        // Output never exceeds the input plus the arena (which holds the canonical numbers):
        // canonical escapes are never longer than the input escapes they replace.
        ensure(static_cast<std::size_t>(input_end_ - input_begin_) + arena_.size() + 64);
        write_value(stack_.front());
    }

    void ensure(std::size_t n) {
        if (cap_ - len_ < n)
            grow(n);
    }
    [[gnu::noinline]] void grow(std::size_t n) {
        const std::size_t cap = std::max(cap_ * 2, len_ + n + 256);
        std::unique_ptr<char[]> bigger(new char[cap]);
        if (len_ != 0)
            std::memcpy(bigger.get(), out_.get(), len_);
        out_ = std::move(bigger);
        cap_ = cap;
    }
    void put(char c) {
        ensure(1);
        out_[len_++] = c;
    }
    void put(std::string_view s) {
        ensure(s.size());
        if (!s.empty())
            std::memcpy(out_.get() + len_, s.data(), s.size());
        len_ += s.size();
    }

    // A member name: stored unescaped (for sorting), escaped here.
    void put_name(std::string_view s) {
        ensure(s.size() * 6 + 2);
        char* o = out_.get() + len_;
        *o++ = '"';
        for (const char ch : s) {
            const auto c = static_cast<unsigned char>(ch);
            if (!needs_escape(c)) {
                *o++ = ch;
                continue;
            }
            *o++ = '\\';
            switch (c) {
                case '"':
                    *o++ = '"';
                    break;
                case '\\':
                    *o++ = '\\';
                    break;
                case '\b':
                    *o++ = 'b';
                    break;
                case '\f':
                    *o++ = 'f';
                    break;
                case '\n':
                    *o++ = 'n';
                    break;
                case '\r':
                    *o++ = 'r';
                    break;
                case '\t':
                    *o++ = 't';
                    break;
                default:
                    *o++ = 'u';
                    *o++ = '0';
                    *o++ = '0';
                    *o++ = hex_digits[c >> 4];
                    *o++ = hex_digits[c & 0xf];
            }
        }
        *o++ = '"';
        len_ = static_cast<std::size_t>(o - out_.get());
    }

    void write_value(const item& it) {
        switch (it.kind) {
            case item_kind::string:
                put('"');
                put(view(it.value));
                put('"');
                return;
            case item_kind::number:
                put(view(it.value));
                return;
            case item_kind::true_:
                put("true");
                return;
            case item_kind::false_:
                put("false");
                return;
            case item_kind::null:
                put("null");
                return;
            case item_kind::object:
            case item_kind::array: {
                const bool object = it.kind == item_kind::object;
                put(object ? '{' : '[');
                bool first = true;
                for (std::size_t i = it.value.off, e = it.value.off + it.value.len; i < e; ++i) {
                    const item& child = items_[i];
                    if (child.dropped)
                        continue;
                    if (!first)
                        put(',');
                    first = false;
                    if (object) {
                        put_name(view(child.key));
                        put(':');
                    }
                    write_value(child);
                }
                put(object ? '}' : ']');
                return;
            }
        }
    }

    const char* input_begin_ = nullptr;
    const char* input_end_ = nullptr;
    const ignore_list* ignore_ = nullptr;
    std::string arena_;          // escaped strings in canonical spelling, unescaped names, numbers
    std::string digits_;         // scratch for number canonicalisation
    std::vector<item> stack_;    // completed values whose container is still open
    std::vector<item> items_;    // children of closed containers, each container's contiguous
    std::vector<frame> frames_;  // open containers
    std::unique_ptr<char[]> out_;
    std::size_t cap_ = 0;
    std::size_t len_ = 0;
};

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// json_canonicalizer

struct json_canonicalizer::impl {
    detail::canonical_parser parser;
    bool ok = false;
};

json_canonicalizer::json_canonicalizer() : impl_(std::make_unique<impl>()) {}
json_canonicalizer::~json_canonicalizer() = default;

bool json_canonicalizer::run(std::string_view text, const ignore_list& ignore) {
    impl_->ok = impl_->parser.run(text, ignore);
    return impl_->ok;
}

std::string_view json_canonicalizer::result() const noexcept {
    return impl_->ok ? impl_->parser.result() : std::string_view();
}

std::optional<std::string> canonicalize_json(std::string_view text, const ignore_list& ignore) {
    thread_local json_canonicalizer canonicalizer;
    if (!canonicalizer.run(text, ignore))
        return std::nullopt;
    return std::string(canonicalizer.result());
}

}  // namespace coalescer::coalesce
