#include "cluster/stream_relay.hpp"

#include "cluster/stream_codec.hpp"
#include "net/use_tuple.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>

#include <atomic>
#include <string>
#include <vector>

namespace coalescer::cluster {

namespace asio = boost::asio;
using boost::system::error_code;
using coalesce::flight;
using std::chrono::milliseconds;

namespace {

// Appends events to the flight's stream only while the lease holds this flight's id, and keeps
// lease and stream alive; the last append also settles them: the answer kept for result_ttl
// (ARGV[4] > 0: the lease keeps naming this flight, so other pods replay it as a hit) or not
// (0: the lease goes, the stream stays a grace period for pods still reading it).
// KEYS: lease, stream. ARGV: flight id, grace ms, lease ms, "-" | keep ms, then kind, value…
constexpr std::string_view append_script = R"lua(
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
for i = 5, #ARGV, 2 do redis.call('XADD', KEYS[2], '*', 'k', ARGV[i], 'v', ARGV[i + 1]) end
local keep = tonumber(ARGV[4])
if keep == nil then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
elseif keep > 0 then
  redis.call('PEXPIRE', KEYS[2], keep)
  redis.call('PEXPIRE', KEYS[1], keep)
else
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  redis.call('DEL', KEYS[1])
end
return 1
)lua";

// KEYS: lease, stream. ARGV: flight id, lease ms, grace ms.
constexpr std::string_view renew_script = R"lua(
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
)lua";

constexpr std::size_t max_entry_bytes = 1024 * 1024;
struct publish_state {
    std::atomic<bool> done{false};
};

asio::awaitable<void> renew_lease(redis_pool& pool, redis_keys keys, std::string id,
                                  std::shared_ptr<publish_state> state) {
    asio::steady_timer timer(co_await asio::this_coro::executor);
    const auto lease = ms_text(pool.config().lease);
    const auto grace = ms_text(grace_for(pool.config()));
    const auto stream = keys.stream(id);
    while (!state->done.load()) {
        timer.expires_after(pool.config().lease / 3);
        co_await timer.async_wait(use_tuple);
        if (state->done.load())
            break;
        const std::vector<std::string_view> renew{"EVAL", renew_script, "2",   keys.lease,
                                                  stream, id,           lease, grace};
        const auto r = co_await pool.run(renew);
        if (!r.ec && r.value.type == reply::kind::integer && r.value.integer == 0)
            break;  // lost: a successor holds the key now
    }
}

// The events of one read of the log, as stream entries.
struct batch {
    std::vector<std::string> values;  // kind, value, kind, value…
    std::string mode = "-";           // see append_script's ARGV[4]
    bool final = false;

    void add(entry_kind kind, std::string value) {
        values.emplace_back(1, static_cast<char>(kind));
        values.push_back(std::move(value));
    }
};

// Consecutive chunks go into one entry, up to max_entry_bytes: appends are then not one command
// per event when events arrive faster than a round trip. Built in place (moving a growing
// string out of a local sets off a GCC 12 -Warray-bounds false positive).
void add_body(batch& b, const std::vector<std::string_view>& chunks) {
    std::size_t open = std::size_t(-1);  // index of the entry being filled
    for (const auto chunk : chunks) {
        if (open == std::size_t(-1) || b.values[open].size() >= max_entry_bytes) {
            b.values.emplace_back(1, static_cast<char>(entry_kind::body));
            b.values.emplace_back();
            open = b.values.size() - 1;
        }
        b.values[open].append(chunk);
    }
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

asio::awaitable<append_outcome> append(redis_pool& pool, const redis_keys& keys,
                                       const std::string& id, const batch& b) {
    const auto grace = ms_text(grace_for(pool.config()));
    const auto lease = ms_text(pool.config().lease);
    const auto stream = keys.stream(id);
    std::vector<std::string_view> args{"EVAL", append_script, "2",   keys.lease, stream,
                                       id,     grace,         lease, b.mode};
    args.insert(args.end(), b.values.begin(), b.values.end());
    const auto r = co_await pool.run(args);
    if (r.ec || r.value.type != reply::kind::integer)
        co_return append_outcome::failed;
    co_return r.value.integer == 1 ? append_outcome::appended : append_outcome::fenced;
}

// An append failed (Redis slow or gone): the stream now misses events, so no pod may go on
// following it. Dropping the lease (if Redis answers again) tells them at once; otherwise it
// lapses, unrenewed, within `lease`. Either way pods whose clients have bytes cut them, and the
// others take over.
asio::awaitable<void> give_up_lease(redis_pool& pool, const redis_keys& keys,
                                    const std::string& id) {
    batch none;
    none.mode.assign(1, '0');
    co_await append(pool, keys, id, none);
}

// Waits until the flight's log grows past `cursor` or the flight ends.
asio::awaitable<void> wait_for_more(flight& f, std::size_t cursor,
                                    const std::shared_ptr<coalesce::waiter>& w) {
    if (f.park(cursor, w)) {
        w->timer.expires_at(coalesce::clock::time_point::max());  // woken by a cancel only
        co_await w->timer.async_wait(use_tuple);
    }
    f.unpark(w);
}

asio::awaitable<void> relay_events(fleet& shared, redis_pool& pool, std::shared_ptr<flight> f,
                                   redis_keys keys, std::string id,
                                   std::shared_ptr<publish_state> state) {
    bool complete = false;
    std::size_t slot = 0;
    if (f->join(complete, slot, false) == flight::join_result::joined) {
        auto w = std::make_shared<coalesce::waiter>(co_await asio::this_coro::executor);
        std::size_t cursor = 0;
        bool head_sent = false;
        for (;;) {
            coalesce::log_read r;
            f->read(slot, cursor, r);
            batch b;
            if (!head_sent && r.head) {
                b.add(entry_kind::head, encode_head(*r.head, f->trace_id()));
                head_sent = true;
            }
            add_body(b, r.chunks);
            cursor += r.chunks.size();
            add_end(b, r, *f, shared.result_ttl);
            if (!b.values.empty()) {
                const auto outcome = co_await append(pool, keys, id, b);
                if (outcome == append_outcome::fenced)
                    shared.counters.fenced_appends.fetch_add(1, std::memory_order_relaxed);
                if (outcome == append_outcome::failed)
                    co_await give_up_lease(pool, keys, id);
                if (outcome != append_outcome::appended)
                    break;  // the clients here still get it all: only the fleet lost it
            }
            if (b.final)
                break;
            co_await wait_for_more(*f, cursor, w);
        }
        f->leave(slot);
    }
    state->done.store(true);
}

}  // namespace

asio::awaitable<void> produce_here(fleet& shared, redis_pool& pool, std::shared_ptr<flight> f,
                                   const redis_keys& keys, coalesce::production local) {
    const auto id = f->id();
    auto state = std::make_shared<publish_state>();
    auto ex = co_await asio::this_coro::executor;
    asio::co_spawn(ex, relay_events(shared, pool, f, keys, id, state), asio::detached);
    asio::co_spawn(ex, renew_lease(pool, keys, id, state), asio::detached);
    co_await std::move(local.run);
}

}  // namespace coalescer::cluster
