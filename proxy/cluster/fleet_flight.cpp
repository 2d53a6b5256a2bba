#include "cluster/fleet_flight.hpp"

#include "cluster/stream_codec.hpp"
#include "net/use_tuple.hpp"
#include "ops/errors.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>

#include <algorithm>
#include <atomic>
#include <string>
#include <utility>

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

// Hash tags keep a key's lease and streams in one slot of a Redis Cluster.
struct redis_keys {
    std::string lease;
    std::string stream_prefix;
    std::string stream(const std::string& id) const { return stream_prefix + id; }
};

redis_keys keys_for(const coalesce::flight_key& key) {
    const auto tag = "coalescer:{" + key.hex() + "}:";
    return {tag + "lease", tag + "s:"};
}

std::string ms_text(milliseconds d) {
    return std::to_string(std::max<long long>(d.count(), 1));
}

milliseconds grace_for(const ops::cluster_config& c) {
    return std::max<milliseconds>(3 * c.lease, std::chrono::seconds(10));
}

enum class claim_kind { won, taken, unavailable };
struct claim {
    claim_kind kind = claim_kind::unavailable;
    std::string holder;  // taken: the flight id the lease holds
};

// One round trip: SET NX GET answers nil when it set the key, or the value it found.
asio::awaitable<claim> claim_lease(redis_pool& pool, const redis_keys& keys,
                                   const std::string& id) {
    const auto lease = ms_text(pool.config().lease);
    // No braced list inside a co_await expression: GCC 12 rejects its array.
    const std::vector<std::string_view> set{"SET", keys.lease, id, "NX", "GET", "PX", lease};
    const auto r = co_await pool.run(set);
    if (r.ec || r.value.is_error())
        co_return claim{};
    if (r.value.is_nil())
        co_return claim{claim_kind::won, {}};
    if (!r.value.is_string())
        co_return claim{};
    co_return claim{claim_kind::taken, r.value.text};
}

