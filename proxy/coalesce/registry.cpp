#include "coalesce/registry.hpp"

#include <openssl/rand.h>

#include <algorithm>
#include <charconv>
#include <cstdio>

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
    return {max_response_bytes_, max_subscribers_, cancel_orphans_};
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
    const bool keep = ttl_.count() > 0 && f->retainable() && f->body_bytes() <= max_cache_bytes_;
    if (!keep) {
        erase_if_current(f->key(), f.get());
        return;
    }
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
    retained_.push_back({f->key(), f, f->body_bytes(), expires});
    retained_bytes_ += f->body_bytes();
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

void registry::evict_past_budget() {
    while (retained_bytes_ > max_cache_bytes_ && !retained_.empty()) {
        auto victim =
            std::min_element(retained_.begin(), retained_.end(), [](const auto& a, const auto& b) {
                auto fa = a.flight.lock();
                auto fb = b.flight.lock();
                const auto ua = fa ? fa->last_used.load(std::memory_order_relaxed) : 0;
                const auto ub = fb ? fb->last_used.load(std::memory_order_relaxed) : 0;
                return ua < ub;
            });
        if (auto f = victim->flight.lock()) {
            erase_if_current(victim->key, f.get());
        }
        retained_bytes_ -= victim->bytes;
        *victim = std::move(retained_.back());
        retained_.pop_back();
        evictions_.fetch_add(1, std::memory_order_relaxed);
    }
}

void registry::sweep() {
    const auto now = clock::now();
    std::lock_guard retained_lock(retained_mutex_);
    for (std::size_t i = 0; i < retained_.size();) {
        auto& item = retained_[i];
        if (item.expires > now) {
            ++i;
            continue;
        }
        if (auto f = item.flight.lock()) {
            erase_if_current(item.key, f.get());
        }
        retained_bytes_ -= item.bytes;
        item = std::move(retained_.back());
        retained_.pop_back();
    }
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
