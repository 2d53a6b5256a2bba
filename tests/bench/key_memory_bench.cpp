// Memory of keying: the peak heap bytes that computing a coalesce key takes, per body byte.
//
//   key_memory_bench [--body-mib 16]
//
// Every operator new and delete of this program goes through a counter (the replacements below)
// that keeps the bytes live and the most ever live, as malloc hands them out (the request rounded
// up to malloc's chunk size: malloc_usable_size). For each body, built before the measurement, a
// fresh thread calls
//   - coalesce::flight_key_builder::make (what the sidecar runs: canonical JSON + SHA-256), and,
//     in another fresh thread, coalesce::json_canonicalizer::run on a new canonicalizer,
// and reports the peak of live bytes during the call above the live bytes before it, divided by
// the body's size. A fresh thread because the builder keeps per-thread scratch buffers between
// calls (a worker's or the key thread's): their first growth is counted, and what they still
// hold after the call is printed as "kept".
//
// Exact and repeatable (no RSS sampling): one run is enough. Not counted: memory that is not
// allocated through operator new (OpenSSL's own mallocs of its digest contexts: a few hundred
// bytes, made once per thread).
//
// Bodies: BODY_MIB (16) MiB of [0,0,0,...]; a BODY_MIB MiB chat body whose one message is a single
// huge string (prose with escapes, as key_bench's); a BODY_MIB MiB object with ~2 million distinct
// 4-character member names in descending order (the canonical form sorts them ascending); a
// realistic BODY_MIB MiB chat body (many messages); a realistic 32 KiB chat body.
// Target: peak <= 3 x the body for [0,0,0,...].
//
// Prints "result: keymem.<body>.<make|canon>.ratio VALUE" lines for tests/bench/run-bench.sh.
#include "bench_support.hpp"
#include "coalesce/canonical_json.hpp"
#include "coalesce/flight_key.hpp"

#include <malloc.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

// ---------------------------------------------------------------------------------------------
// Counting operator new / delete

namespace {

std::atomic<std::int64_t> live_bytes{0};
std::atomic<std::int64_t> peak_bytes{0};
std::atomic<std::int64_t> allocations{0};

void count_alloc(void* p) {
    const auto n = static_cast<std::int64_t>(malloc_usable_size(p));
    const auto now = live_bytes.fetch_add(n, std::memory_order_relaxed) + n;
    allocations.fetch_add(1, std::memory_order_relaxed);
    auto seen = peak_bytes.load(std::memory_order_relaxed);
    while (now > seen && !peak_bytes.compare_exchange_weak(seen, now, std::memory_order_relaxed)) {
    }
}

void* counted_new(std::size_t size) {
    void* p = std::malloc(size == 0 ? 1 : size);
    if (p == nullptr)
        throw std::bad_alloc();
    count_alloc(p);
    return p;
}

void* counted_new_aligned(std::size_t size, std::align_val_t align) {
    const auto a = static_cast<std::size_t>(align);
    const std::size_t rounded = (size + a - 1) / a * a;  // aligned_alloc wants a multiple
    void* p = std::aligned_alloc(a, rounded == 0 ? a : rounded);
    if (p == nullptr)
        throw std::bad_alloc();
    count_alloc(p);
    return p;
}

void counted_delete(void* p) noexcept {
    if (p == nullptr)
        return;
    live_bytes.fetch_sub(static_cast<std::int64_t>(malloc_usable_size(p)),
                         std::memory_order_relaxed);
    std::free(p);
}

}  // namespace

