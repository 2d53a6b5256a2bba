// Coalesced burst: N identical requests arriving together cost one upstream call.
//
//   burst_bench [--requests 1000] [--latency-ms 500] [--runs 3] [--client-threads 2] [--workers 2]
//               [--timeout-s 30] [--stream] [--ports P1,P2,... --mock-port M]
//
// With --ports, the burst goes to sidecars already running on those loopback ports (spread
// round-robin over them, as tests/bench/cluster-bench.sh runs several pods) instead of one
// started here, and the upstream calls are read from the mock provider's /__stats on port M;
// every run's body is new, so no run is a hit on the previous one's retained answer.
//
// For each run, in this one process and fresh each time (so that no run is served from the
// previous run's retained result): the mock provider with a fixed latency L before the response
// head, and the sidecar with one coalescing route to it. Then N client connections are opened
// (blocking connects, not measured) and handed to a few client threads, each with its own
// io_context; the threads are released together and each writes the same request on every one
// of its connections (non-blocking writes of a few hundred bytes) and then reads every response
// concurrently. Per request: latency = response fully read - its own request written.
//
// Prints per run: upstream calls (the mock's count), total wall time (first request written ->
// last response read), p50 / p99 / max latency, how long writing the N requests took, the
// x-coalesce roles seen and the statuses; then the median of the runs and the target:
// exactly 1 upstream call (in every run) and p99 <= L + 20 ms (median of the runs).
//
// Every figure of the summary is the median (min-max) over the runs. "result: burst.<figure>"
// lines, one per run, are for tests/bench/run-bench.sh.
//
// Caveats: the client, the mock and the sidecar share the machine's cores (and whatever else runs
// on it: the load average is printed); N needs 2 N descriptors in one process, so the soft
// RLIMIT_NOFILE is raised to the hard one.
#include "bench_support.hpp"
#include "mock_server.hpp"
#include "ops/config.hpp"
#include "server/server.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>

#include <pthread.h>
#include <sys/resource.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
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
using bench::raise_fd_limit;
using bench::steady;
using tcp = asio::ip::tcp;
using boost::system::error_code;

// ---------------------------------------------------------------------------------------------
// Command line

struct options {
    int requests = 1000;
    int latency_ms = 500;
    int runs = 3;
    int client_threads = 2;
    int workers = 2;
    int timeout_s = 30;
    bool stream = false;
    std::vector<std::uint16_t> ports;  // external sidecars
    int mock_port = 0;                 // their mock provider, for its call count
};

std::vector<std::uint16_t> parse_ports(const std::string& text) {
    std::vector<std::uint16_t> ports;
    std::size_t from = 0;
    while (from <= text.size()) {
        const auto comma = std::min(text.find(',', from), text.size());
        const int port = std::stoi(text.substr(from, comma - from));
        if (port < 1 || port > 65535)
            throw std::runtime_error("not a port: " + text.substr(from, comma - from));
        ports.push_back(static_cast<std::uint16_t>(port));
        from = comma + 1;
    }
    return ports;
}

void usage(std::FILE* to) {
    std::fputs(
        "usage: burst_bench [--requests N (1000)] [--latency-ms L (500)] [--runs R (3)]\n"
        "                   [--client-threads T (2)] [--workers W (2)] [--timeout-s S (30)] "
        "[--stream]\n"
        "                   [--ports P1,P2,... --mock-port M]\n"
        "N identical concurrent requests through the sidecar (coalescing route) to the mock "
        "provider\n"
        "answering after L ms; prints upstream calls, total time, p50/p99/max latency per run, "
        "their\n"
        "median, and the target: exactly 1 upstream call and p99 <= L + 20 ms.\n",
        to);
}

