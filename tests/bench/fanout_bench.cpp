// Fan-out: one streamed (SSE) flight delivered to N subscribers at once.
//
//   fanout_bench [--subscribers 100,1000,10000] [--runs 1] [--floor] [--chunks 20]
//                [--interval-ms 50] [--latency-ms 1000] [--timeout-s 60] [--client-threads 0]
//                [--workers 2] [--per-event]
//
// For each N: the mock provider and the sidecar (fresh for each N) in a child process, then, in
// this one, N client connections opened to the sidecar (set-up is not measured), then N
// identical streaming requests written as fast as possible, then all N responses read
// concurrently by the client threads (one io_context each; --client-threads 0 = one per CPU),
// each connection de-chunking its SSE stream incrementally.
//
// The schedule: the mock is asked for an absolute schedule ("schedule":"absolute"): event i is
// due latency + i * interval after the mock received the call, each is written when due (a late
// write does not push the next ones back) and stamped "mock_sent_us" with the time it was DUE,
// not the time it was written. The bare server of the floor (--floor, bare_fanout.hpp) stamps
// its events the same way. So each (event, subscriber) pair yields a delivery delay = arrival -
// due time, in both runs: the mock's or the bare server's own lateness is inside the figure,
// never left out of it (a sender that stamps its actual send time and then sleeps an interval
// hides its lateness under load: coordinated omission). steady_clock is the same clock in both
// processes.
//
// Per run: the delay over every (event, subscriber) pair (p50, p99, max); per event the spread,
// from the first subscriber that got it to the last (slowest - fastest delay), with its median
// and p99 over the events (nearest rank: over 20 events the p99 is the largest); whether the
// client threads were busy enough to be the bottleneck (CPU of the busiest client thread over
// the stream's duration); the sidecar process's VmRSS growth per subscriber (sampled every
// 50 ms, from before the connections are opened to its peak while streaming).
//
// --runs R repeats everything R times. With --floor, each N runs against the sidecar and against
// the bare server back to back, the order swapping every run (sidecar first in odd runs), so
// that both see the same minutes of a machine whose speed drifts. The summary gives, per N and
// for each, the median (min-max) over the runs. "result: fanout.<N>.<sidecar|floor>.<figure>"
// lines are for tests/bench/run-bench.sh.
//
// Targets (product fan-out goals): 10000 subscribers all complete; p99 delay <= 50 ms;
// <= 20 KiB RSS per subscriber in the sidecar.
//
// Caveats printed with the results: the client, the mock and the sidecar share this machine's
// cores (and anything else running on it: the load average is printed), so the delay includes
// time waiting for a CPU; each process needs one descriptor per subscriber, so N is capped to
// what RLIMIT_NOFILE allows (marked * in the table).
#include "bare_fanout.hpp"
#include "bench_support.hpp"
#include "mock_server.hpp"
#include "ops/config.hpp"
#include "server/server.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>

#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace mock = coalescer::mock;
namespace ops = coalescer::ops;
namespace server = coalescer::server;
namespace bench = coalescer::bench;
using bench::load_average;
using bench::ms;
using bench::now_us;
using bench::process_cpu_s;
using bench::raise_fd_limit;
using bench::read_exact;
using bench::rss_kib;
using bench::steady;
using bench::thread_cpu_s;
using bench::write_all;
using tcp = asio::ip::tcp;
using boost::system::error_code;

// ---------------------------------------------------------------------------------------------
// Command line

struct options {
    std::vector<int> subscribers{100, 1000, 10000};
    int runs = 1;
    int chunks = 20;
    int interval_ms = 50;
    // Before the first event, counted from the mock receiving the call (the first subscriber's
    // request): long enough for every subscriber to join first. 10,000 requests took 0.2-0.7 s
    // to write and be taken in on 2 loaded CPUs; a subscriber that joins after the first event
    // was due gets replays, and the join work delays the mock's first events.
    int latency_ms = 1000;
    int timeout_s = 60;      // give up on a run after this and report what completed
    int client_threads = 0;  // 0: one per CPU this process may use
    int workers = 2;
    bool per_event = false;  // print each event's fastest / median / slowest subscriber
    bool floor = false;      // also measure the bare server (bare_fanout.hpp) at every N
};

std::vector<int> parse_list(const std::string& text) {
    std::vector<int> out;
    std::size_t pos = 0;
    while (pos <= text.size()) {
        const auto comma = std::min(text.find(',', pos), text.size());
        out.push_back(std::stoi(text.substr(pos, comma - pos)));
        pos = comma + 1;
    }
    return out;
}

options parse_args(int argc, char** argv) {
    options o;
    for (int i = 1; i < argc; ++i) {
        const std::string flag = argv[i];
        if (flag == "--per-event" || flag == "--floor") {
            (flag == "--floor" ? o.floor : o.per_event) = true;
            continue;
        }
        if (i + 1 >= argc)
            throw std::runtime_error("missing value after " + flag);
        const std::string value = argv[++i];
        if (flag == "--subscribers")
            o.subscribers = parse_list(value);
        else if (flag == "--chunks")
            o.chunks = std::stoi(value);
        else if (flag == "--interval-ms")
            o.interval_ms = std::stoi(value);
        else if (flag == "--latency-ms")
            o.latency_ms = std::stoi(value);
        else if (flag == "--timeout-s")
            o.timeout_s = std::stoi(value);
        else if (flag == "--client-threads")
            o.client_threads = std::max(0, std::stoi(value));
        else if (flag == "--runs")
            o.runs = std::max(1, std::stoi(value));
        else if (flag == "--workers")
            o.workers = std::max(1, std::stoi(value));
        else
            throw std::runtime_error("unknown flag " + flag);
    }
    for (int n : o.subscribers) {
        if (n < 1)
            throw std::runtime_error("--subscribers: each N must be >= 1");
    }
    if (o.client_threads == 0) {
        cpu_set_t cpus;
        CPU_ZERO(&cpus);
        o.client_threads =
            sched_getaffinity(0, sizeof cpus, &cpus) == 0
                ? std::max(1, CPU_COUNT(&cpus))
                : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    }
    return o;
}

