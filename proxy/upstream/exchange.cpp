#include "upstream/exchange.hpp"

#include "http/header_rules.hpp"
#include "ops/errors.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/http/error.hpp>

#include <algorithm>

namespace coalescer::upstream {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using boost::system::error_code;
using ops::proxy_errc;
using clock = std::chrono::steady_clock;

namespace {

constexpr std::size_t read_chunk = 16 * 1024;
constexpr std::uint32_t max_response_head = 64 * 1024;

// Shared between the fetch and its canceller; touched only on the fetch's executor.
struct cancel_state {
    bool cancelled = false;
    connection* current = nullptr;
};

deadline earliest(deadline a, deadline b) { return std::min(a, b); }

bool closed_by_peer(error_code ec) {
    return ec == http::error::end_of_stream || ec == asio::error::eof ||
           ec == asio::error::connection_reset || ec == asio::error::broken_pipe ||
           ec == asio::ssl::error::stream_truncated;
}

// Maps a failed read of the head to what clients are told.
error_code head_error(error_code ec, deadline total) {
    if (ec == beast::error::timeout) {
        return clock::now() >= total ? proxy_errc::upstream_total_timeout : proxy_errc::upstream_head_timeout;
    }
    if (closed_by_peer(ec)) {
        return proxy_errc::upstream_closed;
    }
    const bool malformed = ec.category() == make_error_code(http::error::header_limit).category();
    return malformed ? error_code(proxy_errc::upstream_protocol_error) : error_code(proxy_errc::upstream_closed);
}

bool token_listed(std::string_view list, std::string_view token) {
    bool found = false;
    http_rules::for_each_list_item(list, [&](std::string_view item) {
        // Cache-Control directives may carry arguments: private="x".
        const auto name = item.substr(0, item.find('='));
        found = found || http_rules::iequals(http_rules::trim(name), token);
    });
    return found;
}

// The head as subscribers see it, or an error for framing a proxy must not relay (H-20).
error_code make_head(const http::response_parser<http::buffer_body>& parser, bool head_method,
                     coalesce::response_head& out) {
    const auto& msg = parser.get();
    const bool has_te = msg.find(http::field::transfer_encoding) != msg.end();
    const bool has_cl = msg.find(http::field::content_length) != msg.end();
    if (has_te && has_cl) {
        return proxy_errc::upstream_protocol_error;
    }
    out.status = msg.result_int();
    out.reason = std::string(msg.reason());
    const auto connection_list = msg[http::field::connection];
    for (const auto& field : msg) {
        const auto name = field.name_string();
        if (http_rules::is_hop_by_hop(name) || http_rules::iequals(name, "content-length") ||
            token_listed(connection_list, name)) {
            continue;
        }
        if (http_rules::iequals(name, "cache-control") &&
            (token_listed(field.value(), "no-store") || token_listed(field.value(), "private"))) {
            out.no_store = true;
        }
        if (http_rules::iequals(name, "set-cookie")) {
            out.no_store = true;  // never replay one client's cookie to another
        }
        out.headers.emplace_back(std::string(name), std::string(field.value()));
    }
    const unsigned s = out.status;
    out.has_body = !head_method && !(s / 100 == 1 || s == 204 || s == 304);
    if (has_cl) {
        out.content_length = parser.content_length().value_or(0);
    }
    if (!out.has_body && !head_method) {
        out.content_length.reset();
    }
    return {};
}

}  // namespace

namespace {

// Sends the request and reads the response head on `conn`. Leaves the parser ready for the body.
asio::awaitable<error_code> send_and_read_head(connection& conn, const upstream_request& request,
                                               response_parser& parser, const ops::upstream_config& up,
                                               deadline total) {
    const std::vector<asio::const_buffer> buffers{asio::buffer(request.head), asio::buffer(request.body)};
    if (auto ec = co_await conn.write(buffers, earliest(clock::now() + up.timeouts.head, total))) {
        co_return ec;
    }
    for (;;) {
        parser.header_limit(max_response_head);
        parser.body_limit(boost::none);  // streams are never cut by a size limit (U-06)
        if (request.head_method) {
            parser.skip(true);
        }
        if (auto ec = co_await conn.read_header(parser, earliest(clock::now() + up.timeouts.head, total))) {
            co_return ec;
        }
        const unsigned status = parser.get().result_int();
        if (status / 100 != 1 || status == 101) {
            co_return error_code{};
        }
        parser.~response_parser();  // an interim 1xx: the real head follows
        new (&parser) response_parser();
    }
}

asio::awaitable<error_code> stream_body(connection& conn, response_parser& parser, coalesce::flight& f,
                                        const ops::upstream_config& up, deadline total,
                                        const std::shared_ptr<cancel_state>& cancel) {
    std::string buffer;
    while (!parser.is_done()) {
        buffer.resize(read_chunk);
        parser.get().body().data = buffer.data();
        parser.get().body().size = buffer.size();
        auto ec = co_await conn.read_some(parser, earliest(clock::now() + up.timeouts.idle, total));
        if (ec == http::error::need_buffer) {
            ec = {};
        }
        const auto got = buffer.size() - parser.get().body().size;
        if (got != 0 && !cancel->cancelled) {
            buffer.resize(got);
            f.append(std::move(buffer));
            buffer = std::string();
        }
        if (cancel->cancelled) {
            co_return proxy_errc::flight_cancelled;
        }
        if (ec) {
            if (ec == beast::error::timeout) {
                co_return clock::now() >= total ? proxy_errc::upstream_total_timeout
                                                : proxy_errc::upstream_idle_timeout;
            }
            co_return closed_by_peer(ec) ? error_code(proxy_errc::upstream_closed)
                                         : error_code(proxy_errc::upstream_protocol_error);
        }
    }
    co_return error_code{};
}

}  // namespace

asio::awaitable<void> fetch(std::shared_ptr<coalesce::flight> flight, upstream_request request,
                            exchange_context context) {
    const auto& up = context.upstream;
    const auto executor = co_await asio::this_coro::executor;
    const deadline total = clock::now() + up.timeouts.total;
    auto cancel = std::make_shared<cancel_state>();
    flight->set_canceller([executor, cancel] {
        asio::post(executor, [cancel] {
            cancel->cancelled = true;
            if (cancel->current != nullptr) {
                cancel->current->close();
            }
        });
    });

    // A pooled connection the upstream closed just as we reused it fails before any response
    // byte; the request could not have been processed, so it is tried once more on a new one.
    for (int attempt = 0;; ++attempt) {
        auto conn = attempt == 0 ? context.connections.take() : nullptr;
        if (!conn) {
            conn = std::make_unique<connection>(executor);
            cancel->current = conn.get();
            const auto ec = co_await conn->connect(up, context.tls, earliest(clock::now() + up.timeouts.connect, total));
            if (ec || cancel->cancelled) {
                cancel->current = nullptr;
                context.on_upstream_status(0);
                flight->fail(cancel->cancelled ? error_code(proxy_errc::flight_cancelled) : ec);
                co_return;
            }
        }
        cancel->current = conn.get();
        response_parser parser;
        auto ec = co_await send_and_read_head(*conn, request, parser, up, total);
        if (cancel->cancelled) {
            ec = proxy_errc::flight_cancelled;
        }
        if (ec && conn->reused && closed_by_peer(ec) && !cancel->cancelled) {
            cancel->current = nullptr;
            continue;
        }
        if (ec) {
            cancel->current = nullptr;
            context.on_upstream_status(0);
            flight->fail(cancel->cancelled ? error_code(proxy_errc::flight_cancelled) : head_error(ec, total));
            co_return;
        }
        context.on_upstream_status(parser.get().result_int());
        coalesce::response_head head;
        if (auto hec = make_head(parser, request.head_method, head)) {
            cancel->current = nullptr;
            flight->fail(hec);
            co_return;
        }
        flight->publish_head(std::move(head));
        ec = co_await stream_body(*conn, parser, *flight, up, total, cancel);
        cancel->current = nullptr;
        if (ec) {
            flight->fail(ec);  // subscribers cut their responses: never a silently short one
            co_return;
        }
        flight->complete();
        if (parser.keep_alive() && !cancel->cancelled) {
            context.connections.give_back(std::move(conn));
        }
        co_return;
    }
}

}  // namespace coalescer::upstream