struct publish_state {
    std::atomic<bool> done{false};
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Producing here: the lease renewed, every event relayed into the stream.

namespace {

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
        b.mode = f.retainable() && result_ttl.count() > 0 ? ms_text(result_ttl) : "0";
        b.final = true;
    } else if (r.state == coalesce::flight_state::failed) {
        b.add(entry_kind::failure, encode_failure(r.failure));
        b.mode = "0";
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
    none.mode = "0";
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
                b.add(entry_kind::head, encode_head(*r.head));
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

asio::awaitable<void> produce_here(fleet& shared, redis_pool& pool, std::shared_ptr<flight> f,
                                   const redis_keys& keys, coalesce::production local) {
    const auto id = f->id();
    auto state = std::make_shared<publish_state>();
    auto ex = co_await asio::this_coro::executor;
    asio::co_spawn(ex, relay_events(shared, pool, f, keys, id, state), asio::detached);
    asio::co_spawn(ex, renew_lease(pool, keys, id, state), asio::detached);
    co_await std::move(local.run);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Following a flight another pod produces.

namespace {

enum class follow_outcome { ended, leader_lost, unavailable };

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
          stream_(keys.stream(holder_)) {}

    asio::awaitable<follow_outcome> run();

  private:
    asio::awaitable<follow_outcome> read_loop(redis_connection& connection,
                                              const follow_state& state);
    // After a read that brought nothing: is the producer still there?
    asio::awaitable<std::optional<follow_outcome>> check_lease(redis_connection& connection);
    // Feeds the entries of one XREAD reply; true when the flight ended.
    bool feed(const reply& streams, bool first);
    // `complete_at_once`: the first read found the whole answer, a hit.
    bool feed_entry(entry_kind kind, std::string value, bool more_follows, bool complete_at_once);
    follow_outcome lost(ops::proxy_errc why);

    fleet& shared_;
    redis_pool& pool_;
    std::shared_ptr<flight> flight_;
    const redis_keys& keys_;
    const std::string holder_;
    const std::string stream_;
    std::string last_id_ = "0-0";
    bool fed_ = false;   // the head was published here: clients may have bytes
    bool first_ = true;  // the first read, which does not block
    bool hit_ = false;   // the first read found the answer complete
};

follow_outcome follower::lost(ops::proxy_errc why) {
    if (!fed_)
        return follow_outcome::leader_lost;
    flight_->fail(ops::make_error_code(why));  // clients with bytes are cut, never re-fed
    return follow_outcome::ended;
}

asio::awaitable<follow_outcome> follower::run() {
    auto taken = co_await pool_.take();
    if (taken.ec)
        co_return follow_outcome::unavailable;
    flight_->adopt_id(holder_);
    auto state = std::make_shared<follow_state>();
    state->reading = taken.connection.get();
    auto ex = co_await asio::this_coro::executor;
    auto cancel = [state, ex] {
        state->cancelled.store(true);
        asio::post(ex, [state] {
            if (state->reading != nullptr)
                state->reading->close();
        });
    };
    flight_->set_canceller(std::move(cancel));
    const auto outcome = co_await read_loop(*taken.connection, *state);
    state->reading = nullptr;
    pool_.give_back(std::move(taken.connection));
    co_return outcome;
}

asio::awaitable<follow_outcome> follower::read_loop(redis_connection& connection,
                                                    const follow_state& state) {
    const auto block =
        std::clamp<milliseconds>(pool_.config().lease / 2, milliseconds(100), milliseconds(1000));
    const auto block_text = ms_text(block);
    const auto timeout = block + pool_.config().command_timeout;
    for (;;) {
        // The first read does not block: what it finds complete was complete before this pod
        // asked (a hit); what arrives later while it waits is followed.
        std::vector<std::string_view> xread{"XREAD", "COUNT", "256"};
        if (!first_) {
            xread.push_back("BLOCK");
            xread.push_back(block_text);
        }
        xread.insert(xread.end(), {"STREAMS", stream_, last_id_});
        const auto r = co_await pool_.run_on(
            connection, xread, first_ ? pool_.config().command_timeout : timeout, false);
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
        const bool first = std::exchange(first_, false);
        const bool ended = !r.value.is_nil() && feed(r.value, first);
        if (first && !hit_)
            shared_.counters.remote_follows.fetch_add(1, std::memory_order_relaxed);
        if (ended)
            co_return follow_outcome::ended;
        if (r.value.is_nil() && !first) {
            if (auto outcome = co_await check_lease(connection))
                co_return *outcome;
        }
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

// XREAD's reply: [[stream, [[id, [field, value, …]], …]]].
bool follower::feed(const reply& streams, bool first) {
    if (streams.elements.empty() || streams.elements[0].elements.size() < 2)
        return false;
    const auto& entries = streams.elements[0].elements[1].elements;
    const bool ends = std::any_of(entries.begin(), entries.end(), [](const reply& e) {
        if (e.elements.size() != 2 || e.elements[1].elements.size() != 4)
            return false;
        const auto kind = kind_of(e.elements[1].elements[1].text);
        return kind == entry_kind::end || kind == entry_kind::failure;
    });
    for (std::size_t i = 0; i < entries.size(); ++i) {
        const auto& e = entries[i];
        if (e.elements.size() != 2 || e.elements[1].elements.size() != 4) {
            flight_->fail(ops::make_error_code(ops::proxy_errc::upstream_closed));
            return true;
        }
        last_id_ = e.elements[0].text;
        const auto& fields = e.elements[1].elements;
        const auto kind = kind_of(fields[1].text);
        if (!kind || fields[0].text != "k" || fields[2].text != "v") {
            flight_->fail(ops::make_error_code(ops::proxy_errc::upstream_closed));
            return true;
        }
        if (feed_entry(*kind, fields[3].text, i + 1 < entries.size(), first && ends))
            return true;
    }
    return false;
}

bool follower::feed_entry(entry_kind kind, std::string value, bool more_follows,
                          bool complete_at_once) {
    switch (kind) {
        case entry_kind::head: {
            auto head = decode_head(value);
            if (!head) {
                flight_->fail(ops::make_error_code(ops::proxy_errc::upstream_protocol_error));
                return true;
            }
            hit_ = complete_at_once;
            flight_->set_produced_elsewhere(hit_ ? ops::role::hit : ops::role::follower);
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
            flight_->complete();
            return true;
        case entry_kind::failure:
            flight_->fail(decode_failure(value));
            return true;
    }
    return false;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

asio::awaitable<void> run_in_fleet(fleet& shared, std::shared_ptr<flight> f,
                                   coalesce::production local) {
    auto& pool = *shared.pools.at(local.worker);
    const auto keys = keys_for(f->key());
    bool taking_over = false;
    for (int attempt = 0; attempt < 3 && shared.health.allows(); ++attempt) {
        const auto claimed = co_await claim_lease(pool, keys, f->id());
        if (claimed.kind == claim_kind::unavailable)
            break;
        if (claimed.kind == claim_kind::won) {
            shared.counters.leases.fetch_add(1, std::memory_order_relaxed);
            if (taking_over)
                shared.counters.takeovers.fetch_add(1, std::memory_order_relaxed);
            co_await produce_here(shared, pool, f, keys, std::move(local));
            co_return;
        }
        follower following(shared, pool, f, keys, claimed.holder);
        const auto outcome = co_await following.run();
        if (outcome == follow_outcome::ended)
            co_return;
        if (outcome == follow_outcome::unavailable)
            break;
        taking_over = true;  // the producer's lease lapsed before any byte reached a client here
        f->adopt_id(shared.ids.next());
    }
    shared.counters.fallbacks.fetch_add(1, std::memory_order_relaxed);
    co_await std::move(local.run);
}

}  // namespace coalescer::cluster