// ---------------------------------------------------------------------------------------------
// Process resources

// Returns freed heap to the kernel so that the "before" RSS of a run is not inflated by the
// previous run's garbage and its growth is not hidden by reuse of it.
void settle_heap() {
    malloc_trim(0);
}

long open_fds() {
    long n = 0;
    for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd"))
        ++n;
    return n;
}

// Samples a process's VmRSS every 50 ms on its own thread and keeps the max.
class rss_sampler {
  public:
    rss_sampler(pid_t pid, long first) : pid_(pid), peak_(first) {
        thread_ = std::thread([this] {
            while (!stop_.load()) {
                sample();
                std::this_thread::sleep_for(std::chrono::milliseconds(50));
            }
        });
    }
    ~rss_sampler() { finish(); }
    long finish() {
        stop_ = true;
        if (thread_.joinable())
            thread_.join();
        sample();
        return peak_.load();
    }

  private:
    void sample() {
        const long now = rss_kib(pid_);
        long seen = peak_.load();
        while (now > seen && !peak_.compare_exchange_weak(seen, now)) {
        }
    }
    pid_t pid_;
    std::atomic<long> peak_;
    std::atomic<bool> stop_{false};
    std::thread thread_;
};

// ---------------------------------------------------------------------------------------------
// One response, parsed incrementally: the HTTP head, chunked framing, and inside the de-chunked
// SSE bytes only the `"mock_sent_us":<digits>` fields (no JSON parse). State is a few bytes per
// connection so that the client's memory stays small next to the sidecar's.

enum class role : std::uint8_t { unknown, leader, follower, hit, other };

struct delivery {
    std::int64_t sent_us;   // mock_sent_us: identifies the event
    std::int32_t delay_us;  // arrival - sent
};

class sse_reader {
  public:
    // `arrived_us` is when these bytes were read; each timestamp found yields one delivery.
    void feed(const char* p, std::size_t n, std::int64_t arrived_us, std::vector<delivery>& out,
              std::size_t& used);
    bool done() const { return state_ == state::done; }
    bool failed() const { return state_ == state::failed; }
    unsigned status() const { return status_; }
    role who() const { return role_; }
    unsigned events() const { return events_; }

  private:
    enum class state : std::uint8_t {
        head,
        size,
        ext,
        size_lf,
        data,
        data_cr,
        data_lf,
        trailer,
        done,
        failed
    };
    static constexpr std::string_view key_ = "\"mock_sent_us\":";

    std::size_t feed_head(const char* p, std::size_t n);
    void on_head();
    void feed_framing(char c);
    void scan(const char* p, std::size_t n, std::int64_t arrived_us, std::vector<delivery>& out,
              std::size_t& used);

    std::string head_;  // only until the head is complete, then released
    std::uint64_t chunk_left_ = 0;
    std::uint32_t events_ = 0;
    std::uint16_t status_ = 0;
    std::uint8_t size_digits_ = 0, trailer_line_ = 0, match_ = 0;
    state state_ = state::head;
    role role_ = role::unknown;
    bool in_number_ = false;
    std::int64_t number_ = 0;
};

void sse_reader::feed(const char* p, std::size_t n, std::int64_t arrived_us,
                      std::vector<delivery>& out, std::size_t& used) {
    std::size_t i = 0;
    while (i < n && state_ != state::done && state_ != state::failed) {
        if (state_ == state::head) {
            i += feed_head(p + i, n - i);
        } else if (state_ == state::data) {
            // Body bytes in bulk; framing below byte by byte.
            const auto take = static_cast<std::size_t>(std::min<std::uint64_t>(chunk_left_, n - i));
            scan(p + i, take, arrived_us, out, used);
            i += take;
            chunk_left_ -= take;
            if (chunk_left_ == 0)
                state_ = state::data_cr;
        } else {
            feed_framing(p[i++]);
        }
    }
}

std::size_t sse_reader::feed_head(const char* p, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) {
        head_.push_back(p[i]);
        if (head_.size() >= 4 && head_.compare(head_.size() - 4, 4, "\r\n\r\n") == 0) {
            on_head();
            return i + 1;
        }
        if (head_.size() > 16 * 1024) {
            state_ = state::failed;
            return n;
        }
    }
    return n;
}

void sse_reader::on_head() {
    std::string h = head_;
    std::transform(h.begin(), h.end(), h.begin(), [](unsigned char c) { return std::tolower(c); });
    if (h.rfind("http/1.1 ", 0) == 0)
        status_ = static_cast<std::uint16_t>(std::atoi(h.c_str() + 9));
    const auto field = [&](std::string_view name) -> std::string {
        const auto at = h.find("\r\n" + std::string(name) + ":");
        if (at == std::string::npos)
            return {};
        const auto from = h.find_first_not_of(' ', at + 3 + name.size());
        return h.substr(from, h.find("\r\n", from) - from);
    };
    const auto r = field("x-coalesce");
    role_ = r == "leader"     ? role::leader
            : r == "follower" ? role::follower
            : r == "hit"      ? role::hit
                              : role::other;
    const bool chunked = field("transfer-encoding").find("chunked") != std::string::npos;
    state_ = status_ == 200 && chunked ? state::size : state::failed;
    std::string().swap(head_);
}

