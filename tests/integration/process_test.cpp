// The coalescer executable as operators run it: command line, config errors, start-up failures
// and the SIGTERM drain, observed from outside the process (exit code, stderr, sockets).
#include "child_process.hpp"
#include "doctest_main.hpp"
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

std::size_t occurrences(const std::string& text, const std::string& needle) {
    std::size_t n = 0;
    for (auto at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1))
        ++n;
    return n;
}

bool refuses_connections(std::uint16_t port) {
    try {
        client c(port);
        return false;
    } catch (const std::exception&) {
        return true;
    }
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
    CHECK(eventually([&] { return request(admin, "GET", "/readyz", "").status == 503; }));
    // Past drain_delay the listener is closed.
    CHECK(eventually([&] { return refuses_connections(port); }, 10s));
    const auto whole = stream.read_rest(partial);
    CHECK(whole.complete);
    CHECK(whole.body.find("[DONE]") != std::string::npos);
    CHECK(run.wait_exit(10s) == 0);
    CHECK(run.out().find("\"role\":\"leader\"") != std::string::npos);  // the access log line
    ::unlink(path.c_str());
}

namespace {

// A sidecar process in front of `mock`, with `shutdown` as its shutdown section.
std::string drain_config(const mock::mock_server& mock, const std::string& tag,
                         const std::string& shutdown) {
    const auto path = temp_path(tag + ".yaml");
    write_file(path, proxy_yaml("http://127.0.0.1:" + std::to_string(mock.port()),
                                "shutdown: " + shutdown + "\nlog: {level: info}\n"));
    return path;
}

}  // namespace

TEST_CASE("SIGTERM drain: idle keep-alive connections are closed after drain_delay") {
    mock::mock_server mock({});
    mock.start();
    const auto path = drain_config(mock, "drain-idle", "{drain_delay: 1s, drain_timeout: 20s}");
    child run({COALESCER_BINARY, "--config", path}, "drain-idle");
    const auto [port, admin] = run.ports();
    INFO("sidecar stderr: " << run.err());
    // An idle keep-alive connection, and a request whose answer (4 s away) keeps the process
    // draining meanwhile.
    client idle(port);
    idle.send("GET", "/models", "");
    REQUIRE(idle.read().status == 200);
    client busy(port);
    busy.send("POST", "/chat/completions",
              chat_body("in progress", false, R"({"latency_ms":4000})"));
    REQUIRE(eventually([&] { return mock.stats().in_flight == 1; }));
    const auto signalled = std::chrono::steady_clock::now();
    run.signal(SIGTERM);
    REQUIRE(eventually([&] { return request(admin, "GET", "/readyz", "").status == 503; }));

    const auto rest = idle.read_to_close(10s);
    CHECK(rest.closed);  // closed by the sidecar…
    CHECK(rest.bytes.empty());
    CHECK(std::chrono::steady_clock::now() - signalled >= 900ms);  // …not before drain_delay…
    // …and by the drain, not by the exit: the answer is still being awaited.
    CHECK(mock.stats().in_flight == 1);
    CHECK(busy.read(20s).status == 200);
    CHECK(run.wait_exit(20s) == 0);
    ::unlink(path.c_str());
}

TEST_CASE("SIGTERM drain: responses in progress when it starts end with Connection: close") {
    mock::mock_server mock({});
    mock.start();
    const auto path = drain_config(mock, "drain-close", "{drain_delay: 1s, drain_timeout: 20s}");
    child run({COALESCER_BINARY, "--config", path}, "drain-close");
    const auto [port, admin] = run.ports();
    INFO("sidecar stderr: " << run.err());
    // Two keep-alive requests whose answers are still to come (4 s away) when the drain starts:
    // one through a flight, one through a pass route.
    client coalesced(port);
    coalesced.send("POST", "/chat/completions",
                   chat_body("in progress", false, R"({"latency_ms":4000})"));
    client passed(port);
    passed.send("POST", "/v1/chat/completions",
                chat_body("in progress too", false, R"({"latency_ms":4000})"));
    REQUIRE(eventually([&] { return mock.stats().in_flight == 2; }));
    run.signal(SIGTERM);
    REQUIRE(eventually([&] { return request(admin, "GET", "/readyz", "").status == 503; }));
    for (auto* c : {&coalesced, &passed}) {
        const auto r = c->read(20s);
        CHECK(r.status == 200);
        CHECK(r.complete);
        // The head leaves after the drain began: it must tell the client not to reuse the
        // connection, which the sidecar is about to close.
        CHECK(r.header("connection") == "close");
        CHECK(c->closed_by_peer(10s));
    }
    CHECK(run.wait_exit(20s) == 0);
    ::unlink(path.c_str());
}

