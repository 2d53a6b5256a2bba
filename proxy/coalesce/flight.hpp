// A flight: one upstream exchange for one coalesce key. It owns the response head and an
// append-only log of body bytes; every client with that key subscribes and replays the log
// from byte 0 at its own pace. The producer (the upstream fetch, on one worker thread) and the
// subscribers (on any worker thread) meet under one small mutex; a subscriber that has caught
// up parks a waiter, which the producer wakes by posting to the subscriber's own executor.
#pragma once

#include "coalesce/flight_key.hpp"
#include "http/response_head.hpp"
#include "ops/role.hpp"
#include "ops/token_usage.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/system/error_code.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace coalescer::coalesce {

using clock = std::chrono::steady_clock;

// The head a flight publishes: the answer's, and the text most subscribers send (a follower on
// a keep-alive HTTP/1.1 connection), serialized once for all of them.
struct flight_head : http::response_head {
    std::string follower_text;
};

enum class flight_state { pending, streaming, complete, failed };

using ops::role;

// A parked subscriber. Shared with the flight while parked; the flight wakes it by posting to
// `executor`, which cancels `timer` there (timers are not thread-safe).
struct waiter {
    explicit waiter(boost::asio::any_io_executor ex) : executor(ex), timer(ex) {}
    boost::asio::any_io_executor executor;
    boost::asio::steady_timer timer;
    bool parked = false;  // in the flight's list; guarded by the flight's mutex
};

// What a subscriber gets from one read of the log.
struct log_read {
    flight_state state = flight_state::pending;
    std::shared_ptr<const flight_head> head;  // set once the head arrived
    // From the cursor on. The bytes stay valid while the reader holds the flight and has not
    // read past them: chunks are freed only below every subscriber's cursor.
    std::vector<std::string_view> chunks;
    boost::system::error_code failure;  // when failed
    unsigned retry_after_seconds = 0;   // the failure's own Retry-After, 0 = the usual
};

class flight;

// Where a flight reports its end: the registry that holds it.
class flight_owner {
  public:
    // It completed or failed: retain it or drop it.
    virtual void on_finished(const std::shared_ptr<flight>& f) = 0;
    // It was cancelled: drop its entry if it is still the current one.
    virtual void forget(const flight& f) = 0;

  protected:
    ~flight_owner() = default;
};

class flight : public std::enable_shared_from_this<flight> {
  public:
    struct limits {
        std::size_t max_response_bytes;
        std::size_t max_subscribers;
        bool cancel_when_orphaned;
        bool retain_results = true;  // result_ttl > 0
        std::size_t max_cache_bytes = std::size_t(-1);
    };

    flight(flight_key key, std::string id, limits lim, flight_owner* owner);
    flight(const flight&) = delete;
    flight& operator=(const flight&) = delete;

    const flight_key& key() const noexcept { return key_; }
    // The id every client of this flight sees (x-coalesce-flight). A registry that follows a
    // flight produced by another replica adopts that one's id, before the head is published.
    std::string id() const;
    void adopt_id(std::string id);
    // The W3C trace id of the request whose upstream call this flight is ("" when it carried
    // none): set by the producer that makes the call, adopted from another replica's stream.
    std::string trace_id() const;
    void set_trace_id(std::string trace_id);
    // The role a client that created this flight here reports: leader, unless the registry
    // found it produced by another replica (follower, or hit when it was already complete).
    ops::role creator_role() const;
    void set_produced_elsewhere(ops::role creator_role);
    bool produced_elsewhere() const;

