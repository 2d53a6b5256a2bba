// Redis's wire protocol (RESP2) as the cluster layer uses it: commands written as arrays of
// bulk strings (binary-safe), and replies read by hiredis's reader into values of our own, so
// no hiredis object outlives the read that made it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

struct redisReader;

namespace coalescer::cluster {

struct reply {
    enum class kind { nil, status, error, integer, string, array };
    kind type = kind::nil;
    std::string text;  // status, error, string
    long long integer = 0;
    std::vector<reply> elements;

    bool is_nil() const noexcept { return type == kind::nil; }
    bool is_error() const noexcept { return type == kind::error; }
    bool is_string() const noexcept { return type == kind::string || type == kind::status; }
};

// Appends one command to `out`: `*N\r\n` then each argument as `$len\r\n…\r\n`.
void append_command(std::string& out, const std::vector<std::string_view>& args);

// Reads replies from the bytes a connection receives, fed in any pieces.
class reply_reader {
  public:
    reply_reader();
    ~reply_reader();
    reply_reader(const reply_reader&) = delete;
    reply_reader& operator=(const reply_reader&) = delete;

    // False when the bytes are not RESP: the connection is unusable.
    bool feed(const char* data, std::size_t size);
    enum class status { complete, more, broken };
    // The next whole reply, if the bytes fed so far hold one.
    status next(reply& out);

  private:
    redisReader* reader_;
};

}  // namespace coalescer::cluster
