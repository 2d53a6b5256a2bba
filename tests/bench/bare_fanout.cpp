#include "bare_fanout.hpp"

#include "bench_support.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>

namespace coalescer::bench {
namespace {

void sleep_until_us(std::int64_t when) {
    std::this_thread::sleep_until(steady::time_point(std::chrono::microseconds(when)));
}

// The mock's events carry the growing answer: about 880 bytes at first, 11 more per event.
std::string event_chunk(int index, std::int64_t due_us) {
    std::string data = R"(data: {"id":"bare","object":"chat.completion.chunk","choices":[{)"
                       R"("index":0,"delta":{"content":")";
    const std::size_t size = 880 + 11 * static_cast<std::size_t>(index);
    const std::string stamp = R"("}}],"mock_sent_us":)" + std::to_string(due_us) + "}\n\n";
    data.append(size > data.size() + stamp.size() ? size - data.size() - stamp.size() : 0, 'x');
    data += stamp;
    char length[16];
    const int n = std::snprintf(length, sizeof length, "%zx\r\n", data.size());
    return std::string(length, static_cast<std::size_t>(n)) + data + "\r\n";
}

constexpr std::string_view head =
    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    "Transfer-Encoding: chunked\r\nx-coalesce: follower\r\n\r\n";
constexpr std::string_view tail = "e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n";

// One sendmsg() per call when the kernel takes it all, which it does unless the client is
// behind by a socket buffer.
bool send_all(int fd, std::vector<iovec>& iov) {
    std::size_t first = 0;
    while (first < iov.size()) {
        msghdr msg{};
        msg.msg_iov = iov.data() + first;
        msg.msg_iovlen = iov.size() - first;
        auto n = ::sendmsg(fd, &msg, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return false;
        while (first < iov.size() && static_cast<std::size_t>(n) >= iov[first].iov_len) {
            n -= static_cast<ssize_t>(iov[first].iov_len);
            ++first;
        }
        if (first < iov.size()) {
            iov[first].iov_base = static_cast<char*>(iov[first].iov_base) + n;
            iov[first].iov_len -= static_cast<std::size_t>(n);
        }
    }
    return true;
}

}  // namespace

bare_fanout::bare_fanout(bare_fanout_plan plan) : plan_(plan) {
    listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    if (listener_ < 0 || ::bind(listener_, reinterpret_cast<sockaddr*>(&address), length) != 0 ||
        ::listen(listener_, SOMAXCONN) != 0 ||
        ::getsockname(listener_, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
        throw std::runtime_error(std::string("bare fan-out listener: ") + std::strerror(errno));
    }
    port_ = ntohs(address.sin_port);
    thread_ = std::thread([this] { run(); });
}

bare_fanout::~bare_fanout() {
    ::shutdown(listener_, SHUT_RDWR);  // ends an accept() still waiting
    thread_.join();
    for (int fd : sockets_)
        ::close(fd);
    ::close(listener_);
}

void bare_fanout::run() {
    const auto n = static_cast<std::size_t>(plan_.subscribers);
    while (sockets_.size() < n) {
        const int fd = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            return;  // shut down
        }
        const int one = 1;
        ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        const timeval limit{.tv_sec = 30, .tv_usec = 0};  // a stuck client never hangs the run
        ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
        ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit);
        sockets_.push_back(fd);
        accepted_.store(static_cast<std::int64_t>(sockets_.size()));
    }
    if (!read_requests())
        return;
    const std::int64_t start_us = now_us() + std::int64_t{plan_.latency_ms} * 1000;
    for (int k = 0; k < plan_.chunks; ++k)
        events_.push_back(event_chunk(k, start_us + std::int64_t{k} * plan_.interval_ms * 1000));
    sleep_until_us(start_us);
    std::thread second([&] { stream(n / 2, n, start_us); });
    stream(0, n / 2, start_us);
    second.join();
}

bool bare_fanout::read_requests() {
    std::vector<char> buffer(plan_.request_bytes);
    for (int fd : sockets_) {
        std::size_t got = 0;
        while (got < plan_.request_bytes) {
            const auto n = ::recv(fd, buffer.data() + got, plan_.request_bytes - got, 0);
            if (n <= 0 && errno != EINTR)
                return false;
            got += n > 0 ? static_cast<std::size_t>(n) : 0;
        }
    }
    return true;
}

void bare_fanout::stream(std::size_t begin, std::size_t end, std::int64_t start_us) {
    const auto chunks = static_cast<std::size_t>(plan_.chunks);
    const std::int64_t interval_us = std::int64_t{plan_.interval_ms} * 1000;
    std::vector<std::size_t> sent(end - begin, 0);
    std::vector<iovec> iov;
    for (;;) {
        const auto due = std::min<std::size_t>(
            chunks, static_cast<std::size_t>((now_us() - start_us) / interval_us) + 1);
        for (std::size_t i = begin; i < end; ++i) {
            auto& done = sent[i - begin];
            if (done >= due)
                continue;
            iov.clear();
            if (done == 0)
                iov.push_back({const_cast<char*>(head.data()), head.size()});
            for (auto k = done; k < due; ++k)
                iov.push_back({events_[k].data(), events_[k].size()});
            if (due == chunks)
                iov.push_back({const_cast<char*>(tail.data()), tail.size()});
            send_all(sockets_[i], iov);  // a failed client is the client's count to report
            done = due;
        }
        if (due == chunks)
            return;
        sleep_until_us(start_us + static_cast<std::int64_t>(due) * interval_us);
    }
}

}  // namespace coalescer::bench
