#include "raw_upstream.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <stdexcept>

namespace coalescer::test {

namespace {

constexpr int poll_ms = 20;  // how often a blocked thread looks at the stop flag

std::string lower(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
    return s;
}

std::string trim(const std::string& s) {
    const auto b = s.find_first_not_of(" \t");
    if (b == std::string::npos)
        return "";
    const auto e = s.find_last_not_of(" \t");
    return s.substr(b, e - b + 1);
}

// Parses a request head (without its final CRLF CRLF) into `r`.
void parse_head(const std::string& head, recorded_request& r) {
    std::size_t pos = 0;
    bool first = true;
    while (pos <= head.size()) {
        auto end = head.find("\r\n", pos);
        if (end == std::string::npos)
            end = head.size();
        const auto line = head.substr(pos, end - pos);
        pos = end + 2;
        if (first) {
            first = false;
            const auto sp1 = line.find(' ');
            const auto sp2 = line.find(' ', sp1 + 1);
            r.method = line.substr(0, sp1);
            r.target = line.substr(sp1 + 1, sp2 - sp1 - 1);
            continue;
        }
        const auto colon = line.find(':');
        if (colon == std::string::npos)
            continue;
        const auto name = lower(line.substr(0, colon));
        const auto value = trim(line.substr(colon + 1));
        auto& slot = r.headers[name];
        slot = slot.empty() ? value : slot + ", " + value;
    }
}

void send_all(int fd, const std::string& bytes, bool& failed) {
    std::size_t sent = 0;
    while (!failed && sent < bytes.size()) {
        const auto n = ::send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                pollfd p{fd, POLLOUT, 0};
                ::poll(&p, 1, poll_ms);
                continue;
            }
            failed = true;
            return;
        }
        sent += static_cast<std::size_t>(n);
    }
}

}  // namespace

std::string recorded_request::header(const std::string& name) const {
    const auto it = headers.find(lower(name));
    return it == headers.end() ? std::string() : it->second;
}

script_step& script_step::after(std::chrono::milliseconds delay, std::string bytes) {
    pieces.push_back({delay, std::move(bytes)});
    return *this;
}

script_step& script_step::ending_with(ending e) {
    then = e;
    return *this;
}

script_step answer(std::string bytes, ending then) {
    script_step s;
    s.pieces.push_back({std::chrono::milliseconds(0), std::move(bytes)});
    s.then = then;
    return s;
}

responder on_request(std::size_t connection, std::size_t index, script_step step,
                     responder otherwise) {
    return [=](const recorded_request& r) {
        return r.connection == connection && r.index == index ? step : otherwise(r);
    };
}

responder on_call(std::size_t call, script_step step, responder otherwise) {
    return [=](const recorded_request& r) { return r.call == call ? step : otherwise(r); };
}

raw_upstream::raw_upstream(responder script) : script_(std::move(script)) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listen_fd_ < 0)
        throw std::runtime_error("raw_upstream: socket failed");
    const int one = 1;
    ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in at{};
    at.sin_family = AF_INET;
    at.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    at.sin_port = 0;
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&at), sizeof at) != 0 ||
        ::listen(listen_fd_, 128) != 0) {
        ::close(listen_fd_);
        throw std::runtime_error("raw_upstream: bind/listen failed");
    }
    socklen_t len = sizeof at;
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&at), &len);
    port_ = ntohs(at.sin_port);
    acceptor_ = std::thread([this] { accept_loop(); });
}

raw_upstream::~raw_upstream() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    changed_.notify_all();
    acceptor_.join();
    std::vector<std::thread> threads;
    {
        std::lock_guard lock(mutex_);
        threads.swap(threads_);
    }
    for (auto& t : threads)
        t.join();
    ::close(listen_fd_);
}

std::string raw_upstream::url() const {
    return "http://127.0.0.1:" + std::to_string(port_);
}

std::size_t raw_upstream::calls() const {
    std::lock_guard lock(mutex_);
    return requests_.size();
}

std::size_t raw_upstream::connections() const {
    std::lock_guard lock(mutex_);
    return conns_.size();
}

std::size_t raw_upstream::steps_done() const {
    std::lock_guard lock(mutex_);
    return steps_done_;
}

