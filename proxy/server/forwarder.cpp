#include "server/forwarder.hpp"

#include "coalesce/fetch.hpp"
#include "coalesce/subscriber.hpp"
#include "http/header_policy.hpp"
#include "http/traceparent.hpp"
#include "net/use_tuple.hpp"
#include "ops/errors.hpp"
#include "server/relay.hpp"
#include "upstream/exchange.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include <algorithm>
#include <charconv>

namespace coalescer::server {
using namespace std::string_view_literals;  // appends of literals without strlen()
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace beast_http = beast::http;
using boost::system::error_code;
using coalesce::role;
using clock = std::chrono::steady_clock;

namespace {

void append_number(std::string& out, std::uint64_t n) {
    char digits[24];
    out.append(digits, std::to_chars(std::begin(digits), std::end(digits), n).ptr);
}

// The request as the upstream gets it: host from config, hop-by-hop headers and the client's
// framing and encoding preferences removed, the body byte for byte.
upstream::upstream_request make_upstream_request(client_request& request, const route_match& match,
                                                 const proxy_context& context) {
    const auto& cfg = *context.config;
    const auto& up = cfg.upstreams[match.route->upstream_index];
    std::string head;
    head.reserve(512 + request.body().size() / 64);
    head += request.method_string();
    head += ' ';
    head += match.upstream_target;
    head += " HTTP/1.1\r\nHost: "sv;
    head += up.host.find(':') != std::string::npos ? "[" + up.host + "]" : up.host;
    if (up.port != (up.https ? 443 : 80)) {
        head += ':';
        append_number(head, up.port);
    }
    head += "\r\n"sv;
    const http::connection_tokens connection(request.fields());
    for (const auto& field : request.fields()) {
        if (!http::forwarded_upstream(field, connection, cfg.coalesce.bypass_header)) {
            continue;
        }
        head += field.name_text;
        head += ": "sv;
        head += field.value;
        head += "\r\n"sv;
    }
    // Identity encoding: the shared bytes must be readable by every subscriber.
    head += "Accept-Encoding: identity\r\n"sv;
    const auto method = request.method();
    if (!request.body().empty() || method == beast_http::verb::post ||
        method == beast_http::verb::put || method == beast_http::verb::patch) {
        head += "Content-Length: "sv;
        append_number(head, request.body().size());
        head += "\r\n"sv;
    }
    head += "\r\n"sv;
    return {std::move(head), std::move(request.body()), method == beast_http::verb::head,
            context.tenants.tag(request.fields())};
}

coalesce::flight_key key_of(const client_request& request, const route_match& match,
                            const ops::config& cfg, const coalesce::flight_key_builder& keys) {
    std::vector<std::pair<std::string_view, std::string_view>> headers;
    headers.reserve(16);
    for (const auto& field : request.fields()) {
        headers.emplace_back(field.name_text, field.value);
    }
    coalesce::key_request k{cfg.upstreams[match.route->upstream_index].name,
                            request.method_string(), match.upstream_target, &headers,
                            request.body()};
    return keys.make(k);
}

// Keying a body this large takes long enough (about a millisecond per MiB) to hold up the other
// connections of the worker: it is done on the key thread, and the request waits there.
constexpr std::size_t key_elsewhere_from = 256 * 1024;

asio::awaitable<coalesce::flight_key> key_for(const client_request& request,
                                              const route_match& match, proxy_context& context) {
    const auto& cfg = *context.config;
    if (request.body().size() < key_elsewhere_from) {
        co_return key_of(request, match, cfg, context.keys);
    }
    // Hoisted: GCC 12 mishandles a capturing lambda in the co_await's full-expression.
    auto make = [&]() -> asio::awaitable<coalesce::flight_key> {
        co_return key_of(request, match, cfg, context.keys);
    };
    co_return co_await asio::co_spawn(context.key_threads, make(), asio::use_awaitable);
}

double ms_between(clock::time_point a, clock::time_point b) {
    return std::chrono::duration<double, std::milli>(b - a).count();
}

// The sidecar answers by itself (no route, flight full): write, count, log.
template <class Stream>
asio::awaitable<bool> answer_locally(Stream& stream, net::socket_deadline& deadline, error_code ec,
                                     bool keep_alive, std::size_t route_index,
                                     ops::access_record& record, proxy_context& context,
                                     clock::time_point started) {
    const auto text = ops::error_response(ec, keep_alive, record.method == "HEAD");
    deadline.expires_after(context.config->limits.write_timeout);
    auto [wec, n] = co_await asio::async_write(stream, asio::buffer(text), use_tuple);
    deadline.clear();
    const auto reply = ops::reply_for(ec);
    record.status = reply.status;
    record.outcome = reply.code;
    record.bytes_out = wec ? 0 : ops::content_size(text);
    record.duration_ms = ms_between(started, clock::now());
    context.metrics.client_request(route_index, record.role, reply.status,
                                   record.duration_ms / 1000, std::nullopt);
    context.log.request(record);
    co_return !wec && keep_alive && !reply.close_connection;
}

std::string_view trace_id_of(const client_request& request) {
    const auto* traceparent = request.find("traceparent");
    return traceparent != nullptr ? http::trace_id_of(*traceparent) : std::string_view{};
}

upstream::client& upstream_for(const route_match& match, worker& self) {
    return *self.upstreams[match.route->upstream_index];
}

// Starts a new flight's upstream exchange on this worker, detached from the client that
// created it, when the registry decides this process produces the flight.
class fetch_here final : public coalesce::flight_producer {
  public:
    fetch_here(client_request& request, const route_match& match, worker& self,
               proxy_context& context)
        : request_(request), match_(match), self_(self), context_(context) {}
    coalesce::production make(const std::shared_ptr<coalesce::flight>& flight) override {
        flight->set_trace_id(std::string(trace_id_of(request_)));
        return {coalesce::fetch(flight, make_upstream_request(request_, match_, context_),
                                upstream_for(match_, self_)),
                self_.io.get_executor(), self_.index};
    }
    std::size_t worker_index() const noexcept override { return self_.index; }

