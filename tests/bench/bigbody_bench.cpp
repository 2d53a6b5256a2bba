// Big bodies and small requests on the same worker: the latency of small coalescing requests
// while another client keeps sending 16 MiB JSON bodies to a coalescing route.
//
//   bigbody_bench --port PORT [--small-path /chat/completions] [--big-path /big/chat/completions]
//                 [--runs 5] [--seconds 5] [--rate 200] [--small-conns 8] [--big-mib 16]
//
// Client only: the sidecar (run-bench.sh starts it with `workers: 1` and
// `limits: {max_request_body: 32MiB}`, in front of two mock-provider processes, one for each
// path, so that the mock that answers the small requests never parses a big body) listens on
// 127.0.0.1:PORT, and both paths are coalescing routes.
//
// Small requests: an open loop, so that a stall is never hidden by sending less during it
// (coordinated omission): request i is due at start + i / rate, and its latency is from the time
// it was DUE to its response read in full, whatever delayed it (the sidecar, or its connection
// still busy with an earlier one). They are spread over --small-conns keep-alive connections,
// one thread each, connection k taking requests k, k + K, k + 2K, ... Every body is different
// (a run, mode and sequence number in the message), so each one is keyed and is a leader: the
// path that pays the key and a flight.
//
// Big bodies (only in "with" runs): one more thread on one keep-alive connection sends a
// realistic --big-mib MiB chat body (bench_support.hpp chat_body, many messages), waits for its
// answer, and sends the next one, each with a different "nonce" member, from before the first
// small request until the last one is answered. The sidecar keys bodies from 256 KiB on on its
// key thread instead of the worker; this shows whether the worker stays responsive.
//
// Each run measures "without" then "with" big bodies, or the other way round (the order swaps
// every run); the summary gives the small requests' p50 / p99 / max for each, median
// (min-max) over the runs, and the target: p99 <= 50 ms while big bodies arrive.
// "result: bigbody.<without|with>.<figure>" lines are for tests/bench/run-bench.sh.
#include "bench_support.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>
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
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

namespace bench = coalescer::bench;
using bench::ms;
using bench::now_us;
using bench::steady;

struct options {
    std::uint16_t port = 0;
    std::string small_path = "/chat/completions";
    std::string big_path = "/big/chat/completions";
    int runs = 5;
    double seconds = 5;
    double rate = 200;  // small requests per second
    int small_conns = 8;
    std::size_t big_mib = 16;
};

void usage(std::FILE* to) {
    std::fputs(
        "usage: bigbody_bench --port PORT [--small-path /chat/completions]\n"
        "                     [--big-path /big/chat/completions] [--runs 5] [--seconds 5]\n"
        "                     [--rate 200] [--small-conns 8] [--big-mib 16]\n"
        "small coalescing requests (open loop, distinct bodies) with and without a client\n"
        "sending big JSON bodies to the same sidecar; latency from each request's due time\n",
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
        if (i + 1 >= argc)
            throw std::runtime_error("missing value after " + flag);
        const std::string value = argv[++i];
        if (flag == "--port")
            o.port = static_cast<std::uint16_t>(std::stoi(value));
        else if (flag == "--small-path")
            o.small_path = value;
        else if (flag == "--big-path")
            o.big_path = value;
        else if (flag == "--runs")
            o.runs = std::stoi(value);
        else if (flag == "--seconds")
            o.seconds = std::stod(value);
        else if (flag == "--rate")
            o.rate = std::stod(value);
        else if (flag == "--small-conns")
            o.small_conns = std::stoi(value);
        else if (flag == "--big-mib")
            o.big_mib = static_cast<std::size_t>(std::stoul(value));
        else
            throw std::runtime_error("unknown flag " + flag);
    }
    if (o.port == 0 || o.runs < 1 || !(o.seconds > 0) || !(o.rate > 0) || o.small_conns < 1 ||
        o.big_mib < 1)
        throw std::runtime_error("--port is required; every value must be positive");
    return o;
}

// ---------------------------------------------------------------------------------------------
// A blocking HTTP/1.1 client connection: one request at a time, keep-alive.

