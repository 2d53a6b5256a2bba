#include "coalesce/registry.hpp"

#include <openssl/rand.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <functional>

namespace coalescer::coalesce {

registry::registry(const ops::coalesce_config& cfg)
    : ttl_(cfg.result_ttl),
      max_cache_bytes_(cfg.max_cache_bytes),
      max_response_bytes_(cfg.max_response_bytes),
      max_subscribers_(cfg.max_subscribers_per_flight),
      cancel_orphans_(cfg.orphan == ops::orphan_policy::cancel) {
    unsigned char random[4] = {};
    RAND_bytes(random, sizeof random);
    char text[9];
    std::snprintf(text, sizeof text, "%02x%02x%02x%02x", random[0], random[1], random[2],
                  random[3]);
    id_prefix_ = text;
}

registry::shard& registry::shard_for(const flight_key& key) {
    return shards_[flight_key_hash{}(key) % shards_.size()];
}

std::string registry::next_id() {
    // Every pass-through request takes one: to_chars rather than a printf format parse, and no
    // heap for the usual short id.
    const auto n = next_id_.fetch_add(1, std::memory_order_relaxed);
    char text[32];
    auto* at = std::copy(id_prefix_.begin(), id_prefix_.end(), std::begin(text));
    *at++ = '-';
    at = std::to_chars(at, std::end(text), n, 16).ptr;
    return std::string(std::begin(text), at);
}

flight::limits registry::flight_limits() const {
    return {max_response_bytes_, max_subscribers_, cancel_orphans_, ttl_.count() > 0,
            max_cache_bytes_};
}

join_outcome registry::join_or_create(const flight_key& key) {
    shard& s = shard_for(key);
    const auto now = clock::now();
    std::lock_guard lock(s.mutex);
    if (auto it = s.map.find(key); it != s.map.end()) {
        entry& e = it->second;
        if (!e.retained || now < e.expires) {
            bool joined_complete = false;
            std::size_t slot = 0;
            switch (e.flight->join(joined_complete, slot)) {
                case flight::join_result::joined:
                    e.flight->last_used.store(now.time_since_epoch().count(),
                                              std::memory_order_relaxed);
                    return {e.flight, joined_complete ? role::hit : role::follower, slot, false};
                case flight::join_result::full:
                    return {nullptr, role::follower, 0, true};
                case flight::join_result::closed:
                    break;  // failed, cancelled or too large: never joinable; replace it
            }
        }
        s.map.erase(it);
    }
    auto f = std::make_shared<flight>(key, next_id(), flight_limits(), this);
    bool unused = false;
    std::size_t slot = 0;
    f->join(unused, slot);
    f->last_used.store(now.time_since_epoch().count(), std::memory_order_relaxed);
    s.map.emplace(key, entry{f, false, {}});
    live_.fetch_add(1, std::memory_order_relaxed);
    return {f, role::leader, slot, false};
}

void registry::on_finished(const std::shared_ptr<flight>& f) {
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

void registry::forget(const flight& f) {
    erase_if_current(f.key(), &f);
}

bool registry::erase_if_current(const flight_key& key, const flight* f) {
    shard& s = shard_for(key);
    std::lock_guard lock(s.mutex);
    auto it = s.map.find(key);
    if (it == s.map.end() || it->second.flight.get() != f) {
        return false;
    }
    s.map.erase(it);
    return true;
}

void registry::drop_retained(std::unordered_map<std::uint64_t, retained_item>::iterator it) {
    if (auto f = it->second.flight.lock()) {
        erase_if_current(it->second.key, f.get());
    }
    retained_bytes_ -= it->second.bytes;
    retained_.erase(it);
}

void registry::evict_past_budget() {
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

void registry::sweep() {
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

void registry::clear() {
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

std::size_t registry::retained_entries() const {
    std::lock_guard lock(retained_mutex_);
    return retained_.size();
}

std::size_t registry::retained_bytes() const {
    std::lock_guard lock(retained_mutex_);
    return retained_bytes_;
}

}  // namespace coalescer::coalesce
