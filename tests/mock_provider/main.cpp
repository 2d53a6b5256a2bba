// mock-provider: the fake LLM provider as a process, for benchmarks, load tests and scripts.
//
//   mock-provider [--listen ADDR:PORT] [--latency-ms N] [--chunks N] [--chunk-interval-ms N]
//                 [--object chat.completion|chat.completion.chunk] [--no-done]
//                 [--tls-cert FILE --tls-key FILE] [--threads N] [--help]
//
// Prints one line, "mock-provider listening on http://ADDR:PORT", once it accepts connections;
// SIGINT/SIGTERM stop it with exit code 0. Bad flags: one line on stderr, exit code 2.
#include "mock_server.hpp"

#include <charconv>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <string_view>

#include <arpa/inet.h>
#include <pthread.h>

namespace {

constexpr std::string_view usage_text =
    "usage: mock-provider [options]\n"
    "  --listen ADDR:PORT          address to listen on (default 127.0.0.1:8081; port 0 = any)\n"
    "  --latency-ms N              wait before the response head (default 0)\n"
    "  --chunks N                  SSE events with content (default 5)\n"
    "  --chunk-interval-ms N       pause between SSE events (default 20)\n"
    "  --object NAME               SSE \"object\": chat.completion.chunk (default) or "
    "chat.completion\n"
    "  --no-done                   do not end SSE streams with data: [DONE]\n"
    "  --tls-cert FILE --tls-key FILE   serve HTTPS with this PEM certificate chain and key\n"
    "  --threads N                 event-loop threads (default 1)\n"
    "  --help                      show this text\n"
    "Per-request behaviour: a \"mock\" object in the request body, see mock_server.cpp.\n";

[[noreturn]] void bad_usage(const std::string& message) {
    std::fprintf(stderr, "mock-provider: %s (see --help)\n", message.c_str());
    std::exit(2);
}

int parse_int(std::string_view flag, std::string_view text, int lo, int hi) {
    int value = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc{} || end != text.data() + text.size() || value < lo || value > hi) {
        bad_usage("bad value for " + std::string(flag) + ": '" + std::string(text) + "'");
    }
    return value;
}

void parse_listen(std::string_view text, coalescer::mock::mock_options& o) {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos || colon == 0) {
        bad_usage("--listen wants ADDR:PORT, got '" + std::string(text) + "'");
    }
    std::string_view host = text.substr(0, colon);
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
        host = host.substr(1, host.size() - 2);  // [::1]:8081
    }
    o.address = host == "localhost" ? std::string("127.0.0.1") : std::string(host);
    unsigned char scratch[16];
    if (inet_pton(AF_INET, o.address.c_str(), scratch) != 1 &&
        inet_pton(AF_INET6, o.address.c_str(), scratch) != 1) {
        bad_usage("--listen wants a numeric IPv4 or IPv6 address, got '" + std::string(host) + "'");
    }
    o.port = static_cast<std::uint16_t>(parse_int("--listen", text.substr(colon + 1), 0, 65535));
}

}  // namespace

int main(int argc, char** argv) {
    coalescer::mock::mock_options o;
    o.port = 8081;
    for (int i = 1; i < argc; ++i) {
        std::string_view arg = argv[i];
        std::string_view inline_value;
        bool has_inline = false;
        if (const auto eq = arg.find('='); arg.starts_with("--") && eq != std::string_view::npos) {
            inline_value = arg.substr(eq + 1);
            arg = arg.substr(0, eq);
            has_inline = true;
        }
        const auto value = [&]() -> std::string_view {
            if (has_inline) {
                return inline_value;
            }
            if (i + 1 >= argc) {
                bad_usage("missing value for " + std::string(arg));
            }
            return argv[++i];
        };
        const auto no_value = [&] {
            if (has_inline) {
                bad_usage(std::string(arg) + " takes no value");
            }
        };
        if (arg == "--help" || arg == "-h") {
            no_value();
            std::fputs(usage_text.data(), stdout);
            return 0;
        } else if (arg == "--listen") {
            parse_listen(value(), o);
        } else if (arg == "--latency-ms") {
            o.latency_ms = parse_int(arg, value(), 0, 600'000);
        } else if (arg == "--chunks") {
            o.chunks = parse_int(arg, value(), 1, 100'000);
        } else if (arg == "--chunk-interval-ms") {
            o.chunk_interval_ms = parse_int(arg, value(), 0, 600'000);
        } else if (arg == "--object") {
            const auto v = value();
            if (v != "chat.completion" && v != "chat.completion.chunk") {
                bad_usage("--object wants chat.completion or chat.completion.chunk");
            }
            o.object = std::string(v);
        } else if (arg == "--no-done") {
            no_value();
            o.send_done = false;
        } else if (arg == "--tls-cert") {
            o.tls_cert_file = std::string(value());
        } else if (arg == "--tls-key") {
            o.tls_key_file = std::string(value());
        } else if (arg == "--threads") {
            o.threads = static_cast<unsigned>(parse_int(arg, value(), 1, 256));
        } else {
            bad_usage("unknown argument '" + std::string(arg) + "'");
        }
    }
    if (o.tls_cert_file.empty() != o.tls_key_file.empty()) {
        bad_usage("--tls-cert and --tls-key go together");
    }

    // Block the stop signals before any thread starts, so only sigwait below receives them.
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
    std::signal(SIGPIPE, SIG_IGN);

    const bool tls = !o.tls_cert_file.empty();
    const std::string host =
        o.address.find(':') != std::string::npos ? "[" + o.address + "]" : o.address;
    coalescer::mock::mock_server server(o);
    try {
        server.start();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "mock-provider: cannot start: %s\n", e.what());
        return 1;
    }
    std::printf("mock-provider listening on %s://%s:%u\n", tls ? "https" : "http", host.c_str(),
                static_cast<unsigned>(server.port()));
    std::fflush(stdout);

    int signal_number = 0;
    sigwait(&stop_signals, &signal_number);
    server.stop();
    return 0;
}