TEST_CASE("SIGTERM drain: a stream still running at drain_timeout is cut, and the exit is 0") {
    mock::mock_options options;
    options.chunks = 200;
    options.chunk_interval_ms = 100;  // a 20 s stream
    mock::mock_server mock(options);
    mock.start();
    const auto path = drain_config(mock, "drain-cut", "{drain_delay: 100ms, drain_timeout: 1s}");
    child run({COALESCER_BINARY, "--config", path}, "drain-cut");
    const auto [port, admin] = run.ports();
    INFO("sidecar stderr: " << run.err());
    client stream(port);
    stream.send("POST", "/chat/completions", chat_body("too long to wait for", true));
    const auto partial = stream.read_until("\n\n");
    REQUIRE(partial.status == 200);
    const auto signalled = std::chrono::steady_clock::now();
    run.signal(SIGTERM);
    // drain_delay + drain_timeout = 1.1 s, well before the stream's 20 s. (Under ASan the exit
    // is 134 today: ~server destroys the workers' io_contexts, then the registry, whose cut
    // flight still holds a parked subscriber's timer on one of them: heap-use-after-free.)
    CHECK(run.wait_exit(15s) == 0);
    CHECK(std::chrono::steady_clock::now() - signalled >= 1s);
    const auto rest = stream.read_rest(partial, 10s);
    CHECK_FALSE(rest.complete);
    CHECK_FALSE(rest.timed_out);  // ended by the exit, not by our patience
    CHECK(rest.body.find("[DONE]") == std::string::npos);
    ::unlink(path.c_str());
}

TEST_CASE("a second signal during the drain exits at once") {
    mock::mock_options options;
    options.chunks = 200;
    options.chunk_interval_ms = 100;  // a 20 s stream keeps the drain waiting
    mock::mock_server mock(options);
    mock.start();
    const auto path = drain_config(mock, "drain-twice", "{drain_delay: 100ms, drain_timeout: 60s}");
    child run({COALESCER_BINARY, "--config", path}, "drain-twice");
    const auto [port, admin] = run.ports();
    INFO("sidecar stderr: " << run.err());
    client stream(port);
    stream.send("POST", "/chat/completions", chat_body("keeps the drain waiting", true));
    REQUIRE(stream.read_until("\n\n").status == 200);
    run.signal(SIGTERM);
    REQUIRE(eventually([&] { return run.err().find("draining") != std::string::npos; }));
    // The drain is under way (the stream keeps it going for 20 s, drain_timeout is 60 s).
    CHECK(run.wait_exit(500ms) == -1);
    run.signal(SIGINT);
    CHECK(run.wait_exit(5s) == 128 + SIGINT);
    CHECK(run.err().find("second signal") != std::string::npos);
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
    "again when descriptors are freed") {
    if (probes_need_descriptors) {
        skip_test(
            "ASan+UBSan build: UBSan's vptr check probes memory through a pipe, needs a free "
            "descriptor, and aborts the sidecar with a false report without one; the release and "
            "TSan runs cover this test");
        return;
    }
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
    // Every accept now fails at once: a listener that retried without pausing would be
    // runnable the whole second, one that pauses 50 ms between tries hardly at all.
    const double before = run.runnable_seconds();
    std::this_thread::sleep_for(1s);
    CHECK(run.runnable_seconds() - before < 0.3);
    // Said once: the warning comes at most every 10 s.
    CHECK(occurrences(run.err(), "Too many open files") == 1);
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
        skip_test("one CPU available: pinning cannot be told apart from not pinning");
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
