#include "cluster/stream_relay.hpp"

#include "cluster/stream_codec.hpp"
#include "net/use_tuple.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>

#include <algorithm>
#include <deque>
#include <string>
#include <vector>

namespace coalescer::cluster {

namespace asio = boost::asio;
using boost::system::error_code;
using coalesce::flight;
using std::chrono::milliseconds;

namespace {

// Appends events to the flight only while the lease holds this flight's id, and keeps lease
// and stream alive; the last append also settles them: the answer kept for result_ttl
// (ARGV[4] > 0: the lease keeps naming this flight, so other pods replay it as a hit) or not
// (0: the lease goes, the stream stays a grace period for pods still reading it). A whole
// answer in one append (ARGV[5] = 1) that no pod reads yet is kept as a string instead of a
// stream: a pod that comes later finds it there (first_read in stream_follower.cpp).
// Appends go out without waiting for the previous one's reply; each says how long the stream
// is before it (ARGV[7], "-" to skip the check), so one that follows a lost append adds nothing
// (2): a stream never has a hole.
// KEYS: lease, stream, whole, readers. ARGV: flight id, grace ms, lease ms, "-" | keep ms,
// whole 1 | 0, the packed events ("" for none), entries before it | "-".
const redis_script& append_script() {
    static const redis_script script(R"lua(
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[7] ~= '-' and redis.call('XLEN', KEYS[2]) ~= tonumber(ARGV[7]) then return 2 end
local keep = tonumber(ARGV[4])
local kept = ARGV[2]
if keep ~= nil and keep > 0 then kept = keep end
if ARGV[5] == '1' and redis.call('EXISTS', KEYS[4]) == 0 then
  redis.call('SET', KEYS[3], ARGV[6], 'PX', kept)
else
  if ARGV[6] ~= '' then redis.call('XADD', KEYS[2], '*', 'a', ARGV[6]) end
  redis.call('PEXPIRE', KEYS[2], kept)
end
if keep == nil then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
elseif keep > 0 then
  redis.call('PEXPIRE', KEYS[1], keep)
else
  redis.call('DEL', KEYS[1])
end
return 1
)lua");
    return script;
}

// KEYS: lease, stream, readers. ARGV: flight id, lease ms, grace ms.
const redis_script& renew_script() {
    static const redis_script script(R"lua(
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[3], ARGV[3])
return 1
)lua");
    return script;
}

// Body bytes one append carries at most (a single larger chunk goes whole): events that came
// faster than a round trip share an append, yet a burst of them reaches the other pods in
// pieces they can pass on while the rest is still on its way, not after all of it.
constexpr std::size_t max_append_bytes = 64 * 1024;

// One flight's keys in Redis and the durations its scripts are given, made once per flight, not
// once per append.
struct flight_names {
    flight_names(const redis_pool& pool, const redis_keys& keys, std::string flight_id)
        : lease_key(keys.lease),
          id(std::move(flight_id)),
          stream(keys.stream(id)),
          whole(keys.whole(id)),
          readers(keys.readers(id)),
          lease_ms(ms_text(pool.config().lease)),
          grace_ms(ms_text(grace_for(pool.config()))) {}
    std::string lease_key, id, stream, whole, readers, lease_ms, grace_ms;
};

enum class renew_outcome { renewed, lost, failed };

// Only needed when nothing was appended for a while: every append renews the lease as well.
asio::awaitable<renew_outcome> renew(redis_pool& pool, const flight_names& names) {
    const std::vector<std::string_view> args{"3",           names.lease_key, names.stream,
                                             names.readers, names.id,        names.lease_ms,
                                             names.grace_ms};
    const auto r = co_await pool.eval(renew_script(), args);
    if (r.ec || r.value.type != reply::kind::integer)
        co_return renew_outcome::failed;
    co_return r.value.integer == 1 ? renew_outcome::renewed : renew_outcome::lost;
}

// The events of one read of the log, packed for one append.
struct batch {
    std::string packed;      // pack_event's format
    std::string mode = "-";  // see append_script's ARGV[4]
    bool final = false;
    bool whole = false;  // final, and nothing appended before: the whole answer

