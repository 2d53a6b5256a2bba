// Coalesce-key throughput: canonicalise + SHA-256 of realistic chat-completions bodies on one core.
//
//   key_bench [seconds-per-measurement]      (default 1)
//
// Bodies (1 KiB, 32 KiB, 1 MiB) are generated deterministically (bench_support.hpp chat_body):
// a system prompt, alternating user/assistant turns with long prose contents (newlines, quotes,
// tabs, literal UTF-8 and the \uXXXX escapes Python's json.dumps writes), tools with JSON-schema
// parameters, and the usual sampling numbers. Target: >= 300 MB/s on 32 KiB.
// Prints "result: key.<size>.mb_s VALUE" lines for tests/bench/run-bench.sh.
#include "bench_support.hpp"
#include "coalesce/canonical_json.hpp"
#include "coalesce/flight_key.hpp"

#include <openssl/evp.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

using namespace coalescer::coalesce;
using coalescer::bench::chat_body;
using coalescer::bench::print_result;

namespace {

struct measurement {
    double mb_per_s;
    double ns_per_call;
};

template <class F>
measurement measure(std::size_t bytes, double seconds, F&& call) {
    using clock = std::chrono::steady_clock;
    for (int i = 0; i < 3; ++i)
        call();  // warm the caches and the thread-local buffers
    std::uint64_t calls = 0;
    const auto start = clock::now();
    auto now = start;
    std::uint64_t batch = 1;
    while (std::chrono::duration<double>(now - start).count() < seconds) {
        for (std::uint64_t i = 0; i < batch; ++i)
            call();
        calls += batch;
        now = clock::now();
        if (batch < 1024)
            batch *= 2;
    }
    const double elapsed = std::chrono::duration<double>(now - start).count();
    return {static_cast<double>(bytes) * static_cast<double>(calls) / elapsed / 1e6,
            elapsed * 1e9 / static_cast<double>(calls)};
}

volatile unsigned char sink;

}  // namespace

int main(int argc, char** argv) {
    const double seconds = argc > 1 ? std::atof(argv[1]) : 1.0;
    if (!(seconds > 0)) {
        std::fprintf(stderr, "usage: key_bench [seconds-per-measurement]\n");
        return 2;
    }
    coalescer::ops::coalesce_config cfg;
    cfg.ignore_fields = {"/user"};
    const flight_key_builder builder{cfg};
    const ignore_list ignore{cfg.ignore_fields};
    json_canonicalizer canonicalizer;

    const std::vector<std::pair<std::string_view, std::string_view>> headers{
        {"Host", "api.openai.com"},
        {"Authorization", "Bearer sk-proj-abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOP"},
        {"Content-Type", "application/json"},
        {"User-Agent", "OpenAI/Python 1.40.0"},
        {"X-Stainless-Lang", "python"},
        {"X-Stainless-Retry-Count", "0"},
        {"OpenAI-Organization", "org-abc123"},
        {"Accept", "application/json"},
    };

    std::printf(
        "key = canonicalise + SHA-256 (what the proxy pays); canon and sha256 alone for "
        "comparison\n");
    std::printf("%-8s %9s | %9s %11s | %10s %11s | %11s\n", "body", "bytes", "key MB/s",
                "key ns/call", "canon MB/s", "canon ns", "sha256 MB/s");
    double mb_32k = 0;
    const std::pair<const char*, std::size_t> sizes[] = {
        {"1 KiB", 1024}, {"32 KiB", 32 * 1024}, {"1 MiB", 1024 * 1024}};
    for (const auto& [label, size] : sizes) {
        const std::string body = chat_body(size, 42 + size);
        const key_request request{"openai", "POST", "/v1/chat/completions", &headers, body};
        body_kind kind = body_kind::raw;
        builder.make(request, kind);
        if (kind != body_kind::json || !canonicalizer.run(body, ignore)) {
            std::fprintf(stderr, "key_bench: generated %s body is not canonicalisable JSON\n",
                         label);
            return 1;
        }
        const measurement key =
            measure(body.size(), seconds, [&] { sink = builder.make(request).digest[0]; });
        const measurement canon = measure(body.size(), seconds / 2, [&] {
            canonicalizer.run(body, ignore);
            sink = static_cast<unsigned char>(canonicalizer.result().size());
        });
        const measurement sha = measure(body.size(), seconds / 2, [&] {
            unsigned char digest[EVP_MAX_MD_SIZE];
            unsigned int n = 0;
            EVP_Digest(body.data(), body.size(), digest, &n, EVP_sha256(), nullptr);
            sink = digest[0];
        });
        std::printf("%-8s %9zu | %9.1f %11.0f | %10.1f %11.0f | %11.1f\n", label, body.size(),
                    key.mb_per_s, key.ns_per_call, canon.mb_per_s, canon.ns_per_call, sha.mb_per_s);
        if (size == 32 * 1024)
            mb_32k = key.mb_per_s;
        print_result(std::string("key.") +
                         (size == 1024        ? "1k"
                          : size == 32 * 1024 ? "32k"
                                              : "1m") +
                         ".mb_s",
                     key.mb_per_s);
    }
    std::printf("target >= 300 MB/s on 32 KiB: %s (%.1f MB/s)\n", mb_32k >= 300 ? "met" : "not met",
                mb_32k);
    return 0;
}