class http_connection {
  public:
    explicit http_connection(std::uint16_t port) {
        fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in to{};
        to.sin_family = AF_INET;
        to.sin_port = htons(port);
        to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (fd_ < 0 || ::connect(fd_, reinterpret_cast<sockaddr*>(&to), sizeof to) != 0)
            throw std::runtime_error(std::string("connect: ") + std::strerror(errno));
        const int one = 1;
        ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        const timeval limit{.tv_sec = 60, .tv_usec = 0};  // a stuck run never hangs the bench
        ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
        ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit);
    }
    ~http_connection() {
        if (fd_ >= 0)
            ::close(fd_);
    }
    http_connection(const http_connection&) = delete;
    http_connection& operator=(const http_connection&) = delete;

    // POSTs `body` (JSON) to `path`; returns the status, 0 when the exchange failed.
    int post(const std::string& path, std::string_view body) {
        const std::string head = "POST " + path +
                                 " HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
                                 "bigbody-bench\r\nContent-Type: application/json\r\n"
                                 "Content-Length: " +
                                 std::to_string(body.size()) + "\r\n\r\n";
        if (!send_all(head) || !send_all(body))
            return 0;
        return read_response();
    }

  private:
    bool send_all(std::string_view bytes) {
        while (!bytes.empty()) {
            const auto n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                return false;
            bytes.remove_prefix(static_cast<std::size_t>(n));
        }
        return true;
    }

    // More bytes into buf_; false on close, error or timeout.
    bool fill() {
        char chunk[16 * 1024];
        for (;;) {
            const auto n = ::recv(fd_, chunk, sizeof chunk, 0);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                return false;
            buf_.append(chunk, static_cast<std::size_t>(n));
            return true;
        }
    }

    // The line ending at the next CRLF from `at`, consumed.
    bool line(std::string& out) {
        for (;;) {
            const auto end = buf_.find("\r\n");
            if (end != std::string::npos) {
                out = buf_.substr(0, end);
                buf_.erase(0, end + 2);
                return true;
            }
            if (buf_.size() > 64 * 1024 || !fill())
                return false;
        }
    }

    bool skip(std::size_t n) {
        while (buf_.size() < n) {
            if (!fill())
                return false;
        }
        buf_.erase(0, n);
        return true;
    }

    int read_response() {
        std::string status_line, field;
        if (!line(status_line) || status_line.rfind("HTTP/1.", 0) != 0 || status_line.size() < 12)
            return 0;
        const int status = std::atoi(status_line.c_str() + 9);
        long long length = -1;
        bool chunked = false;
        for (;;) {
            if (!line(field))
                return 0;
            if (field.empty())
                break;
            std::string lower = field;
            for (auto& c : lower)
                c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
            if (lower.rfind("content-length:", 0) == 0)
                length = std::atoll(lower.c_str() + 15);
            else if (lower.rfind("transfer-encoding:", 0) == 0)
                chunked = lower.find("chunked") != std::string::npos;
        }
        if (chunked) {
            for (;;) {
                std::string size_line;
                if (!line(size_line))
                    return 0;
                const auto size = std::strtoull(size_line.c_str(), nullptr, 16);
                if (size == 0) {
                    std::string trailer;
                    do {
                        if (!line(trailer))
                            return 0;
                    } while (!trailer.empty());
                    return status;
                }
                if (!skip(size + 2))
                    return 0;
            }
        }
        if (length < 0)
            return 0;  // not expected from the sidecar: Content-Length or chunked
        return skip(static_cast<std::size_t>(length)) ? status : 0;
    }

    int fd_ = -1;
    std::string buf_;
};

// ---------------------------------------------------------------------------------------------
// One measurement

struct window {
    bool with_big = false;
    int run = 0;
    std::size_t sent = 0, ok = 0;
    double p50_ms = 0, p99_ms = 0, max_ms = 0;
    std::size_t big_ok = 0, big_failed = 0;
    double big_mb_s = 0;  // big-body bytes answered per second of the window
    std::string load;
};

