// The coalescer executable as operators run it: command line, config errors, start-up failures
// and the SIGTERM drain, observed from outside the process (exit code, stderr, sockets).
#include "child_process.hpp"
#include "harness.hpp"
#include "server/worker_cpus.hpp"

#include <doctest/doctest.h>

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <regex>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

using namespace coalescer;
using namespace coalescer::test;
using namespace std::chrono_literals;


namespace {

std::size_t lines(const std::string& text) {
    std::size_t n = 0;
    for (char c : text)
        n += c == '\n';
    return n;
}

}  // namespace

TEST_CASE("--version and --check-config on the shipped configs") {
    child version({COALESCER_BINARY, "--version"}, "version");
    CHECK(version.wait_exit(5s) == 0);
    CHECK(version.out().rfind("coalescer ", 0) == 0);
    for (const char* name : {"coalescer.yaml", "multi-provider.yaml", "mock.yaml"}) {
        CAPTURE(name);
        child check({COALESCER_BINARY, "--check-config",
                     std::string(COALESCER_SOURCE_DIR) + "/config/" + name},
                    "check");
        CHECK(check.wait_exit(5s) == 0);
    }
}

TEST_CASE("a bad config is refused with one line naming file, line and key, and nothing listens") {
    const auto path = temp_path("bad.yaml");
    write_file(path,
               "listen: {address: 127.0.0.1, port: 0}\n"
               "upstreams:\n"
               "  - name: p\n"
               "    url: https://api.perplexity.ai\n"
               "    timeouts: {connect: fast}\n"
               "routes:\n"
               "  - {prefix: /, upstream: p}\n");
    child check({COALESCER_BINARY, "--check-config", path}, "badcheck");
    CHECK(check.wait_exit(5s) == 1);
    CHECK(lines(check.err()) == 1);
    CHECK(check.err().rfind(path + ":5: upstreams[0].timeouts.connect:", 0) == 0);

    child run({COALESCER_BINARY, "--config", path}, "badrun");
    CHECK(run.wait_exit(5s) == 1);
    CHECK(lines(run.err()) == 1);
    CHECK(run.err().rfind(path + ":5:", 0) == 0);
    ::unlink(path.c_str());

    child usage({COALESCER_BINARY, "--bogus"}, "usage");
    CHECK(usage.wait_exit(5s) == 2);
}

TEST_CASE("a port already taken stops start-up with one clear line and a non-zero exit") {
    boost::asio::io_context io;
    boost::asio::ip::tcp::acceptor taken(io, {boost::asio::ip::make_address("127.0.0.1"), 0});
    const auto port = taken.local_endpoint().port();
    const auto path = temp_path("taken.yaml");
    write_file(path, "listen: {address: 127.0.0.1, port: " + std::to_string(port) +
                         "}\nadmin: {address: 127.0.0.1, port: 0}\n"
                         "upstreams: [{name: m, url: 'http://127.0.0.1:1'}]\nroutes: [{prefix: /, "
                         "upstream: m}]\n");
    child run({COALESCER_BINARY, "--config", path}, "taken");
    CHECK(run.wait_exit(5s) == 1);
    CHECK(lines(run.err()) == 1);
    CHECK(run.err().find("cannot listen on 127.0.0.1:" + std::to_string(port)) !=
          std::string::npos);
    ::unlink(path.c_str());
}

TEST_CASE("an unreadable certificate stops start-up with one clear line") {
    const auto path = temp_path("nocert.yaml");
    write_file(
        path,
        "listen: {address: 127.0.0.1, port: 0, tls: {cert_file: /nonexistent/cert.pem, key_file: "
        "/nonexistent/key.pem}}\n"
        "admin: {address: 127.0.0.1, port: 0}\n"
        "upstreams: [{name: m, url: 'http://127.0.0.1:1'}]\nroutes: [{prefix: /, upstream: m}]\n");
    child run({COALESCER_BINARY, "--config", path}, "nocert");
    CHECK(run.wait_exit(5s) == 1);
    CHECK(lines(run.err()) == 1);
    CHECK(run.err().find("listen.tls.cert_file") != std::string::npos);
    ::unlink(path.c_str());
}

