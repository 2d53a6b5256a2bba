#include "cluster/stream_follower.hpp"

#include "cluster/stream_codec.hpp"
#include "ops/errors.hpp"
#include "ops/token_usage.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>

#include <algorithm>
#include <atomic>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace coalescer::cluster {

namespace asio = boost::asio;
using boost::system::error_code;
using coalesce::flight;
using std::chrono::milliseconds;

namespace {

// The Content-Type of a head's "Name: value\r\n" lines ("" when none).
std::string content_type_of(std::string_view fields) {
    constexpr std::string_view name = "content-type:";
    for (std::size_t pos = 0; pos < fields.size();) {
        auto end = fields.find("\r\n", pos);
        if (end == std::string_view::npos)
            end = fields.size();
        const auto line = fields.substr(pos, end - pos);
        if (line.size() >= name.size() &&
            std::equal(name.begin(), name.end(), line.begin(), [](char a, char b) {
                return a == (b >= 'A' && b <= 'Z' ? char(b - 'A' + 'a') : b);
            }))
            return std::string(line.substr(name.size()));
        pos = end + 2;
    }
    return {};
}

// A pod's first look at a flight: a whole answer kept as a string (stream_relay.cpp) is the
// answer; otherwise the pod marks the flight as read by a pod, so that from then on the producer
// appends even a whole answer to the stream, and takes what the stream holds so far.
// KEYS: stream, whole, readers. ARGV: grace ms, most entries to take.
// Returns {1, packed events} or {0, entries as XRANGE gives them}.
const redis_script& first_read_script() {
    static const redis_script script(R"lua(
local whole = redis.call('GET', KEYS[2])
if whole then return {1, whole} end
redis.call('SET', KEYS[3], '1', 'PX', ARGV[1])
return {0, redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', ARGV[2])}
)lua");
    return script;
}

constexpr std::string_view entries_per_read = "256";

// Shared with the flight's canceller, which may run on any thread.
struct follow_state {
    std::atomic<bool> cancelled{false};
    redis_connection* reading = nullptr;  // touched on the worker's thread only
};

class follower {
  public:
    follower(fleet& shared, redis_pool& pool, std::shared_ptr<flight> f, const redis_keys& keys,
             std::string holder)
        : shared_(shared),
          pool_(pool),
          flight_(std::move(f)),
          keys_(keys),
          holder_(std::move(holder)),
          stream_(keys.stream(holder_)),
          whole_(keys.whole(holder_)),
          readers_(keys.readers(holder_)) {}

    asio::awaitable<follow_outcome> run();

  private:
    // The non-blocking first read, on the shared connection: a hit needs no connection of its
    // own. nullopt when the flight goes on.
    asio::awaitable<std::optional<follow_outcome>> first_read(const follow_state& state);
    asio::awaitable<follow_outcome> read_loop(redis_connection& connection,
                                              const follow_state& state);
    // After a read that brought nothing: is the producer still there?
    asio::awaitable<std::optional<follow_outcome>> check_lease(redis_connection& connection);
    // Feeds stream entries ([[id, [field, packed]], …]); true when the flight ended.
    bool feed_entries(reply& entries, bool first);
    bool feed_events(const std::vector<packed_event>& events, bool first);
    // `complete_at_once`: the first read found the whole answer, a hit.
    bool feed_entry(entry_kind kind, std::string value, bool more_follows, bool complete_at_once);
    follow_outcome lost(ops::proxy_errc why);

    fleet& shared_;
    redis_pool& pool_;
    std::shared_ptr<flight> flight_;
    const redis_keys& keys_;
    const std::string holder_;
    const std::string stream_;
    const std::string whole_;
    const std::string readers_;
    std::string last_id_ = "0-0";
    bool fed_ = false;  // the head was published here: clients may have bytes
    bool hit_ = false;  // the first read found the answer complete
    std::string content_type_;
};

follow_outcome follower::lost(ops::proxy_errc why) {
    if (!fed_)
        return follow_outcome::leader_lost;
    flight_->fail(ops::make_error_code(why));  // clients with bytes are cut, never re-fed
    return follow_outcome::ended;
}

asio::awaitable<follow_outcome> follower::run() {
    flight_->adopt_id(holder_);
    auto state = std::make_shared<follow_state>();
    auto ex = co_await asio::this_coro::executor;
    auto cancel = [state, ex] {
        state->cancelled.store(true);
        asio::post(ex, [state] {
            if (state->reading != nullptr)
                state->reading->close();
        });
    };
    flight_->set_canceller(std::move(cancel));
    if (auto outcome = co_await first_read(*state))
        co_return *outcome;
    auto taken = co_await pool_.take();
    if (taken.ec) {
        if (!fed_)
            co_return follow_outcome::unavailable;
        flight_->fail(ops::make_error_code(ops::proxy_errc::upstream_closed));
        co_return follow_outcome::ended;
    }
    state->reading = taken.connection.get();
    if (state->cancelled.load()) {  // while the connection was being taken: nothing closed it
        state->reading = nullptr;
        pool_.give_back(std::move(taken.connection));
        flight_->fail(ops::make_error_code(ops::proxy_errc::flight_cancelled));
        co_return follow_outcome::ended;
    }
    const auto outcome = co_await read_loop(*taken.connection, *state);
    state->reading = nullptr;
    pool_.give_back(std::move(taken.connection));
    co_return outcome;
}

asio::awaitable<std::optional<follow_outcome>> follower::first_read(const follow_state& state) {
    const auto grace = ms_text(grace_for(pool_.config()));
    const std::vector<std::string_view> args{"3",      stream_, whole_,
                                             readers_, grace,   entries_per_read};
    auto r = co_await pool_.eval(first_read_script(), args);
    if (state.cancelled.load()) {
        flight_->fail(ops::make_error_code(ops::proxy_errc::flight_cancelled));
        co_return follow_outcome::ended;
    }
    auto& value = r.value;
    if (r.ec || value.type != reply::kind::array || value.elements.size() != 2 ||
        value.elements[0].type != reply::kind::integer)
        co_return follow_outcome::unavailable;
    bool ended = false;
    if (value.elements[0].integer == 1) {
        std::vector<packed_event> events;
        if (!unpack_events(value.elements[1].text, events)) {
            flight_->fail(ops::make_error_code(ops::proxy_errc::upstream_closed));
            co_return follow_outcome::ended;
        }
        ended = feed_events(events, true);
    } else {
        ended = feed_entries(value.elements[1], true);
    }
    if (!hit_)
        shared_.counters.remote_follows.fetch_add(1, std::memory_order_relaxed);
    if (ended)
        co_return follow_outcome::ended;
    co_return std::nullopt;
}

asio::awaitable<follow_outcome> follower::read_loop(redis_connection& connection,
                                                    const follow_state& state) {
    const auto block =
        std::clamp<milliseconds>(pool_.config().lease / 2, milliseconds(100), milliseconds(1000));
    const auto block_text = ms_text(block);
    const auto timeout = block + pool_.config().command_timeout;
    for (;;) {
        const std::vector<std::string_view> xread{
            "XREAD", "COUNT", entries_per_read, "BLOCK", block_text, "STREAMS", stream_, last_id_};
        auto r = co_await pool_.run_on(connection, xread, timeout, false);
        if (state.cancelled.load()) {
            flight_->fail(ops::make_error_code(ops::proxy_errc::flight_cancelled));
            co_return follow_outcome::ended;
        }
        if (r.ec || r.value.is_error()) {
            if (!fed_)
                co_return follow_outcome::unavailable;
            flight_->fail(ops::make_error_code(ops::proxy_errc::upstream_closed));
            co_return follow_outcome::ended;
        }
        // XREAD's reply: [[stream, entries]], or nil when nothing came.
        if (r.value.is_nil()) {
            if (auto outcome = co_await check_lease(connection))
                co_return *outcome;
            continue;
        }
        if (r.value.elements.empty() || r.value.elements[0].elements.size() < 2) {
            flight_->fail(ops::make_error_code(ops::proxy_errc::upstream_closed));
            co_return follow_outcome::ended;
        }
        if (feed_entries(r.value.elements[0].elements[1], false))
            co_return follow_outcome::ended;
    }
}

asio::awaitable<std::optional<follow_outcome>> follower::check_lease(redis_connection& connection) {
    const std::vector<std::string_view> get{"GET", keys_.lease};
    const auto r = co_await pool_.run_on(connection, get, pool_.config().command_timeout);
    if (r.ec || r.value.is_error()) {
        if (!fed_)
            co_return follow_outcome::unavailable;
        flight_->fail(ops::make_error_code(ops::proxy_errc::upstream_closed));
        co_return follow_outcome::ended;
    }
    if (r.value.is_string() && r.value.text == holder_)
        co_return std::nullopt;  // still producing: a slow upstream
    co_return lost(ops::proxy_errc::upstream_closed);
}

bool follower::feed_entries(reply& entries, bool first) {
    std::vector<packed_event> events;
    std::vector<packed_event> one;
    for (auto& e : entries.elements) {
        if (e.elements.size() != 2 || e.elements[1].elements.size() != 2 ||
            !unpack_events(e.elements[1].elements[1].text, one)) {
            flight_->fail(ops::make_error_code(ops::proxy_errc::upstream_closed));
            return true;
        }
        events.insert(events.end(), one.begin(), one.end());
        last_id_ = e.elements[0].text;
    }
    return feed_events(events, first);
}

// `first`: what the first read found; complete then, the answer is a hit.
bool follower::feed_events(const std::vector<packed_event>& events, bool first) {
    const bool ends = !events.empty() && (events.back().kind == entry_kind::end ||
                                          events.back().kind == entry_kind::failure);
    for (std::size_t i = 0; i < events.size(); ++i) {
        if (feed_entry(events[i].kind, std::string(events[i].value), i + 1 < events.size(),
                       first && ends))
            return true;
    }
    return false;
}

bool follower::feed_entry(entry_kind kind, std::string value, bool more_follows,
                          bool complete_at_once) {
    switch (kind) {
        case entry_kind::head: {
            std::string trace_id;
            auto head = decode_head(value, &trace_id);
            if (!head) {
                flight_->fail(ops::make_error_code(ops::proxy_errc::upstream_protocol_error));
                return true;
            }
            hit_ = complete_at_once;
            content_type_ = content_type_of(head->fields);
            flight_->set_produced_elsewhere(hit_ ? ops::role::hit : ops::role::follower);
            flight_->set_trace_id(std::move(trace_id));
            if (hit_)
                shared_.counters.remote_hits.fetch_add(1, std::memory_order_relaxed);
            flight_->publish_head(std::move(*head), more_follows);
            fed_ = true;
            return false;
        }
        case entry_kind::body:
            if (!fed_) {
                flight_->fail(ops::make_error_code(ops::proxy_errc::upstream_protocol_error));
                return true;
            }
            flight_->append(std::move(value), more_follows);
            return false;
        case entry_kind::end:
            // The producing pod counted these tokens as spent; here they are what this pod's
            // followers and hits saved.
            if (const auto body = flight_->body()) {
                if (auto usage = ops::extract_usage(content_type_, *body))
                    flight_->set_usage(std::move(*usage));
            }
            flight_->complete();
            return true;
        case entry_kind::failure:
            flight_->fail(decode_failure(value));
            return true;
    }
    return false;
}

}  // namespace

asio::awaitable<follow_outcome> follow(fleet& shared, redis_pool& pool, std::shared_ptr<flight> f,
                                       const redis_keys& keys, std::string holder) {
    follower following(shared, pool, std::move(f), keys, std::move(holder));
    co_return co_await following.run();
}

}  // namespace coalescer::cluster