// The big-body sender: until `stop`, one body after another on one connection.
void send_big(const options& o, int run, std::string& body, std::size_t nonce_at,
              const std::atomic<bool>& stop, std::atomic<bool>& first_sent, std::size_t& ok,
              std::size_t& failed) {
    try {
        http_connection c(o.port);
        for (std::uint64_t i = 0; !stop.load(); ++i) {
            char nonce[17];
            std::snprintf(nonce, sizeof nonce, "%04x%012llx", run & 0xffff,
                          static_cast<unsigned long long>(i));
            body.replace(nonce_at, 16, nonce, 16);
            const int status = c.post(o.big_path, body);
            first_sent = true;
            if (status == 200) {
                ++ok;
            } else {
                ++failed;
                if (status == 0)
                    return;  // the connection is gone
            }
        }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "  big-body sender: %s\n", e.what());
        ++failed;
        first_sent = true;
    }
}

window measure(const options& o, int run, bool with_big, std::string& big_body,
               std::size_t nonce_at) {
    window w;
    w.with_big = with_big;
    w.run = run;
    w.load = bench::load_average();
    std::atomic<bool> stop{false}, first_sent{false};
    std::thread big;
    if (with_big) {
        big = std::thread([&] {
            send_big(o, run, big_body, nonce_at, stop, first_sent, w.big_ok, w.big_failed);
        });
        // Small requests start once the first big body is on its way in, not before.
        const auto until = steady::now() + std::chrono::seconds(5);
        while (!first_sent.load() && steady::now() < until)
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }

    const auto count = static_cast<std::size_t>(o.seconds * o.rate);
    const auto conns = static_cast<std::size_t>(o.small_conns);
    const double period_us = 1e6 / o.rate;
    std::vector<std::int64_t> latency(count, -1);
    std::vector<std::unique_ptr<http_connection>> connections;
    for (std::size_t k = 0; k < conns; ++k)
        connections.push_back(std::make_unique<http_connection>(o.port));
    const std::int64_t start_us = now_us() + 50'000;  // every thread started by then
    std::vector<std::thread> threads;
    for (std::size_t k = 0; k < conns; ++k) {
        threads.emplace_back([&, k] {
            for (std::size_t i = k; i < count; i += conns) {
                const auto due = start_us + static_cast<std::int64_t>(period_us * i);
                std::this_thread::sleep_until(steady::time_point(std::chrono::microseconds(due)));
                const std::string body =
                    R"({"model":"sonar","messages":[{"role":"user","content":"small request )" +
                    std::to_string(run) + (with_big ? "-with-" : "-without-") + std::to_string(i) +
                    R"("}],"max_tokens":16})";
                try {
                    if (!connections[k])
                        connections[k] = std::make_unique<http_connection>(o.port);
                    const int status = connections[k]->post(o.small_path, body);
                    if (status == 200)
                        latency[i] = now_us() - due;
                    if (status == 0)
                        connections[k].reset();  // broken: the next request reconnects
                } catch (const std::exception&) {
                    connections[k].reset();  // counted as failed (no latency)
                }
            }
        });
    }
    for (auto& t : threads)
        t.join();
    const double window_s = static_cast<double>(now_us() - start_us) / 1e6;
    stop = true;
    if (big.joinable())
        big.join();

    std::vector<std::int64_t> answered;
    for (const auto l : latency) {
        if (l >= 0)
            answered.push_back(l);
    }
    w.sent = count;
    w.ok = answered.size();
    if (!answered.empty()) {
        w.max_ms = ms(*std::max_element(answered.begin(), answered.end()));
        w.p50_ms = ms(bench::percentile(answered, 0.50));
        w.p99_ms = ms(bench::percentile(answered, 0.99));
    }
    w.big_mb_s =
        static_cast<double>(w.big_ok) * static_cast<double>(big_body.size()) / 1e6 / window_s;
    return w;
}

}  // namespace

