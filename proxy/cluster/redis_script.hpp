// A Lua script that Redis runs by its SHA1 (EVALSHA): its text crosses the wire, and Redis
// hashes it, only when Redis does not know it yet (first use, a restart, SCRIPT FLUSH); then
// the same call is made again with EVAL, which teaches it.
#pragma once

#include <string>

namespace coalescer::cluster {

class redis_script {
  public:
    explicit redis_script(std::string text);

    const std::string& text() const noexcept { return text_; }
    const std::string& sha1() const noexcept { return sha1_; }  // lower-case hex, as Redis names it

  private:
    std::string text_;
    std::string sha1_;
};

}  // namespace coalescer::cluster
