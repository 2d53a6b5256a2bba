// Canonical JSON: a strict RFC 8259 parser writes the canonical text as it reads, into one reused
// buffer. Arrays need nothing more; an object keeps 8 bytes per member while it is open and, when
// it closes out of order (or with removed members), rewrites its own span sorted. So memory stays
// within a small multiple of the body whatever its shape: the canonical text (about the body's
// size), one record per member of the open objects, and one object's span while it is sorted.
//
// Why not boost::json::basic_parser: Boost 1.81 unescapes the rest of a string byte by byte once
// it has seen one escape, and LLM request contents are long strings full of "\n": measured, that
// loop alone cost more than half of the key budget. Here strings are scanned 16 bytes at a time,
// a string without escapes is never copied before the final write, and a string with escapes is
// copied run by run straight into its canonical spelling. The unit tests check this parser's
// verdicts against Boost.JSON's on mutated inputs.
#include "coalesce/canonical_json.hpp"

#include "coalesce/canonical_number.hpp"

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <iterator>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace coalescer::coalesce {

// ---------------------------------------------------------------------------------------------
// The parser and the writer

namespace detail {

namespace {

bool is_space(char c) noexcept {
    return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

bool is_digit(char c) noexcept {
    return c >= '0' && c <= '9';
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
    // An object at least `defer_from` bytes long whose members came out of order is not copied
    // into order (write() hands its members over in order).
    explicit canonical_parser(std::size_t defer_from) : defer_from_(defer_from) {}

    bool run(std::string_view text, const ignore_list& ignore) {
        start(text, ignore);
        if (!parse())
            return false;
        if (!deferred_.empty()) {
            std::sort(deferred_.begin(), deferred_.end(),
                      [](const auto& a, const auto& b) { return a.open_at < b.open_at; });
            std::size_t total = 0;
            write([](void* size,
                     std::string_view bytes) { *static_cast<std::size_t*>(size) += bytes.size(); },
                  &total);
            size_ = total;
        } else {
            size_ = out_.size();
        }
        return true;
    }

    std::size_t size() const noexcept { return size_; }

    void write(void (*piece)(void*, std::string_view), void* context) const {
        emit(0, out_.size(), piece, context);
    }

    std::string_view result() {
        if (deferred_.empty())
            return out_;
        joined_.clear();
        joined_.reserve(size_);
        write([](void* joined,
                 std::string_view bytes) { static_cast<std::string*>(joined)->append(bytes); },
              &joined_);
        return joined_;
    }

  private:
    // An object member already written to out_ (its name, ':' and value; no comma). Objects
    // keep one per member until they close; arrays keep none. 8 bytes: bodies over 2 GiB are
    // keyed on their raw bytes.
    struct member {
        std::uint32_t start;
        std::uint32_t size : 31;
        std::uint32_t dropped : 1;  // named by the ignore list: checked for duplicates, not kept
    };
    struct frame {
        std::size_t open_at = 0;       // the '{' or '[' in out_
        std::size_t members_base = 0;  // objects: the first of their members_
        std::size_t value_start = 0;   // the value being parsed: where it (or its member) starts
        std::size_t index = 0;         // arrays: elements so far (ignore pointers count them)
        std::size_t written = 0;       // elements or members written so far
        const ignore_list::node* trie = nullptr;  // nullptr: nothing below is removed
        const ignore_list::node* value_trie = nullptr;
        bool is_object = false;
        bool value_dropped = false;
        bool sorted = true;  // objects: members arrived in canonical order, none dropped
    };

    void start(std::string_view text, const ignore_list& ignore) {
        trim();
        input_begin_ = text.data();
        input_end_ = text.data() + text.size();
        ignore_ = &ignore;
        out_.clear();
        members_.clear();
        frames_.clear();
        deferred_.clear();
        deferred_members_.clear();
        joined_.clear();
        size_ = 0;
        // The canonical text is never longer than the input but for number spellings
        // ("1e20" is 21 digits): one reservation covers nearly every body.
        out_.reserve(text.size() + 64);
    }

    // --- parsing

    enum class expect { value, member, after_value };

    static const char* skip_space(const char* p, const char* end) noexcept {
        while (p != end && is_space(*p))
            ++p;
        return p;
    }

    bool parse() {
        if (static_cast<std::size_t>(input_end_ - input_begin_) > max_input)
            return false;
        const char* p = input_begin_;
        expect next = expect::value;
        for (;;) {
            switch (next) {
                case expect::value:
                    if (!parse_value(p, next))
                        return false;
                    break;
                case expect::member:
                    if (!parse_member_name(p))
                        return false;
                    next = expect::value;
                    break;
                case expect::after_value:
                    p = skip_space(p, input_end_);
                    if (frames_.empty())
                        return p == input_end_;
                    if (!parse_after_value(p, next))
                        return false;
                    break;
            }
        }
    }

    // A whole scalar, or the opening of a container (and its close, when it is empty).
    bool parse_value(const char*& p, expect& next) {
        const char* const end = input_end_;
        p = skip_space(p, end);
        if (p == end)
            return false;
        const char c = *p;
        if (c == '{' || c == '[')
            return open_container(p, next);
        begin_value();
        if (c == '"') {
            ++p;
            if (!scan_string(p))
                return false;
        } else if (c == '-' || is_digit(c)) {
            if (!scan_number(p))
                return false;
        } else if (c == 't' && end - p >= 4 && std::memcmp(p, "true", 4) == 0) {
            p += 4;
            out_.append("true", 4);
        } else if (c == 'f' && end - p >= 5 && std::memcmp(p, "false", 5) == 0) {
            p += 5;
            out_.append("false", 5);
        } else if (c == 'n' && end - p >= 4 && std::memcmp(p, "null", 4) == 0) {
            p += 4;
            out_.append("null", 4);
        } else {
            return false;
        }
        end_value();
        next = expect::after_value;
        return true;
    }

    // p at '{' or '['. An empty container is opened and closed at once.
    bool open_container(const char*& p, expect& next) {
        const bool is_object = *p == '{';
        if (frames_.size() == max_json_depth)
            return false;
        open(is_object);
        p = skip_space(p + 1, input_end_);
        if (p != input_end_ && *p == (is_object ? '}' : ']')) {
            ++p;
            next = expect::after_value;
            return close();
        }
        next = is_object ? expect::member : expect::value;
        return true;
    }

    // A member's name and its ':' (the whitespace before the name is already skipped).
    bool parse_member_name(const char*& p) {
        if (p == input_end_ || *p != '"')
            return false;
        ++p;
        if (!begin_member(p))
            return false;
        p = skip_space(p, input_end_);
        if (p == input_end_ || *p != ':')
            return false;
        ++p;
        out_.push_back(':');
        return true;
    }

    // After a value inside a container, whitespace skipped: a ',' and what comes next, or the
    // container's close.
    bool parse_after_value(const char*& p, expect& next) {
        if (p == input_end_)
            return false;
        const bool in_object = frames_.back().is_object;
        if (*p == ',') {
            p = skip_space(p + 1, input_end_);
            next = in_object ? expect::member : expect::value;
            return true;
        }
        if (*p != (in_object ? '}' : ']'))
            return false;
        ++p;
        return close();
    }

    // p: just after the opening quote; on success just after the closing one. Writes the
    // string in its canonical spelling, quotes included: the input's own bytes, run by run,
    // except for \/ and \u escapes, which are decoded or respelled.
    bool scan_string(const char*& p) {
        const char* const end = input_end_;
        const char* run = p;  // the first byte not yet copied
        out_.push_back('"');
        for (;;) {
            p = find_string_special(p, end);
            if (p == end)
                return false;
            const auto c = static_cast<unsigned char>(*p);
            if (c == '"') {
                out_.append(run, static_cast<std::size_t>(p - run));
                out_.push_back('"');
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
            // \" \\ \b \f \n \r \t are already canonical: they stay in the run, so a string
            // written by a JSON.stringify-like serialiser is copied in one piece.
            if (end - p >= 2) {
                const char e = p[1];
                if (e == '"' || e == '\\' || e == 'n' || e == 't' || e == 'r' || e == 'b' ||
                    e == 'f') {
                    p += 2;
                    continue;
                }
            }
            out_.append(run, static_cast<std::size_t>(p - run));
            if (!decode_escape(p))
                return false;
            run = p;
        }
    }

    // p at a backslash (not one of the canonical escapes): appends the canonical spelling of
    // the character it escapes and moves p past the escape.
    bool decode_escape(const char*& p) {
        const char* const end = input_end_;
        if (end - p < 2)
            return false;
        if (p[1] == '/') {
            out_.push_back('/');
            p += 2;
            return true;
        }
        if (p[1] != 'u' || end - p < 6)
            return false;
        const long u = hex4(p + 2);
        if (u < 0)
            return false;
        if (u >= 0xdc00 && u <= 0xdfff)
            return false;  // a lone trailing surrogate
        std::uint32_t cp = 0;
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
        append_canonical(out_, cp);
        return true;
    }

    // RFC 8259 number grammar; an integer's text is already canonical (no leading zeros in JSON),
    // except "-0".
    bool scan_number(const char*& p) {
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
            out_.append(text);
            return true;
        }
        return append_canonical_number(text, out_, digits_);
    }

    // --- building: the canonical text is written as the input is read

    // A value starts in the innermost container: separate it, and learn from the ignore list
    // whether it is removed (array elements; members learn it from their name).
    void begin_value() {
        if (frames_.empty())
            return;
        frame& f = frames_.back();
        if (f.is_object)
            return;  // begin_member did it all
        f.value_start = out_.size();
        if (f.written != 0)
            out_.push_back(',');
        f.value_dropped = false;
        f.value_trie = nullptr;
        if (f.trie != nullptr) {
            char buf[24];
            auto [last, ec] = std::to_chars(buf, buf + sizeof buf, f.index);
            place(f, ignore_->child(*f.trie,
                                    std::string_view(buf, static_cast<std::size_t>(last - buf))));
        }
    }
    static void place(frame& f, const ignore_list::node* c) {
        if (c == nullptr)
            return;
        if (c->remove)
            f.value_dropped = true;
        else if (!c->children.empty())
            f.value_trie = c;
    }

    // p: just after the member name's opening quote. Writes the separator and the name.
    bool begin_member(const char*& p) {
        frame& f = frames_.back();
        if (f.written != 0)
            out_.push_back(',');
        f.value_start = out_.size();
        if (!scan_string(p))
            return false;
        f.value_dropped = false;
        f.value_trie = nullptr;
        if (f.trie != nullptr) {
            const std::string_view quoted(out_.data() + f.value_start, out_.size() - f.value_start);
            place(f, ignore_->child(*f.trie, unescape_name(quoted)));
        }
        return true;
    }

    // The value that began last is complete (out_ ends with it).
    void end_value() {
        if (frames_.empty())
            return;
        frame& f = frames_.back();
        if (!f.is_object) {
            ++f.index;
            if (f.value_dropped)
                truncate(f.value_start);  // validated, and gone
            else
                ++f.written;
            return;
        }
        const member m{static_cast<std::uint32_t>(f.value_start),
                       static_cast<std::uint32_t>(out_.size() - f.value_start),
                       f.value_dropped ? 1u : 0u};
        if (f.value_dropped ||
            (members_.size() > f.members_base && compare_members(members_.back(), m) >= 0))
            f.sorted = false;
        members_.push_back(m);
        ++f.written;
    }

    void open(bool is_object) {
        const ignore_list::node* trie = nullptr;
        bool dropped_here = false;
        if (frames_.empty()) {
            if (!ignore_->empty())
                trie = &ignore_->nodes_[0];
        } else {
            begin_value();
            const frame& parent = frames_.back();
            dropped_here = parent.value_dropped;
            trie = dropped_here ? nullptr : parent.value_trie;
        }
        frame f;
        f.open_at = out_.size();
        f.members_base = members_.size();
        f.is_object = is_object;
        f.trie = trie;
        frames_.push_back(f);
        out_.push_back(is_object ? '{' : '[');
    }

    bool close() {
        const frame f = frames_.back();
        frames_.pop_back();
        if (f.is_object && !finish_object(f))
            return false;
        if (!f.is_object)
            out_.push_back(']');
        end_value();
        return true;
    }

    // Drops what was written from `at` on, with the order of any large object in it.
    void truncate(std::size_t at) {
        out_.resize(at);
        while (!deferred_.empty() && deferred_.back().open_at >= at) {
            deferred_members_.resize(deferred_.back().first_member);
            deferred_.pop_back();
        }
    }

    // Sorts an object's members by name (the unescaped bytes), refuses duplicates (removed
    // members included), and writes them back without the removed ones; or, for a large object,
    // keeps the order for write() instead of copying its text into it.
    bool finish_object(const frame& f) {
        const auto first = members_.begin() + static_cast<std::ptrdiff_t>(f.members_base);
        const auto last = members_.end();
        if (!f.sorted) {
            std::sort(first, last, [this](const member& a, const member& b) {
                return compare_members(a, b) < 0;
            });
            for (auto it = first; it != last && it + 1 != last; ++it)
                if (compare_members(*it, *(it + 1)) == 0)
                    return false;
        }
        if (!f.sorted && out_.size() - f.open_at >= defer_from_) {
            deferred_object d{static_cast<std::uint32_t>(f.open_at),
                              static_cast<std::uint32_t>(out_.size() + 1),
                              static_cast<std::uint32_t>(deferred_members_.size())};
            std::copy_if(first, last, std::back_inserter(deferred_members_),
                         [](const member& m) { return !m.dropped; });
            d.members = static_cast<std::uint32_t>(deferred_members_.size() - d.first_member);
            deferred_.push_back(d);
        } else if (!f.sorted) {
            scratch_.clear();
            scratch_.reserve(out_.size() - f.open_at);  // exactly: no doubling past the span
            for (auto it = first; it != last; ++it) {
                if (it->dropped)
                    continue;
                if (!scratch_.empty())
                    scratch_.push_back(',');
                scratch_.append(out_.data() + it->start, it->size);
            }
            out_.resize(f.open_at + 1);
            out_.append(scratch_);
            if (scratch_.capacity() > keep_bytes)
                std::string().swap(scratch_);
        }
        members_.erase(first, last);
        out_.push_back('}');
        return true;
    }

    // Hands [start, end) of out_ to `piece`, each large object in it with its members in
    // order (deferred_ is sorted by position by then; nested objects are found in their
    // members' spans).
    void emit(std::size_t start, std::size_t end, void (*piece)(void*, std::string_view),
              void* context) const {
        auto next = [&](std::size_t from) {
            return std::lower_bound(
                deferred_.begin(), deferred_.end(), from,
                [](const deferred_object& d, std::size_t at) { return d.open_at < at; });
        };
        for (auto it = next(start); it != deferred_.end() && it->open_at < end; it = next(start)) {
            if (it->open_at > start)
                piece(context, std::string_view(out_.data() + start, it->open_at - start));
            piece(context, "{");
            for (std::uint32_t i = 0; i < it->members; ++i) {
                if (i != 0)
                    piece(context, ",");
                const member& m = deferred_members_[it->first_member + i];
                emit(m.start, m.start + m.size, piece, context);
            }
            piece(context, "}");
            start = it->close_at;
        }
        if (end > start)
            piece(context, std::string_view(out_.data() + start, end - start));
    }

    // Orders members by name: the names' unescaped bytes, shorter first on a common prefix;
    // 0 for equal names. Names are canonical strings at the start of each member.
    int compare_members(const member& a, const member& b) const noexcept {
        const char* x = out_.data() + a.start + 1;
        const char* y = out_.data() + b.start + 1;
        for (;;) {
            const int cx = next_name_byte(x), cy = next_name_byte(y);
            if (cx != cy)
                return cx < cy ? -1 : 1;
            if (cx < 0)
                return 0;
        }
    }

    // The next unescaped byte of a canonical string, -1 at its closing quote. Canonical strings
    // escape only '"', '\\' and bytes below 0x20.
    static int next_name_byte(const char*& p) noexcept {
        const auto c = static_cast<unsigned char>(*p);
        if (c == '"')
            return -1;
        if (c != '\\') {
            ++p;
            return c;
        }
        const char e = p[1];
        p += 2;
        switch (e) {
            case 'b':
                return '\b';
            case 'f':
                return '\f';
            case 'n':
                return '\n';
            case 'r':
                return '\r';
            case 't':
                return '\t';
            case 'u': {
                const int v = (hex_value(p[2]) << 4) | hex_value(p[3]);  // \u00xx
                p += 4;
                return v;
            }
            default:
                return static_cast<unsigned char>(e);  // '"' or '\\'
        }
    }

    // A canonical member name (with its quotes) as its unescaped bytes, for the ignore list.
    std::string_view unescape_name(std::string_view quoted) {
        if (quoted.find('\\') == std::string_view::npos)
            return quoted.substr(1, quoted.size() - 2);
        name_.clear();
        const char* p = quoted.data() + 1;
        for (int c = next_name_byte(p); c >= 0; c = next_name_byte(p))
            name_.push_back(static_cast<char>(c));
        return name_;
    }

  public:
    // Releases buffers that a rare huge body grew, so one 16 MiB request does not pin memory.
    void trim() {
        if (out_.capacity() > keep_bytes)
            std::string().swap(out_);
        if (digits_.capacity() > keep_bytes)
            std::string().swap(digits_);
        if (members_.capacity() * sizeof(member) > keep_bytes)
            std::vector<member>().swap(members_);
        if (scratch_.capacity() > keep_bytes)
            std::string().swap(scratch_);
        if (joined_.capacity() > keep_bytes)
            std::string().swap(joined_);
        if (deferred_members_.capacity() * sizeof(member) > keep_bytes)
            std::vector<member>().swap(deferred_members_);
    }

  private:
    static constexpr std::size_t keep_bytes = 4 * 1024 * 1024;

    // A large object left in input order in out_, and its members in canonical order.
    struct deferred_object {
        std::uint32_t open_at;       // its '{'
        std::uint32_t close_at;      // past its '}'
        std::uint32_t first_member;  // in deferred_members_
        std::uint32_t members = 0;   // kept (not removed) members
    };
    static constexpr std::size_t max_input = 0x7fffffff;  // member offsets and sizes fit 31 bits

    const char* input_begin_ = nullptr;
    const char* input_end_ = nullptr;
    const ignore_list* ignore_ = nullptr;
    std::string out_;              // the canonical text, written as the input is read
    std::string scratch_;          // an object's members in canonical order, while it closes
    std::string digits_;           // scratch for number canonicalisation
    std::string name_;             // scratch for unescaping a member name
    std::vector<member> members_;  // the members of every open object, innermost last
    std::vector<frame> frames_;    // open containers (at most max_json_depth)
    std::vector<deferred_object> deferred_;
    std::vector<member> deferred_members_;
    std::string joined_;  // result() of a canonical text in pieces
    std::size_t size_ = 0;
    const std::size_t defer_from_;
};

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// json_canonicalizer

struct json_canonicalizer::impl {
    explicit impl(std::size_t defer_from) : parser(defer_from) {}
    detail::canonical_parser parser;
    bool ok = false;
};

json_canonicalizer::json_canonicalizer(std::size_t defer_objects_from)
    : impl_(std::make_unique<impl>(defer_objects_from)) {}
json_canonicalizer::~json_canonicalizer() = default;

bool json_canonicalizer::run(std::string_view text, const ignore_list& ignore) {
    impl_->ok = impl_->parser.run(text, ignore);
    return impl_->ok;
}

std::size_t json_canonicalizer::size() const noexcept {
    return impl_->ok ? impl_->parser.size() : 0;
}

void json_canonicalizer::write(void (*piece)(void*, std::string_view), void* context) const {
    if (impl_->ok)
        impl_->parser.write(piece, context);
}

std::string_view json_canonicalizer::result() {
    return impl_->ok ? impl_->parser.result() : std::string_view();
}

void json_canonicalizer::release_large() {
    impl_->ok = false;
    impl_->parser.trim();
}

std::optional<std::string> canonicalize_json(std::string_view text, const ignore_list& ignore) {
    thread_local json_canonicalizer canonicalizer;
    if (!canonicalizer.run(text, ignore))
        return std::nullopt;
    return std::string(canonicalizer.result());
}

}  // namespace coalescer::coalesce