  private:
    client_request& request_;
    const route_match& match_;
    worker& self_;
    proxy_context& context_;
};

role role_of(coalesce::join_status status) noexcept {
    switch (status) {
        case coalesce::join_status::leader:
            return role::leader;
        case coalesce::join_status::hit:
            return role::hit;
        default:
            return role::follower;
    }
}

void account(const coalesce::delivery_result& delivered, std::string_view exchange_id, int attempts,
             std::size_t route_index, ops::access_record& record, proxy_context& context,
             clock::time_point started) {
    record.status = delivered.status;
    record.flight = exchange_id;
    record.bytes_out = delivered.body_bytes;
    record.duration_ms = ms_between(started, clock::now());
    record.ttfb_ms = delivered.first_byte ? ms_between(started, *delivered.first_byte) : 0;
    record.attempts = attempts;
    record.outcome = delivered.answered && !delivered.client_gone
                         ? ops::reply_for(delivered.answered).code
                     : delivered.complete     ? "ok"
                     : delivered.dropped_slow ? "slow_client_dropped"
                     : delivered.client_gone  ? "client_gone"
                                              : "cut";
    const auto failure = delivered.answered ? delivered.answered : delivered.cut_by;
    if (const auto fault = ops::protocol_fault_of(failure)) {
        record.detail = ops::to_string(*fault);
    } else if (delivered.cut_by && !delivered.complete) {
        record.detail = ops::reply_for(delivered.cut_by).code;  // upstream_idle_timeout, …
    }
    context.log.request(record);
    std::optional<double> ttfb;
    if (delivered.first_byte)
        ttfb = record.ttfb_ms / 1000;
    context.metrics.client_request(route_index, record.role, delivered.status,
                                   record.duration_ms / 1000, ttfb);
    if (delivered.dropped_slow) {
        context.metrics.slow_subscriber_dropped();
    }
}

// pass and bypass: nobody shares the exchange, so the response is relayed without a flight.
template <class Stream>
asio::awaitable<bool> relay_alone(Stream& stream, net::socket_deadline& deadline,
                                  client_request& request, const route_match& match,
                                  bool keep_alive, worker& self, proxy_context& context,
                                  ops::access_record& record, clock::time_point started) {
    const auto& cfg = *context.config;
    const auto id = context.ids.next();
    struct in_progress {  // counted with the flights in coalescer_flights_in_flight
        explicit in_progress(std::atomic<std::size_t>& n) : n(n) { n.fetch_add(1); }
        ~in_progress() { n.fetch_sub(1); }
        std::atomic<std::size_t>& n;
    } counted(context.relays_in_progress);
    const relay_options options{
        .role = record.role,
        .exchange_id = id,
        .write_timeout = cfg.limits.write_timeout,
        .keep_alive = keep_alive && !context.draining.load(std::memory_order_relaxed),
        .client_http11 = request.version() >= 11,
        .head_request = request.method() == beast_http::verb::head,
        .draining = &context.draining,
    };
    const auto relayed =
        co_await relay(stream, deadline, make_upstream_request(request, match, context),
                       upstream_for(match, self), options);
    record.usage = relayed.usage ? &*relayed.usage : nullptr;
    if (relayed.usage)
        record.cost_usd = context.usage.usd_of(match.route->upstream_index, *relayed.usage);
    account(relayed.delivered, id, relayed.attempts, match.route_index, record, context, started);
    co_return relayed.delivered.reusable;
}

}  // namespace

template <class Stream>
asio::awaitable<bool> forward(Stream& stream, net::socket_deadline& deadline,
                              client_request& request, bool keep_alive, worker& self,
                              proxy_context& context, clock::time_point started) {
    const auto& cfg = *context.config;
    const std::string_view target(request.target());  // request outlives the answer
    const std::string_view method(request.method_string());
    ops::access_record record{.route = "none",
                              .method = method,
                              .target = target,
                              .role = role::pass,
                              .trace_id = trace_id_of(request)};
    const auto match = context.routes.match(target);
    if (!match) {
        co_return co_await answer_locally(stream, deadline, ops::proxy_errc::no_route, keep_alive,
                                          cfg.routes.size(), record, context, started);
    }
    record.route = match->route->prefix;
    if (!match->route->coalesce ||
        http::asks_not_to_share(request.fields(), cfg.coalesce.bypass_header)) {
        record.role = match->route->coalesce ? role::bypass : role::pass;
        co_return co_await relay_alone(stream, deadline, request, *match, keep_alive, self, context,
                                       record, started);
    }
    const auto key = co_await key_for(request, *match, context);
    const auto key_prefix = key.prefix();  // the record only views it
    record.key_prefix = key_prefix;
    fetch_here producer(request, *match, self, context);
    const auto joined = context.flights->join(key, producer);
    record.role = role_of(joined.status);
    if (joined.status == coalesce::join_status::full ||
        joined.status == coalesce::join_status::closed) {
        const auto refusal = joined.status == coalesce::join_status::full
                                 ? ops::proxy_errc::flight_full
                                 : ops::proxy_errc::shutting_down;
        co_return co_await answer_locally(stream, deadline, refusal, keep_alive, match->route_index,
                                          record, context, started);
    }
    const auto& up = cfg.upstreams[match->route->upstream_index];
    const coalesce::delivery_options options{
        .role = record.role,
        .write_timeout = cfg.limits.write_timeout,
        .max_wait = up.timeouts.total + up.queue_timeout + std::chrono::seconds(5),
        .keep_alive = keep_alive && !context.draining.load(std::memory_order_relaxed),
        .client_http11 = request.version() >= 11,
        .head_request = request.method() == beast_http::verb::head,
        .draining = &context.draining,
    };
    auto& flight = joined.joined.flight();  // left when `joined` goes
    const auto delivered =
        co_await coalesce::deliver(stream, deadline, flight, joined.joined.slot(), options);
    if (record.role == role::leader) {
        record.role = flight.creator_role();  // follower or hit when another replica produced it
    }
    record.remote_producer = flight.produced_elsewhere();
    const auto flight_trace = record.role == role::leader ? std::string() : flight.trace_id();
    record.flight_trace_id = flight_trace;
    const auto usage = delivered.complete ? flight.usage() : std::nullopt;
    record.usage = usage ? &*usage : nullptr;
    if (usage)
        record.cost_usd = context.usage.usd_of(match->route->upstream_index, *usage);
    account(delivered, flight.id(), flight.attempts.load(std::memory_order_relaxed),
            match->route_index, record, context, started);
    if (usage && (record.role == role::follower || record.role == role::hit)) {
        context.usage.saved(match->route->upstream_index, *usage, record.cost_usd);  // for free
    }
    co_return delivered.reusable;
}

template asio::awaitable<bool> forward(asio::ip::tcp::socket&, net::socket_deadline&,
                                       client_request&, bool, worker&, proxy_context&,
                                       clock::time_point);
template asio::awaitable<bool> forward(beast::ssl_stream<asio::ip::tcp::socket>&,
                                       net::socket_deadline&, client_request&, bool, worker&,
                                       proxy_context&, clock::time_point);

}  // namespace coalescer::server