void sse_reader::feed_framing(char c) {
    const auto fail = [this] { state_ = state::failed; };
    switch (state_) {
        case state::size:
            if (std::isxdigit(static_cast<unsigned char>(c)) && size_digits_ < 15) {
                const int v = std::isdigit(static_cast<unsigned char>(c))
                                  ? c - '0'
                                  : (std::tolower(c) - 'a' + 10);
                chunk_left_ = chunk_left_ * 16 + static_cast<unsigned>(v);
                ++size_digits_;
            } else if (c == ';' && size_digits_ > 0) {
                state_ = state::ext;
            } else if (c == '\r' && size_digits_ > 0) {
                state_ = state::size_lf;
            } else {
                fail();
            }
            break;
        case state::ext:
            if (c == '\r')
                state_ = state::size_lf;
            break;
        case state::size_lf:
            if (c != '\n')
                return fail();
            state_ = chunk_left_ > 0 ? state::data : state::trailer;
            trailer_line_ = 0;
            break;
        case state::data_cr:
            state_ = c == '\r' ? state::data_lf : state::failed;
            break;
        case state::data_lf:
            if (c != '\n')
                return fail();
            state_ = state::size;
            size_digits_ = 0;
            break;
        case state::trailer:  // after the last chunk: optional trailer fields, then an empty line
            if (c == '\n') {
                if (trailer_line_ <= 1)
                    state_ = state::done;
                trailer_line_ = 0;
            } else if (trailer_line_ < 255) {
                ++trailer_line_;
            }
            break;
        default:
            break;
    }
}

