#include "server/relay.hpp"

#include "http/head_writer.hpp"
#include "http/response_writer.hpp"
#include "net/hangup_watch.hpp"
#include "ops/errors.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include <array>
#include <charconv>

namespace coalescer::server {
namespace asio = boost::asio;
namespace beast = boost::beast;
using boost::system::error_code;
using clock = std::chrono::steady_clock;

namespace {

constexpr std::size_t read_chunk = 16 * 1024;
// Token usage is read from the response's own bytes; past this size it is not counted (as
// for a flight whose body was freed while it streamed).
constexpr std::size_t max_usage_scan = 1024 * 1024;
// Answers quicker than this never pay for watching the client (R-11 after that).
constexpr std::chrono::milliseconds hangup_watch_delay{50};

double seconds_since(clock::time_point t) {
    return std::chrono::duration<double>(clock::now() - t).count();
}

// No head arrived: the client gets the same synthesized error a flight's subscribers would.
template <class Stream>
asio::awaitable<void> answer_failure(http::response_writer<Stream>& writer, error_code failure,
                                     unsigned retry_after_seconds, const relay_options& options,
                                     coalesce::delivery_result& result) {
    const auto text =
        ops::error_response(failure, options.keep_alive, options.head_request, retry_after_seconds);
    writer.add_head(text);
    const bool written = co_await writer.write() == http::write_outcome::written;
    const auto reply = ops::reply_for(failure);
    result.status = reply.status;
    result.reusable = written && options.keep_alive && !reply.close_connection;
    result.client_gone = !written;
    result.answered = failure;
    result.first_byte = writer.first_byte();
    result.body_bytes = written ? ops::content_size(text) : 0;
}

// Token usage is read from the answer's own bytes, its last piece alone when it came in one.
class usage_reader {
  public:
    // Only JSON and SSE answers report usage: other bodies are not kept.
    explicit usage_reader(std::string_view content_type)
        : reading_(content_type.find("json") != std::string_view::npos ||
                   content_type.find("event-stream") != std::string_view::npos) {}
    void add(std::string_view piece, bool last) {
        if (!reading_ || too_large_) {
            return;
        }
        if (last && text_.empty()) {
            last_ = piece;
        } else if (text_.size() + piece.size() <= max_usage_scan) {
            text_.append(piece);
        } else {
            too_large_ = true;
            text_ = {};
        }
    }
    // The bytes to read usage from once the answer is complete; none when it was too large.
    std::span<const std::string_view> complete() {
        whole_ = !last_.empty() ? last_ : std::string_view(text_);
        return too_large_ ? std::span<const std::string_view>() : std::span(&whole_, 1);
    }

  private:
    bool reading_;
    bool too_large_ = false;
    std::string text_;
    std::string_view last_;
    std::string_view whole_;
};

}  // namespace

template <class Stream>
asio::awaitable<relay_result> relay(Stream& client, net::socket_deadline& deadline,
                                    upstream::upstream_request request, upstream::client& context,
                                    relay_options options) {
    relay_result out;
    auto& result = out.delivered;
    const auto& up = context.upstream;
    const auto total = clock::now() + up.timeouts.total;
    auto cancel = std::make_shared<upstream::exchange_cancel>();
    // The handler runs on this worker, like the exchange: no post needed.
    auto watch = std::make_shared<net::hangup_watch>(
        deadline.sweep(), beast::get_lowest_layer(client), [cancel] { cancel->cancel(); });
    watch->arm_after(hangup_watch_delay);

    auto response = co_await upstream::open_response(request, context, total, cancel);
    out.attempts = response.attempts;
    if (options.draining != nullptr && options.draining->load(std::memory_order_relaxed)) {
        options.keep_alive = false;  // the drain began while the upstream answered
    }
    http::response_writer<Stream> writer(client, deadline, options.write_timeout);
    if (response.ec) {
        watch->stop();
        if (watch->gone()) {
            result.client_gone = true;
        } else {
            co_await answer_failure(writer, response.ec, response.retry_after_seconds, options,
                                    result);
        }
        co_return out;
    }

    const auto framing =
        http::framing_for(response.head, options.client_http11, options.keep_alive);
    const auto head_text = http::serialize_head(response.head, ops::to_string(options.role),
                                                options.exchange_id, {}, framing);
    result.status = response.head.status;
    writer.set_chunked(framing.chunked);
    writer.add_head(head_text);  // goes out with the first piece of body
    usage_reader usage(response.content_type);
    std::array<char, read_chunk> buffer;
    error_code upstream_ec;
    for (;;) {
        std::size_t got = 0;
        if (response.head.has_body && !response.parser->is_done()) {
            upstream_ec =
                co_await upstream::read_body_piece(response, buffer, got, up, total, *cancel);
        }
        if (cancel->cancelled) {
            result.client_gone = true;  // the watch saw the client leave
            break;
        }
        const bool done = !upstream_ec && (!response.head.has_body || response.parser->is_done());
        const std::string_view piece(buffer.data(), got);
        writer.add_body(piece);
        if (done) {
            writer.add_end();
        }
        if (!writer.empty()) {
            const auto wrote = co_await writer.write();
            if (wrote != http::write_outcome::written) {
                result.dropped_slow = wrote == http::write_outcome::slow;
                result.client_gone = !result.dropped_slow;
                break;
            }
        }
        usage.add(piece, done);
        if (done) {
            result.complete = true;
            result.reusable = framing.keep_alive;
            break;
        }
        if (upstream_ec) {
            result.cut_by = upstream_ec;
            break;  // cut: no terminating chunk, the connection closes
        }
    }
    result.first_byte = writer.first_byte();
    result.body_bytes = writer.body_bytes();
    watch->stop();
    upstream::note_protocol_error(context, upstream_ec);
    context.metrics.upstream_timing(context.upstream_index, response.ttfb,
                                    seconds_since(response.sent_at));
    if (result.complete) {
        out.usage = upstream::count_tokens(context, response, usage.complete(), request.body);
    } else {
        upstream::note_usage_cut(context, response);  // broken off, or the client left
    }
    if (result.complete) {
        upstream::release_connection(response, context);
    }
    co_return out;
}

template asio::awaitable<relay_result> relay(asio::ip::tcp::socket&, net::socket_deadline&,
                                             upstream::upstream_request, upstream::client&,
                                             relay_options);
template asio::awaitable<relay_result> relay(beast::ssl_stream<asio::ip::tcp::socket>&,
                                             net::socket_deadline&, upstream::upstream_request,
                                             upstream::client&, relay_options);

}  // namespace coalescer::server
