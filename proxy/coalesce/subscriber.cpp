#include "coalesce/subscriber.hpp"

#include "http/head_writer.hpp"
#include "http/response_writer.hpp"
#include "net/hangup_watch.hpp"
#include "net/use_tuple.hpp"
#include "ops/errors.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/http/status.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

namespace coalescer::coalesce {
namespace asio = boost::asio;
namespace beast = boost::beast;
using boost::system::error_code;

namespace {

// One write carries at most this much, so write_timeout measures a client's progress rather
// than how long it takes to swallow a whole replayed body.
constexpr std::size_t max_chunks_per_write = 128;
constexpr std::size_t max_bytes_per_write = 256 * 1024;
// A client waiting longer than this for the flight's next bytes is watched for a hang-up.
constexpr std::chrono::milliseconds hangup_watch_delay{50};

// The safety net for a flight that never moves: a sweep task, so a parked subscriber's timer
// never expires and stays out of Asio's timer heap (with thousands of subscribers, re-arming
// and cancelling heap timers on every event cost a timerfd update each time the earliest moved).
class give_up_task final : public net::sweep_task {
  public:
    explicit give_up_task(std::shared_ptr<waiter> w) : waiter_(std::move(w)) {}
    bool due() const noexcept { return due_; }

  private:
    void on_due() override {
        due_ = true;
        waiter_->timer.cancel();
    }
    std::shared_ptr<waiter> waiter_;
    bool due_ = false;
};

template <class Stream>
asio::ip::tcp::socket& socket_of(Stream& stream) {
    return beast::get_lowest_layer(stream);
}

// One client's replay of a flight, from byte 0 to the end (or a cut, or the client leaving).
template <class Stream>
class delivery {
  public:
    delivery(Stream& stream, net::socket_deadline& deadline, flight& f, std::size_t slot,
             delivery_options options)
        : deadline_(deadline),
          flight_(f),
          slot_(slot),
          options_(options),
          writer_(stream, deadline, options.write_timeout),
          stream_(stream) {}

    asio::awaitable<delivery_result> run();

  private:
    enum class woken { more, gone, gave_up };

    void queue_start(const log_read& r);
    std::size_t queue_chunks(const log_read& r);
    asio::awaitable<woken> wait_for_more(const std::shared_ptr<waiter>& parked,
                                         net::hangup_watch& watch, give_up_task& give_up);
    asio::awaitable<void> answer_gave_up();