TEST_CASE("an empty system CA store stops start-up instead of failing every HTTPS call later") {
    ::setenv("SSL_CERT_FILE", "/nonexistent/ca.pem", 1);
    ::setenv("SSL_CERT_DIR", "/nonexistent/certs", 1);
    child run({COALESCER_BINARY, "--config",
               std::string(COALESCER_SOURCE_DIR) + "/config/coalescer.yaml"},
              "noca");
    ::unsetenv("SSL_CERT_FILE");
    ::unsetenv("SSL_CERT_DIR");
    CHECK(run.wait_exit(5s) == 1);
    CHECK(lines(run.err()) == 1);
    CHECK(run.err().find("no system CA certificates") != std::string::npos);
}

TEST_CASE(
    "SIGTERM drains: readyz turns 503, a live stream completes intact, new connections are "
    "refused, exit 0") {
    mock::mock_options options;
    options.chunks = 15;
    options.chunk_interval_ms = 100;
    mock::mock_server mock(options);
    mock.start();
    const auto path = temp_path("drain.yaml");
    write_file(
        path,
        proxy_yaml("http://127.0.0.1:" + std::to_string(mock.port()),
                   "shutdown: {drain_delay: 300ms, drain_timeout: 10s}\nlog: {level: info}\n"));
    child run({COALESCER_BINARY, "--config", path}, "drain");
    const auto [port, admin] = run.ports();
    INFO("sidecar stderr: " << run.err());  // evaluated only when a check fails
    CHECK(request(admin, "GET", "/readyz", "").status == 200);

    client stream(port);
    stream.send("POST", "/chat/completions", chat_body("drain me", true));
    auto partial = stream.read_until("\n\n");
    REQUIRE(partial.status == 200);
    run.signal(SIGTERM);
    std::this_thread::sleep_for(50ms);
    CHECK(request(admin, "GET", "/readyz", "").status == 503);
    std::this_thread::sleep_for(500ms);  // past drain_delay: the listener is closed
    CHECK_THROWS(client(port));
    const auto whole = stream.read_rest(partial);
    CHECK(whole.complete);
    CHECK(whole.body.find("[DONE]") != std::string::npos);
    CHECK(run.wait_exit(10s) == 0);
    CHECK(run.out().find("\"role\":\"leader\"") != std::string::npos);  // the access log line
    ::unlink(path.c_str());
}

// UBSan checks each virtual call's object by probing its memory through a pipe; with no
// descriptor free, the probe fails and it reports the object as invalid (a false report that
// aborts the sidecar). The release and TSan runs cover this case.
#if defined(__SANITIZE_ADDRESS__)
constexpr bool probes_need_descriptors = true;
#else
constexpr bool probes_need_descriptors = false;
#endif

TEST_CASE(
    "out of descriptors, the listener pauses instead of spinning, warns once, and accepts "
    "again when descriptors are freed" *
    doctest::skip(probes_need_descriptors)) {
    mock::mock_server mock({});
    mock.start();
    const auto path = temp_path("emfile.yaml");
    write_file(path, proxy_yaml("http://127.0.0.1:" + std::to_string(mock.port()),
                                "log: {level: info}\n"));
    child run(
        {"/bin/sh", "-c", "ulimit -n 64 && exec \"$0\" --config \"$1\"", COALESCER_BINARY, path},
        "emfile");
    const auto [port, admin] = run.ports();
    INFO("sidecar stderr: " << run.err());
    // More connections than the sidecar has descriptors left: the kernel completes them all,
    // the sidecar can accept only some.
    std::vector<std::unique_ptr<client>> held;
    for (int i = 0; i < 100; ++i)
        held.push_back(std::make_unique<client>(port));
    CHECK(eventually([&] { return run.err().find("Too many open files") != std::string::npos; }));
    // Every accept now fails at once: a listener that retried without pausing would use a
    // whole core here.
    const double before = run.cpu_seconds();
    std::this_thread::sleep_for(1s);
    CHECK(run.cpu_seconds() - before < 0.5);
    CHECK(lines(run.err()) < 5);  // the warning is rate-limited
    held.clear();
    CHECK(eventually(
        [&] {
            return request(port, "POST", "/chat/completions", chat_body("after")).status == 200;
        },
        10s));
    ::unlink(path.c_str());
}

