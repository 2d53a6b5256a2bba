#include "redis_server.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <thread>

namespace coalescer::test {
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

namespace {

sockaddr_in loopback(std::uint16_t port) {
    sockaddr_in at{};
    at.sin_family = AF_INET;
    at.sin_port = htons(port);
    at.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return at;
}

int remaining_ms(steady::time_point until) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - steady::now());
    return left.count() > 0 ? static_cast<int>(left.count()) : 0;
}

// Waits until `fd` is ready for `events` or `until` passes.
bool wait_for(int fd, short events, steady::time_point until) {
    for (;;) {
        pollfd p{fd, events, 0};
        const int n = ::poll(&p, 1, remaining_ms(until));
        if (n > 0)
            return true;
        if (n == 0)
            return false;
        if (errno != EINTR)
            return false;
    }
}

constexpr int max_reply_depth = 16;
constexpr std::size_t max_bulk = 64u << 20;

}  // namespace

std::uint16_t free_loopback_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
    auto at = loopback(0);
    socklen_t len = sizeof at;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&at), sizeof at) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&at), &len) != 0) {
        const std::string why = std::strerror(errno);
        ::close(fd);
        throw std::runtime_error("binding a free loopback port: " + why);
    }
    ::close(fd);
    return ntohs(at.sin_port);
}

std::string resp_reply::describe() const {
    switch (kind) {
        case type::simple:
            return text;
        case type::error:
            return "(error) " + text;
        case type::integer:
            return "(integer) " + std::to_string(integer);
        case type::bulk:
            return "\"" + text + "\"";
        case type::nil:
            return "(nil)";
        case type::array: {
            std::string out = "[";
            for (std::size_t i = 0; i < elements.size(); ++i)
                out += (i ? ", " : "") + elements[i].describe();
            return out + "]";
        }
    }
    return "?";
}

resp_connection::resp_connection(std::uint16_t port, std::chrono::milliseconds timeout)
    : timeout_(timeout) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd_ < 0)
        throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
    const auto at = loopback(port);
    const auto until = steady::now() + timeout_;
    if (::connect(fd_, reinterpret_cast<const sockaddr*>(&at), sizeof at) != 0) {
        int err = errno;
        if (err == EINPROGRESS) {
            if (!wait_for(fd_, POLLOUT, until)) {
                ::close(fd_);
                throw std::runtime_error("connect to redis port " + std::to_string(port) +
                                         ": timed out");
            }
            socklen_t len = sizeof err;
            ::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len);
        }
        if (err != 0) {
            ::close(fd_);
            throw std::runtime_error("connect to redis port " + std::to_string(port) + ": " +
                                     std::strerror(err));
        }
    }
}

resp_connection::~resp_connection() {
    if (fd_ >= 0)
        ::close(fd_);
}