    net::socket_deadline& deadline_;
    flight& flight_;
    std::size_t slot_;
    delivery_options options_;
    http::response_writer<Stream> writer_;
    Stream& stream_;
    delivery_result result_;
    std::size_t cursor_ = 0;  // chunks written
    bool started_ = false;    // the head (or the error) is out
    bool has_body_ = true;
    std::string head_text_;
    std::shared_ptr<const flight_head> head_;  // keeps a viewed follower_text alive
};

// The head, once the flight has one; or, when it failed before one, the same error as every
// other subscriber. A drain that began while the client waited makes it Connection: close.
template <class Stream>
void delivery<Stream>::queue_start(const log_read& r) {
    if (options_.draining != nullptr && options_.draining->load(std::memory_order_relaxed)) {
        options_.keep_alive = false;
    }
    if (r.head == nullptr) {
        if (r.state == flight_state::failed) {
            head_text_ = ops::error_response(r.failure, options_.keep_alive, options_.head_request,
                                             r.retry_after_seconds);
            const auto reply = ops::reply_for(r.failure);
            result_.status = reply.status;
            result_.reusable = options_.keep_alive && !reply.close_connection;
            result_.answered = r.failure;
            result_.body_bytes = ops::content_size(head_text_);
            writer_.add_head(head_text_);
        }
        return;
    }
    has_body_ = r.head->has_body;
    if (options_.role == role::leader)
        options_.role = flight_.creator_role();  // another replica's flight: a follower here
    const auto framing = http::framing_for(*r.head, options_.client_http11, options_.keep_alive);
    writer_.set_chunked(framing.chunked);
    options_.keep_alive = framing.keep_alive;
    head_ = r.head;
    result_.status = r.head->status;
    if (options_.role == role::follower && framing.keep_alive && options_.client_http11) {
        writer_.add_head(head_->follower_text);  // serialised once for all of them
        return;
    }
    std::optional<std::chrono::seconds> age;
    if (options_.role == role::hit) {
        age =
            std::chrono::duration_cast<std::chrono::seconds>(clock::now() - flight_.completed_at());
    }
    head_text_ =
        http::serialize_head(*r.head, ops::to_string(options_.role), flight_.id(), age, framing);
    writer_.add_head(head_text_);
}

// The next chunks of the log, as many as one write may carry (so write_timeout measures the
// client's progress, not how long it takes to swallow a whole replayed body).
template <class Stream>
std::size_t delivery<Stream>::queue_chunks(const log_read& r) {
    std::size_t take = 0;
    for (std::size_t bytes = 0; take < r.chunks.size() && take < max_chunks_per_write &&
                                (take == 0 || bytes + r.chunks[take].size() <= max_bytes_per_write);
         ++take) {
        bytes += r.chunks[take].size();
        if (has_body_) {
            writer_.add_body(r.chunks[take]);
        }
    }
    return take;
}

// Parks until the flight moves; a client that hangs up meanwhile, or a flight that does not
// move for max_wait, ends the wait.
template <class Stream>
asio::awaitable<typename delivery<Stream>::woken> delivery<Stream>::wait_for_more(
    const std::shared_ptr<waiter>& parked, net::hangup_watch& watch, give_up_task& give_up) {
    if (!flight_.park(cursor_, parked)) {
        co_return woken::more;
    }
    watch.arm_after(hangup_watch_delay);
    if (!give_up.due()) {
        parked->timer.expires_at(clock::time_point::max());  // woken by a cancel only
        co_await parked->timer.async_wait(use_tuple);
    }
    flight_.unpark(parked);
    if (watch.gone()) {
        co_return woken::gone;
    }
    co_return give_up.due() ? woken::gave_up : woken::more;
}

// The flight did not move for max_wait: this client gets a 504 if it got nothing yet.
template <class Stream>
asio::awaitable<void> delivery<Stream>::answer_gave_up() {
    if (started_) {
        co_return;
    }
    const error_code failure = ops::proxy_errc::upstream_total_timeout;
    head_text_ = ops::error_response(failure, false, options_.head_request);
    writer_.add_head(head_text_);
    const bool written = co_await writer_.write() == http::write_outcome::written;
    result_.status = 504;
    result_.answered = failure;
    result_.body_bytes = written ? ops::content_size(head_text_) : 0;
}

template <class Stream>
asio::awaitable<delivery_result> delivery<Stream>::run() {
    auto parked = std::make_shared<waiter>(co_await asio::this_coro::executor);
    // The watch may fire after this delivery ended (its handler was already queued): it keeps
    // the waiter alive for that.
    auto watch = std::make_shared<net::hangup_watch>(deadline_.sweep(), socket_of(stream_),
                                                     [parked] { parked->timer.cancel(); });
    give_up_task give_up(parked);
    deadline_.sweep().schedule(give_up, clock::now() + options_.max_wait);
    log_read r;  // reused: no allocation per wake-up
    for (;;) {
        flight_.read(slot_, cursor_, r);
        if (!started_) {
            queue_start(r);
        }
        const bool failed_early = !started_ && r.head == nullptr && r.state == flight_state::failed;
        const bool has_head = started_ || r.head != nullptr;
        const std::size_t take = has_head ? queue_chunks(r) : 0;
        const bool caught_up = take == r.chunks.size();
        const bool ends_now = caught_up && has_head && r.state == flight_state::complete;
        if (ends_now) {
            writer_.add_end();
        }
        if (!writer_.empty()) {
            const auto wrote = co_await writer_.write();
            if (wrote != http::write_outcome::written) {
                // A slow or vanished client is dropped alone.
                result_.dropped_slow = wrote == http::write_outcome::slow;
                result_.client_gone = !result_.dropped_slow;
                result_.reusable = false;
                break;
            }
            started_ = true;
            cursor_ += take;
        }
        if (failed_early) {
            break;
        }
        if (ends_now) {
            result_.reusable = options_.keep_alive;
            result_.complete = true;
            break;
        }
        if (caught_up && r.state == flight_state::failed) {
            result_.cut_by = r.failure;
            result_.reusable = false;  // cut: no terminating chunk, the connection closes
            break;
        }
        if (!caught_up) {
            continue;
        }
        const auto why = co_await wait_for_more(parked, *watch, give_up);
        if (why == woken::gone) {
            result_.client_gone = true;
            break;
        }
        if (why == woken::gave_up) {
            co_await answer_gave_up();
            break;
        }
    }
    watch->stop();
    result_.first_byte = writer_.first_byte();
    if (!result_.answered) {
        result_.body_bytes = writer_.body_bytes();
    }
    co_return result_;
}

}  // namespace

template <class Stream>
asio::awaitable<delivery_result> deliver(Stream& stream, net::socket_deadline& deadline, flight& f,
                                         std::size_t slot, delivery_options options) {
    delivery<Stream> d(stream, deadline, f, slot, options);
    co_return co_await d.run();
}

template asio::awaitable<delivery_result> deliver(asio::ip::tcp::socket&, net::socket_deadline&,
                                                  flight&, std::size_t, delivery_options);
template asio::awaitable<delivery_result> deliver(beast::ssl_stream<asio::ip::tcp::socket>&,
                                                  net::socket_deadline&, flight&, std::size_t,
                                                  delivery_options);

}  // namespace coalescer::coalesce
