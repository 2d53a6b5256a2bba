// The completion token the coroutines await with: an operation's error comes back as a value
// (an error_code first in a tuple), never as an exception.
#pragma once

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace coalescer {

inline constexpr auto use_tuple = boost::asio::as_tuple(boost::asio::use_awaitable);

}  // namespace coalescer
