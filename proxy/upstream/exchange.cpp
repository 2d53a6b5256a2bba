#include "upstream/exchange.hpp"

#include "ops/errors.hpp"
#include "ops/token_usage.hpp"
#include "upstream/attempt.hpp"
#include "upstream/provider_limits.hpp"
#include "upstream/response_head.hpp"
#include "upstream/retry_policy.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/http/error.hpp>

#include <algorithm>
#include <optional>
#include <random>

namespace coalescer::upstream {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace beast_http = beast::http;
using boost::system::error_code;
using ops::proxy_errc;
using clock = std::chrono::steady_clock;

namespace {

double seconds_since(clock::time_point t) {
    return std::chrono::duration<double>(clock::now() - t).count();
}

double jitter_unit() {
    thread_local std::minstd_rand engine{std::random_device{}()};
    return std::uniform_real_distribution<double>(0.0, 1.0)(engine);
}

// How long to wait before the next attempt after a 429/503, or nullopt when the answer goes
// to the clients as it is (no retries left, or a hint longer than max_delay).
std::optional<std::chrono::milliseconds> retry_delay(const response_parser& parser,
                                                     const ops::retry_config& cfg,
                                                     int attempt_number, double unit) {
    if (!retryable_status(parser.status()) || attempt_number >= cfg.max_attempts) {
        return std::nullopt;
    }
    const auto value = [](const std::string_view* v) { return v ? *v : std::string_view{}; };
    const auto hint = retry_hint(value(parser.find("retry-after-ms")),
                                 value(parser.find(beast_http::field::retry_after)),
                                 std::chrono::system_clock::now());
    if (hint && *hint > cfg.max_delay) {
        return std::nullopt;
    }
    return hint ? *hint : backoff(cfg, attempt_number, unit);
}

// How long to wait before trying again after attempt `number`, or nullopt when its outcome goes
// to the clients: a failure the provider cannot have acted on is retried after a backoff, an
// answer as retry_delay says.
std::optional<std::chrono::milliseconds> next_delay(const attempt& a, const ops::retry_config& cfg,
                                                    int number) {
    if (a.ec && retryable_failure(a.ec) && number < cfg.max_attempts) {
        return backoff(cfg, number, jitter_unit());
    }
    if (!a.ec) {
        return retry_delay(*a.parser, cfg, number, jitter_unit());
    }
    return std::nullopt;
}

asio::awaitable<void> sleep_for(std::chrono::milliseconds delay,
                                const std::shared_ptr<exchange_cancel>& cancel) {
    asio::steady_timer timer(co_await asio::this_coro::executor, delay);
    cancel->sleeping = &timer;
    co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
    cancel->sleeping = nullptr;
}

// Asks the budget until it admits the call, or until waiting longer would pass `deadline`
// (then at once: the client learns the budget's Retry-After without waiting for nothing).
asio::awaitable<budget_decision> admit_within(fleet_budget& budget, std::uint64_t tokens,
                                              std::size_t worker, clock::time_point deadline,
                                              const std::shared_ptr<exchange_cancel>& cancel) {
    for (;;) {
        auto decision = co_await budget.try_admit(tokens, worker);
        if (decision.admitted || cancel->cancelled || clock::now() + decision.retry_in > deadline) {
            co_return decision;
        }
        co_await sleep_for(std::max(decision.retry_in, std::chrono::milliseconds(1)), cancel);
    }
}

// A provider that says its limit is reached closes the fleet's budget until its reset.
void obey_provider_limits(client& context, const attempt& a) {
    if (context.budget == nullptr || a.ec) {
        return;
    }
    const auto& parser = *a.parser;
    const auto header = [&parser](std::string_view name) {
        const std::string_view* v = parser.find(name);
        return v ? *v : std::string_view{};
    };
    if (const auto until =
            provider_blocked_until(parser.status(), header, std::chrono::system_clock::now())) {
        context.budget->block_until(*until);
    }
}

unsigned whole_seconds(std::chrono::milliseconds d) {
    return static_cast<unsigned>(std::max<std::int64_t>(1, (d.count() + 999) / 1000));
}

}  // namespace

void exchange_cancel::cancel() noexcept {
    cancelled = true;
    if (current != nullptr)
        current->close();
    if (sleeping != nullptr)
        sleeping->cancel();
}

asio::awaitable<response_start> open_response(const upstream_request& request, client& context,
                                              deadline total,
                                              std::shared_ptr<exchange_cancel> cancel) {
    const auto& up = context.upstream;
    response_start out;
    const std::uint64_t estimate = context.budget ? estimate_tokens(request.body) : 0;
    for (int number = 1;; ++number) {
        const auto queued_at = clock::now();
        const bool at_once = context.admission.try_acquire();
        const bool admitted =
            at_once || co_await context.admission.acquire(queued_at + up.queue_timeout,
                                                          context.worker, context.deadlines);
        context.metrics.pacer_wait(context.upstream_index,
                                   at_once ? 0.0 : seconds_since(queued_at));
        if (!admitted) {
            out.ec = proxy_errc::queue_timeout;
            co_return out;
        }
        pacer_slot slot(context.admission, context.worker);
        budget_lease lease;
        if (context.budget != nullptr && !cancel->cancelled) {
            const auto decision = co_await admit_within(*context.budget, estimate, context.worker,
                                                        queued_at + up.queue_timeout, cancel);
            if (!decision.admitted && !cancel->cancelled) {
                out.ec = proxy_errc::fleet_budget_exhausted;
                out.retry_after_seconds = whole_seconds(decision.retry_in);
                co_return out;
            }
            lease = budget_lease(*context.budget, decision);
        }
        if (cancel->cancelled) {
            out.ec = proxy_errc::flight_cancelled;
            co_return out;
        }
        out.sent_at = at_once ? queued_at : clock::now();  // no clock read when nothing waited
        out.attempts = number;
        attempt a = co_await try_once(request, context, total, cancel);
        context.metrics.upstream_call(context.upstream_index, a.ec ? 0 : a.parser->status());
        out.ttfb = seconds_since(out.sent_at);
        obey_provider_limits(context, a);
        const auto delay = next_delay(a, up.retries, number);
        if (delay && clock::now() + *delay < total) {
            // The clients never see this attempt: they wait on for the next one.
            a.conn.reset();
            lease.settle(0);  // refused or never sent: no tokens spent
            lease.reset();
            slot.reset();
            context.metrics.upstream_retry(context.upstream_index);
            co_await sleep_for(*delay, cancel);
            continue;
        }
        out.ec =
            a.ec ? a.ec : read_head(*a.parser, request.head_method, out.head, out.content_type);
        note_protocol_error(context, out.ec);
        out.head_method = request.head_method;
        if (!out.ec) {
            out.conn = std::move(a.conn);
            out.parser = std::move(a.parser);
            out.slot = std::move(slot);
            out.budget = std::move(lease);
        }
        co_return out;
    }
}

std::size_t parse_buffered_piece(response_start& response, std::span<char> buffer, error_code& ec) {
    auto& parser = *response.parser;
    parser.body_into(buffer);
    response.conn->parse_buffered(parser, ec);
    if (ec == beast_http::error::need_buffer) {
        ec = {};
    }
    if (ec) {
        ec = proxy_errc::upstream_bad_body;
    }
    return parser.body_taken();
}

asio::awaitable<error_code> read_body_piece(response_start& response, std::span<char> buffer,
                                            std::size_t& got, const ops::upstream_config& up,
                                            deadline total, exchange_cancel& cancel) {
    auto& parser = *response.parser;
    parser.body_into(buffer);
    error_code ec;
    if (!response.conn->parse_buffered(parser, ec)) {
        cancel.current = response.conn.get();
        ec = co_await response.conn->read_some(parser,
                                               std::min(clock::now() + up.timeouts.idle, total));
        cancel.current = nullptr;
    }
    got = parser.body_taken();
    if (ec == beast_http::error::need_buffer) {
        ec = {};
    }
    if (cancel.cancelled) {
        co_return proxy_errc::flight_cancelled;
    }
    if (ec == beast::error::timeout) {
        co_return clock::now() >= total ? proxy_errc::upstream_total_timeout
                                        : proxy_errc::upstream_idle_timeout;
    }
    if (ec) {
        co_return closed_by_peer(ec) ? proxy_errc::upstream_closed : proxy_errc::upstream_bad_body;
    }
    co_return error_code{};
}

void note_protocol_error(client& context, error_code ec) {
    if (const auto fault = ops::protocol_fault_of(ec)) {
        context.metrics.upstream_protocol_error(context.upstream_index, *fault);
    }
}

void release_connection(response_start& response, client& context) {
    if (!response.conn || !response.parser) {
        return;
    }
    switch (reuse_after(*response.parser, response.head_method, response.conn->buffered())) {
        case reuse::yes:
            context.connections.give_back(std::move(response.conn));
            return;
        case reuse::out_of_step:
            context.metrics.upstream_protocol_error(context.upstream_index,
                                                    ops::protocol_fault::trailing_bytes);
            break;
        case reuse::closes:
            break;
    }
    response.conn->close();
}

namespace {

// An answer whose usage is expected: one the provider billed and can report on.
bool reports_usage(const response_start& response) {
    const auto status = response.head.status;
    const auto type = response.content_type;
    return status >= 200 && status < 300 && response.head.has_body &&
           (type.find("json") != std::string_view::npos ||
            type.find("event-stream") != std::string_view::npos);
}

}  // namespace

std::optional<ops::token_usage> count_tokens(client& context, const response_start& response,
                                             std::span<const std::string_view> body,
                                             std::string_view request_body) {
    if (!reports_usage(response)) {
        return std::nullopt;
    }
    auto usage =
        body.empty() ? std::nullopt : ops::extract_usage(response.content_type, body, request_body);
    if (usage) {
        context.usage.spent(context.upstream_index, *usage);
    } else {
        context.usage.missing(context.upstream_index, body.empty() ? ops::usage_missing::too_large
                                                                   : ops::usage_missing::absent);
    }
    return usage;
}

void note_usage_cut(client& context, const response_start& response) {
    if (reports_usage(response)) {
        context.usage.missing(context.upstream_index, ops::usage_missing::cut);
    }
}

}  // namespace coalescer::upstream
