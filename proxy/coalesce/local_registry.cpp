#include "coalesce/local_registry.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <functional>

namespace coalescer::coalesce {

local_registry::local_registry(const ops::coalesce_config& cfg, flight_ids& ids,
                               std::function<void(std::size_t)> on_flight_end)
    : ttl_(cfg.result_ttl),
      max_cache_bytes_(cfg.max_cache_bytes),
      max_response_bytes_(cfg.max_response_bytes),
      max_subscribers_(cfg.max_subscribers_per_flight),
      cancel_orphans_(cfg.orphan == ops::orphan_policy::cancel),
      ids_(ids),
      observer_(std::move(on_flight_end)) {}

local_registry::shard& local_registry::shard_for(const flight_key& key) {
    return shards_[flight_key_hash{}(key) % shards_.size()];
}

flight::limits local_registry::flight_limits() const {
    return {max_response_bytes_, max_subscribers_, cancel_orphans_, ttl_.count() > 0,
            max_cache_bytes_};
}

std::optional<join_result> local_registry::join_existing(shard& s, const flight_key& key,
                                                         clock::time_point now) {
    auto it = s.map.find(key);
    if (it == s.map.end()) {
        return std::nullopt;
    }
    entry& e = it->second;
    if (!e.retained || now < e.expires) {
        bool joined_complete = false;
        std::size_t slot = 0;
        switch (e.flight->join(joined_complete, slot)) {
            case flight::join_result::joined:
                e.flight->last_used.store(now.time_since_epoch().count(),
                                          std::memory_order_relaxed);
                return join_result{joined_complete ? join_status::hit : join_status::follower,
                                   subscription(e.flight, slot)};
            case flight::join_result::full:
                return join_result{join_status::full, {}};
            case flight::join_result::closed:
                break;  // failed, cancelled or too large: never joinable; replace it
        }
    }
    s.map.erase(it);
    return std::nullopt;
}

join_result local_registry::join(const flight_key& key, flight_producer& producer) {
    if (closed_.load(std::memory_order_relaxed)) {
        return {join_status::closed, {}};
    }
    shard& s = shard_for(key);
    const auto now = clock::now();
    std::shared_ptr<flight> created;
    std::size_t slot = 0;
    {
        std::lock_guard lock(s.mutex);
        if (auto existing = join_existing(s, key, now)) {
            return std::move(*existing);
        }
        created = std::make_shared<flight>(key, ids_.next(), flight_limits(),
                                           static_cast<flight_owner*>(this));
        bool unused = false;
        created->join(unused, slot);
        created->last_used.store(now.time_since_epoch().count(), std::memory_order_relaxed);
        s.map.emplace(key, entry{created, false, {}});
        live_.fetch_add(1, std::memory_order_relaxed);
    }
    // Outside the shard lock: making the production may take other locks.
    auto made = producer.make(created);
    boost::asio::co_spawn(made.executor, std::move(made.run), boost::asio::detached);
    return {join_status::leader, subscription(std::move(created), slot)};
}

void local_registry::on_finished(const std::shared_ptr<flight>& f) {
    live_.fetch_sub(1, std::memory_order_relaxed);
    if (observer_) {
        observer_(f->joined_while_live());
    }
    if (!f->retainable()) {  // the TTL, the cache budget and the answer itself decide
        erase_if_current(f->key(), f.get());
        return;
    }
    const auto bytes = f->retained_bytes();
    const auto expires = f->completed_at() + ttl_;
    std::lock_guard retained_lock(retained_mutex_);
    {
        shard& s = shard_for(f->key());
        std::lock_guard lock(s.mutex);
        auto it = s.map.find(f->key());
        if (it == s.map.end() || it->second.flight != f) {
            return;  // replaced or forgotten meanwhile
        }
        it->second.retained = true;
        it->second.expires = expires;
    }
    const auto item = next_item_++;
    retained_.emplace(item, retained_item{f->key(), f, bytes});
    by_expiry_.emplace_back(expires, item);
    lru_.push_back({f->last_used.load(std::memory_order_relaxed), item});
    std::push_heap(lru_.begin(), lru_.end(), std::greater<>{});
    retained_bytes_ += bytes;
    evict_past_budget();
}

void local_registry::forget(const flight& f) {
    erase_if_current(f.key(), &f);
}

bool local_registry::erase_if_current(const flight_key& key, const flight* f) {
    shard& s = shard_for(key);
    std::lock_guard lock(s.mutex);
    auto it = s.map.find(key);
    if (it == s.map.end() || it->second.flight.get() != f) {
        return false;
    }
    s.map.erase(it);
    return true;
}

void local_registry::drop_retained(std::unordered_map<std::uint64_t, retained_item>::iterator it) {
    if (auto f = it->second.flight.lock()) {
        erase_if_current(it->second.key, f.get());
    }
    retained_bytes_ -= it->second.bytes;
    retained_.erase(it);
}

void local_registry::evict_past_budget() {
    while (retained_bytes_ > max_cache_bytes_ && !lru_.empty()) {
        std::pop_heap(lru_.begin(), lru_.end(), std::greater<>{});
        const lru_mark mark = lru_.back();
        lru_.pop_back();
        auto it = retained_.find(mark.item);
        if (it == retained_.end()) {
            continue;  // expired already
        }
        const auto f = it->second.flight.lock();
        const auto used = f ? f->last_used.load(std::memory_order_relaxed) : mark.last_used;
        if (used > mark.last_used) {  // a hit since it was queued: back in, in its new place
            lru_.push_back({used, mark.item});
            std::push_heap(lru_.begin(), lru_.end(), std::greater<>{});
            continue;
        }
        drop_retained(it);
        evictions_.fetch_add(1, std::memory_order_relaxed);
    }
}

void local_registry::sweep() {
    const auto now = clock::now();
    std::lock_guard retained_lock(retained_mutex_);
    while (!by_expiry_.empty() && by_expiry_.front().first <= now) {
        if (auto it = retained_.find(by_expiry_.front().second); it != retained_.end()) {
            drop_retained(it);
        }
        by_expiry_.pop_front();
    }
    // Marks of expired items stay in the heap until they come up: rebuild it before they
    // outnumber the live ones.
    if (lru_.size() > 2 * retained_.size() + 64) {
        lru_.clear();
        for (const auto& [item, r] : retained_) {
            const auto f = r.flight.lock();
            lru_.push_back({f ? f->last_used.load(std::memory_order_relaxed) : 0, item});
        }
        std::make_heap(lru_.begin(), lru_.end(), std::greater<>{});
    }
}

void local_registry::clear() {
    closed_.store(true, std::memory_order_relaxed);
    std::lock_guard retained_lock(retained_mutex_);
    for (auto& s : shards_) {
        std::unordered_map<flight_key, entry, flight_key_hash> gone;
        {
            std::lock_guard lock(s.mutex);
            gone.swap(s.map);
        }
        // Destroyed outside the shard lock: a flight's destructor may take its own.
    }
    retained_.clear();
    by_expiry_.clear();
    lru_.clear();
    retained_bytes_ = 0;
}

registry_stats local_registry::stats() const {
    registry_stats out;
    out.live_flights = live_.load(std::memory_order_relaxed);
    out.evictions = evictions_.load(std::memory_order_relaxed);
    std::lock_guard lock(retained_mutex_);
    out.retained_entries = retained_.size();
    out.retained_bytes = retained_bytes_;
    return out;
}

}  // namespace coalescer::coalesce
