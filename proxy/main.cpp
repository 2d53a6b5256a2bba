// coalescer: command line, config load, start, signals, exit codes.
//   coalescer --config FILE         run
//   coalescer --check-config FILE   validate and exit 0 / 1
//   coalescer --version
#include "ops/config.hpp"
#include "server/server.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>

#include <malloc.h>
#include <sys/prctl.h>

#include <csignal>
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <thread>

namespace {

constexpr const char* usage = "usage: coalescer --config FILE | --check-config FILE | --version\n";

int check_config(const std::string& path) {
    try {
        coalescer::ops::load_config_file(path);
        std::printf("%s: ok\n", path.c_str());
        return 0;
    } catch (const coalescer::ops::config_error& e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 1;
    }
}

int run(const std::string& path) {
    std::shared_ptr<const coalescer::ops::config> cfg;
    try {
        cfg = coalescer::ops::load_config_file(path);
    } catch (const coalescer::ops::config_error& e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 1;
    }
    // The access log goes to stdout in blocks, flushed twice a second: not a syscall per request.
    static char stdout_buffer[64 * 1024];
    std::setvbuf(stdout, stdout_buffer, _IOFBF, sizeof stdout_buffer);
    // No core dumps: they would hold credentials in flight (S-05).
    prctl(PR_SET_DUMPABLE, 0);
    std::signal(SIGPIPE, SIG_IGN);
    try {
        coalescer::server::server proxy(cfg);
        boost::asio::io_context signals_io(1);
        boost::asio::signal_set signals(signals_io, SIGINT, SIGTERM);
        int received = 0;
        std::function<void(boost::system::error_code, int)> on_signal =
            [&](boost::system::error_code ec, int signo) {
                if (ec)
                    return;
                if (++received > 1) {
                    std::fprintf(stderr, "coalescer: second signal, exiting now\n");
                    std::_Exit(128 + signo);
                }
                proxy.context().log.message(coalescer::ops::log_level::info, "draining");
                proxy.drain();
                signals.async_wait(on_signal);
            };
        signals.async_wait(on_signal);
        proxy.start();
        proxy.context().log.message(
            coalescer::ops::log_level::info,
            "coalescer " COALESCER_VERSION " listening on " +
                std::string(cfg->listen.tls ? "https://" : "http://") + cfg->listen.address + ":" +
                std::to_string(proxy.port()) + ", admin on http://" + cfg->admin.address + ":" +
                std::to_string(proxy.admin_port()) + ", " + std::to_string(proxy.workers()) +
                (proxy.workers() == 1 ? " worker" : " workers"));
        std::thread waiter([&] {
            proxy.wait();
            signals_io.stop();
        });
        signals_io.run();
        waiter.join();
        proxy.context().log.message(coalescer::ops::log_level::info, "stopped");
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "coalescer: %s\n", e.what());
        return 1;
    }
}

// glibc gives a worker's free heap top back to the kernel as soon as it passes 128 KiB, then
// faults it in again on the next request: measured at a third of the CPU per pass-through
// request (madvise, page faults, TLB shootdowns). Keep up to 64 MiB of free top per arena;
// blocks up to 4 MiB (response pieces, coroutine frames, parsers) stay on the heap.
void tune_allocator() {
    mallopt(M_TRIM_THRESHOLD, 64 * 1024 * 1024);
    mallopt(M_MMAP_THRESHOLD, 4 * 1024 * 1024);
}

}  // namespace

int main(int argc, char** argv) {
    if (argc == 2 && std::strcmp(argv[1], "--version") == 0) {
        std::printf("coalescer %s\n", COALESCER_VERSION);
        return 0;
    }
    if (argc == 2 && (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0)) {
        std::printf("%s", usage);
        return 0;
    }
    if (argc == 3 && std::strcmp(argv[1], "--check-config") == 0) {
        return check_config(argv[2]);
    }
    if (argc == 3 && std::strcmp(argv[1], "--config") == 0) {
        tune_allocator();
        return run(argv[2]);
    }
    std::fprintf(stderr, "%s", usage);
    return 2;
}