void* operator new(std::size_t n) {
    return counted_new(n);
}
void* operator new[](std::size_t n) {
    return counted_new(n);
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
    try {
        return counted_new(n);
    } catch (...) {
        return nullptr;
    }
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
    try {
        return counted_new(n);
    } catch (...) {
        return nullptr;
    }
}
void* operator new(std::size_t n, std::align_val_t a) {
    return counted_new_aligned(n, a);
}
void* operator new[](std::size_t n, std::align_val_t a) {
    return counted_new_aligned(n, a);
}
void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
    try {
        return counted_new_aligned(n, a);
    } catch (...) {
        return nullptr;
    }
}
void* operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
    try {
        return counted_new_aligned(n, a);
    } catch (...) {
        return nullptr;
    }
}
void operator delete(void* p) noexcept {
    counted_delete(p);
}
void operator delete[](void* p) noexcept {
    counted_delete(p);
}
void operator delete(void* p, std::size_t) noexcept {
    counted_delete(p);
}
void operator delete[](void* p, std::size_t) noexcept {
    counted_delete(p);
}
void operator delete(void* p, const std::nothrow_t&) noexcept {
    counted_delete(p);
}
void operator delete[](void* p, const std::nothrow_t&) noexcept {
    counted_delete(p);
}
void operator delete(void* p, std::align_val_t) noexcept {
    counted_delete(p);
}
void operator delete[](void* p, std::align_val_t) noexcept {
    counted_delete(p);
}
void operator delete(void* p, std::size_t, std::align_val_t) noexcept {
    counted_delete(p);
}
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept {
    counted_delete(p);
}
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept {
    counted_delete(p);
}
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept {
    counted_delete(p);
}

// ---------------------------------------------------------------------------------------------

namespace {

using namespace coalescer::coalesce;
namespace bench = coalescer::bench;

struct usage {
    std::int64_t peak = 0;  // most bytes live during the call, above those live before it
    std::int64_t kept = 0;  // bytes still live when the call returned (scratch kept for later)
    std::int64_t allocations = 0;
    double ms = 0;
    bool json = false;
};

// Runs `call` on a new thread, alone (this thread only waits), and measures it.
template <class F>
usage measure(F&& call) {
    usage u;
    std::thread t([&] {
        const auto before = live_bytes.load();
        const auto count_before = allocations.load();
        peak_bytes.store(before);
        const auto start = bench::steady::now();
        u.json = call();
        u.ms = std::chrono::duration<double, std::milli>(bench::steady::now() - start).count();
        u.peak = peak_bytes.load() - before;
        u.kept = live_bytes.load() - before;
        u.allocations = allocations.load() - count_before;
    });
    t.join();
    return u;
}

std::string zeros_array(std::size_t target) {
    std::string out;
    out.reserve(target);
    out += '[';
    while (out.size() + 3 < target)
        out += "0,";
    out += "0]";
    return out;
}

std::string huge_string_chat(std::size_t target) {
    const std::string head = R"({"model":"sonar","messages":[{"role":"user","content":")";
    const std::string tail = R"("}],"stream":false})";
    return head + bench::json_prose(target - head.size() - tail.size() - 8, 7) + tail;
}

// {"zzzz":0,...,"0001":0,"0000":0}: 4-character names over 0-9A-Za-z (ascending in ASCII), from
// the largest down, as many as fit in `target` bytes.
std::string reverse_names_object(std::size_t target, std::size_t& members) {
    static const char digits[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    constexpr std::size_t per_member = 9;  // "abcd":0,
    members = (target - 2) / per_member;
    std::string out;
    out.reserve(target);
    out += '{';
    for (std::size_t i = members; i-- > 0;) {
        char name[4];
        std::size_t v = i;
        for (int d = 3; d >= 0; --d) {
            name[d] = digits[v % 62];
            v /= 62;
        }
        out += '"';
        out.append(name, 4);
        out += "\":0";
        if (i != 0)
            out += ',';
    }
    out += '}';
    return out;
}

}  // namespace

