// Provider token usage read from a complete response: `usage` of a JSON answer, or of the SSE
// events that carry it. Every protocol the sidecar fronts reports it differently; this is the
// one place that knows how, and it hands out the same disjoint kinds for all of them:
//
//   chat completions  usage {prompt_tokens ⊇ prompt_tokens_details.cached_tokens,
//                     completion_tokens ⊇ completion_tokens_details.reasoning_tokens}, in the
//                     body, in every chunk (cumulative, Perplexity) or in a last `choices: []`
//                     chunk (stream_options.include_usage);
//   Responses         the same with input_tokens/output_tokens and *_details, at the top of a
//                     JSON answer or in response.completed / response.incomplete → response;
//   Messages          input_tokens, cache_read_input_tokens and cache_creation_input_tokens
//                     apart from one another, split between message_start → message and
//                     message_delta (cumulative; either may carry the input figures).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace coalescer::ops {

struct token_usage {
    std::string model;
    // Disjoint: every token of the call is in exactly one of these four.
    std::uint64_t input = 0;              // input read neither from nor into a prompt cache
    std::uint64_t cached_input = 0;       // input read from the provider's prompt cache
    std::uint64_t cache_write_input = 0;  // input written to the cache (Anthropic)
    std::uint64_t output = 0;             // reasoning included
    std::uint64_t reasoning = 0;          // the part of output spent reasoning, when reported
    // What the provider says the call cost (Perplexity's usage.cost.total_cost, else the sum of
    // its parts), in USD: preferred over any price table.
    std::optional<double> provider_cost_usd;

    std::uint64_t total() const noexcept {
        return input + cached_input + cache_write_input + output;
    }
};

// nullopt when the body reports no usage (or none that is not zero). A JSON body is read piece
// by piece as it lies; an SSE stream from a tail that grows (64 KiB, then four times as much)
// until it holds the last usage, and Messages' message_start from the stream's first events:
// nothing is joined or read but those. The model is the one the response names, else the
// top-level "model" of `request_body` (JSON, read only in that case), else "unknown".
std::optional<token_usage> extract_usage(std::string_view content_type,
                                         std::span<const std::string_view> body,
                                         std::string_view request_body = {});

}  // namespace coalescer::ops