// A matcher for `"mock_sent_us":` then digits, resumable across reads and chunk boundaries.
// On a mismatch it restarts at the quote; the one other quote in the key is followed by ':' in
// any JSON, so this simple fallback is exact for what the mock writes.
void sse_reader::scan(const char* p, std::size_t n, std::int64_t arrived_us,
                      std::vector<delivery>& out, std::size_t& used) {
    for (std::size_t i = 0; i < n; ++i) {
        const char c = p[i];
        if (in_number_) {
            if (c >= '0' && c <= '9') {
                number_ = number_ * 10 + (c - '0');
                continue;
            }
            in_number_ = false;
            ++events_;
            if (used < out.size())
                out[used++] = {number_, static_cast<std::int32_t>(arrived_us - number_)};
        }
        if (c == key_[match_]) {
            if (++match_ == key_.size()) {
                match_ = 0;
                in_number_ = true;
                number_ = 0;
            }
        } else {
            match_ = c == key_[0] ? 1 : 0;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The client: connections spread over a few event loops, each drained by one thread.

struct connection {
    explicit connection(asio::io_context& io) : socket(io) {}
    tcp::socket socket;
    sse_reader reader;
    bool finished = false;
};

class client_loop {
  public:
    client_loop() = default;
    asio::io_context& io() { return io_; }
    void adopt(std::unique_ptr<connection> c) { conns_.push_back(std::move(c)); }
    // Written before the "before" RSS sample: the delivery log is touched up front so that its
    // pages do not show up as per-subscriber growth.
    void reserve_deliveries(std::size_t n) { deliveries_.assign(n, delivery{-1, -1}); }
    void start_reading(steady::time_point deadline);
    void run() {
        io_.run();
        cpu_s = thread_cpu_s();  // this loop's thread does nothing else
    }
    void finish(connection& c, bool ok);

    std::size_t size() const { return conns_.size(); }
    std::size_t completed = 0, failed = 0;
    std::uint64_t bytes = 0;
    double cpu_s = 0;
    std::vector<delivery> deliveries_;
    std::size_t used_ = 0;
    const std::vector<std::unique_ptr<connection>>& conns() const { return conns_; }

  private:
    void arm(connection& c);
    void on_readable(connection& c, error_code ec);

    asio::io_context io_{1};
    std::vector<std::unique_ptr<connection>> conns_;
    std::optional<asio::steady_timer> deadline_;
    // One receive buffer per loop, not per connection: we wait for readiness, then drain.
    std::vector<char> buf_ = std::vector<char>(64 * 1024);
};

void client_loop::start_reading(steady::time_point deadline) {
    deadline_.emplace(io_, deadline);
    deadline_->async_wait([this](error_code ec) {
        if (!ec)
            io_.stop();  // give up: whatever has not finished counts as not completed
    });
    for (auto& c : conns_) {
        if (!c->finished)
            arm(*c);
    }
    if (completed + failed == conns_.size())
        deadline_->cancel();
}

void client_loop::arm(connection& c) {
    c.socket.async_wait(tcp::socket::wait_read, [this, &c](error_code ec) { on_readable(c, ec); });
}

// epoll is edge-triggered in asio: the socket must be drained before waiting again. A TCP read
// that returns less than the buffer has emptied the receive queue, so no extra EAGAIN probe is
// needed (it would cost a system call per event for nothing).
void client_loop::on_readable(connection& c, error_code ec) {
    if (ec)
        return finish(c, false);
    for (;;) {
        const std::size_t n = c.socket.read_some(asio::buffer(buf_), ec);
        if (ec == asio::error::would_block || ec == asio::error::try_again)
            break;
        if (ec)
            return finish(c, c.reader.done());  // closed before the terminating chunk: cut
        bytes += n;
        c.reader.feed(buf_.data(), n, now_us(), deliveries_, used_);
        if (c.reader.done() || c.reader.failed())
            return finish(c, c.reader.done());
        if (n < buf_.size())
            break;
    }
    arm(c);
}

void client_loop::finish(connection& c, bool ok) {
    if (c.finished)
        return;
    c.finished = true;
    ++(ok ? completed : failed);
    if (completed + failed == conns_.size() && deadline_)
        deadline_->cancel();  // nothing left: run() returns
}

class fanout_client {
  public:
    fanout_client(int threads, std::size_t n, std::size_t events_per_conn);
    // Blocking connects (set-up is not measured); returns how many connected.
    std::size_t connect(std::uint16_t port, std::size_t n);
    // Writes the request on every connection as fast as possible; returns when all are written.
    void send_all(const std::string& request);
    // Reads every response to the end or the deadline, one thread per loop.
    void read_all(steady::time_point deadline);
    std::vector<std::unique_ptr<client_loop>>& loops() { return loops_; }

  private:
    std::vector<std::unique_ptr<client_loop>> loops_;
};

fanout_client::fanout_client(int threads, std::size_t n, std::size_t events_per_conn) {
    for (int i = 0; i < threads; ++i) {
        auto& loop = *loops_.emplace_back(std::make_unique<client_loop>());
        loop.reserve_deliveries((n / threads + 1) * events_per_conn);
    }
}

std::size_t fanout_client::connect(std::uint16_t port, std::size_t n) {
    const tcp::endpoint to(asio::ip::make_address("127.0.0.1"), port);
    for (std::size_t i = 0; i < n; ++i) {
        auto& loop = *loops_[i % loops_.size()];
        auto c = std::make_unique<connection>(loop.io());
        error_code ec;
        c->socket.connect(to, ec);
        if (ec) {
            std::fprintf(stderr, "  connect %zu failed: %s; continuing with %zu\n", i,
                         ec.message().c_str(), i);
            return i;
        }
        loop.adopt(std::move(c));
    }
    return n;
}

void fanout_client::send_all(const std::string& request) {
    for (auto& loop : loops_) {
        for (auto& c : loop->conns()) {
            if (c->finished)
                continue;
            error_code ec;
            asio::write(c->socket, asio::buffer(request), ec);  // a few hundred bytes: never blocks
            if (!ec)
                c->socket.non_blocking(true, ec);
            if (ec)
                loop->finish(*c, false);
        }
    }
}

void fanout_client::read_all(steady::time_point deadline) {
    std::vector<std::thread> threads;
    for (auto& loop : loops_) {
        loop->start_reading(deadline);
        threads.emplace_back([&l = *loop] {
            pthread_setname_np(pthread_self(), "bench-client");  // tells them apart in perf and top
            l.run();
        });
    }
    for (auto& t : threads)
        t.join();
}

// ---------------------------------------------------------------------------------------------
// One run

struct run_result {
    bool bare = false;  // the floor: the bare server instead of the mock and the sidecar
    int run = 0;        // 1-based repetition
    int requested = 0, n = 0;
    std::uint64_t upstream_calls = 0;
    std::size_t completed = 0, bytes = 0, deliveries = 0, roles_leader = 0, roles_follower = 0,
                roles_other = 0;
    unsigned min_events = 0;
    double p50_ms = 0, p99_ms = 0, max_ms = 0, wall_s = 0, send_ms = 0;
    double head_start_ms = 0;  // first event stamped this long after the last request was written
    double first_sub_p50_ms = 0;  // per event, the fastest subscriber's delay; median over events
    double last_sub_p50_ms = 0;   // per event, the slowest subscriber's delay; median over events
    // Per event, slowest - fastest subscriber's delay (the time from the first subscriber that
    // got it to the last): median and p99 (nearest rank) over the events.
    double spread_p50_ms = 0, spread_p99_ms = 0;
    std::size_t events_seen = 0;
    // From the first event due to the last one read; CPU of the busiest client thread over it.
    double stream_s = 0, client_busy = 0;
    double client_kib_per_sub = 0, total_kib_per_sub = 0;
    double client_cpu_s = 0,
           other_cpu_s = 0;  // while sending and streaming; other = sidecar + mock
    std::string load_before, load_after;
    long rss_before_kib = 0, rss_peak_kib = 0;
    bool timed_out = false;
};

std::string yaml_for(std::uint16_t mock_port, int workers) {
    // header_timeout is raised because the connections are opened (and sit idle) before any
    // request is written; with 10000 of them that can take a few seconds.
    return "workers: " + std::to_string(workers) +
           "\n"
           "listen: {address: 127.0.0.1, port: 0}\n"
           "admin: {address: 127.0.0.1, port: 0}\n"
           "upstreams:\n"
           "  - name: mock\n"
           "    url: http://127.0.0.1:" +
           std::to_string(mock_port) +
           "\n"
           "    timeouts: {connect: 2s, head: 10s, idle: 10s, total: 60s}\n"
           "routes:\n"
           "  - {prefix: /chat/completions, upstream: mock, coalesce: true}\n"
           "limits: {max_connections: 50000, header_timeout: 60s}\n"
           "coalesce: {max_subscribers_per_flight: 20000}\n"
           "log: {level: warn}\n";
}

std::string request_for(int n, const options& o) {
    const std::string body =
        R"({"model":"sonar","messages":[{"role":"user","content":"fan-out bench, )" +
        std::to_string(n) + R"( subscribers"}],"stream":true,"mock":{"latency_ms":)" +
        std::to_string(o.latency_ms) + R"(,"chunks":)" + std::to_string(o.chunks) +
        R"(,"chunk_interval_ms":)" + std::to_string(o.interval_ms) +
        R"(,"timestamps":true,"schedule":"absolute"}})";
    return "POST /chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
           "fanout-bench\r\n"
           "Content-Type: application/json\r\nAccept: text/event-stream\r\nContent-Length: " +
           std::to_string(body.size()) + "\r\n\r\n" + body;
}

double percentile(std::vector<std::int32_t>& v, double q) {
    return ms(bench::percentile(v, q));
}