options parse_args(int argc, char** argv) {
    options o;
    for (int i = 1; i < argc; ++i) {
        const std::string flag = argv[i];
        if (flag == "--help" || flag == "-h") {
            usage(stdout);
            std::exit(0);
        }
        if (flag == "--stream") {
            o.stream = true;
            continue;
        }
        if (flag == "--ports" && i + 1 < argc) {
            o.ports = parse_ports(argv[++i]);
            continue;
        }
        int* target = flag == "--requests"         ? &o.requests
                      : flag == "--latency-ms"     ? &o.latency_ms
                      : flag == "--runs"           ? &o.runs
                      : flag == "--client-threads" ? &o.client_threads
                      : flag == "--workers"        ? &o.workers
                      : flag == "--timeout-s"      ? &o.timeout_s
                      : flag == "--mock-port"      ? &o.mock_port
                                                   : nullptr;
        if (target == nullptr)
            throw std::runtime_error("unknown flag " + flag);
        if (i + 1 >= argc)
            throw std::runtime_error("missing value after " + flag);
        const std::string text = argv[++i];
        std::size_t used = 0;
        try {
            *target = std::stoi(text, &used);
        } catch (const std::exception&) {
            used = 0;
        }
        if (used == 0 || used != text.size())
            throw std::runtime_error("not a number after " + flag + ": " + text);
    }
    if (o.requests < 1 || o.latency_ms < 0 || o.runs < 1 || o.client_threads < 1 || o.workers < 1 ||
        o.timeout_s < 1) {
        throw std::runtime_error("every value must be >= 1 (--latency-ms >= 0)");
    }
    if (!o.ports.empty() && (o.mock_port < 1 || o.mock_port > 65535))
        throw std::runtime_error("--ports needs --mock-port");
    return o;
}

// ---------------------------------------------------------------------------------------------
// One response, parsed incrementally: the head (status, x-coalesce, framing), then the body by
// Content-Length, chunked framing, or until the server closes.

enum class role : std::uint8_t { none, leader, follower, hit, other };

class response_reader {
  public:
    // Returns true once the response is complete.
    bool feed(const char* p, std::size_t n);
    bool done() const { return state_ == state::done; }
    bool failed() const { return state_ == state::failed; }
    bool close_delimited() const { return state_ == state::until_close; }
    void closed() {
        if (state_ == state::until_close)
            state_ = state::done;
    }
    unsigned status() const { return status_; }
    role who() const { return role_; }

  private:
    enum class state : std::uint8_t {
        head,
        length,
        chunk_size,
        chunk_data,
        chunk_crlf,
        trailer,
        until_close,
        done,
        failed
    };
    void on_head();
    std::size_t feed_chunked(const char* p, std::size_t n);

    std::string head_;
    std::string line_;  // chunk-size or trailer line being read
    std::uint64_t left_ = 0;
    unsigned status_ = 0;
    state state_ = state::head;
    role role_ = role::none;
};

bool response_reader::feed(const char* p, std::size_t n) {
    std::size_t i = 0;
    while (i < n && state_ != state::done && state_ != state::failed) {
        switch (state_) {
            case state::head: {
                const std::size_t before = head_.size();
                head_.append(p + i, n - i);
                const auto end = head_.find("\r\n\r\n", before >= 3 ? before - 3 : 0);
                if (end == std::string::npos) {
                    if (head_.size() > 64 * 1024)
                        state_ = state::failed;
                    return false;
                }
                i += end + 4 - before;
                head_.resize(end + 4);
                on_head();
                break;
            }
            case state::length: {
                const auto take = static_cast<std::size_t>(std::min<std::uint64_t>(left_, n - i));
                i += take;
                left_ -= take;
                if (left_ == 0)
                    state_ = state::done;
                break;
            }
            case state::until_close:
                return false;
            default:
                i += feed_chunked(p + i, n - i);
                break;
        }
    }
    if (state_ == state::length && left_ == 0)
        state_ = state::done;
    return state_ == state::done;
}

