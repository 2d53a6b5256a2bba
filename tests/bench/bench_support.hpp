// Helpers shared by the benchmark programs (tests/bench/*_bench.cpp): clocks, process
// resources, percentiles and run summaries, the deterministic chat bodies, and the "result:"
// lines tests/bench/run-bench.sh reads.
#pragma once

#include <sys/resource.h>
#include <sys/types.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace coalescer::bench {

using steady = std::chrono::steady_clock;

// steady_clock (CLOCK_MONOTONIC) microseconds since its epoch: the same clock in every process
// on the machine, so a time stamped in one process can be compared with a time read in another.
std::int64_t now_us();
double ms(std::int64_t us);

// ---------------------------------------------------------------------------------------------
// Process resources

// Raises the soft descriptor limit to the hard one; returns the limit now in force.
rlim_t raise_fd_limit();
// The 1-minute load average, as /proc/loadavg prints it: other processes take CPU from every
// party of a benchmark on a shared machine, so it is printed next to the figures.
std::string load_average();
// VmRSS of this process (pid 0) or of another one, in KiB.
long rss_kib(pid_t pid = 0);
// CPU seconds (user + system) used so far by another process (all its threads), from /proc.
double process_cpu_s(pid_t pid);
// CPU seconds (user + system) used so far by this process (all its threads).
double self_cpu_s();
// CPU seconds (user + system) used so far by the calling thread.
double thread_cpu_s();

// ---------------------------------------------------------------------------------------------
// Figures

// Nearest rank: the smallest value with at least a fraction q of the values at or below it
// (q = 0.5 over 4 values: the 2nd; q = 0.99 over 20 values: the largest). T{} for no values.
// Reorders `values`.
template <class T>
T percentile(std::vector<T>& values, double q) {
    if (values.empty())
        return T{};
    auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(values.size()) - 1e-9));
    rank = std::clamp<std::size_t>(rank, 1, values.size());
    const auto at = values.begin() + static_cast<std::ptrdiff_t>(rank - 1);
    std::nth_element(values.begin(), at, values.end());
    return *at;
}

// Median, smallest and largest of a measurement repeated over runs.
struct spread {
    double median = 0, min = 0, max = 0;
    std::size_t runs = 0;
};
spread spread_of(std::vector<double> values);
// "12.3 (11.0–14.2)" with the given printf format for each number; "-" for no runs.
std::string format_spread(const spread& s, const char* format = "%.2f");

// One "result: NAME VALUE" line on stdout, read by run-bench.sh, which takes the median, min and
// max of every value printed under one NAME.
void print_result(const std::string& name, double value);

// ---------------------------------------------------------------------------------------------
// Bodies

// A deterministic chat-completions body of about `target` bytes: a system prompt, alternating
// user/assistant turns with long prose contents (newlines, quotes, tabs, literal UTF-8 and the
// \uXXXX escapes Python's json.dumps writes), tools with JSON-schema parameters above 4 KiB, and
// the usual sampling numbers. The same (target, seed) always gives the same bytes.
std::string chat_body(std::size_t target, std::uint64_t seed);
// About `bytes` of that prose, already escaped for the inside of a JSON string.
std::string json_prose(std::size_t bytes, std::uint64_t seed);

// ---------------------------------------------------------------------------------------------
// Blocking descriptor I/O (pipes between a benchmark and its child process, plain sockets)

bool write_all(int fd, const void* data, std::size_t size);
bool read_exact(int fd, void* data, std::size_t size);

}  // namespace coalescer::bench