// Delay distribution over all (event, subscriber) pairs, and per event the fastest and slowest
// subscriber: the fastest shows the pipeline's latency, slowest minus fastest the fan-out's cost.
void summarise_delays(fanout_client& client, run_result& r, bool per_event) {
    std::vector<delivery> all;
    for (auto& loop : client.loops()) {
        all.insert(all.end(), loop->deliveries_.begin(),
                   loop->deliveries_.begin() + static_cast<std::ptrdiff_t>(loop->used_));
    }
    r.deliveries = all.size();
    if (all.empty())
        return;
    std::vector<std::int32_t> delays(all.size());
    std::transform(all.begin(), all.end(), delays.begin(),
                   [](const delivery& d) { return d.delay_us; });
    r.p50_ms = percentile(delays, 0.50);
    r.p99_ms = percentile(delays, 0.99);
    r.max_ms = ms(*std::max_element(delays.begin(), delays.end()));

    std::sort(all.begin(), all.end(), [](const delivery& a, const delivery& b) {
        return a.sent_us != b.sent_us ? a.sent_us < b.sent_us : a.delay_us < b.delay_us;
    });
    std::vector<std::int32_t> fastest, slowest, spread;
    std::int64_t last_arrival = 0;
    for (std::size_t i = 0; i < all.size();) {
        std::size_t j = i;
        while (j < all.size() && all[j].sent_us == all[i].sent_us)
            ++j;
        fastest.push_back(all[i].delay_us);
        slowest.push_back(all[j - 1].delay_us);
        spread.push_back(all[j - 1].delay_us - all[i].delay_us);
        last_arrival = std::max(last_arrival, all[j - 1].sent_us + all[j - 1].delay_us);
        if (per_event) {
            std::printf(
                "        event %2zu at +%8.1f ms: %6zu subscribers, delay fastest %8.2f  median "
                "%8.2f  slowest "
                "%8.2f ms\n",
                fastest.size(), ms(all[i].sent_us - all[0].sent_us), j - i, ms(all[i].delay_us),
                ms(all[i + (j - i) / 2].delay_us), ms(all[j - 1].delay_us));
        }
        i = j;
    }
    r.first_sub_p50_ms = percentile(fastest, 0.5);
    r.last_sub_p50_ms = percentile(slowest, 0.5);
    r.events_seen = spread.size();
    r.spread_p50_ms = percentile(spread, 0.5);
    r.spread_p99_ms = percentile(spread, 0.99);
    r.stream_s = static_cast<double>(last_arrival - all.front().sent_us) / 1e6;
}

void count_outcomes(fanout_client& client, run_result& r, std::int64_t send_end_us) {
    r.min_events = ~0u;
    std::int64_t first_event = INT64_MAX;
    for (auto& loop : client.loops()) {
        r.completed += loop->completed;
        r.bytes += loop->bytes;
        for (std::size_t i = 0; i < loop->used_; ++i)
            first_event = std::min(first_event, loop->deliveries_[i].sent_us);
        for (auto& c : loop->conns()) {
            r.min_events = std::min(r.min_events, c->reader.events());
            const role w = c->reader.who();
            ++(w == role::leader     ? r.roles_leader
               : w == role::follower ? r.roles_follower
                                     : r.roles_other);
        }
    }
    if (r.min_events == ~0u)
        r.min_events = 0;
    r.head_start_ms = first_event == INT64_MAX ? 0 : ms(first_event - send_end_us);
}

// The mock provider and the sidecar (or the bare server), in a child process: each process then
// holds one descriptor per subscriber (10,000 fit under RLIMIT_NOFILE 20,000, which two per
// subscriber in one process did not), and the sidecar's RSS and CPU are its own, not net of the
// client's. Forked while this process has no other thread (every run's threads are joined by
// then).
class sidecar_process {
  public:
    // With `bare`, the child runs a bare_fanout for `requested` subscribers instead.
    sidecar_process(const options& o, bool bare, int requested) {
        int up[2], down[2];
        if (::pipe(up) != 0 || ::pipe(down) != 0)
            throw std::runtime_error(std::string("pipe: ") + std::strerror(errno));
        std::fflush(stdout);  // or the child would print it again
        pid_ = ::fork();
        if (pid_ < 0)
            throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
        if (pid_ == 0) {
            ::close(up[0]);
            ::close(down[1]);
            if (bare)
                serve_bare(o, requested, up[1], down[0]);
            serve(o, up[1], down[0]);
        }
        ::close(up[1]);
        ::close(down[0]);
        from_child_ = up[0];
        to_child_ = down[1];
        if (!read_exact(from_child_, &port_, sizeof port_) || port_ == 0) {
            finish();
            throw std::runtime_error("the sidecar process did not start");
        }
    }
    ~sidecar_process() { finish(); }
    pid_t pid() const { return pid_; }
    std::uint16_t port() const { return port_; }

