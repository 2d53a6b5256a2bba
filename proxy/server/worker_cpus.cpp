#include "server/worker_cpus.hpp"

#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>

namespace coalescer::server {

std::vector<int> allowed_cpus() {
    std::vector<int> cpus;
    cpu_set_t set;
    CPU_ZERO(&set);
    if (::sched_getaffinity(0, sizeof set, &set) == 0) {
        for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
            if (CPU_ISSET(cpu, &set)) {
                cpus.push_back(cpu);
            }
        }
    }
    if (cpus.empty()) {  // no answer from the kernel: every online CPU
        for (int cpu = 0; cpu < static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
             ++cpu) {
            cpus.push_back(cpu);
        }
    }
    return cpus;
}

unsigned default_workers() {
    // The affinity mask, not the machine's CPU count: under `taskset -c 0` or a Kubernetes
    // cpuset, threads past the allowed CPUs would only take turns on them.
    auto cores = static_cast<unsigned>(allowed_cpus().size());
    std::ifstream in("/sys/fs/cgroup/cpu.max");
    std::string quota;
    long period = 0;
    if (in >> quota >> period && quota != "max" && period > 0) {
        const long q = std::atol(quota.c_str());
        if (q > 0) {
            cores = std::min<unsigned>(
                cores, static_cast<unsigned>(std::max(1L, (q + period - 1) / period)));
        }
    }
    return std::max(1u, cores);
}

std::error_code pin(std::thread& thread, int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    const int rc = ::pthread_setaffinity_np(thread.native_handle(), sizeof set, &set);
    return rc == 0 ? std::error_code{} : std::error_code(rc, std::generic_category());
}

std::string cpu_list(const std::vector<int>& cpus) {
    std::string out;
    for (int cpu : cpus) {
        if (!out.empty()) {
            out += ',';
        }
        out += std::to_string(cpu);
    }
    return out;
}

void run_worker_loop(boost::asio::io_context& io, bool pinned) {
    if (pinned) {
        io.run();
        return;
    }
    for (unsigned handled = 1; io.run_one() != 0; ++handled) {
        if (handled % handlers_per_yield == 0) {
            ::sched_yield();
        }
    }
}

}  // namespace coalescer::server
