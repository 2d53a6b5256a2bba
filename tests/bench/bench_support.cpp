#include "bench_support.hpp"

#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string_view>

namespace coalescer::bench {

std::int64_t now_us() {
    return std::chrono::duration_cast<std::chrono::microseconds>(steady::now().time_since_epoch())
        .count();
}

double ms(std::int64_t us) {
    return static_cast<double>(us) / 1000.0;
}

// ---------------------------------------------------------------------------------------------
// Process resources

rlim_t raise_fd_limit() {
    rlimit lim{};
    if (getrlimit(RLIMIT_NOFILE, &lim) != 0)
        return 1024;
    if (lim.rlim_cur < lim.rlim_max) {
        lim.rlim_cur = lim.rlim_max;
        setrlimit(RLIMIT_NOFILE, &lim);
        getrlimit(RLIMIT_NOFILE, &lim);
    }
    return lim.rlim_cur;
}

std::string load_average() {
    std::ifstream in("/proc/loadavg");
    std::string one;
    in >> one;
    return one;
}

long rss_kib(pid_t pid) {
    std::ifstream in(pid == 0 ? std::string("/proc/self/status")
                              : "/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind("VmRSS:", 0) == 0)
            return std::strtol(line.c_str() + 6, nullptr, 10);
    }
    return 0;
}

double process_cpu_s(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto after_name = text.rfind(')');  // the command name may hold spaces
    if (after_name == std::string::npos)
        return 0;
    std::istringstream fields(text.substr(after_name + 2));
    std::string skip;
    for (int i = 3; i < 14; ++i)  // fields 3..13: state .. cmajflt
        fields >> skip;
    double user = 0, system = 0;
    fields >> user >> system;
    return (user + system) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

double self_cpu_s() {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    const auto s = [](const timeval& t) {
        return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6;
    };
    return s(u.ru_utime) + s(u.ru_stime);
}

double thread_cpu_s() {
    timespec t{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) / 1e9;
}

// ---------------------------------------------------------------------------------------------
// Figures

spread spread_of(std::vector<double> values) {
    spread s;
    s.runs = values.size();
    if (values.empty())
        return s;
    std::sort(values.begin(), values.end());
    const std::size_t n = values.size();
    s.median = n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
    s.min = values.front();
    s.max = values.back();
    return s;
}

std::string format_spread(const spread& s, const char* format) {
    if (s.runs == 0)
        return "-";
    char one[64];
    std::string out;
    std::snprintf(one, sizeof one, format, s.median);
    out += one;
    out += " (";
    std::snprintf(one, sizeof one, format, s.min);
    out += one;
    out += "\xe2\x80\x93";  // en dash
    std::snprintf(one, sizeof one, format, s.max);
    out += one;
    out += ")";
    return out;
}

void print_result(const std::string& name, double value) {
    std::printf("result: %s %.6g\n", name.c_str(), value);
}

// ---------------------------------------------------------------------------------------------
// Bodies

namespace {

struct rng {
    std::uint64_t s;
    std::uint64_t next() {
        s += 0x9e3779b97f4a7c15ull;
        std::uint64_t z = s;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    }
    std::size_t below(std::size_t n) { return static_cast<std::size_t>(next() % n); }
};

const char* const words[] = {
    "the",
    "model",
    "request",
    "response",
    "token",
    "stream",
    "function",
    "value",
    "server",
    "cache",
    "latency",
    "upstream",
    "please",
    "explain",
    "summarise",
    "following",
    "document",
    "carefully",
    "and",
    "of",
    "to",
    "in",
    "a",
    "is",
    "that",
    "for",
    "with",
    "as",
    "on",
    "this",
    "be",
    "are",
    "by",
    "it",
    "configuration",
    "deployment",
    "kubernetes",
    "retry",
    "timeout",
    "answer",
    "question",
    "example",
    "caf\xc3\xa9",
    "na\xc3\xafve",
    "\xe2\x80\x9cquoted\xe2\x80\x9d",
    "\\\"escaped\\\"",
    "\\u2019s",
    "\\u00e9t\\u00e9",
    "\xf0\x9f\x99\x82",
    "C:\\\\path\\\\file",
    "x=1;",
    "{json}",
    "[list]",
    "42",
    "3.14",
};

std::string prose(rng& r, std::size_t bytes) {
    std::string out;
    out.reserve(bytes + 32);
    std::size_t line = 0;
    while (out.size() < bytes) {
        const char* w = words[r.below(sizeof words / sizeof words[0])];
        out += w;
        line += std::char_traits<char>::length(w) + 1;
        if (line > 60 + r.below(60)) {
            out += r.below(8) == 0 ? "\\n\\n" : "\\n";
            if (r.below(20) == 0)
                out += "\\t";
            line = 0;
        } else {
            out += r.below(12) == 0 ? ". " : " ";
        }
    }
    return out;
}

const char* const tools =
    R"("tools":[{"type":"function","function":{"name":"get_weather","description":"Get the current weather for a location.","parameters":{"type":"object","properties":{"location":{"type":"string","description":"City and country, e.g. Paris, France"},"unit":{"type":"string","enum":["celsius","fahrenheit"]}},"required":["location"],"additionalProperties":false},"strict":true}},{"type":"function","function":{"name":"search_docs","description":"Search the internal documentation.","parameters":{"type":"object","properties":{"query":{"type":"string"},"top_k":{"type":"integer","minimum":1,"maximum":50}},"required":["query"]}}}])";

}  // namespace

std::string json_prose(std::size_t bytes, std::uint64_t seed) {
    rng r{seed};
    return prose(r, bytes);
}

std::string chat_body(std::size_t target, std::uint64_t seed) {
    rng r{seed};
    std::string body = "{\"model\":\"gpt-4o-2024-08-06\",\"messages\":[";
    const std::string tail =
        std::string(
            "],\"temperature\":0.7,\"top_p\":1,\"max_tokens\":1024,\"presence_penalty\":0,"
            "\"frequency_penalty\":0.0,\"seed\":1234567890123,\"stream\":true,"
            "\"stream_options\":{\"include_usage\":true},\"user\":\"user-8f14e45f\",") +
        (target > 4096 ? tools : "\"tool_choice\":\"auto\"") + "}";
    const std::size_t budget =
        target > body.size() + tail.size() + 64 ? target - body.size() - tail.size() : 64;
    std::size_t used = 0;
    bool first = true;
    int turn = 0;
    while (used < budget) {
        const char* role = turn == 0 ? "system" : (turn % 2 == 1 ? "user" : "assistant");
        std::string message =
            std::string(first ? "" : ",") + "{\"role\":\"" + role + "\",\"content\":\"";
        const std::size_t overhead = message.size() + 2;
        const std::size_t left = budget - used > overhead ? budget - used - overhead : 16;
        const std::size_t want = std::min<std::size_t>(left, 200 + r.below(target / 6 + 1));
        message += prose(r, want) + "\"}";
        used += message.size();
        body += message;
        first = false;
        ++turn;
    }
    return body + tail;
}

// ---------------------------------------------------------------------------------------------
// Blocking descriptor I/O

bool write_all(int fd, const void* data, std::size_t size) {
    const auto* p = static_cast<const char*>(data);
    while (size > 0) {
        const auto n = ::write(fd, p, size);
        if (n <= 0 && errno != EINTR)
            return false;
        if (n > 0) {
            p += n;
            size -= static_cast<std::size_t>(n);
        }
    }
    return true;
}

bool read_exact(int fd, void* data, std::size_t size) {
    auto* p = static_cast<char*>(data);
    while (size > 0) {
        const auto n = ::read(fd, p, size);
        if (n == 0 || (n < 0 && errno != EINTR))
            return false;
        if (n > 0) {
            p += n;
            size -= static_cast<std::size_t>(n);
        }
    }
    return true;
}

}  // namespace coalescer::bench