    // Waits until the sidecar has accepted `n` connections (or `limit` passes); false if not.
    // Connections the kernel completed but the sidecar has not accepted yet can sit in an
    // overflowing listen queue and only complete a second later: their requests would join
    // as late replays and measure the queue, not the fan-out.
    bool wait_accepted(std::int64_t n, std::chrono::seconds limit) {
        const auto until = steady::now() + limit;
        for (;;) {
            const char ask = 'c';
            std::int64_t open = 0;
            if (!write_all(to_child_, &ask, 1) || !read_exact(from_child_, &open, sizeof open))
                return false;
            if (open >= n)
                return true;
            if (steady::now() >= until)
                return false;
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
    }

    // Ends the child; returns the upstream calls the mock counted.
    std::uint64_t finish() {
        if (pid_ <= 0)
            return calls_;
        const char done = 'x';
        write_all(to_child_, &done, 1);
        read_exact(from_child_, &calls_, sizeof calls_);
        ::close(to_child_);
        ::close(from_child_);
        ::waitpid(pid_, nullptr, 0);
        pid_ = -1;
        return calls_;
    }

  private:
    [[noreturn]] static void serve(const options& o, int to_parent, int from_parent) {
        std::uint16_t port = 0;
        try {
            auto provider = std::make_unique<mock::mock_server>(mock::mock_options{});
            provider->start();
            auto sidecar = std::make_unique<server::server>(
                ops::load_config_text(yaml_for(provider->port(), o.workers), "fanout_bench.yaml"));
            sidecar->start();
            port = sidecar->port();
            write_all(to_parent, &port, sizeof port);
            char command = 0;
            // 'c': how many client connections the sidecar holds; anything else (or EOF: the
            // parent is gone) ends the run.
            while (read_exact(from_parent, &command, 1) && command == 'c') {
                const std::int64_t open = sidecar->context().metrics.open_connections();
                write_all(to_parent, &open, sizeof open);
            }
            const std::uint64_t calls = provider->stats().calls;
            write_all(to_parent, &calls, sizeof calls);
        } catch (const std::exception& e) {
            std::fprintf(stderr, "  sidecar process: %s\n", e.what());
            if (port == 0)
                write_all(to_parent, &port, sizeof port);
        }
        // No destructors: 10,000 sessions are not worth tearing down one by one, and the
        // parent's objects copied into this process are not this process's to destroy.
        std::fflush(stderr);
        ::_exit(0);
    }

    // The same exchange with the parent as serve(); "upstream calls" is the one stream.
    [[noreturn]] static void serve_bare(const options& o, int requested, int to_parent,
                                        int from_parent) {
        std::uint16_t port = 0;
        try {
            // Never deleted: the process ends with _exit, its threads still holding it.
            auto* bare = new coalescer::bench::bare_fanout(
                {.subscribers = requested,
                 .request_bytes = request_for(requested, o).size(),
                 .chunks = o.chunks,
                 .interval_ms = o.interval_ms,
                 .latency_ms = o.latency_ms});
            port = bare->port();
            write_all(to_parent, &port, sizeof port);
            char command = 0;
            while (read_exact(from_parent, &command, 1) && command == 'c') {
                const std::int64_t open = bare->accepted();
                write_all(to_parent, &open, sizeof open);
            }
            const std::uint64_t calls = 1;
            write_all(to_parent, &calls, sizeof calls);
        } catch (const std::exception& e) {
            std::fprintf(stderr, "  bare server process: %s\n", e.what());
            if (port == 0)
                write_all(to_parent, &port, sizeof port);
        }
        std::fflush(stderr);
        ::_exit(0);
    }

    pid_t pid_ = -1;
    int from_child_ = -1, to_child_ = -1;
    std::uint16_t port_ = 0;
    std::uint64_t calls_ = 0;
};

run_result run_once(int requested, const options& o, rlim_t fd_limit, bool bare, int run) {
    run_result r;
    r.bare = bare;
    r.run = run;
    r.requested = requested;
    sidecar_process sidecar(o, bare, requested);

    // One descriptor per subscriber in this process; keep some spare for the loops and /proc.
    const long spare = 32 + 3L * o.client_threads;
    const long fit = static_cast<long>(fd_limit) - open_fds() - spare;
    r.n = static_cast<int>(std::min<long>(requested, std::max(0L, fit)));
    if (r.n < requested) {
        std::printf("  N=%d does not fit RLIMIT_NOFILE=%ld: capped to N=%d\n", requested,
                    static_cast<long>(fd_limit), r.n);
    }
    const auto n = static_cast<std::size_t>(r.n);

    settle_heap();
    fanout_client client(o.client_threads, n, static_cast<std::size_t>(o.chunks) + 2);
    const std::string request = request_for(requested, o);
    const long client_before = rss_kib();
    r.rss_before_kib = rss_kib(sidecar.pid());
    r.n = static_cast<int>(client.connect(sidecar.port(), n));
    if (!sidecar.wait_accepted(r.n, std::chrono::seconds(20)))
        std::printf("  N=%d: the sidecar had not accepted every connection after 20 s\n", r.n);

    r.load_before = load_average();
    const double sidecar_cpu_before = process_cpu_s(sidecar.pid());
    const double send_cpu_before = thread_cpu_s();
    const auto start = steady::now();
    client.send_all(request);
    const std::int64_t send_end_us = now_us();
    r.client_cpu_s = thread_cpu_s() - send_cpu_before;
    r.send_ms =
        ms(send_end_us -
           std::chrono::duration_cast<std::chrono::microseconds>(start.time_since_epoch()).count());
    rss_sampler sampler(sidecar.pid(), rss_kib(sidecar.pid()));
    client.read_all(start + std::chrono::seconds(o.timeout_s));
    r.rss_peak_kib = sampler.finish();
    r.wall_s = std::chrono::duration<double>(steady::now() - start).count();
    r.timed_out = steady::now() >= start + std::chrono::seconds(o.timeout_s);
    for (auto& loop : client.loops())
        r.client_cpu_s += loop->cpu_s;
    r.other_cpu_s = process_cpu_s(sidecar.pid()) - sidecar_cpu_before;
    r.load_after = load_average();
    const long client_after = rss_kib();

    r.upstream_calls = sidecar.finish();
    count_outcomes(client, r, send_end_us);
    summarise_delays(client, r, o.per_event);
    double busiest = 0;
    for (auto& loop : client.loops())
        busiest = std::max(busiest, loop->cpu_s);
    r.client_busy = r.stream_s > 0 ? busiest / r.stream_s : 0;
    if (r.n != 0) {
        r.client_kib_per_sub = static_cast<double>(client_after - client_before) / r.n;
        r.total_kib_per_sub =
            static_cast<double>(r.rss_peak_kib - r.rss_before_kib) / r.n + r.client_kib_per_sub;
    }
    return r;
}

// ---------------------------------------------------------------------------------------------
// Report

const char* kind(const run_result& r) {
    return r.bare ? "floor" : "sidecar";
}

double sidecar_kib(const run_result& r) {
    return r.total_kib_per_sub - r.client_kib_per_sub;
}

void print_run(const run_result& r) {
    std::printf(
        "  run %d, %s, N=%d: sent %d requests in %.1f ms; first event due %.1f ms after the "
        "last request was written%s\n",
        r.run, kind(r), r.n, r.n, r.send_ms, r.head_start_ms,
        r.head_start_ms < 0 ? " (some subscribers joined late: their first events are replays)"
                            : "");
    std::printf(
        "        roles: leader %zu, follower %zu, other/none %zu; fewest events seen by one "
        "client: %u\n",
        r.roles_leader, r.roles_follower, r.roles_other, r.min_events);
    std::printf(
        "        delay p50 %.2f, p99 %.2f, max %.2f ms; per event (%zu events): fastest "
        "subscriber %.2f ms, slowest %.2f ms (medians over events); spread first -> last "
        "subscriber: median %.2f ms, p99 %.2f ms%s\n",
        r.p50_ms, r.p99_ms, r.max_ms, r.events_seen, r.first_sub_p50_ms, r.last_sub_p50_ms,
        r.spread_p50_ms, r.spread_p99_ms, r.timed_out ? "; RUN TIMED OUT" : "");
    std::printf(
        "        CPU while sending and streaming: client %.2f s, %s %.2f s, in %.2f s wall; "
        "busiest client thread %.0f %% of the %.2f s stream%s; load average %s -> %s\n",
        r.client_cpu_s, r.bare ? "bare server" : "sidecar + mock", r.other_cpu_s, r.wall_s,
        100 * r.client_busy, r.stream_s,
        r.client_busy >= 0.9 ? " (THE CLIENT MAY BE THE BOTTLENECK)" : "", r.load_before.c_str(),
        r.load_after.c_str());
    std::printf("        RSS %ld -> %ld KiB\n", r.rss_before_kib, r.rss_peak_kib);
}

void print_table(const std::vector<run_result>& runs) {
    std::printf("\n%4s %-7s %7s %6s %9s %10s %8s %8s %8s %9s %9s %6s %8s %8s\n", "run", "server",
                "N", "calls", "complete", "bytes", "p50 ms", "p99 ms", "max ms", "spr50 ms",
                "spr99 ms", "busy", "KiB/sub", "client");
    for (const auto& r : runs) {
        char n_text[32];
        std::snprintf(n_text, sizeof n_text, r.n == r.requested ? "%d" : "%d*", r.n);
        std::printf(
            "%4d %-7s %7s %5llu%s %9zu %10zu %8.2f %8.2f %8.2f %9.2f %9.2f %5.0f%% %8.2f "
            "%8.2f\n",
            r.run, kind(r), n_text, static_cast<unsigned long long>(r.upstream_calls),
            r.upstream_calls == 1 ? " " : "!", r.completed, r.bytes, r.p50_ms, r.p99_ms, r.max_ms,
            r.spread_p50_ms, r.spread_p99_ms, 100 * r.client_busy, sidecar_kib(r),
            r.client_kib_per_sub);
    }
    std::printf(
        "  (* = capped by the descriptor limit; ! = not exactly one upstream call; delays are "
        "arrival - due time over every (event, subscriber) pair; spr50 / spr99 = per event, the "
        "last subscriber's arrival - the first's, median / p99 over the events; busy = the "
        "busiest client thread's CPU over the stream's duration; KiB/sub = (the server "
        "process's peak RSS - its RSS before connecting) / N (the sidecar + mock process, or the "
        "bare server); client = the client process's growth / N)\n\n");
}

struct by_n {
    int n = 0;
    std::vector<const run_result*> sidecar, floor;
};

std::vector<by_n> group(const std::vector<run_result>& runs, const options& o) {
    std::vector<by_n> out;
    for (int n : o.subscribers) {
        by_n g;
        g.n = n;
        for (const auto& r : runs)
            (r.bare ? g.floor : g.sidecar).push_back(&r);
        std::erase_if(g.sidecar, [n](const run_result* r) { return r->requested != n; });
        std::erase_if(g.floor, [n](const run_result* r) { return r->requested != n; });
        out.push_back(std::move(g));
    }
    return out;
}

template <class F>
bench::spread over(const std::vector<const run_result*>& runs, F&& figure) {
    std::vector<double> v;
    for (const auto* r : runs)
        v.push_back(figure(*r));
    return bench::spread_of(std::move(v));
}

// Per N, sidecar and floor: median (min-max) over the runs.
void print_summary(const std::vector<by_n>& groups, const options& o) {
    std::printf("summary, median (min\xe2\x80\x93max) over %d run(s) of each:\n", o.runs);
    for (const auto& g : groups) {
        for (const auto* runs : {&g.sidecar, &g.floor}) {
            if (runs->empty())
                continue;
            const bool bare = runs == &g.floor;
            std::size_t all_in = 0, late = 0;
            for (const auto* r : *runs) {
                all_in += r->completed == static_cast<std::size_t>(r->n) && r->n == g.n &&
                          (r->upstream_calls == 1);
                late += r->head_start_ms < 0;
            }
            std::printf(
                "  N=%-6d %-7s delay p50 %s, p99 %s ms; spread per event median %s, p99 %s ms; "
                "%s KiB/sub; all %d complete with 1 call in %zu/%zu runs%s\n",
                g.n, bare ? "floor" : "sidecar",
                bench::format_spread(over(*runs, [](auto& r) { return r.p50_ms; })).c_str(),
                bench::format_spread(over(*runs, [](auto& r) { return r.p99_ms; })).c_str(),
                bench::format_spread(over(*runs, [](auto& r) { return r.spread_p50_ms; })).c_str(),
                bench::format_spread(over(*runs, [](auto& r) { return r.spread_p99_ms; })).c_str(),
                bench::format_spread(over(*runs, [](auto& r) { return sidecar_kib(r); })).c_str(),
                g.n, all_in, runs->size(),
                late == 0 ? ""
                          : ("; LATE JOINS (first event due before the last request was written) "
                             "in " +
                             std::to_string(late) + " runs")
                                .c_str());
        }
        std::vector<double> p99, spread;  // of the pairs run back to back
        for (const auto* side : g.sidecar) {
            for (const auto* bare : g.floor) {
                if (bare->run != side->run)
                    continue;
                if (bare->p99_ms > 0)
                    p99.push_back(side->p99_ms / bare->p99_ms);
                if (bare->spread_p50_ms > 0)
                    spread.push_back(side->spread_p50_ms / bare->spread_p50_ms);
            }
        }
        if (!p99.empty()) {
            std::printf(
                "  N=%-6d sidecar / floor, per run then median: p99 delay %s x, spread "
                "median %s x\n",
                g.n, bench::format_spread(bench::spread_of(p99)).c_str(),
                bench::format_spread(bench::spread_of(spread)).c_str());
        }
    }
}

void print_results(const std::vector<run_result>& runs) {
    for (const auto& r : runs) {
        const std::string at = "fanout." + std::to_string(r.requested) + "." + kind(r) + ".";
        bench::print_result(at + "n", r.n);
        bench::print_result(at + "complete", static_cast<double>(r.completed));
        bench::print_result(at + "calls", static_cast<double>(r.upstream_calls));
        bench::print_result(at + "p50_ms", r.p50_ms);
        bench::print_result(at + "p99_ms", r.p99_ms);
        bench::print_result(at + "max_ms", r.max_ms);
        bench::print_result(at + "spread_p50_ms", r.spread_p50_ms);
        bench::print_result(at + "spread_p99_ms", r.spread_p99_ms);
        bench::print_result(at + "kib_per_sub", sidecar_kib(r));
        bench::print_result(at + "client_busy", r.client_busy);
        bench::print_result(at + "late_join", r.head_start_ms < 0 ? 1 : 0);
    }
}

void print_targets(const std::vector<by_n>& groups) {
    const auto big =
        std::max_element(groups.begin(), groups.end(), [](auto& a, auto& b) { return a.n < b.n; });
    if (big == groups.end() || big->sidecar.empty())
        return;
    std::size_t complete = 0;
    int largest = 0;
    for (const auto* r : big->sidecar) {
        complete += r->completed == static_cast<std::size_t>(big->n) && r->upstream_calls == 1;
        largest = std::max(largest, r->n);
    }
    const bool all = complete == big->sidecar.size();
    if (big->n >= 10000) {
        std::printf("10000 subscribers: all complete: %s (in %zu of %zu runs)\n",
                    all ? "met" : "not met", complete, big->sidecar.size());
    } else {
        std::printf(
            "10000 subscribers: not measured (largest N=%d: all complete in %zu of %zu "
            "runs)\n",
            big->n, complete, big->sidecar.size());
    }
    const auto p99 = over(big->sidecar, [](auto& r) { return r.p99_ms; });
    std::printf("p99 chunk delay <= 50 ms: %s (%s ms at N=%d)\n",
                p99.median <= 50.0 ? "met" : "not met", bench::format_spread(p99).c_str(), big->n);
    if (!big->floor.empty()) {
        std::printf(
            "floor p99 at N=%d: %s ms (bare server)\n", big->n,
            bench::format_spread(over(big->floor, [](auto& r) { return r.p99_ms; })).c_str());
    }
    const auto kib = over(big->sidecar, [](auto& r) { return sidecar_kib(r); });
    std::printf("RSS <= 20 KiB per subscriber (sidecar share): %s (%s KiB at N=%d)\n",
                kib.median <= 20.0 ? "met" : "not met", bench::format_spread(kib).c_str(), big->n);
    if (largest < big->n)
        std::printf("  (N capped to %d by the descriptor limit)\n", largest);
}

}  // namespace

