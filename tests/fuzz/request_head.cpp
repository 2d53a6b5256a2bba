// The client request path of server/session.cpp, without sockets: find the head as read_head
// does, check_raw_head, the request parser (header limit), check_request with a default config,
// the declared length, then the bytes after the head as the body (Content-Length or chunked,
// body limit), and any request pipelined after it, as long as the connection would stay open.
//
// Properties: no crash, leak or unbounded allocation (run with -rss_limit_mb/-malloc_limit_mb);
// a head that passed the checks has at most 100 fields and a request line within 8 KiB; a body
// never exceeds the body limit, and a complete Content-Length body has the declared size; the
// body comes out the same whether its bytes arrive at once or in pieces; and between reads the
// bytes buffered but not consumed stay within max_header_bytes (plus one read).
#include "fuzz_common.hpp"

#include "ops/config.hpp"
#include "server/request_framing.hpp"
#include "server/request_parser.hpp"
#include "server/request_validator.hpp"

#include <boost/asio/buffer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/error.hpp>

#include <algorithm>
#include <array>
#include <cstring>
#include <memory_resource>
#include <string>

namespace {

using namespace coalescer;
namespace beast_http = boost::beast::http;
using boost::system::error_code;

const ops::config& fuzz_config();

const coalesce::tenant_headers& tenants() {
    static const coalesce::tenant_headers rule(fuzz_config().coalesce);
    return rule;
}

const ops::config& fuzz_config() {
    static const auto cfg = ops::load_config_text(R"(
upstreams:
  - {name: local, url: "http://127.0.0.1:1"}
routes:
  - {prefix: /, upstream: local}
)",
                                                  "fuzz.yaml");
    return *cfg;
}

struct body_outcome {
    error_code ec;         // the first error other than need_more
    bool done = false;     // the parser saw the whole message
    std::size_t used = 0;  // bytes of `rest` the message took
    std::string body;
};

// The body as the session reads it (server::body_framing), `rest` arriving in the pieces
// `split` gives (all it may take at once for seed 0), each read no larger than the framing
// allows.
body_outcome parse_body(std::string_view head, std::string_view rest, std::uint32_t seed) {
    const auto& limits = fuzz_config().limits;
    std::array<std::byte, 2048> fields_buffer;
    std::pmr::monotonic_buffer_resource arena(fields_buffer.data(), fields_buffer.size());
    server::request_parser parser(&arena);
    parser.header_limit(
        static_cast<std::uint32_t>(std::max<std::size_t>(limits.max_header_bytes, head.size())));
    parser.body_limit(limits.max_request_body);
    error_code ec;
    parser.put(boost::asio::buffer(head.data(), head.size()), ec);
    FUZZ_CHECK(!ec && parser.is_header_done());  // as it was the first time

    body_outcome out;
    fuzz::splitter split(seed, 17);
    boost::beast::flat_buffer buffer;
    server::body_framing framing(limits);
    std::size_t fed = 0;
    for (;;) {
        if (framing.feed(parser, buffer, ec)) {
            out.done = true;
            break;
        }
        if (ec) {
            out.ec = ec;
            break;
        }
        // What waits for more bytes (a chunk-size line, a trailer section) is bounded.
        FUZZ_CHECK(buffer.size() <= limits.max_header_bytes);
        if (fed == rest.size()) {
            break;
        }
        const auto left = rest.size() - fed;
        const auto n = std::min(seed == 0 ? left : split.next(left), framing.room(buffer));
        FUZZ_CHECK(n != 0);
        const auto space = buffer.prepare(n);
        std::memcpy(space.data(), rest.data() + fed, n);
        buffer.commit(n);
        fed += n;
    }
    out.used = fed - buffer.size();
    out.body = parser.get().body();
    return out;
}

// One request from the start of `data`; returns the bytes it took, or 0 when the connection
// would be closed (an error answered, or the request is incomplete).
std::size_t one_request(std::string_view data) {
    const auto& cfg = fuzz_config();
    const auto& limits = cfg.limits;
    const auto head_size = server::find_head_end(data);
    if (head_size == 0 || head_size > limits.max_header_bytes) {
        return 0;  // still reading, or 431 / 414
    }
    const auto head = data.substr(0, head_size);
    if (server::check_raw_head(head)) {
        return 0;
    }
    std::array<std::byte, 2048> fields_buffer;
    std::pmr::monotonic_buffer_resource arena(fields_buffer.data(), fields_buffer.size());
    server::request_parser parser(&arena);
    parser.header_limit(
        static_cast<std::uint32_t>(std::max<std::size_t>(limits.max_header_bytes, head_size)));
    parser.body_limit(limits.max_request_body);
    error_code ec;
    parser.put(boost::asio::buffer(head.data(), head.size()), ec);
    if (ec || !parser.is_header_done()) {
        return 0;
    }
    const auto& request = parser.get();
    // check_raw_head refused more than 100 field lines and a request line over 8 KiB.
    FUZZ_CHECK(request.fields().size() <= server::max_header_fields);
    FUZZ_CHECK(request.target().size() <= server::max_request_line);
    if (server::adopt_absolute_form(parser.get())) {
        return 0;
    }
    if (server::check_request(request, tenants())) {
        return 0;
    }
    const auto declared = server::declared_length(request);
    if (declared.value_or(0) > limits.max_request_body) {
        return 0;  // 413 before reading the body
    }
    const auto keep_alive = parser.keep_alive();

    const auto rest = data.substr(head_size);
    // The body as the session parses it (everything buffered at once), and again in pieces.
    const auto whole = parse_body(head, rest, 0);
    std::uint32_t seed = 1;
    for (const char c : rest.substr(0, 64)) {
        seed = seed * 31 + static_cast<unsigned char>(c);
    }
    const auto pieces = parse_body(head, rest, seed | 1);
    // Beast reports some errors (a malformed chunk header) as soon as the line is whole in the
    // buffer and others when more bytes come: errors are compared by their presence, and the
    // body bytes before an error by prefix.
    FUZZ_CHECK(bool(whole.ec) == bool(pieces.ec));
    if (!whole.ec) {
        FUZZ_CHECK(whole.done == pieces.done);
        FUZZ_CHECK(whole.used == pieces.used);
        FUZZ_CHECK(whole.body == pieces.body);
    } else {
        const auto n = std::min(whole.body.size(), pieces.body.size());
        FUZZ_CHECK(whole.body.compare(0, n, pieces.body, 0, n) == 0);
    }
    FUZZ_CHECK(whole.body.size() <= limits.max_request_body);
    if (whole.done && declared) {
        FUZZ_CHECK(whole.body.size() == *declared);
    }
    if (whole.ec || !whole.done || !keep_alive) {
        return 0;
    }
    return head_size + whole.used;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    fuzz_config();
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    auto text = fuzz::as_text(data, size);
    // Requests pipelined on one connection, as the session's loop reads them.
    while (!text.empty()) {
        const auto used = one_request(text);
        if (used == 0) {
            break;
        }
        text.remove_prefix(used);
    }
    return 0;
}
