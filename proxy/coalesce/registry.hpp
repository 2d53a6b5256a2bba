// The process-wide table of flights by key: a request joins the flight for its key or creates
// it. Completed cacheable flights stay joinable (as hits) for result_ttl, and are evicted
// least-recently-used first past max_cache_bytes. Sharded mutexes keep threads from contending.
#pragma once

#include "coalesce/flight.hpp"
#include "ops/config.hpp"

#include <array>
#include <atomic>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace coalescer::coalesce {

struct join_outcome {
    std::shared_ptr<coalesce::flight> flight;  // null when full
    coalesce::role role = coalesce::role::leader;
    std::size_t slot = 0;
    bool full = false;  // max_subscribers_per_flight reached: 503, never a second call
};

class registry {
  public:
    explicit registry(const ops::coalesce_config& cfg);
    registry(const registry&) = delete;
    registry& operator=(const registry&) = delete;

    // Joins the live or retained flight for `key`, or creates one (role leader): the caller
    // must then start its fetch.
    join_outcome join_or_create(const flight_key& key);

    // A process-unique id for a flight or an unshared exchange (x-coalesce-flight, access log).
    std::string next_id();

    // Called by a flight when it completes or fails: retain it or drop it.
    void on_finished(const std::shared_ptr<flight>& f);
    // Drops the table entry for `f` (failed, cancelled), if it is still the current one.
    void forget(const flight& f);
    // Evicts expired entries; the owner calls it periodically.
    void sweep();
    // Drops every entry, live or retained: at shutdown, before the event loops that the flights'
    // parked subscribers' timers belong to are destroyed.
    void clear();

    // Told, for each shared flight that ends, how many clients joined it while it ran.
    void on_flight_end(std::function<void(std::size_t subscribers)> observer) {
        observer_ = std::move(observer);
    }

    std::size_t live_flights() const noexcept { return live_.load(std::memory_order_relaxed); }
    std::size_t retained_entries() const;
    std::size_t retained_bytes() const;
    std::uint64_t evictions() const noexcept { return evictions_.load(std::memory_order_relaxed); }

  private:
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
    std::atomic<std::uint64_t> next_id_{1};
    std::string id_prefix_;
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
