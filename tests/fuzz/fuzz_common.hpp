// What the fuzz targets share: a check that aborts (so libFuzzer reports and saves the input),
// and a deterministic way to cut a byte string into pieces from a few control bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <vector>

// A property of the code under test: on violation, print it and abort (a crash to libFuzzer).
#define FUZZ_CHECK(condition)                                                          \
    do {                                                                               \
        if (!(condition)) {                                                            \
            std::fprintf(stderr, "%s:%d: property violated: %s\n", __FILE__, __LINE__, \
                         #condition);                                                  \
            std::abort();                                                              \
        }                                                                              \
    } while (false)

namespace coalescer::fuzz {

// Piece sizes drawn from a seed: 0 gives the whole text in one piece, otherwise pieces of
// 1..max_piece bytes (a small xorshift generator, so one control byte or two select a split).
class splitter {
  public:
    splitter(std::uint32_t seed, std::size_t max_piece)
        : state_(seed * 2654435761u + 1), whole_(seed == 0), max_piece_(max_piece) {}

    std::size_t next(std::size_t left) {
        if (whole_ || left == 0) {
            return left;
        }
        state_ ^= state_ << 13;
        state_ ^= state_ >> 17;
        state_ ^= state_ << 5;
        const std::size_t n = 1 + state_ % max_piece_;
        return n < left ? n : left;
    }

    std::vector<std::string_view> split(std::string_view text) {
        std::vector<std::string_view> pieces;
        while (!text.empty()) {
            const auto n = next(text.size());
            pieces.push_back(text.substr(0, n));
            text.remove_prefix(n);
        }
        return pieces;
    }

  private:
    std::uint32_t state_;
    bool whole_;
    std::size_t max_piece_;
};

inline std::string_view as_text(const std::uint8_t* data, std::size_t size) {
    return {reinterpret_cast<const char*>(data), size};
}

}  // namespace coalescer::fuzz
