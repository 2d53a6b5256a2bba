// Ids for flights and unshared exchanges: x-coalesce-flight and the access log's flight field.
// A random per-process prefix and a counter: unique across a fleet's processes, cheap to make.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

namespace coalescer::coalesce {

class flight_ids {
  public:
    flight_ids();
    std::string next();

  private:
    std::string prefix_;
    std::atomic<std::uint64_t> next_{1};
};

}  // namespace coalescer::coalesce
