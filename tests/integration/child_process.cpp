#include "child_process.hpp"

#include <doctest/doctest.h>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

extern char** environ;

namespace coalescer::test {
using namespace std::chrono_literals;

std::string temp_path(const std::string& name) {
    return "/tmp/coalescer-test-" + std::to_string(::getpid()) + "-" + name;
}

std::string read_file(const std::string& path) {
    std::ifstream in(path);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

void write_file(const std::string& path, const std::string& text) {
    std::ofstream(path) << text;
}

temp_file::~temp_file() {
    ::unlink(path.c_str());
}

child::child(std::vector<std::string> args, const std::string& tag)
    : out_(temp_path(tag + ".out")), err_(temp_path(tag + ".err")) {
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, out_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_addopen(&actions, 2, err_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    std::vector<char*> argv;
    for (auto& a : args)
        argv.push_back(a.data());
    argv.push_back(nullptr);
    REQUIRE(posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ) == 0);
    posix_spawn_file_actions_destroy(&actions);
}

child::~child() {
    if (pid_ > 0) {
        ::kill(pid_, SIGKILL);
        wait_exit(5s);
    }
    ::unlink(out_.c_str());
    ::unlink(err_.c_str());
}

int child::wait_exit(std::chrono::milliseconds limit) {
    const auto until = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < until) {
        int status = 0;
        if (::waitpid(pid_, &status, WNOHANG) == pid_) {
            pid_ = 0;
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        }
        std::this_thread::sleep_for(10ms);
    }
    return -1;
}

void child::signal(int signo) {
    ::kill(pid_, signo);
}

double child::runnable_seconds() const {
    const std::string tasks = "/proc/" + std::to_string(pid_) + "/task";
    unsigned long long ns = 0;
    for (const auto& task : std::filesystem::directory_iterator(tasks)) {
        std::istringstream stat(read_file(task.path().string() + "/schedstat"));
        unsigned long long on_cpu = 0, waiting = 0;
        if (stat >> on_cpu >> waiting)
            ns += on_cpu + waiting;
    }
    return static_cast<double>(ns) / 1e9;
}

std::uint64_t child::peak_rss() const {
    const auto status = read_file("/proc/" + std::to_string(pid_) + "/status");
    const auto at = status.find("VmHWM:");
    REQUIRE(at != std::string::npos);
    return std::stoull(status.substr(at + 6)) * 1024;  // kB
}

std::string child::out() const {
    return read_file(out_);
}

std::string child::err() const {
    return read_file(err_);
}

std::pair<std::uint16_t, std::uint16_t> child::ports() const {
    const std::regex pattern(R"(listening on https?://[^:]+:(\d+), admin on http://[^:]+:(\d+))");
    for (int i = 0; i < 2000; ++i) {  // up to 20 s: a sanitizer build starts slowly
        std::smatch m;
        const auto text = err();
        if (std::regex_search(text, m, pattern)) {
            return {static_cast<std::uint16_t>(std::stoi(m[1])),
                    static_cast<std::uint16_t>(std::stoi(m[2]))};
        }
        std::this_thread::sleep_for(10ms);
    }
    FAIL("the sidecar never said it was listening: " << err());
    return {0, 0};
}

}  // namespace coalescer::test