    void add(entry_kind kind, std::string_view value) { pack_event(packed, kind, value); }
};

// Consecutive chunks go into one event, up to max_append_bytes; returns how many it took.
std::size_t add_body(batch& b, const std::vector<std::string_view>& chunks) {
    if (chunks.empty())
        return 0;
    std::size_t taken = 0;
    std::size_t size = 0;
    while (taken < chunks.size() && (taken == 0 || size + chunks[taken].size() <= max_append_bytes))
        size += chunks[taken++].size();
    b.packed += static_cast<char>(entry_kind::body);
    b.packed += std::to_string(size);
    b.packed += ':';
    for (std::size_t i = 0; i < taken; ++i)
        b.packed += chunks[i];
    return taken;
}

void add_end(batch& b, const coalesce::log_read& r, const flight& f, ops::duration result_ttl) {
    if (r.state == coalesce::flight_state::complete) {
        b.add(entry_kind::end, {});
        if (f.retainable() && result_ttl.count() > 0)
            b.mode = ms_text(result_ttl);
        else
            b.mode.assign(1, '0');  // not from a literal: GCC 12 -Wstringop-overflow misfires
        b.final = true;
    } else if (r.state == coalesce::flight_state::failed) {
        b.add(entry_kind::failure, encode_failure(r.failure));
        b.mode.assign(1, '0');
        b.final = true;
    }
}

enum class append_outcome { appended, fenced, failed };

// One append on its way: what it sends stays here until its reply is taken (Redis lacking the
// script, it goes again with the script's text). Never moved: `args` points into it.
struct append_call {
    append_call(redis_pool& pool, const flight_names& names, batch events,
                std::string entries_before)
        : content(std::move(events)),
          before(std::move(entries_before)),
          args{"4",
               names.lease_key,
               names.stream,
               names.whole,
               names.readers,
               names.id,
               names.grace_ms,
               names.lease_ms,
               content.mode,
               content.whole ? "1" : "0",
               content.packed,
               before},
          sent(pool.send_eval(append_script(), args, redis_mux::urgency::background)) {}
    append_call(const append_call&) = delete;
    append_call& operator=(const append_call&) = delete;

