// ops::extract_usage on a response body that arrived in pieces, JSON or SSE.
//
// Input: byte 0 picks the content type (application/json or text/event-stream, with or without
// parameters), byte 1 how the body is cut (0: one piece; otherwise a seed for pieces of 1..97
// bytes), the rest is the body.
//
// Properties: no crash, leak or unbounded allocation; the answer does not depend on how the
// body was cut; a reported usage has a model ("unknown" at least); and for a JSON body the
// event-driven reading agrees with a plain reading of Boost.JSON's document tree
// (tests/unit/usage_reference.hpp: chat completions, Responses, Messages and Perplexity usage
// objects, with their cache, reasoning and cost fields).
#include "fuzz_common.hpp"

#include "../unit/usage_reference.hpp"
#include "ops/token_usage.hpp"

#include <array>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace {

using namespace coalescer;

constexpr std::array<std::string_view, 4> content_types{"application/json", "text/event-stream",
                                                        "text/event-stream; charset=utf-8",
                                                        "application/json; charset=utf-8"};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 2) {
        return 0;
    }
    const auto content_type = content_types[data[0] % content_types.size()];
    const auto body = fuzz::as_text(data + 2, size - 2);
    fuzz::splitter split(data[1], 97);
    const auto pieces = split.split(body);
    const auto in_pieces = ops::extract_usage(content_type, pieces);
    const std::string_view whole[] = {body};
    const auto at_once = ops::extract_usage(content_type, whole);
    FUZZ_CHECK(test::same_usage(in_pieces, at_once));
    if (at_once) {
        FUZZ_CHECK(!at_once->model.empty());
    }
    if (content_type.find("event-stream") == std::string_view::npos) {
        FUZZ_CHECK(test::same_usage(at_once, test::reference_usage(body)));
    }
    return 0;
}
