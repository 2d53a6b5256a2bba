#include "cluster/resp.hpp"

#include <hiredis/hiredis.h>

#include <charconv>

namespace coalescer::cluster {
namespace {

reply convert(const redisReply& r) {
    reply out;
    switch (r.type) {
        case REDIS_REPLY_STRING:
            out.type = reply::kind::string;
            out.text.assign(r.str, r.len);
            break;
        case REDIS_REPLY_STATUS:
            out.type = reply::kind::status;
            out.text.assign(r.str, r.len);
            break;
        case REDIS_REPLY_ERROR:
            out.type = reply::kind::error;
            out.text.assign(r.str, r.len);
            break;
        case REDIS_REPLY_INTEGER:
            out.type = reply::kind::integer;
            out.integer = r.integer;
            break;
        case REDIS_REPLY_ARRAY:
            out.type = reply::kind::array;
            out.elements.reserve(r.elements);
            for (std::size_t i = 0; i < r.elements; ++i)
                out.elements.push_back(convert(*r.element[i]));
            break;
        default:
            break;  // nil
    }
    return out;
}

void append_number(std::string& out, std::size_t n) {
    char digits[24];
    const auto end = std::to_chars(digits, digits + sizeof digits, n).ptr;
    out.append(digits, end);
}

}  // namespace

void append_command(std::string& out, const std::vector<std::string_view>& args) {
    std::size_t size = 16;  // one allocation: a body-sized argument would otherwise grow it twice
    for (const auto arg : args)
        size += arg.size() + 16;
    out.reserve(out.size() + size);
    out += '*';
    append_number(out, args.size());
    out += "\r\n";
    for (const auto arg : args) {
        out += '$';
        append_number(out, arg.size());
        out += "\r\n";
        out += arg;
        out += "\r\n";
    }
}

reply_reader::reply_reader() : reader_(redisReaderCreate()) {
    if (reader_ == nullptr)
        throw std::bad_alloc();
}

reply_reader::~reply_reader() {
    redisReaderFree(reader_);
}

bool reply_reader::feed(const char* data, std::size_t size) {
    return redisReaderFeed(reader_, data, size) == REDIS_OK;
}

reply_reader::status reply_reader::next(reply& out) {
    void* raw = nullptr;
    if (redisReaderGetReply(reader_, &raw) != REDIS_OK)
        return status::broken;
    if (raw == nullptr)
        return status::more;
    out = convert(*static_cast<redisReply*>(raw));
    freeReplyObject(raw);
    return status::complete;
}

}  // namespace coalescer::cluster
