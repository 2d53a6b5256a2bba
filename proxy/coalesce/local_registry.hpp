// This process's table of flights by key: a request joins the flight for its key or creates it
// (and has it produced here). Completed cacheable flights stay joinable (as hits) for
// result_ttl, and are evicted least-recently-used first past max_cache_bytes. Sharded mutexes
// keep threads from contending.
#pragma once

#include "coalesce/flight.hpp"
#include "coalesce/flight_id.hpp"
#include "coalesce/registry.hpp"
#include "ops/config.hpp"

#include <array>
#include <atomic>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <vector>

namespace coalescer::coalesce {

class local_registry final : public flight_registry, private flight_owner {
  public:
    // `on_flight_end` is told, for each shared flight that ends, how many clients joined it
    // while it ran.
    local_registry(const ops::coalesce_config& cfg, flight_ids& ids,
                   std::function<void(std::size_t subscribers)> on_flight_end = {});
    local_registry(const local_registry&) = delete;
    local_registry& operator=(const local_registry&) = delete;

    join_result join(const flight_key& key, flight_producer& producer) override;
    void sweep() override;
    registry_stats stats() const override;
    void clear() override;

    std::size_t live_flights() const noexcept { return live_.load(std::memory_order_relaxed); }

  private:
    // flight_owner: a flight completed or failed (retain it or drop it), or was cancelled.
    void on_finished(const std::shared_ptr<flight>& f) override;
    void forget(const flight& f) override;

    struct entry {
        std::shared_ptr<coalesce::flight> flight;
        bool retained = false;
        clock::time_point expires{};
    };
    struct shard {
        mutable std::mutex mutex;
        std::unordered_map<flight_key, entry, flight_key_hash> map;
    };
    struct retained_item {
        flight_key key;
        std::weak_ptr<coalesce::flight> flight;
        std::size_t bytes;
    };
    // Where an item stood when it was queued for eviction: by its last use then.
    struct lru_mark {
        clock::rep last_used;
        std::uint64_t item;
        bool operator>(const lru_mark& other) const noexcept { return last_used > other.last_used; }
    };

    shard& shard_for(const flight_key& key);
    // The live or retained flight for `key` joined, or nullopt when a new one is needed.
    std::optional<join_result> join_existing(shard& s, const flight_key& key,
                                             clock::time_point now);

    flight::limits flight_limits() const;
    void evict_past_budget();
    void drop_retained(std::unordered_map<std::uint64_t, retained_item>::iterator it);
    bool erase_if_current(const flight_key& key, const flight* f);

    const clock::duration ttl_;
    const std::size_t max_cache_bytes_;
    const std::size_t max_response_bytes_;
    const std::size_t max_subscribers_;
    const bool cancel_orphans_;
    std::array<shard, 32> shards_;
    flight_ids& ids_;
    std::atomic<bool> closed_{false};
    std::atomic<std::size_t> live_{0};
    std::atomic<std::uint64_t> evictions_{0};

    std::function<void(std::size_t)> observer_;
    // Retained flights, by a sequence number. Expiry goes in completion order (the TTL is the
    // same for all), eviction by a min-heap of last use: a hit only stores its time in the
    // flight; the heap learns of it when the item comes up for eviction and goes back in with
    // its newer time. Entries of items already gone are skipped when they come up.
    mutable std::mutex retained_mutex_;  // order: retained_mutex_ → shard mutex → flight mutex
    std::unordered_map<std::uint64_t, retained_item> retained_;
    std::deque<std::pair<clock::time_point, std::uint64_t>> by_expiry_;
    std::vector<lru_mark> lru_;  // a heap, least recently used on top
    std::uint64_t next_item_ = 0;
    std::size_t retained_bytes_ = 0;
};

}  // namespace coalescer::coalesce
