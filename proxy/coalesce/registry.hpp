// Where a request finds the flight for its key: the interface the forwarder uses, so that a
// registry can be this process's table (local_registry.hpp) or one that also coalesces with
// other replicas, deciding itself whether this process produces a flight or follows one produced
// elsewhere.
#pragma once

#include "coalesce/flight.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>

namespace coalescer::coalesce {

// A client's place in a flight; leaving is automatic.
class subscription {
  public:
    subscription() = default;
    subscription(std::shared_ptr<coalesce::flight> f, std::size_t slot) noexcept
        : flight_(std::move(f)), slot_(slot) {}
    subscription(subscription&& other) noexcept
        : flight_(std::move(other.flight_)), slot_(other.slot_) {}
    subscription& operator=(subscription&& other) noexcept {
        if (this != &other) {
            leave();
            flight_ = std::move(other.flight_);
            slot_ = other.slot_;
        }
        return *this;
    }
    subscription(const subscription&) = delete;
    subscription& operator=(const subscription&) = delete;
    ~subscription() { leave(); }

    explicit operator bool() const noexcept { return flight_ != nullptr; }
    coalesce::flight& flight() const noexcept { return *flight_; }
    std::size_t slot() const noexcept { return slot_; }
    void leave() noexcept {
        if (flight_) {
            flight_->leave(slot_);
            flight_.reset();
        }
    }

  private:
    std::shared_ptr<coalesce::flight> flight_;
    std::size_t slot_ = 0;
};

enum class join_status {
    leader,    // a new flight: its producer was started for it
    follower,  // a flight in progress
    hit,       // a completed flight within result_ttl
    full,      // max_subscribers_per_flight reached: 503, never a second call
    closed,    // the registry takes no more joins (shutting down)
};

struct join_result {
    join_status status = join_status::closed;
    subscription joined;  // set for leader, follower and hit
};

// The upstream exchange that produces a flight, not yet started: a registry may start it at
// once, later (after asking other replicas), or never (another replica produces the flight).
struct production {
    boost::asio::awaitable<void> run;
    boost::asio::any_io_executor executor;  // the worker it runs on
    std::size_t worker = 0;                 // that worker's index
};

class flight_producer {
  public:
    virtual production make(const std::shared_ptr<flight>& f) = 0;
    // The worker the request is handled on, where a production made would run.
    virtual std::size_t worker_index() const noexcept = 0;

  protected:
    ~flight_producer() = default;
};

struct registry_stats {
    std::size_t live_flights = 0;
    std::size_t retained_entries = 0;
    std::size_t retained_bytes = 0;
    std::uint64_t evictions = 0;
};

class flight_registry {
  public:
    virtual ~flight_registry() = default;

    // Joins the flight for `key` (follower, hit), or creates it (leader) and has it produced:
    // by `producer` here, or by whatever else the registry knows of.
    virtual join_result join(const flight_key& key, flight_producer& producer) = 0;
    // Expires what outlived result_ttl; called periodically.
    virtual void sweep() = 0;
    virtual registry_stats stats() const = 0;
    // Drops every flight and refuses later joins: at shutdown, before the event loops the
    // flights' parked subscribers belong to are destroyed.
    virtual void clear() = 0;
};

}  // namespace coalescer::coalesce