int main(int argc, char** argv) {
    std::signal(SIGPIPE, SIG_IGN);
    options o;
    try {
        o = parse_args(argc, argv);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "fanout_bench: %s\n", e.what());
        return 2;
    }
    const rlim_t fd_limit = raise_fd_limit();
    std::printf(
        "fanout_bench: %d events every %d ms, the first due %d ms after the mock got the call "
        "(absolute schedule, events stamped with their due times); sidecar workers %d; client "
        "threads %d; %d run(s)%s; RLIMIT_NOFILE %ld; %u CPUs shared by client, mock and "
        "sidecar\n",
        o.chunks, o.interval_ms, o.latency_ms, o.workers, o.client_threads, o.runs,
        o.floor ? ", each N against the sidecar and the bare server back to back, order swapping "
                  "every run"
                : "",
        static_cast<long>(fd_limit), std::thread::hardware_concurrency());
    std::vector<run_result> runs;
    for (int run = 1; run <= o.runs; ++run) {
        for (int n : o.subscribers) {
            std::vector<bool> order{false};
            if (o.floor)
                order = run % 2 ? std::vector<bool>{false, true} : std::vector<bool>{true, false};
            for (const bool bare : order) {
                try {
                    runs.push_back(run_once(n, o, fd_limit, bare, run));
                    print_run(runs.back());
                } catch (const std::exception& e) {
                    std::fprintf(stderr, "  run %d, %s, N=%d: %s\n", run,
                                 bare ? "floor" : "sidecar", n, e.what());
                }
                std::fflush(stdout);
            }
        }
    }
    print_table(runs);
    const auto groups = group(runs, o);
    print_summary(groups, o);
    print_targets(groups);
    print_results(runs);
    return 0;
}