    // --- Subscribers (any thread) ---
    enum class join_result { joined, full, closed };
    // Adds a subscriber unless the flight failed, was cancelled, outgrew its memory bound,
    // completed with an answer that will not be retained (5xx, no-store, Set-Cookie, …), or has
    // max_subscribers. `joined_complete` tells a hit from a follower; `slot` names the
    // subscriber in later calls.
    // `counted`: false for a reader that is no client (a registry relaying the flight to other
    // replicas), left out of joined_while_live().
    join_result join(bool& joined_complete, std::size_t& slot, bool counted = true);
    // Removes a subscriber; the last one leaving an unfinished flight may cancel it (with
    // orphan: cancel, and only if nobody joined in between).
    void leave(std::size_t slot);
    // Reads the log from `cursor` (a chunk index). Past max_response_bytes the flight frees the
    // chunks every subscriber has read, so the cursor is also recorded for `slot`.
    void read(std::size_t slot, std::size_t cursor, log_read& out);
    // Parks `w` until the log grows past `cursor` or the flight ends. Returns false (and does not
    // park) when that already happened.
    bool park(std::size_t cursor, const std::shared_ptr<waiter>& w);
    void unpark(const std::shared_ptr<waiter>& w);

    // --- The producer (the fetch's thread) ---
    // `more_follows`: the producer appends or ends the flight right after this call, without
    // waiting; subscribers are woken once for all of it, so each writes once (a JSON answer
    // usually arrives whole with its head).
    void publish_head(http::response_head head, bool more_follows = false);
    void append(std::string bytes, bool more_follows = false);
    void complete();
    // `retry_after_seconds`: what clients are told to wait (0: the error's usual).
    void fail(boost::system::error_code ec, unsigned retry_after_seconds = 0);
    // Lets the producer be cancelled from another thread (orphan: cancel, shutdown).
    void set_canceller(std::function<void()> cancel);
    void cancel();

    // --- Accounting ---
    std::size_t joined_while_live() const;  // leader + followers
    std::atomic<int> attempts{0};           // upstream attempts made for this flight
    // Token usage of the upstream response, set by the producer before complete(): what a
    // follower or hit is credited with saving.
    void set_usage(ops::token_usage usage);
    // The whole body, or nullopt once it outgrew max_response_bytes (subscribers free what they
    // have all read, at any moment, from any thread). The producer calls it after its last
    // append; the views stay valid while the flight lives.
    std::optional<std::vector<std::string_view>> body() const;
    std::optional<ops::token_usage> usage() const;

    // --- Retention (the registry) ---
    bool retainable() const;
    std::size_t body_bytes() const;
    // What retaining it costs: body, head and bookkeeping.
    std::size_t retained_bytes() const;
    clock::time_point completed_at() const;
    std::atomic<clock::rep> last_used{0};

  private:
    void wake_all(std::unique_lock<std::mutex>& lock);
    void release_read_chunks();
    bool retainable_locked() const;
    std::size_t retained_bytes_locked() const;
    // Cancels the flight if it is still unfinished and nobody subscribes.
    void cancel_if_orphaned();

    const flight_key key_;
    std::string id_;        // written by the producer before the head, under the mutex
    std::string trace_id_;  // under the mutex
    const limits limits_;
    flight_owner* const owner_;

    mutable std::mutex mutex_;
    flight_state state_ = flight_state::pending;
    bool over_limit_ = false;
    bool cancelled_ = false;
    std::shared_ptr<const flight_head> head_;
    std::deque<std::string> chunks_;  // append-only: elements never move (deque push_back)
    std::size_t body_bytes_ = 0;
    boost::system::error_code failure_;
    unsigned retry_after_seconds_ = 0;
    std::size_t subscribers_ = 0;
    std::vector<std::size_t> cursors_;  // by slot; npos = slot free
    std::vector<std::size_t> free_slots_;
    std::size_t released_upto_ = 0;  // chunks below this index were freed
    std::vector<std::shared_ptr<waiter>> parked_;
    std::function<void()> canceller_;
    clock::time_point completed_at_{};
    std::size_t joined_while_live_ = 0;
    std::optional<ops::token_usage> usage_;
    ops::role creator_role_ = ops::role::leader;
    bool produced_elsewhere_ = false;
};

}  // namespace coalescer::coalesce