resp_reply resp_connection::command(const std::vector<std::string>& args) {
    // Appended piece by piece: GCC 12 at -O3 warns falsely (-Wstringop-overflow) about
    // "literal" + std::to_string(...).
    std::string out;
    out += '*';
    out += std::to_string(args.size());
    out += "\r\n";
    for (const auto& a : args) {
        out += '$';
        out += std::to_string(a.size());
        out += "\r\n";
        out += a;
        out += "\r\n";
    }
    const auto until = steady::now() + timeout_;
    for (std::size_t sent = 0; sent < out.size();) {
        if (!wait_for(fd_, POLLOUT, until))
            throw std::runtime_error("redis: sending " + args.front() + " timed out");
        const auto n = ::send(fd_, out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (n <= 0)
            throw std::runtime_error("redis: send: " + std::string(std::strerror(errno)));
        sent += static_cast<std::size_t>(n);
    }
    return read_reply(0);
}

void resp_connection::fill() {
    const auto until = steady::now() + timeout_;
    char buf[16384];
    for (;;) {
        if (!wait_for(fd_, POLLIN, until))
            throw std::runtime_error("redis: no reply within " + std::to_string(timeout_.count()) +
                                     " ms");
        const auto n = ::recv(fd_, buf, sizeof buf, 0);
        if (n > 0) {
            buffer_.append(buf, static_cast<std::size_t>(n));
            return;
        }
        if (n == 0)
            throw std::runtime_error("redis: connection closed");
        if (errno != EAGAIN && errno != EINTR)
            throw std::runtime_error("redis: recv: " + std::string(std::strerror(errno)));
    }
}

std::string resp_connection::read_line() {
    for (;;) {
        const auto end = buffer_.find("\r\n");
        if (end != std::string::npos) {
            std::string line = buffer_.substr(0, end);
            buffer_.erase(0, end + 2);
            return line;
        }
        if (buffer_.size() > 64 * 1024)
            throw std::runtime_error("redis: reply line too long");
        fill();
    }
}

std::string resp_connection::read_exact(std::size_t n) {
    while (buffer_.size() < n)
        fill();
    std::string out = buffer_.substr(0, n);
    buffer_.erase(0, n);
    return out;
}

resp_reply resp_connection::read_reply(int depth) {
    if (depth > max_reply_depth)
        throw std::runtime_error("redis: reply nested too deeply");
    const std::string line = read_line();
    if (line.empty())
        throw std::runtime_error("redis: empty reply line");
    resp_reply r;
    const std::string rest = line.substr(1);
    switch (line[0]) {
        case '+':
            r.kind = resp_reply::type::simple;
            r.text = rest;
            return r;
        case '-':
            r.kind = resp_reply::type::error;
            r.text = rest;
            return r;
        case ':':
            r.kind = resp_reply::type::integer;
            r.integer = std::stoll(rest);
            return r;
        case '$': {
            const long long n = std::stoll(rest);
            if (n < 0)
                return r;  // nil
            if (static_cast<unsigned long long>(n) > max_bulk)
                throw std::runtime_error("redis: bulk reply too large");
            r.kind = resp_reply::type::bulk;
            r.text = read_exact(static_cast<std::size_t>(n) + 2);
            r.text.resize(static_cast<std::size_t>(n));
            return r;
        }
        case '*': {
            const long long n = std::stoll(rest);
            if (n < 0)
                return r;  // nil array
            r.kind = resp_reply::type::array;
            for (long long i = 0; i < n; ++i)
                r.elements.push_back(read_reply(depth + 1));
            return r;
        }
        default:
            throw std::runtime_error("redis: unexpected reply \"" + line + "\"");
    }
}

redis_server::redis_server(redis_options options) : options_(std::move(options)) {
    if (const char* binary = std::getenv("COALESCER_REDIS_SERVER"); binary && *binary)
        options_.binary = binary;
    if (::access(options_.binary.c_str(), X_OK) != 0) {
        throw std::runtime_error("no redis-server at " + options_.binary +
                                 " (deploy/install-deps.sh installs it; COALESCER_REDIS_SERVER "
                                 "names another)");
    }
    static std::atomic<int> instances{0};
    tag_ = "redis-" + std::to_string(++instances);
    dir_ = temp_path(tag_);
    std::filesystem::create_directories(dir_);
    std::string why;
    for (int attempt = 0; attempt < 8; ++attempt) {
        if (start_on(free_loopback_port(), why))
            return;
    }
    std::filesystem::remove_all(dir_);
    throw std::runtime_error("redis-server would not start: " + why);
}

redis_server::~redis_server() {
    if (process_)
        reap(SIGKILL);
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
}

std::string redis_server::url(int db) const {
    return "redis://127.0.0.1:" + std::to_string(port_) + "/" + std::to_string(db);
}

bool redis_server::start_on(std::uint16_t port, std::string& why) {
    std::vector<std::string> args = {options_.binary, "--port", std::to_string(port)};
    // Loopback only, no persistence (nothing outlives the test), the log on stdout.
    args.insert(args.end(), {"--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir",
                             dir_, "--logfile", "", "--daemonize", "no"});
    if (!options_.password.empty()) {
        args.push_back("--requirepass");
        args.push_back(options_.password);
    }
    args.insert(args.end(), options_.extra_args.begin(), options_.extra_args.end());
    process_ = std::make_unique<child>(args, tag_);
    port_ = port;
    frozen_ = false;
    const auto until = steady::now() + 10s;
    while (steady::now() < until) {
        if (const int code = process_->wait_exit(20ms); code != -1) {
            why = "exit " + std::to_string(code) + " on port " + std::to_string(port) + ": " +
                  process_->out() + process_->err();
            last_log_ = process_->out() + process_->err();
            process_.reset();  // reaped: nothing left to signal
            return false;
        }
        if (ping(200ms))
            return true;
    }
    why = "no PONG within 10 s on port " + std::to_string(port) + ": " + process_->out();
    reap(SIGKILL);
    return false;
}

void redis_server::reap(int signo) {
    // pid() stays valid until wait_exit() reaps it; after that process_ is reset, so nothing
    // here can ever signal pid 0 (our own process group).
    ::kill(process_->pid(), signo);
    if (frozen_)
        ::kill(process_->pid(), SIGCONT);  // a stopped process acts on SIGTERM only once resumed
    if (process_->wait_exit(10s) == -1) {
        ::kill(process_->pid(), SIGKILL);
        process_->wait_exit(10s);
    }
    frozen_ = false;
    last_log_ = process_->out() + process_->err();
    process_.reset();
}

resp_reply redis_server::command(const std::vector<std::string>& args,
                                 std::chrono::milliseconds timeout) const {
    resp_connection c(port_, timeout);
    if (!options_.password.empty()) {
        const auto auth = c.command({"AUTH", options_.password});
        if (!auth.is_ok())
            throw std::runtime_error("redis AUTH: " + auth.describe());
    }
    return c.command(args);
}

bool redis_server::ping(std::chrono::milliseconds timeout) const {
    try {
        const auto r = command({"PING"}, timeout);
        return r.kind == resp_reply::type::simple && r.text == "PONG";
    } catch (const std::exception&) {
        return false;
    }
}

void redis_server::flushall() {
    const auto r = command({"FLUSHALL"});
    if (!r.is_ok())
        throw std::runtime_error("FLUSHALL: " + r.describe());
}

long long redis_server::dbsize() {
    const auto r = command({"DBSIZE"});
    if (r.kind != resp_reply::type::integer)
        throw std::runtime_error("DBSIZE: " + r.describe());
    return r.integer;
}

std::vector<std::string> redis_server::keys(const std::string& pattern) {
    const auto r = command({"KEYS", pattern});
    if (r.kind != resp_reply::type::array)
        throw std::runtime_error("KEYS: " + r.describe());
    std::vector<std::string> out;
    for (const auto& e : r.elements)
        out.push_back(e.text);
    return out;
}

void redis_server::pause_clients(std::chrono::milliseconds duration, bool all) {
    const auto r =
        command({"CLIENT", "PAUSE", std::to_string(duration.count()), all ? "ALL" : "WRITE"});
    if (!r.is_ok())
        throw std::runtime_error("CLIENT PAUSE: " + r.describe());
}

void redis_server::stop() {
    if (process_)
        reap(SIGTERM);
}

void redis_server::kill() {
    if (process_)
        reap(SIGKILL);
}

void redis_server::freeze() {
    if (process_ && !frozen_) {
        ::kill(process_->pid(), SIGSTOP);
        frozen_ = true;
    }
}

void redis_server::thaw() {
    if (process_ && frozen_) {
        ::kill(process_->pid(), SIGCONT);
        frozen_ = false;
    }
}

void redis_server::restart() {
    stop();
    std::string why;
    const auto until = steady::now() + 20s;
    do {
        if (start_on(port_, why))
            return;
        std::this_thread::sleep_for(200ms);
    } while (steady::now() < until);
    throw std::runtime_error("redis-server would not start again: " + why);
}

std::string redis_server::log() const {
    return process_ ? process_->out() + process_->err() : last_log_;
}

}  // namespace coalescer::test
