#include "upstream/response_parser.hpp"

#include <boost/beast/http/error.hpp>

#include <array>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

namespace coalescer::upstream {
namespace beast = boost::beast;
namespace beast_http = beast::http;

namespace {

// A freed parser's memory is poisoned while it waits here: under ASan a use of a freed parser is
// still a use after free, whether or not the block went back to malloc.
#if defined(__SANITIZE_ADDRESS__)
void poison(void* block) noexcept {
    ASAN_POISON_MEMORY_REGION(block, sizeof(response_parser));
}
void unpoison(void* block) noexcept {
    ASAN_UNPOISON_MEMORY_REGION(block, sizeof(response_parser));
}
#else
void poison(void*) noexcept {}
void unpoison(void*) noexcept {}
#endif

// A few freed parsers' memory, for this thread's next responses. A block is only ever reused by
// the thread that freed it, after that thread owned the parser: no data race to hide.
class freed_parsers {
  public:
    freed_parsers() = default;
    freed_parsers(const freed_parsers&) = delete;
    freed_parsers& operator=(const freed_parsers&) = delete;
    ~freed_parsers() {
        while (count_ != 0) {
            void* block = blocks_[--count_];
            unpoison(block);
            ::operator delete(block, sizeof(response_parser));
        }
    }
    void* take() noexcept {
        if (count_ == 0) {
            return nullptr;
        }
        void* block = blocks_[--count_];
        unpoison(block);
        return block;
    }
    bool keep(void* block) noexcept {
        if (count_ == blocks_.size()) {
            return false;
        }
        poison(block);
        blocks_[count_++] = block;
        return true;
    }

  private:
    std::array<void*, 32> blocks_{};
    std::size_t count_ = 0;
};

thread_local freed_parsers freed;

}  // namespace

void* response_parser::operator new(std::size_t size) {
    if (size == sizeof(response_parser)) {
        if (void* block = freed.take()) {
            return block;
        }
    }
    return ::operator new(size);
}

void response_parser::operator delete(void* memory, std::size_t size) noexcept {
    if (size == sizeof(response_parser) && freed.keep(memory)) {
        return;
    }
    ::operator delete(memory, size);
}

void response_parser::body_into(std::span<char> buffer) noexcept {
    body_ = buffer.data();
    body_size_ = buffer.size();
    body_left_ = buffer.size();
}

void response_parser::on_start_line(int status, std::string_view reason, int) {
    status_ = static_cast<unsigned>(status);
    reason_ = fields_.keep(reason);
}

bool feed(response_parser& parser, beast::flat_buffer& buffer, bool header_only,
          beast::error_code& ec) {
    if (buffer.size() == 0) {
        return false;
    }
    const auto used = parser.put_from(buffer, ec);
    if (ec != beast_http::error::need_more) {
        return !header_only || ec || parser.is_header_done();
    }
    ec = {};
    return !header_only && used != 0;
}

reuse reuse_after(const response_parser& parser, bool head_method, std::size_t bytes_left) {
    if (!parser.is_done() || !parser.keep_alive()) {
        return reuse::closes;
    }
    const unsigned s = parser.status();
    if (head_method || s / 100 == 1 || s == 204 || s == 304) {
        const auto* length = parser.find(beast_http::field::content_length);
        const bool announced = parser.find(beast_http::field::transfer_encoding) != nullptr ||
                               (length != nullptr && *length != "0");
        if (announced) {
            return reuse::out_of_step;
        }
    }
    return bytes_left == 0 ? reuse::yes : reuse::out_of_step;
}

}  // namespace coalescer::upstream
