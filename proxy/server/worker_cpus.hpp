// Which CPUs the worker threads may run on: how many workers "one per core" means, and the
// optional pinning of each worker to a CPU of its own (`pin_workers`).
#pragma once

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

}  // namespace coalescer::server
