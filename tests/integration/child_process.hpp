// The coalescer executable (or any program) as a child process, its stdout and stderr in files:
// what tests that watch the process from outside (exit codes, logs, memory) start it with.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace coalescer::test {

// A path under /tmp unique to this test process.
std::string temp_path(const std::string& name);
std::string read_file(const std::string& path);
void write_file(const std::string& path, const std::string& text);

// A file under /tmp holding `text`, removed when it goes (also when a constructor that holds it
// throws): a config, a key secret.
struct temp_file {
    temp_file(const std::string& name, const std::string& text) : path(temp_path(name)) {
        write_file(path, text);
    }
    ~temp_file();
    temp_file(const temp_file&) = delete;
    temp_file& operator=(const temp_file&) = delete;
    std::string path;
};

class child {
  public:
    // Starts args[0] with args; `tag` names its output files.
    child(std::vector<std::string> args, const std::string& tag);
    ~child();  // SIGKILL if still running
    child(const child&) = delete;
    child& operator=(const child&) = delete;

    // The exit code (128 + signal when killed), or -1 if it did not exit in time.
    int wait_exit(std::chrono::milliseconds limit);
    void signal(int signo);
    pid_t pid() const { return pid_; }
    // Seconds the process's threads have been runnable so far: on a CPU or waiting in a run
    // queue for one (the first two fields of each thread's schedstat). A thread that spins is
    // runnable all the time however crowded the machine is, while its CPU time shrinks when
    // other processes take the CPUs.
    double runnable_seconds() const;
    // Peak resident memory so far (VmHWM), bytes.
    std::uint64_t peak_rss() const;
    std::string out() const;
    std::string err() const;
    // Waits for "listening on http://HOST:PORT, admin on http://HOST:PORT" on stderr.
    std::pair<std::uint16_t, std::uint16_t> ports() const;

  private:
    pid_t pid_ = 0;
    std::string out_, err_;
};

}  // namespace coalescer::test
