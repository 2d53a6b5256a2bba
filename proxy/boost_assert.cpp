// Boost's assertion handler, for the builds that keep assertions (the sanitizer presets, Debug:
// BOOST_ENABLE_ASSERT_HANDLER). Every failed assertion aborts, as assert() would, but one:
// Beast 1.81's chunked-body parser asserts `n >= 5` when it is handed the final chunk again
// with fewer than five bytes buffered ("0\r\n" then more bytes later), which any client or
// upstream can cause; the code after the assertion copes with it, and release builds never
// check it (Beast 1.86 removed it, boostorg/beast#2861). Aborting there would turn hostile
// input into a crash of exactly the builds that test hostile input.
#ifdef BOOST_ENABLE_ASSERT_HANDLER

#include <boost/assert.hpp>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace {

bool known_wrong(const char* expr, const char* file) {
    return std::strcmp(expr, "n >= 5") == 0 &&
           std::strstr(file, "beast/http/impl/basic_parser.ipp") != nullptr;
}

}  // namespace

namespace boost {

void assertion_failed(char const* expr, char const* function, char const* file, long line) {
    if (known_wrong(expr, file)) {
        return;
    }
    std::fprintf(stderr, "%s:%ld: %s: Assertion `%s' failed.\n", file, line, function, expr);
    std::abort();
}

void assertion_failed_msg(char const* expr, char const* msg, char const* function, char const* file,
                          long line) {
    std::fprintf(stderr, "%s:%ld: %s: Assertion `%s' failed: %s\n", file, line, function, expr,
                 msg);
    std::abort();
}

}  // namespace boost

#endif
