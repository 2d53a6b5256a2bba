#include "cluster/redis_budget.hpp"

#include "cluster/fleet.hpp"
#include "net/use_tuple.hpp"
#include "upstream/gcra.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <cmath>
#include <random>

namespace coalescer::cluster {
namespace asio = boost::asio;
using upstream::budget_decision;

namespace {

// Milliseconds on Redis's clock, shared by the scripts.
constexpr std::string_view now_lua = R"lua(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
)lua";

// KEYS: rpm, tpm, slots, blocked. ARGV: ms per request (0: no limit), request burst, ms per
// token (0: no limit), token burst, tokens, max concurrent (0: no limit), slot id, lease ms.
// Returns {1, 0} when admitted, else {0, ms until it could be}. Nothing is taken on a refusal.
constexpr std::string_view admit_lua = R"lua(
local blocked = tonumber(redis.call('GET', KEYS[4]) or '0')
if blocked > now then return {0, math.ceil(blocked - now)} end
local maxc = tonumber(ARGV[6])
if maxc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  if redis.call('ZCARD', KEYS[3]) >= maxc then return {0, -1} end
end
local function gcra(key, interval, burst, units)
  local tat = math.max(tonumber(redis.call('GET', key) or '0'), now)
  local nxt = tat + math.min(units, burst) * interval
  return nxt, nxt - now - burst * interval
end
local tpm_next, rpm_next
if tonumber(ARGV[3]) > 0 then
  local over
  tpm_next, over = gcra(KEYS[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]))
  if over > 0.001 then return {0, math.ceil(over)} end
end
if tonumber(ARGV[1]) > 0 then
  local over
  rpm_next, over = gcra(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), 1)
  if over > 0.001 then return {0, math.ceil(over)} end
end
if tpm_next then
  redis.call('SET', KEYS[2], string.format('%.3f', tpm_next), 'PX', math.ceil(tpm_next - now) + 1000)
end
if rpm_next then
  redis.call('SET', KEYS[1], string.format('%.3f', rpm_next), 'PX', math.ceil(rpm_next - now) + 1000)
end
if maxc > 0 then
  redis.call('ZADD', KEYS[3], now + tonumber(ARGV[8]), ARGV[7])
  redis.call('PEXPIRE', KEYS[3], 2 * tonumber(ARGV[8]))
end
return {1, 0}
)lua";

// KEYS: tpm, slots. ARGV: slot id, token delta, ms per token. The slot comes back and the
// reservation becomes what the call used.
constexpr std::string_view release_lua = R"lua(
redis.call('ZREM', KEYS[2], ARGV[1])
local delta = tonumber(ARGV[2]) * tonumber(ARGV[3])
if delta ~= 0 then
  local tat = tonumber(redis.call('GET', KEYS[1]) or '0') + delta
  if tat > now then
    redis.call('SET', KEYS[1], string.format('%.3f', tat), 'PX', math.ceil(tat - now) + 1000)
  else
    redis.call('DEL', KEYS[1])
  end
end
return 1
)lua";

// KEYS: slots. ARGV: lease ms, slot ids… Only slots still there are renewed.
constexpr std::string_view renew_lua = R"lua(
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], 2 * tonumber(ARGV[1]))
return 1
)lua";

// KEYS: blocked. ARGV: ms from now. Keeps the later of two blocks.
constexpr std::string_view block_lua = R"lua(
local untl = now + tonumber(ARGV[1])
if untl > tonumber(redis.call('GET', KEYS[1]) or '0') then
  redis.call('SET', KEYS[1], untl, 'PX', ARGV[1])
end
return 1
)lua";

// Each script once per process, its SHA1 computed once.
template <const std::string_view& Body>
const redis_script& script() {
    static const redis_script made(std::string(now_lua) + std::string(Body));
    return made;
}

std::string random_pod_id() {
    std::random_device rd;
    const auto hi = static_cast<std::uint64_t>(rd()) << 32 | rd();
    char text[17];
    std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(hi));
    return text;
}

std::string number_text(double v) {
    char text[32];
    std::snprintf(text, sizeof text, "%.6f", v);
    return text;
}

bool integer_pair(const reply& r) {
    return r.type == reply::kind::array && r.elements.size() == 2 &&
           r.elements[0].type == reply::kind::integer && r.elements[1].type == reply::kind::integer;
}

}  // namespace

redis_budget::redis_budget(const ops::upstream_config& upstream, const ops::cluster_config& cluster,
                           std::vector<std::unique_ptr<redis_pool>>& pools, breaker& health,
                           const std::vector<asio::any_io_executor>& loops)
    : limits_(*upstream.fleet_limits),
      cluster_(cluster),
      pools_(pools),
      health_(health),
      loops_(loops),
      fallback_(*upstream.fleet_limits, upstream.fleet_limits->fallback_share),
      rpm_key_("coalescer:{budget:" + upstream.name + "}:rpm"),
      tpm_key_("coalescer:{budget:" + upstream.name + "}:tpm"),
      slots_key_("coalescer:{budget:" + upstream.name + "}:slots"),
      blocked_key_("coalescer:{budget:" + upstream.name + "}:blocked"),
      pod_(random_pod_id()),
      held_(loops.size()) {
    if (limits_.max_concurrent != 0) {
        for (std::size_t w = 0; w < loops_.size(); ++w)
            asio::co_spawn(loops_[w], renew_slots(w), asio::detached);
    }
}

