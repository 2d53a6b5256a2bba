// Canonical JSON for coalesce keys (DESIGN.md "Coalesce key").
//
// Two JSON texts that differ only in member order, insignificant whitespace, string escape spelling
// or number spelling canonicalise to the same bytes; texts that mean different things never do.
// The canonical text is only ever hashed: the body forwarded upstream is always the client's bytes.
//
// Canonical form (RFC 8785 in spirit, but numbers keep their exact decimal value):
// - no insignificant whitespace; object members sorted by the UTF-8 bytes of the unescaped name;
// - strings: only '"', '\\' and U+0000..U+001F escaped (\b \f \n \r \t, else \u00xx in lower case);
//   everything else literal UTF-8 (input \u escapes decoded, surrogate pairs combined);
// - numbers: the exact decimal value, never a double. With the value written as D x 10^q
//   (D an integer without trailing zeros, or 0):
//     0                        → "0"            (-0, 0.0, 0e5 included)
//     0 <= q <= 20             → integer digits  (1, 1.0, 1e0, 10e-1 → "1"; 1e20 → 21 digits)
//     q < 0, point inside D    → "123.45"        (1.50 → "1.5")
//     q < 0, fewer than 6 zeros between point and D → "0.00012"
//     otherwise                → "1.2345e+30", "1e-7", "1e+400"
//   with a leading '-' for negative values;
// - the members named by the ignore list removed (a pointer to an array element removes that
//   element; pointers are resolved against the original document, so indices do not shift).
//
// Not JSON (nullopt): anything RFC 8259 rejects (trailing commas, comments, single quotes, NaN,
// leading zeros, whitespace other than space/tab/CR/LF, ...), invalid UTF-8 (overlong forms,
// encoded surrogates, beyond U+10FFFF), lone surrogates, bytes after the value, duplicate member
// names in one object (compared after unescaping, removed members included), nesting deeper than
// max_json_depth, a value whose exponent in scientific notation is beyond ±10^15 (kept exact
// below that: 1e400 is not 1e401; 10e1000000000000000 is refused, as its canonical spelling
// 1e+1000000000000001 would be).
#pragma once

#include "coalesce/ignore_list.hpp"

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace coalescer::coalesce {

inline constexpr std::size_t max_json_depth = 64;

// Reusable canonicaliser: keeps its scratch buffers between calls, so steady-state use does not
// allocate. Not thread-safe; use one per thread (canonicalize_json does).
class json_canonicalizer {
  public:
    // An object of at least `defer_objects_from` bytes whose members came out of order is not
    // copied into order: write() hands its members over in order (tests set it to 0).
    explicit json_canonicalizer(std::size_t defer_objects_from = 64 * 1024);
    ~json_canonicalizer();
    json_canonicalizer(const json_canonicalizer&) = delete;
    json_canonicalizer& operator=(const json_canonicalizer&) = delete;

    // True when `text` is canonicalisable JSON; then size(), write() and result() give the
    // canonical text until the next call to run() on this object.
    bool run(std::string_view text, const ignore_list& ignore);
    // The canonical text's length.
    std::size_t size() const noexcept;
    // Hands the canonical text to `piece` in order, in one or more pieces: a large object whose
    // members came out of order is not copied into order, its members are handed over in it.
    void write(void (*piece)(void* context, std::string_view bytes), void* context) const;
    // The canonical text in one piece (put together first when it is in several).
    std::string_view result();
    // Frees the scratch a huge body grew (result() is then empty): a thread that keys only
    // large bodies would otherwise hold a body's worth until its next one.
    void release_large();

  private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

// The canonical form of a JSON text (see above); nullopt when the text is not acceptable JSON.
// Uses a thread-local json_canonicalizer; allocates only the returned string.
std::optional<std::string> canonicalize_json(std::string_view text, const ignore_list& ignore);

}  // namespace coalescer::coalesce