void response_reader::on_head() {
    std::string h = head_;
    std::transform(h.begin(), h.end(), h.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (h.rfind("http/1.", 0) == 0 && h.size() > 12)
        status_ = static_cast<unsigned>(std::atoi(h.c_str() + 9));
    const auto field = [&](std::string_view name) -> std::string {
        const auto at = h.find("\r\n" + std::string(name) + ":");
        if (at == std::string::npos)
            return {};
        const auto from = h.find_first_not_of(" \t", at + 3 + name.size());
        return h.substr(from, h.find("\r\n", from) - from);
    };
    const std::string r = field("x-coalesce");
    role_ = r == "leader"     ? role::leader
            : r == "follower" ? role::follower
            : r == "hit"      ? role::hit
            : r.empty()       ? role::none
                              : role::other;
    head_.clear();
    head_.shrink_to_fit();
    if (field("transfer-encoding").find("chunked") != std::string::npos) {
        state_ = state::chunk_size;
    } else if (const std::string cl = field("content-length"); !cl.empty()) {
        left_ = std::strtoull(cl.c_str(), nullptr, 10);
        state_ = left_ == 0 ? state::done : state::length;
    } else if (status_ == 204 || status_ == 304) {
        state_ = state::done;
    } else {
        state_ = state::until_close;
    }
}

std::size_t response_reader::feed_chunked(const char* p, std::size_t n) {
    std::size_t i = 0;
    while (i < n && state_ != state::done && state_ != state::failed) {
        if (state_ == state::chunk_data) {
            const auto take = static_cast<std::size_t>(std::min<std::uint64_t>(left_, n - i));
            i += take;
            left_ -= take;
            if (left_ == 0)
                state_ = state::chunk_crlf;
            continue;
        }
        const char c = p[i++];
        if (c != '\n') {
            if (c != '\r')
                line_.push_back(c);
            if (line_.size() > 4096)
                state_ = state::failed;
            continue;
        }
        // A whole line.
        if (state_ == state::chunk_size) {
            left_ = std::strtoull(line_.c_str(), nullptr, 16);
            state_ = left_ == 0 ? state::trailer : state::chunk_data;
        } else if (state_ == state::chunk_crlf) {
            state_ = line_.empty() ? state::chunk_size : state::failed;
        } else if (state_ == state::trailer && line_.empty()) {
            state_ = state::done;
        }
        line_.clear();
    }
    return i;
}

// ---------------------------------------------------------------------------------------------
// The client: connections spread over a few event loops, each run by one thread.

struct connection {
    explicit connection(asio::io_context& io) : socket(io) {}
    tcp::socket socket;
    response_reader reader;
    std::int64_t sent_us = 0, done_us = 0;
    bool finished = false, ok = false;
};

class client_loop {
  public:
    asio::io_context& io() { return io_; }
    void adopt(std::unique_ptr<connection> c) { conns_.push_back(std::move(c)); }
    const std::vector<std::unique_ptr<connection>>& conns() const { return conns_; }

    // Writes the request on every connection, then reads every response (or gives up at the
    // deadline).
    void run(const std::string& request, steady::time_point deadline);
    std::int64_t first_sent_us = 0, last_sent_us = 0;

  private:
    void arm(connection& c);
    void on_readable(connection& c, error_code ec);
    void finish(connection& c, bool ok);

    asio::io_context io_{1};
    std::vector<std::unique_ptr<connection>> conns_;
    std::optional<asio::steady_timer> deadline_;
    std::size_t finished_ = 0;
    std::vector<char> buf_ = std::vector<char>(64 * 1024);
};

void client_loop::run(const std::string& request, steady::time_point deadline) {
    deadline_.emplace(io_, deadline);
    deadline_->async_wait([this](error_code ec) {
        if (!ec)
            io_.stop();  // whatever has not finished counts as not completed
    });
    first_sent_us = now_us();
    for (auto& c : conns_) {
        error_code ec;
        c->sent_us = now_us();
        const std::size_t n = c->socket.write_some(asio::buffer(request), ec);  // non-blocking
        if (ec) {
            finish(*c, false);
            continue;
        }
        if (n < request.size()) {  // never seen with a few hundred bytes, but be correct
            asio::async_write(c->socket, asio::buffer(request.data() + n, request.size() - n),
                              [this, &c = *c](error_code wec, std::size_t) {
                                  if (wec)
                                      finish(c, false);
                              });
        }
        arm(*c);
    }
    last_sent_us = now_us();
    if (finished_ == conns_.size())
        deadline_->cancel();
    io_.run();
}

void client_loop::arm(connection& c) {
    c.socket.async_wait(tcp::socket::wait_read, [this, &c](error_code ec) { on_readable(c, ec); });
}

// Drain on readiness; a read that returns less than the buffer has emptied the receive queue.
void client_loop::on_readable(connection& c, error_code ec) {
    if (c.finished)
        return;
    if (ec)
        return finish(c, false);
    for (;;) {
        const std::size_t n = c.socket.read_some(asio::buffer(buf_), ec);
        if (ec == asio::error::would_block || ec == asio::error::try_again)
            break;
        if (ec) {  // closed: complete only if the body was delimited by the close
            c.reader.closed();
            return finish(c, c.reader.done());
        }
        if (c.reader.feed(buf_.data(), n))
            return finish(c, true);
        if (c.reader.failed())
            return finish(c, false);
        if (n < buf_.size())
            break;
    }
    arm(c);
}

void client_loop::finish(connection& c, bool ok) {
    if (c.finished)
        return;
    c.finished = true;
    c.ok = ok;
    c.done_us = now_us();
    if (++finished_ == conns_.size() && deadline_)
        deadline_->cancel();
}

// ---------------------------------------------------------------------------------------------
// One run

struct run_result {
    int n = 0;
    std::uint64_t upstream_calls = 0;
    std::size_t completed = 0, ok_200 = 0, leader = 0, follower = 0, hit = 0, other_role = 0;
    double total_ms = 0, send_ms = 0, first_ms = 0, call_start_ms = -1, call_end_ms = -1,
           p50_ms = 0, p99_ms = 0, max_ms = 0, cpu_s = 0;
    std::string load_before, load_after;
};

std::string yaml_for(std::uint16_t mock_port, int workers) {
    return "workers: " + std::to_string(workers) +
           "\n"
           "listen: {address: 127.0.0.1, port: 0}\n"
           "admin: {address: 127.0.0.1, port: 0}\n"
           "upstreams:\n"
           "  - name: mock\n"
           "    url: http://127.0.0.1:" +
           std::to_string(mock_port) +
           "\n"
           "    timeouts: {connect: 2s, head: 30s, idle: 30s, total: 60s}\n"
           "routes:\n"
           "  - {prefix: /chat/completions, upstream: mock, coalesce: true}\n"
           "limits: {max_connections: 50000, header_timeout: 60s}\n"
           "coalesce: {max_subscribers_per_flight: 50000}\n"
           "log: {level: warn}\n";
}

std::string request_for(const options& o, const std::string& nonce) {
    const std::string body =
        std::string(R"({"model":"sonar","messages":[{"role":"user","content":"burst bench: )") +
        std::to_string(o.requests) + " identical requests" + nonce + R"("}],"stream":)" +
        (o.stream ? "true" : "false") + "}";
    return "POST /chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
           "burst-bench\r\n"
           "Content-Type: application/json\r\nAccept: " +
           std::string(o.stream ? "text/event-stream" : "application/json") +
           "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