int main(int argc, char** argv) {
    std::signal(SIGPIPE, SIG_IGN);
    options o;
    try {
        o = parse_args(argc, argv);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "bigbody_bench: %s\n", e.what());
        usage(stderr);
        return 2;
    }
    // {"nonce":"<16 hex digits>", then a realistic chat body's members.
    const std::string chat = bench::chat_body(o.big_mib << 20, 1234);
    std::string big_body = R"({"nonce":"0000000000000000",)" + chat.substr(1);
    const std::size_t nonce_at = big_body.find('0');

    std::printf(
        "bigbody_bench: small requests at %.0f/s over %d connections for %.1f s per window, "
        "latency from each one's due time; big bodies of %zu bytes, one after another on one "
        "connection, in the \"with\" windows; %d run(s), order swapping every run\n",
        o.rate, o.small_conns, o.seconds, big_body.size(), o.runs);
    std::printf("%4s %-8s %7s %7s %9s %9s %9s %9s %9s %9s  %s\n", "run", "big", "sent", "ok",
                "p50 ms", "p99 ms", "max ms", "big ok", "big fail", "big MB/s", "load");
    std::vector<window> all;
    for (int run = 1; run <= o.runs; ++run) {
        for (const bool with_big :
             run % 2 ? std::vector<bool>{false, true} : std::vector<bool>{true, false}) {
            try {
                all.push_back(measure(o, run, with_big, big_body, nonce_at));
            } catch (const std::exception& e) {
                std::fprintf(stderr, "  run %d (%s): %s\n", run, with_big ? "with" : "without",
                             e.what());
                continue;
            }
            const auto& w = all.back();
            std::printf("%4d %-8s %7zu %7zu %9.2f %9.2f %9.2f %9zu %9zu %9.1f  %s\n", w.run,
                        w.with_big ? "with" : "without", w.sent, w.ok, w.p50_ms, w.p99_ms, w.max_ms,
                        w.big_ok, w.big_failed, w.big_mb_s, w.load.c_str());
            std::fflush(stdout);
        }
    }
    std::printf("summary, median (min\xe2\x80\x93max) over the runs, small requests' latency:\n");
    bench::spread with_p99;
    for (const bool with_big : {false, true}) {
        std::vector<double> p50, p99, max, big_ok, failed;
        for (const auto& w : all) {
            if (w.with_big != with_big)
                continue;
            p50.push_back(w.p50_ms);
            p99.push_back(w.p99_ms);
            max.push_back(w.max_ms);
            big_ok.push_back(static_cast<double>(w.big_ok));
            failed.push_back(static_cast<double>(w.sent - w.ok));
        }
        std::printf("  %-8s p50 %s ms, p99 %s ms, max %s ms; small requests failed per run %s",
                    with_big ? "with" : "without",
                    bench::format_spread(bench::spread_of(p50)).c_str(),
                    bench::format_spread(bench::spread_of(p99)).c_str(),
                    bench::format_spread(bench::spread_of(max)).c_str(),
                    bench::format_spread(bench::spread_of(failed), "%.0f").c_str());
        if (with_big) {
            std::printf("; big bodies answered 200 per run %s",
                        bench::format_spread(bench::spread_of(big_ok), "%.0f").c_str());
            with_p99 = bench::spread_of(p99);
        }
        std::printf("\n");
    }
    std::printf("target: small requests' p99 <= 50 ms while %zu MiB bodies arrive: %s (%s ms)\n",
                o.big_mib, with_p99.runs > 0 && with_p99.median <= 50 ? "met" : "not met",
                bench::format_spread(with_p99).c_str());
    for (const auto& w : all) {
        const std::string at = std::string("bigbody.") + (w.with_big ? "with" : "without") + ".";
        bench::print_result(at + "p50_ms", w.p50_ms);
        bench::print_result(at + "p99_ms", w.p99_ms);
        bench::print_result(at + "max_ms", w.max_ms);
        bench::print_result(at + "failed", static_cast<double>(w.sent - w.ok));
        if (w.with_big) {
            bench::print_result(at + "big_ok", static_cast<double>(w.big_ok));
            bench::print_result(at + "big_failed", static_cast<double>(w.big_failed));
        }
    }
    return 0;
}