std::vector<recorded_request> raw_upstream::requests() const {
    std::lock_guard lock(mutex_);
    return requests_;
}

bool raw_upstream::closed_by_peer(std::size_t c) const {
    std::lock_guard lock(mutex_);
    return c < conns_.size() && conns_[c].peer_closed;
}

void raw_upstream::release() {
    {
        std::lock_guard lock(mutex_);
        released_ = true;
    }
    changed_.notify_all();
}

bool raw_upstream::wait(std::chrono::milliseconds d) {
    std::unique_lock lock(mutex_);
    changed_.wait_for(lock, d, [&] { return stopping_; });
    return !stopping_;
}

void raw_upstream::accept_loop() {
    for (;;) {
        {
            std::lock_guard lock(mutex_);
            if (stopping_)
                return;
        }
        pollfd p{listen_fd_, POLLIN, 0};
        if (::poll(&p, 1, poll_ms) <= 0)
            continue;
        const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        const int one = 1;
        ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        std::lock_guard lock(mutex_);
        const auto index = conns_.size();
        conns_.push_back({});
        threads_.emplace_back([this, index, fd] { serve(index, fd); });
    }
}

bool raw_upstream::read_more(int fd, std::string& buffer) {
    for (;;) {
        {
            std::lock_guard lock(mutex_);
            if (stopping_)
                return false;
        }
        pollfd p{fd, POLLIN, 0};
        const int ready = ::poll(&p, 1, poll_ms);
        if (ready == 0 || (ready < 0 && errno == EINTR))
            continue;
        char chunk[16384];
        const auto n = ::recv(fd, chunk, sizeof chunk, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            continue;
        if (n <= 0)
            return false;
        buffer.append(chunk, static_cast<std::size_t>(n));
        return true;
    }
}

void raw_upstream::serve(std::size_t index, int fd) {
    std::string buffer;
    bool write_side_open = true;
    bool closed_here = false;
    bool peer_closed = false;
    for (std::size_t n = 0;; ++n) {
        // One request: the head, then as many body bytes as its Content-Length says.
        std::size_t head_end;
        while ((head_end = buffer.find("\r\n\r\n")) == std::string::npos) {
            if (!read_more(fd, buffer)) {
                peer_closed = true;
                break;
            }
        }
        if (peer_closed)
            break;
        recorded_request r;
        parse_head(buffer.substr(0, head_end), r);
        std::size_t length = 0;
        if (const auto cl = r.header("content-length"); !cl.empty())
            length = std::stoul(cl);
        const auto body_at = head_end + 4;
        while (buffer.size() < body_at + length) {
            if (!read_more(fd, buffer)) {
                peer_closed = true;
                break;
            }
        }
        if (peer_closed)
            break;
        r.body = buffer.substr(body_at, length);
        buffer.erase(0, body_at + length);
        r.connection = index;
        r.index = n;
        {
            std::lock_guard lock(mutex_);
            r.call = requests_.size();
            requests_.push_back(r);
        }
        if (!write_side_open)
            continue;  // half-closed: record what comes, answer nothing
        const auto step = script_(r);
        if (step.hold) {
            std::unique_lock lock(mutex_);
            changed_.wait_for(lock, hold_limit, [&] { return stopping_ || released_; });
        }
        bool failed = false;
        for (const auto& p : step.pieces) {
            if (p.delay.count() > 0 && !wait(p.delay))
                break;
            send_all(fd, p.bytes, failed);
        }
        {
            std::lock_guard lock(mutex_);
            ++steps_done_;
        }
        changed_.notify_all();
        if (step.then == ending::half_close) {
            ::shutdown(fd, SHUT_WR);
            write_side_open = false;
        } else if (step.then == ending::close) {
            closed_here = true;
            break;
        } else if (step.then == ending::reset) {
            const linger abort{1, 0};
            ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &abort, sizeof abort);
            closed_here = true;
            break;
        }
    }
    {
        std::lock_guard lock(mutex_);
        conns_[index].peer_closed = peer_closed && !closed_here && !stopping_;
    }
    ::close(fd);
}

}  // namespace coalescer::test
