#include "coalesce/flight.hpp"

#include "http/head_writer.hpp"

#include <boost/asio/post.hpp>

#include <algorithm>
#include <limits>

namespace coalescer::coalesce {
namespace {

constexpr std::size_t free_slot = std::numeric_limits<std::size_t>::max();

bool finished(flight_state s) noexcept {
    return s == flight_state::complete || s == flight_state::failed;
}

}  // namespace

flight::flight(flight_key key, std::string id, limits lim, flight_owner* owner)
    : key_(key), id_(std::move(id)), limits_(lim), owner_(owner) {}

std::string flight::id() const {
    std::lock_guard lock(mutex_);
    return id_;
}

std::string flight::trace_id() const {
    std::lock_guard lock(mutex_);
    return trace_id_;
}

void flight::set_trace_id(std::string trace_id) {
    std::lock_guard lock(mutex_);
    trace_id_ = std::move(trace_id);
}

void flight::adopt_id(std::string id) {
    std::lock_guard lock(mutex_);
    id_ = std::move(id);
}

ops::role flight::creator_role() const {
    std::lock_guard lock(mutex_);
    return creator_role_;
}

void flight::set_produced_elsewhere(ops::role creator_role) {
    std::lock_guard lock(mutex_);
    creator_role_ = creator_role;
    produced_elsewhere_ = true;
}

bool flight::produced_elsewhere() const {
    std::lock_guard lock(mutex_);
    return produced_elsewhere_;
}

flight::join_result flight::join(bool& joined_complete, std::size_t& slot, bool counted) {
    std::lock_guard lock(mutex_);
    if (state_ == flight_state::failed || cancelled_ || over_limit_) {
        return join_result::closed;
    }
    // Completed but not for keeping: the registry is about to drop it, and until then nobody
    // may take it as a hit.
    if (state_ == flight_state::complete && !retainable_locked()) {
        return join_result::closed;
    }
    if (subscribers_ >= limits_.max_subscribers) {
        return join_result::full;
    }
    joined_complete = state_ == flight_state::complete;
    if (!joined_complete && counted) {
        ++joined_while_live_;
    }
    ++subscribers_;
    if (!free_slots_.empty()) {
        slot = free_slots_.back();
        free_slots_.pop_back();
        cursors_[slot] = 0;
    } else {
        slot = cursors_.size();
        cursors_.push_back(0);
    }
    return join_result::joined;
}

void flight::leave(std::size_t slot) {
    bool cancel_now = false;
    {
        std::lock_guard lock(mutex_);
        if (slot < cursors_.size() && cursors_[slot] != free_slot) {
            cursors_[slot] = free_slot;
            free_slots_.push_back(slot);
            --subscribers_;
        }
        cancel_now = subscribers_ == 0 && !finished(state_) && limits_.cancel_when_orphaned;
        if (over_limit_) {
            release_read_chunks();
        }
    }
    if (cancel_now) {
        cancel_if_orphaned();
    }
}

void flight::cancel_if_orphaned() {
    std::function<void()> canceller;
    {
        std::lock_guard lock(mutex_);
        // A client may have joined since the last one left: it wants the answer.
        if (subscribers_ != 0 || finished(state_) || cancelled_) {
            return;
        }
        cancelled_ = true;
        canceller = std::move(canceller_);
    }
    if (owner_ != nullptr) {
        owner_->forget(*this);
    }
    if (canceller) {
        canceller();
    }
}

void flight::read(std::size_t slot, std::size_t cursor, log_read& out) {
    out.chunks.clear();
    std::lock_guard lock(mutex_);
    out.state = state_;
    if (out.head != head_) {
        out.head = head_;
    }
    out.failure = failure_;
    out.retry_after_seconds = retry_after_seconds_;
    if (slot < cursors_.size()) {
        cursors_[slot] = cursor;
    }
    for (auto i = cursor; i < chunks_.size(); ++i) {
        out.chunks.emplace_back(chunks_[i]);
    }
}

bool flight::park(std::size_t cursor, const std::shared_ptr<waiter>& w) {
    std::lock_guard lock(mutex_);
    if (cursor < chunks_.size() || finished(state_)) {
        return false;
    }
    w->parked = true;
    parked_.push_back(w);
    return true;
}

void flight::unpark(const std::shared_ptr<waiter>& w) {
    std::lock_guard lock(mutex_);
    if (w->parked) {  // woken by its own timer or a hang-up, not by the flight: rare
        w->parked = false;
        std::erase(parked_, w);
    }
}

void flight::publish_head(http::response_head head, bool more_follows) {
    flight_head published{std::move(head), {}};
    published.follower_text = http::serialize_head(published, ops::to_string(role::follower), id_,
                                                   {}, http::framing_for(published, true, true));
    std::unique_lock lock(mutex_);
    head_ = std::make_shared<const flight_head>(std::move(published));
    state_ = flight_state::streaming;
    if (!more_follows) {
        wake_all(lock);
    }
}

void flight::append(std::string bytes, bool more_follows) {
    if (bytes.empty()) {
        return;
    }
    std::unique_lock lock(mutex_);
    body_bytes_ += bytes.size();
    chunks_.push_back(std::move(bytes));
    if (!over_limit_ && body_bytes_ > limits_.max_response_bytes) {
        // Past the bound the flight serves the subscribers it has and nobody else.
        over_limit_ = true;
    }
    if (over_limit_) {
        release_read_chunks();
    }
    if (!more_follows) {
        wake_all(lock);
    }
}

void flight::release_read_chunks() {
    std::size_t lowest = chunks_.size();
    for (std::size_t c : cursors_) {
        if (c != free_slot) {
            lowest = std::min(lowest, c);
        }
    }
    for (; released_upto_ < lowest; ++released_upto_) {
        std::string().swap(chunks_[released_upto_]);
    }
}

void flight::complete() {
    {
        std::unique_lock lock(mutex_);
        if (finished(state_)) {
            return;
        }
        state_ = flight_state::complete;
        completed_at_ = clock::now();
        canceller_ = nullptr;
        wake_all(lock);
    }
    if (owner_ != nullptr) {
        owner_->on_finished(shared_from_this());
    }
}

void flight::fail(boost::system::error_code ec, unsigned retry_after_seconds) {
    {
        std::unique_lock lock(mutex_);
        if (finished(state_)) {
            return;
        }
        state_ = flight_state::failed;
        failure_ = ec;
        retry_after_seconds_ = retry_after_seconds;
        canceller_ = nullptr;
        wake_all(lock);
    }
    if (owner_ != nullptr) {
        owner_->on_finished(shared_from_this());
    }
}

void flight::set_canceller(std::function<void()> cancel) {
    std::lock_guard lock(mutex_);
    if (!finished(state_)) {
        canceller_ = std::move(cancel);
    }
}

void flight::cancel() {
    std::function<void()> canceller;
    {
        std::lock_guard lock(mutex_);
        if (finished(state_) || cancelled_) {
            return;
        }
        cancelled_ = true;
        canceller = std::move(canceller_);
    }
    if (owner_ != nullptr) {
        owner_->forget(*this);
    }
    if (canceller) {
        canceller();
    }
}

bool flight::retainable() const {
    std::lock_guard lock(mutex_);
    return retainable_locked();
}

bool flight::retainable_locked() const {
    return state_ == flight_state::complete && !cancelled_ && !over_limit_ && head_ != nullptr &&
           head_->status >= 200 && head_->status < 300 && !head_->no_store &&
           limits_.retain_results && retained_bytes_locked() <= limits_.max_cache_bytes;
}

std::size_t flight::retained_bytes() const {
    std::lock_guard lock(mutex_);
    return retained_bytes_locked();
}

std::size_t flight::retained_bytes_locked() const {
    std::size_t head = 0;
    if (head_ != nullptr) {
        head = sizeof(flight_head) + head_->reason.size() + head_->fields.size() +
               head_->follower_text.size();
    }
    return sizeof(flight) + id_.size() + body_bytes_ + chunks_.size() * sizeof(std::string) + head;
}

std::size_t flight::joined_while_live() const {
    std::lock_guard lock(mutex_);
    return joined_while_live_;
}

void flight::set_usage(ops::token_usage usage) {
    std::lock_guard lock(mutex_);
    usage_ = std::move(usage);
}

std::optional<std::vector<std::string_view>> flight::body() const {
    std::lock_guard lock(mutex_);
    if (over_limit_ || released_upto_ != 0) {
        return std::nullopt;
    }
    return std::vector<std::string_view>(chunks_.begin(), chunks_.end());
}

std::optional<ops::token_usage> flight::usage() const {
    std::lock_guard lock(mutex_);
    return usage_;
}

std::size_t flight::body_bytes() const {
    std::lock_guard lock(mutex_);
    return body_bytes_;
}

clock::time_point flight::completed_at() const {
    std::lock_guard lock(mutex_);
    return completed_at_;
}

void flight::wake_all(std::unique_lock<std::mutex>& lock) {
    if (parked_.empty()) {
        return;
    }
    std::vector<std::shared_ptr<waiter>> woken;
    woken.swap(parked_);
    for (const auto& w : woken) {
        w->parked = false;
    }
    lock.unlock();
    // One post per executor rather than one per subscriber: with thousands of subscribers
    // spread over a few worker threads this is what keeps fan-out cheap. The sort is stable so
    // each worker wakes its subscribers in the order they parked: the longest-waiting client is
    // answered first, which is what keeps a burst's tail latency down.
    std::stable_sort(woken.begin(), woken.end(), [](const auto& a, const auto& b) {
        return &a->executor.context() < &b->executor.context();
    });
    auto begin = woken.begin();
    while (begin != woken.end()) {
        auto end = std::find_if(begin, woken.end(), [&](const auto& w) {
            return &w->executor.context() != &(*begin)->executor.context();
        });
        std::vector<std::shared_ptr<waiter>> group(std::make_move_iterator(begin),
                                                   std::make_move_iterator(end));
        auto ex = group.front()->executor;
        boost::asio::post(ex, [group = std::move(group)] {
            for (const auto& w : group) {
                w->timer.cancel();
            }
        });
        begin = end;
    }
}

}  // namespace coalescer::coalesce