// Nearest rank (bench_support.hpp), in ms.
double percentile(std::vector<std::int64_t> v, double q) {
    return ms(bench::percentile(v, q));
}

// The external mock's call count, from its /__stats JSON.
std::uint64_t mock_calls(int port) {
    asio::io_context io;
    tcp::socket socket(io);
    socket.connect(
        tcp::endpoint(asio::ip::make_address("127.0.0.1"), static_cast<std::uint16_t>(port)));
    const std::string get = "GET /__stats HTTP/1.1\r\nHost: mock\r\nConnection: close\r\n\r\n";
    asio::write(socket, asio::buffer(get));
    std::string reply;
    error_code ec;
    std::array<char, 4096> buf{};
    while (!ec) {
        const auto n = socket.read_some(asio::buffer(buf), ec);
        reply.append(buf.data(), n);
    }
    const auto at = reply.find("\"calls\":");
    if (at == std::string::npos)
        throw std::runtime_error("no call count in the mock's /__stats");
    return std::strtoull(reply.c_str() + at + 8, nullptr, 10);
}

run_result run_once(const options& o, int run) {
    run_result r;
    std::unique_ptr<mock::mock_server> provider;
    std::unique_ptr<server::server> sidecar;
    std::vector<tcp::endpoint> targets;
    for (const auto port : o.ports)
        targets.emplace_back(asio::ip::make_address("127.0.0.1"), port);
    if (targets.empty()) {
        mock::mock_options mo;
        mo.latency_ms = o.latency_ms;
        provider = std::make_unique<mock::mock_server>(mo);
        provider->start();
        sidecar = std::make_unique<server::server>(
            ops::load_config_text(yaml_for(provider->port(), o.workers), "burst_bench.yaml"));
        sidecar->start();
        targets.emplace_back(asio::ip::make_address("127.0.0.1"), sidecar->port());
    }
    const std::uint64_t calls_before = provider ? 0 : mock_calls(o.mock_port);

    std::vector<std::unique_ptr<client_loop>> loops;
    for (int i = 0; i < o.client_threads; ++i)
        loops.push_back(std::make_unique<client_loop>());
    for (int i = 0; i < o.requests; ++i) {
        auto& loop = *loops[static_cast<std::size_t>(i) % loops.size()];
        auto c = std::make_unique<connection>(loop.io());
        error_code ec;
        c->socket.connect(targets[static_cast<std::size_t>(i) % targets.size()], ec);
        if (!ec)
            c->socket.set_option(tcp::no_delay(true), ec);
        if (!ec)
            c->socket.non_blocking(true, ec);
        if (ec) {
            std::fprintf(stderr, "  connect %d failed: %s; continuing with %d\n", i,
                         ec.message().c_str(), i);
            break;
        }
        loop.adopt(std::move(c));
        ++r.n;
    }

    const std::string request = request_for(
        o, provider ? std::string()
                    : " (run " + std::to_string(run) + ", " + std::to_string(now_us()) + ")");
    r.load_before = load_average();
    const double cpu_before = bench::self_cpu_s();
    std::atomic<int> ready{0};
    std::atomic<bool> go{false};
    std::vector<std::thread> threads;
    const auto deadline = steady::now() + std::chrono::seconds(o.timeout_s);
    for (auto& loop : loops) {
        threads.emplace_back([&, &l = *loop] {
            pthread_setname_np(pthread_self(), "bench-client");
            ++ready;
            while (!go.load(std::memory_order_acquire))
                std::this_thread::yield();
            l.run(request, deadline);
        });
    }
    while (ready.load() != static_cast<int>(loops.size()))
        std::this_thread::yield();
    go.store(true, std::memory_order_release);
    // When the mock sees the call and when it has answered it, relative to the first request
    // written: splits the overhead into before the upstream call and after it (fan-out). Polled
    // every 0.2 ms, so both are late by up to that much.
    std::int64_t call_start_us = 0, call_end_us = 0;
    std::atomic<bool> clients_done{false};
    std::thread watcher([&] {
        while (provider && !clients_done.load()) {
            const auto s = provider->stats();
            const std::int64_t t = now_us();
            if (call_start_us == 0 && s.calls > 0)
                call_start_us = t;
            if (call_end_us == 0 && s.completed > 0)
                call_end_us = t;
            if (call_end_us != 0)
                break;
            std::this_thread::sleep_for(std::chrono::microseconds(200));
        }
    });
    for (auto& t : threads)
        t.join();
    clients_done = true;
    watcher.join();
    r.cpu_s = bench::self_cpu_s() - cpu_before;
    r.load_after = load_average();
    r.upstream_calls = provider ? provider->stats().calls : mock_calls(o.mock_port) - calls_before;

    std::int64_t first_sent = INT64_MAX, last_sent = 0, first_done = INT64_MAX, last_done = 0;
    std::vector<std::int64_t> latencies;
    for (auto& loop : loops) {
        first_sent = std::min(first_sent, loop->first_sent_us);
        last_sent = std::max(last_sent, loop->last_sent_us);
        for (auto& c : loop->conns()) {
            const role w = c->reader.who();
            ++(w == role::leader     ? r.leader
               : w == role::follower ? r.follower
               : w == role::hit      ? r.hit
                                     : r.other_role);
            if (!c->ok)
                continue;
            ++r.completed;
            if (c->reader.status() == 200)
                ++r.ok_200;
            latencies.push_back(c->done_us - c->sent_us);
            first_done = std::min(first_done, c->done_us);
            last_done = std::max(last_done, c->done_us);
        }
    }
    r.send_ms = ms(last_sent - first_sent);
    r.total_ms = latencies.empty() ? 0 : ms(last_done - first_sent);
    r.first_ms = latencies.empty() ? 0 : ms(first_done - first_sent);
    if (call_start_us != 0)
        r.call_start_ms = ms(call_start_us - first_sent);
    if (call_end_us != 0)
        r.call_end_ms = ms(call_end_us - first_sent);
    r.p50_ms = percentile(latencies, 0.50);
    r.p99_ms = percentile(latencies, 0.99);
    r.max_ms = latencies.empty() ? 0 : ms(*std::max_element(latencies.begin(), latencies.end()));

    // The sidecar first, so that it does not tear down every session as the client closes them.
    sidecar.reset();
    provider.reset();
    return r;
}

