#include "http/response_writer.hpp"

#include "net/socket_write.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include <charconv>

namespace coalescer::http {
namespace asio = boost::asio;
using boost::system::error_code;

template <class Stream>
asio::awaitable<write_outcome> response_writer<Stream>::write() {
    // The chunk-size lines first: the buffers point into them.
    std::size_t bodies = 0;
    for (const auto& p : parts_)
        bodies += p.what == kind::body;
    chunk_lines_.resize(chunked_ ? bodies : 0);
    buffers_.clear();
    std::size_t line = 0;
    std::uint64_t body = 0;
    for (const auto& p : parts_) {
        if (p.what == kind::end) {
            buffers_.push_back(asio::buffer("0\r\n\r\n", 5));
        } else if (p.what == kind::body && chunked_) {
            auto& text = chunk_lines_[line++];
            auto* end = std::to_chars(text.data(), text.data() + 16, p.bytes.size(), 16).ptr;
            *end++ = '\r';
            *end++ = '\n';
            buffers_.push_back(
                asio::buffer(text.data(), static_cast<std::size_t>(end - text.data())));
            buffers_.push_back(asio::buffer(p.bytes.data(), p.bytes.size()));
            buffers_.push_back(asio::buffer("\r\n", 2));
        } else {
            buffers_.push_back(asio::buffer(p.bytes.data(), p.bytes.size()));
        }
        if (p.what == kind::body)
            body += p.bytes.size();
    }
    parts_.clear();
    if (buffers_.empty()) {
        co_return write_outcome::written;
    }
    const std::span<const asio::const_buffer> all(buffers_.data(), buffers_.size());
    error_code ec;
    const auto sent = net::write_now(stream_, all, ec);
    if (!ec && sent != asio::buffer_size(all)) {
        ec = co_await net::write_rest(stream_, deadline_, all, sent, write_timeout_);
    }
    if (ec) {
        co_return ec == boost::beast::error::timeout ? write_outcome::slow : write_outcome::gone;
    }
    if (!first_byte_) {
        first_byte_ = clock::now();
    }
    body_bytes_ += body;
    co_return write_outcome::written;
}

template class response_writer<asio::ip::tcp::socket>;
template class response_writer<boost::beast::ssl_stream<asio::ip::tcp::socket>>;

}  // namespace coalescer::http
