// Which CPUs the worker threads may run on: how many workers "one per core" means, the
// optional pinning of each worker to a CPU of its own (`pin_workers`), and how a worker's loop
// shares its CPU.
#pragma once

#include <boost/asio/io_context.hpp>

#include <string>
#include <system_error>
#include <thread>
#include <vector>

namespace coalescer::server {

// The CPUs in the calling thread's affinity mask (taskset, a container's cpuset), ascending.
std::vector<int> allowed_cpus();

// Workers for `workers: 0`: one per allowed CPU, capped by the cgroup v2 CPU quota (a
// container's CPU limit) when one is set.
unsigned default_workers();

// Restricts `thread` to `cpu`; the kernel's refusal (not permitted, CPU gone) as an error.
std::error_code pin(std::thread& thread, int cpu);

// "0,1,2" for the log.
std::string cpu_list(const std::vector<int>& cpus);

// Runs `io` until it is stopped. An unpinned worker gives way to the other runnable threads on
// its CPU after every `handlers_per_yield` handlers; a pinned one keeps its CPU.
//
// An unpinned worker that always has work runs until the kernel preempts it, a whole time
// slice (1.5 ms on 2 CPUs), while the threads its own writes woke wait beside it: the
// application next to the sidecar, or wrk and the upstream in a benchmark. Their requests wait
// a slice or two, and the p99 shows it. Measured with wrk -c50 on 2 cores, three batches of
// 8 runs, median p99: 4.0-4.8 -> 3.0-3.4 ms (nginx: 3.0-3.5), the same req/s, at the price of
// more CPU per request when the CPU is contended (+12 % in one comparison: the extra switches).
// Every 128 handlers cost less CPU (+4 %) and gained less (the suite's p99: 1.22 x nginx's,
// against 0.73 x at 64). Pinned workers measured worse with it (p99 2.6 -> 3.0 ms): a pinned
// worker cannot move away, so it does not step aside. Alone on its CPU, sched_yield() returns
// at once.
constexpr unsigned handlers_per_yield = 64;
void run_worker_loop(boost::asio::io_context& io, bool pinned);

}  // namespace coalescer::server