int main(int argc, char** argv) {
    std::size_t body_mib = 16;
    for (int i = 1; i < argc; ++i) {
        const std::string flag = argv[i];
        if (flag == "--body-mib" && i + 1 < argc) {
            body_mib = std::strtoul(argv[++i], nullptr, 10);
        } else {
            std::fprintf(stderr,
                         "usage: key_memory_bench [--body-mib 16]\n"
                         "peak heap bytes of keying (flight_key_builder::make, "
                         "json_canonicalizer::run) per body byte\n");
            return flag == "--help" || flag == "-h" ? 0 : 2;
        }
    }
    if (body_mib == 0 || body_mib > 1024) {
        std::fprintf(stderr, "key_memory_bench: --body-mib wants 1..1024\n");
        return 2;
    }
    const std::size_t big = body_mib << 20;

    coalescer::ops::coalesce_config cfg;
    cfg.ignore_fields = {"/user"};
    const flight_key_builder builder{cfg};
    const ignore_list ignore{cfg.ignore_fields};
    const std::vector<std::pair<std::string_view, std::string_view>> headers{
        {"Host", "api.openai.com"},
        {"Authorization", "Bearer sk-proj-abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOP"},
        {"Content-Type", "application/json"},
    };

    std::size_t members = 0;
    struct body {
        std::string name, label, text;
    };
    std::vector<body> bodies;
    const std::string mib = std::to_string(body_mib) + " MiB";
    bodies.push_back({"zeros", mib + " [0,0,0,...]", zeros_array(big)});
    bodies.push_back({"huge_string", mib + " chat, one huge string", huge_string_chat(big)});
    bodies.push_back({"names", "", reverse_names_object(big, members)});
    bodies.back().label = mib + " object, " + std::to_string(members) + " names, reversed";
    bodies.push_back({"chat_big", mib + " chat, many messages", bench::chat_body(big, 99)});
    bodies.push_back(
        {"chat_32k", "32 KiB chat (realistic)", bench::chat_body(32 * 1024, 42 + 32 * 1024)});

    std::printf(
        "key_memory_bench: peak heap bytes above the start of the call, per body byte; exact "
        "(counting operator new/delete, malloc_usable_size); one fresh thread per call\n");
    std::printf("%-38s %10s | %-5s %13s %7s %11s %9s %8s | %13s %7s\n", "body", "bytes", "path",
                "make peak B", "x body", "make kept B", "allocs", "ms", "canon peak B", "x body");
    bool zeros_met = false;
    for (const auto& b : bodies) {
        const key_request request{"openai", "POST", "/v1/chat/completions", &headers, b.text};
        const usage make = measure([&] {
            body_kind kind = body_kind::raw;
            builder.make(request, kind);
            return kind == body_kind::json;
        });
        const usage canon = measure([&] {
            json_canonicalizer c;
            return c.run(b.text, ignore);
        });
        const double size = static_cast<double>(b.text.size());
        const double make_ratio = static_cast<double>(make.peak) / size;
        const double canon_ratio = static_cast<double>(canon.peak) / size;
        std::printf("%-38s %10zu | %-5s %13lld %7.2f %11lld %9lld %8.1f | %13lld %7.2f\n",
                    b.label.c_str(), b.text.size(), make.json ? "json" : "RAW",
                    static_cast<long long>(make.peak), make_ratio,
                    static_cast<long long>(make.kept), static_cast<long long>(make.allocations),
                    make.ms, static_cast<long long>(canon.peak), canon_ratio);
        bench::print_result("keymem." + b.name + ".make.ratio", make_ratio);
        bench::print_result("keymem." + b.name + ".canon.ratio", canon_ratio);
        bench::print_result("keymem." + b.name + ".make.kept_ratio",
                            static_cast<double>(make.kept) / size);
        bench::print_result("keymem." + b.name + ".json", make.json ? 1 : 0);
        if (b.name == "zeros")
            zeros_met = make.json && make_ratio <= 3.0;
    }
    std::printf(
        "  (path: json = keyed on the canonical form, RAW = not acceptable JSON, keyed on the raw "
        "bytes; make = flight_key_builder::make, what the sidecar runs; kept = still live after "
        "make returned, the thread's scratch kept for its next call; canon = "
        "json_canonicalizer::run on a new canonicalizer)\n");
    std::printf("target: peak <= 3 x the body for %s [0,0,0,...]: %s\n", mib.c_str(),
                zeros_met ? "met" : "not met");
    return 0;
}