    batch content;
    std::string before;
    std::vector<std::string_view> args;
    redis_pool::sent_script sent;
};

asio::awaitable<append_outcome> outcome_of(redis_pool& pool, append_call& call) {
    const auto r = co_await pool.eval_reply(std::move(call.sent));
    if (r.ec || r.value.type != reply::kind::integer)
        co_return append_outcome::failed;
    if (r.value.integer == 0)
        co_return append_outcome::fenced;
    co_return r.value.integer == 1 ? append_outcome::appended : append_outcome::failed;
}

// An append failed (Redis slow or gone): the stream now misses events, so no pod may go on
// following it. Dropping the lease (if Redis answers again) tells them at once; otherwise it
// lapses, unrenewed, within `lease`. Either way pods whose clients have bytes cut them, and the
// others take over.
asio::awaitable<void> give_up_lease(redis_pool& pool, const flight_names& names) {
    batch none;
    none.mode.assign(1, '0');
    append_call call(pool, names, std::move(none), "-");
    co_await outcome_of(pool, call);
}

// Waits until the flight's log grows past `cursor`, the flight ends, or `quiet` passes with
// neither (false: time to renew the lease).
asio::awaitable<bool> wait_for_more(flight& f, std::size_t cursor,
                                    const std::shared_ptr<coalesce::waiter>& w,
                                    std::chrono::milliseconds quiet) {
    bool woken = true;
    if (f.park(cursor, w)) {
        w->timer.expires_after(quiet);
        auto [ec] = co_await w->timer.async_wait(use_tuple);
        woken = ec == asio::error::operation_aborted;
    }
    f.unpark(w);
    co_return woken;
}

// False when the lease was lost while the flight was quiet.
asio::awaitable<bool> wait_or_renew(fleet& shared, redis_pool& pool, const flight_names& names,
                                    flight& f, std::size_t cursor,
                                    const std::shared_ptr<coalesce::waiter>& w) {
    const auto quiet = std::chrono::duration_cast<milliseconds>(pool.config().lease / 3);
    while (!co_await wait_for_more(f, cursor, w, quiet)) {
        if (co_await renew(pool, names) == renew_outcome::lost) {
            shared.counters.fenced_appends.fetch_add(1, std::memory_order_relaxed);
            co_return false;
        }
    }
    co_return true;
}

// Appends sent before the oldest one's reply is awaited, while the log holds more than one
// append's worth: a burst of events reaches the other pods in a round trip or two, not one per
// 64 KiB. Eight hold a typical long answer (400-500 KiB) at once; what they copy is bounded by
// max_response_bytes like the log itself.
constexpr std::size_t max_appends_in_flight = 8;

// Takes the oldest append's reply; false when the relay stops (fenced off, failed, or done).
asio::awaitable<bool> settle_oldest(fleet& shared, redis_pool& pool, const flight_names& names,
                                    std::deque<append_call>& in_flight) {
    const auto outcome = co_await outcome_of(pool, in_flight.front());
    const bool final = in_flight.front().content.final;
    in_flight.pop_front();
    if (outcome == append_outcome::fenced)
        shared.counters.fenced_appends.fetch_add(1, std::memory_order_relaxed);
    if (outcome == append_outcome::failed)
        co_await give_up_lease(pool, names);
    // Stopping, the clients here still get it all: only the fleet lost it.
    co_return outcome == append_outcome::appended && !final;
}

// Relays the flight's events as they come, and renews the lease whenever lease/3 passes
// without an append (which renews it too).
asio::awaitable<void> relay_events(fleet& shared, redis_pool& pool, std::shared_ptr<flight> f,
                                   redis_keys keys, std::string id) {
    bool complete = false;
    std::size_t slot = 0;
    if (f->join(complete, slot, false) != flight::join_result::joined)
        co_return;
    auto w = std::make_shared<coalesce::waiter>(co_await asio::this_coro::executor);
    const flight_names names(pool, keys, std::move(id));
    std::deque<append_call> in_flight;  // oldest first
    std::size_t cursor = 0;
    std::size_t sent = 0;  // appends sent with events: the stream's length once they land
    bool head_sent = false;
    for (bool relaying = true; relaying;) {
        coalesce::log_read r;
        f->read(slot, cursor, r);
        batch b;
        std::size_t size = 128 + (r.head && !head_sent ? r.head->fields.size() : 0);
        for (const auto chunk : r.chunks)
            size += chunk.size();
        b.packed.reserve(std::min(size, max_append_bytes + 4096));
        if (!head_sent && r.head) {
            b.add(entry_kind::head, encode_head(*r.head, f->trace_id()));
            head_sent = true;
        }
        const auto taken = add_body(b, r.chunks);
        cursor += taken;
        const bool caught_up = taken == r.chunks.size();
        if (caught_up)
            add_end(b, r, *f, shared.result_ttl);
        b.whole = b.final && sent == 0;
        if (!b.packed.empty())
            in_flight.emplace_back(pool, names, std::move(b), std::to_string(sent++));
        while (relaying && !in_flight.empty() &&
               (caught_up || in_flight.size() >= max_appends_in_flight))
            relaying = co_await settle_oldest(shared, pool, names, in_flight);
        if (relaying && caught_up)
            relaying = co_await wait_or_renew(shared, pool, names, *f, cursor, w);
    }
    f->leave(slot);
}

}  // namespace

asio::awaitable<void> produce_here(fleet& shared, redis_pool& pool, std::shared_ptr<flight> f,
                                   const redis_keys& keys, coalesce::production local) {
    auto ex = co_await asio::this_coro::executor;
    asio::co_spawn(ex, relay_events(shared, pool, f, keys, f->id()), asio::detached);
    co_await std::move(local.run);
}

}  // namespace coalescer::cluster