double median(std::vector<double> v) {
    return bench::spread_of(std::move(v)).median;
}

std::string spread(const std::vector<double>& v) {
    return bench::format_spread(bench::spread_of(v), "%.1f");
}

}  // namespace

int main(int argc, char** argv) {
    std::signal(SIGPIPE, SIG_IGN);
    options o;
    try {
        o = parse_args(argc, argv);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "burst_bench: %s\n", e.what());
        usage(stderr);
        return 2;
    }
    const rlim_t fd_limit = raise_fd_limit();
    if (static_cast<rlim_t>(2 * o.requests + 64) > fd_limit) {
        std::fprintf(stderr,
                     "burst_bench: %d requests need about %d descriptors; RLIMIT_NOFILE is %ld\n",
                     o.requests, 2 * o.requests + 64, static_cast<long>(fd_limit));
        return 2;
    }
    std::printf(
        "burst_bench: %d identical %s requests, upstream latency %d ms, %d run(s); sidecar workers "
        "%d; "
        "client threads %d; %u CPUs shared by client, mock and sidecar\n",
        o.requests, o.stream ? "streaming" : "non-streaming", o.latency_ms, o.runs, o.workers,
        o.client_threads, std::thread::hardware_concurrency());
    std::printf("%4s %6s %6s %9s %9s %9s %9s %9s %9s %8s  %-26s %s\n", "run", "calls", "ok",
                "total ms", "send ms", "first ms", "p50 ms", "p99 ms", "max ms", "cpu s",
                "roles lead/foll/hit/other", "load");
    std::vector<run_result> runs;
    for (int i = 0; i < o.runs; ++i) {
        try {
            runs.push_back(run_once(o, i + 1));
        } catch (const std::exception& e) {
            std::fprintf(stderr, "  run %d: %s\n", i + 1, e.what());
            continue;
        }
        const auto& r = runs.back();
        char roles[64];
        std::snprintf(roles, sizeof roles, "%zu/%zu/%zu/%zu", r.leader, r.follower, r.hit,
                      r.other_role);
        std::printf("%4d %5llu%s %6zu %9.1f %9.1f %9.1f %9.1f %9.1f %9.1f %8.2f  %-26s %s -> %s\n",
                    i + 1, static_cast<unsigned long long>(r.upstream_calls),
                    r.upstream_calls == 1 ? " " : "!", r.ok_200, r.total_ms, r.send_ms, r.first_ms,
                    r.p50_ms, r.p99_ms, r.max_ms, r.cpu_s, roles, r.load_before.c_str(),
                    r.load_after.c_str());
        std::printf(
            "       upstream call seen by the mock at +%.1f ms, answered at +%.1f ms; responses "
            "read from +%.1f to +%.1f ms\n",
            r.call_start_ms, r.call_end_ms, r.first_ms, r.total_ms);
        std::fflush(stdout);
    }
    if (runs.empty())
        return 1;

    std::vector<double> total, p50, p99, max;
    std::uint64_t max_calls = 0, min_calls = UINT64_MAX;
    bool all_ok = true;
    for (const auto& r : runs) {
        total.push_back(r.total_ms);
        p50.push_back(r.p50_ms);
        p99.push_back(r.p99_ms);
        max.push_back(r.max_ms);
        max_calls = std::max(max_calls, r.upstream_calls);
        min_calls = std::min(min_calls, r.upstream_calls);
        all_ok = all_ok && r.ok_200 == static_cast<std::size_t>(o.requests);
    }
    const double limit = o.latency_ms + 20.0;
    const bool one_call = min_calls == 1 && max_calls == 1;
    const bool met = one_call && all_ok && median(p99) <= limit;
    std::printf(
        "median (min\xe2\x80\x93max) of %zu runs: total %s ms, p50 %s ms, p99 %s ms, max %s ms; "
        "upstream calls per run %llu..%llu; %s\n",
        runs.size(), spread(total).c_str(), spread(p50).c_str(), spread(p99).c_str(),
        spread(max).c_str(), static_cast<unsigned long long>(min_calls),
        static_cast<unsigned long long>(max_calls),
        all_ok ? "every request answered 200" : "NOT every request answered 200");
    std::printf(
        "  (! = not exactly one upstream call; latency = response read - own request written; "
        "total = first "
        "request written -> last response read; send = time to write all N requests; "
        "first = first request written -> first response read)\n");
    std::printf(
        "target: exactly 1 upstream call and p99 <= %d + 20 ms: %s (calls %llu..%llu, p99 %.1f "
        "ms)\n",
        o.latency_ms, met ? "met" : "not met", static_cast<unsigned long long>(min_calls),
        static_cast<unsigned long long>(max_calls), median(p99));
    for (const auto& r : runs) {
        bench::print_result("burst.calls", static_cast<double>(r.upstream_calls));
        bench::print_result("burst.ok_200", static_cast<double>(r.ok_200));
        bench::print_result("burst.total_ms", r.total_ms);
        bench::print_result("burst.p50_ms", r.p50_ms);
        bench::print_result("burst.p99_ms", r.p99_ms);
        bench::print_result("burst.max_ms", r.max_ms);
    }
    return 0;
}
