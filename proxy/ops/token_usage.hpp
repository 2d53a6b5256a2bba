// Provider token usage read from a complete response: `usage` of a JSON completion, or of the
// last SSE event that carries one (Perplexity and OpenAI repeat a growing usage; Anthropic
// splits it between message_start and message_delta).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace coalescer::ops {

struct token_usage {
    std::string model;
    std::uint64_t tokens = 0;  // total_tokens, else prompt + completion, else input + output
};

std::optional<token_usage> extract_usage(std::string_view content_type,
                                         std::span<const std::string_view> body);

}  // namespace coalescer::ops