std::string redis_budget::slot_id(std::uint64_t lease) const {
    return pod_ + ":" + std::to_string(lease);
}

asio::awaitable<budget_decision> redis_budget::try_admit(std::uint64_t tokens, std::size_t worker) {
    if (const auto blocked = fallback_.blocked_for(); blocked.count() > 0) {
        co_return budget_decision{.retry_in = blocked, .worker = worker};
    }
    if (health_.allows()) {
        bool ok = false;
        auto decision = co_await admit_in_redis(tokens, worker, ok);
        if (ok) {
            falling_back_.store(false, std::memory_order_relaxed);
            co_return decision;
        }
    }
    falling_back_.store(true, std::memory_order_relaxed);
    auto decision = fallback_.admit(tokens);
    decision.worker = worker;
    decision.fallback = true;
    co_return decision;
}

asio::awaitable<budget_decision> redis_budget::admit_in_redis(std::uint64_t tokens,
                                                              std::size_t worker, bool& ok) {
    const double rpm = static_cast<double>(limits_.requests_per_minute);
    const double tpm = static_cast<double>(limits_.tokens_per_minute);
    if (tpm > 0)
        tokens = std::min<std::uint64_t>(tokens, limits_.tokens_per_minute);
    const auto lease = next_lease_.fetch_add(1, std::memory_order_relaxed);
    const auto slot = slot_id(lease);
    const auto ms_per_request = rpm > 0 ? number_text(60000.0 / rpm) : "0";
    const auto request_burst = number_text(rpm > 0 ? upstream::request_burst(rpm) : 1);
    const auto ms_per_token = tpm > 0 ? number_text(60000.0 / tpm) : "0";
    const auto token_burst = number_text(tpm);
    const auto token_text = std::to_string(tokens);
    const auto max_concurrent = std::to_string(limits_.max_concurrent);
    const auto lease_ms = ms_text(cluster_.lease);
    const std::vector<std::string_view> args{
        "4",           rpm_key_,     tpm_key_,    slots_key_, blocked_key_,   ms_per_request,
        request_burst, ms_per_token, token_burst, token_text, max_concurrent, slot,
        lease_ms};
    const auto r = co_await pools_.at(worker)->eval(script<admit_lua>(), args);
    budget_decision out;
    out.worker = worker;
    if (r.ec || !integer_pair(r.value))
        co_return out;
    ok = true;
    if (r.value.elements[0].integer != 1) {
        const auto wait = r.value.elements[1].integer;
        out.retry_in = wait < 0 ? concurrency_poll : std::chrono::milliseconds(wait);
        co_return out;
    }
    out.admitted = true;
    out.lease = lease;
    out.reserved = tokens;
    if (limits_.max_concurrent != 0)
        held_[worker].insert(lease);
    co_return out;
}

void redis_budget::finish(const budget_decision& admitted, std::optional<std::uint64_t> used) {
    if (admitted.fallback) {
        fallback_.finish(admitted, used);
        return;
    }
    const std::int64_t delta =
        used ? static_cast<std::int64_t>(*used) - static_cast<std::int64_t>(admitted.reserved) : 0;
    if (limits_.max_concurrent == 0 && (delta == 0 || limits_.tokens_per_minute == 0))
        return;  // nothing to give back
    asio::co_spawn(loops_.at(admitted.worker), release(admitted, delta), asio::detached);
}

asio::awaitable<void> redis_budget::release(budget_decision admitted, std::int64_t token_delta) {
    held_[admitted.worker].erase(admitted.lease);
    const auto slot = slot_id(admitted.lease);
    const auto delta = std::to_string(token_delta);
    const auto ms_per_token =
        limits_.tokens_per_minute > 0
            ? number_text(60000.0 / static_cast<double>(limits_.tokens_per_minute))
            : std::string("0");
    const std::vector<std::string_view> args{"2", tpm_key_, slots_key_, slot, delta, ms_per_token};
    // Unanswered: the slot's lease lapses by itself, the reservation stands.
    co_await pools_.at(admitted.worker)->eval(script<release_lua>(), args);
}

void redis_budget::block_until(std::chrono::system_clock::time_point until) {
    fallback_.block_until(until);
    const auto ms =
        std::chrono::ceil<std::chrono::milliseconds>(until - std::chrono::system_clock::now());
    if (ms.count() <= 0 || !health_.allows())
        return;
    asio::co_spawn(loops_.front(), publish_block(ms), asio::detached);
}

asio::awaitable<void> redis_budget::publish_block(std::chrono::milliseconds ms) {
    const auto delay = ms_text(ms);
    const std::vector<std::string_view> args{"1", blocked_key_, delay};
    co_await pools_.front()->eval(script<block_lua>(), args);
}

asio::awaitable<void> redis_budget::renew_slots(std::size_t worker) {
    asio::steady_timer timer(co_await asio::this_coro::executor);
    const auto lease_ms = ms_text(cluster_.lease);
    for (;;) {
        timer.expires_after(cluster_.lease / 3);
        const auto [ec] = co_await timer.async_wait(use_tuple);
        if (ec)
            co_return;
        if (held_[worker].empty() || !health_.allows())
            continue;
        std::vector<std::string> ids;
        for (const auto lease : held_[worker])
            ids.push_back(slot_id(lease));
        std::vector<std::string_view> args{"1", slots_key_, lease_ms};
        args.insert(args.end(), ids.begin(), ids.end());
        co_await pools_[worker]->eval(script<renew_lua>(), args);
    }
}

}  // namespace coalescer::cluster