namespace {

// The CPUs a thread may run on, as the kernel lists them ("0-1", "3").
std::string cpus_allowed(const std::string& status_path) {
    std::istringstream status(read_file(status_path));
    std::string line;
    while (std::getline(status, line)) {
        if (line.rfind("Cpus_allowed_list:", 0) == 0) {
            return line.substr(line.find_first_not_of(" \t", 18));
        }
    }
    return "";
}

// Runs `body` with this thread (and so the processes it starts) limited to one CPU; the
// thread gets its CPUs back however `body` ends, so later tests keep them.
template <class Body>
void on_one_cpu(int cpu, Body body) {
    struct restore {
        cpu_set_t saved;
        ~restore() { ::sched_setaffinity(0, sizeof saved, &saved); }
    } guard{};
    REQUIRE(::sched_getaffinity(0, sizeof guard.saved, &guard.saved) == 0);
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    REQUIRE(::sched_setaffinity(0, sizeof one, &one) == 0);
    body();
}

}  // namespace

TEST_CASE("workers: 0 starts one worker per CPU the process may use, not per CPU of the machine") {
    mock::mock_server mock({});
    mock.start();
    auto yaml =
        proxy_yaml("http://127.0.0.1:" + std::to_string(mock.port()), "log: {level: info}\n");
    yaml.replace(yaml.find("workers: 2"), 10, "workers: 0");
    const auto path = temp_path("one-cpu.yaml");
    write_file(path, yaml);
    // As under `taskset -c N` or a container's cpuset: the mask is inherited from the parent.
    std::unique_ptr<child> run;
    const auto allowed = server::allowed_cpus();
    REQUIRE_FALSE(allowed.empty());
    on_one_cpu(allowed.back(), [&] {
        run = std::make_unique<child>(std::vector<std::string>{COALESCER_BINARY, "--config", path},
                                      "one-cpu");
    });
    const auto [port, admin] = run->ports();
    INFO("sidecar stderr: " << run->err());
    CHECK(run->err().find(", 1 worker\"") != std::string::npos);
    CHECK(request(port, "POST", "/chat/completions", chat_body("one cpu")).status == 200);
    ::unlink(path.c_str());
}

TEST_CASE("pin_workers: each worker thread runs on a CPU of its own, the other threads anywhere") {
    const auto allowed = server::allowed_cpus();
    REQUIRE_FALSE(allowed.empty());
    if (allowed.size() < 2) {
        MESSAGE("one CPU available: pinning cannot be told apart from not pinning");
        return;
    }
    mock::mock_server mock({});
    mock.start();
    const auto path = temp_path("pinned.yaml");
    write_file(path, proxy_yaml("http://127.0.0.1:" + std::to_string(mock.port()),
                                "pin_workers: true\nlog: {level: info}\n"));
    child run({COALESCER_BINARY, "--config", path}, "pinned");
    const auto [port, admin] = run.ports();
    INFO("sidecar stderr: " << run.err());
    const std::string expected =
        "workers pinned to CPUs " + std::to_string(allowed[0]) + "," + std::to_string(allowed[1]);
    CHECK(run.err().find(expected) != std::string::npos);
    CHECK(request(port, "POST", "/chat/completions", chat_body("pinned")).status == 200);

    // Worker threads are the ones now limited to a single CPU; main and signal threads are not.
    const std::string tasks = "/proc/" + std::to_string(run.pid()) + "/task";
    std::multiset<std::string> single;
    std::size_t free = 0;
    for (const auto& task : std::filesystem::directory_iterator(tasks)) {
        const auto list = cpus_allowed(task.path().string() + "/status");
        if (list.find_first_of(",-") == std::string::npos)
            single.insert(list);
        else
            ++free;
    }
    CHECK(single ==
          std::multiset<std::string>{std::to_string(allowed[0]), std::to_string(allowed[1])});
    CHECK(free >= 1);
    ::unlink(path.c_str());
}
