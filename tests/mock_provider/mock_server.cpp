// The mock provider: see mock_server.hpp for the routes and wire-format §1 / §6 for the why.
//
// Threads: one io_context per thread; the listener lives on the first and hands every accepted
// socket to the next context in turn, so a connection and everything it does (its coroutine,
// its watch for the client hanging up, its timers) stay on one thread. Counters and call records
// are shared by all threads and live under one mutex.
//
// Per-request overrides: a top-level "mock" object in the request body (struct overrides).
// Fault injections (status, retry_after, retry_after_ms, drop_before_head, drop_after,
// error_after) apply to every call with that body, or, with "fail_times": N, only to the first N
// calls whose raw body has the same SHA-256. drop_before_head waits out a per-request latency_ms
// first (the upstream worked on the call, then died).
#include "mock_server.hpp"

#include <openssl/evp.h>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/json.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <exception>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string_view>
#include <thread>
#include <utility>

namespace coalescer::mock {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace beast_http = beast::http;
namespace ssl = asio::ssl;
namespace json = boost::json;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;
using namespace std::chrono_literals;

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

// Bounds. The mock is a test tool: generous, but every one is finite.
constexpr std::uint32_t header_limit = 64 * 1024;
constexpr std::uint64_t body_limit = 128ull << 20;
constexpr auto idle_timeout = 300s;             // waiting for the next request head
constexpr auto body_timeout = 60s;              // reading one request body
constexpr auto write_timeout = 60s;             // one write
constexpr auto handshake_timeout = 10s;         // TLS handshake
constexpr auto close_timeout = 1s;              // TLS close_notify / lingering close
constexpr std::size_t watch_limit = 64 * 1024;  // read-ahead while watching for a hang-up
constexpr std::size_t max_records = 100'000;    // call records kept (oldest dropped first)
constexpr std::int64_t max_delay_ms = 600'000;
constexpr std::string_view server_name = "coalescer-mock-provider";

// ---------------------------------------------------------------------------------------------
// Small helpers

std::string sha256_hex(std::string_view data) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr) != 1) {
        return {};
    }
    static constexpr char digits[] = "0123456789abcdef";
    std::string out;
    out.reserve(len * 2);
    for (unsigned int i = 0; i < len; ++i) {
        out.push_back(digits[md[i] >> 4]);
        out.push_back(digits[md[i] & 15]);
    }
    return out;
}

std::uint64_t seed_from_hex(std::string_view hex) {
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < 16 && i < hex.size(); ++i) {
        const char c = hex[i];
        v = (v << 4) | static_cast<std::uint64_t>(c <= '9' ? c - '0' : c - 'a' + 10);
    }
    return v;
}

std::uint64_t splitmix64(std::uint64_t& state) {
    std::uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

constexpr std::array<std::string_view, 64> word_list = {
    "alpha",   "bridge",  "cobalt",  "delta",   "ember",  "falcon", "garnet", "harbor",
    "indigo",  "jasper",  "kernel",  "lantern", "meadow", "nectar", "orbit",  "pepper",
    "quartz",  "raven",   "saffron", "timber",  "umber",  "velvet", "willow", "xenon",
    "yarrow",  "zephyr",  "amber",   "basalt",  "cedar",  "dune",   "echo",   "fjord",
    "glacier", "heron",   "iris",    "juniper", "kelp",   "lagoon", "maple",  "nimbus",
    "onyx",    "prairie", "quill",   "ridge",   "sierra", "tundra", "upland", "vertex",
    "walnut",  "yonder",  "zenith",  "acorn",   "birch",  "canyon", "drift",  "estuary",
    "fern",    "grove",   "hollow",  "islet",   "jetty",  "knoll",  "ledge",  "marsh"};

std::uint64_t count_words(std::string_view s) {
    std::uint64_t n = 0;
    bool in_word = false;
    for (const char c : s) {
        const bool space = c == ' ';
        if (!space && !in_word) {
            ++n;
        }
        in_word = !space;
    }
    return n;
}

// The answer text, split into `chunks` pieces. Deterministic per (body, tenant, chunks); the
// first piece names the body hash and the tenant so tests can prove where an answer came from.
std::vector<std::string> make_pieces(std::string_view body_hex, std::string_view tenant,
                                     int chunks) {
    std::uint64_t state = seed_from_hex(body_hex);
    std::vector<std::string> pieces;
    pieces.reserve(static_cast<std::size_t>(chunks));
    for (int i = 0; i < chunks; ++i) {
        std::string piece;
        if (i == 0) {
            piece = "Mock answer ";
            piece += body_hex.substr(0, 8);
            piece += " for tenant ";
            piece += tenant;
            piece += ':';
        }
        const auto n = 1 + splitmix64(state) % 3;
        for (std::uint64_t k = 0; k < n; ++k) {
            piece += ' ';
            piece += word_list[splitmix64(state) % word_list.size()];
        }
        pieces.push_back(std::move(piece));
    }
    return pieces;
}

bool is_token_char(char c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) {
        return true;
    }
    return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool valid_header_name(std::string_view s) {
    return !s.empty() && std::all_of(s.begin(), s.end(), is_token_char);
}

bool valid_header_value(std::string_view s) {
    return s.find_first_of(std::string_view("\r\n\0", 3)) == std::string_view::npos;
}

std::string lower(std::string_view s) {
    std::string out(s);
    for (auto& c : out) {
        if (c >= 'A' && c <= 'Z') {
            c = static_cast<char>(c - 'A' + 'a');
        }
    }
    return out;
}

std::string_view path_of(std::string_view target) {
    return target.substr(0, target.find('?'));
}

bool is_control_path(std::string_view path) {
    return path == "/__stats" || path == "/__calls" || path == "/__reset" || path == "/models" ||
           path == "/v1/models";
}

std::int64_t steady_us() {
    return std::chrono::duration_cast<std::chrono::microseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

std::string error_body(std::string_view message, std::string_view type, int code) {
    json::object err;
    err["message"] = message;
    err["type"] = type;
    err["code"] = code;
    json::object top;
    top["error"] = std::move(err);
    return json::serialize(top);
}

// ---------------------------------------------------------------------------------------------
// Per-request overrides: the "mock" member of the request body.

struct overrides {
    std::optional<std::int64_t> latency_ms, chunks, chunk_interval_ms, status, retry_after_ms,
        fail_times, stall_after, stall_ms, drop_after, error_after, body_bytes;
    std::optional<std::string> object, retry_after, content_type, error_body;
    std::optional<bool> done, drop_before_head, drop_rst, timestamps;
    // "schedule":"absolute": the head is due latency_ms after the request arrived and event i
    // (from 0) interval * i after that; a late write does not push the later ones back, and
    // "timestamps" stamps each event with the time it was due, not the time it was written
    // (benchmarks measure delivery against the schedule, the mock's own lateness included).
    bool absolute_schedule = false;
    std::vector<std::pair<std::string, std::string>> headers;  // extra response headers
};

bool read_int(const json::value& v, std::int64_t lo, std::int64_t hi,
              std::optional<std::int64_t>& out) {
    std::int64_t x = 0;
    if (v.is_int64()) {
        x = v.get_int64();
    } else if (v.is_uint64() && v.get_uint64() <= static_cast<std::uint64_t>(hi)) {
        x = static_cast<std::int64_t>(v.get_uint64());
    } else {
        return false;
    }
    if (x < lo || x > hi) {
        return false;
    }
    out = x;
    return true;
}

bool read_string(const json::value& v, std::optional<std::string>& out, bool header_value) {
    if (!v.is_string()) {
        return false;
    }
    std::string s(v.get_string());
    if (header_value && !valid_header_value(s)) {
        return false;
    }
    out = std::move(s);
    return true;
}

bool read_bool(const json::value& v, std::optional<bool>& out) {
    if (!v.is_bool()) {
        return false;
    }
    out = v.get_bool();
    return true;
}

// Returns "" on success, else why the overrides are unusable (the call then gets a 400).
std::string parse_overrides(const json::object& body, overrides& ov) {
    const auto it = body.find("mock");
    if (it == body.end()) {
        return {};
    }
    if (!it->value().is_object()) {
        return "\"mock\" must be an object";
    }
    constexpr std::int64_t big = 1'000'000'000;
    for (const auto& member : it->value().get_object()) {
        const std::string_view key = member.key();
        const json::value& v = member.value();
        bool ok = true;
        if (key == "latency_ms") {
            ok = read_int(v, 0, max_delay_ms, ov.latency_ms);
        } else if (key == "chunks") {
            ok = read_int(v, 1, 100'000, ov.chunks);
        } else if (key == "chunk_interval_ms") {
            ok = read_int(v, 0, max_delay_ms, ov.chunk_interval_ms);
        } else if (key == "status") {
            ok = read_int(v, 200, 599, ov.status);
        } else if (key == "retry_after_ms") {
            ok = read_int(v, 0, 86'400'000, ov.retry_after_ms);
        } else if (key == "fail_times") {
            ok = read_int(v, 0, big, ov.fail_times);
        } else if (key == "stall_after") {
            ok = read_int(v, 0, 100'000, ov.stall_after);
        } else if (key == "stall_ms") {
            ok = read_int(v, 0, max_delay_ms, ov.stall_ms);
        } else if (key == "drop_after") {
            ok = read_int(v, 0, 100'000, ov.drop_after);
        } else if (key == "error_after") {
            ok = read_int(v, 0, 100'000, ov.error_after);
        } else if (key == "body_bytes") {
            ok = read_int(v, 0, 256ll << 20, ov.body_bytes);
        } else if (key == "object") {
            ok = read_string(v, ov.object, false) && !ov.object->empty();
        } else if (key == "retry_after") {
            ok = read_string(v, ov.retry_after, true);
        } else if (key == "content_type") {
            ok = read_string(v, ov.content_type, true);
        } else if (key == "error_body") {
            ok = read_string(v, ov.error_body, false);
        } else if (key == "done") {
            ok = read_bool(v, ov.done);
        } else if (key == "drop_before_head") {
            ok = read_bool(v, ov.drop_before_head);
        } else if (key == "drop_rst") {
            ok = read_bool(v, ov.drop_rst);
        } else if (key == "timestamps") {
            ok = read_bool(v, ov.timestamps);
        } else if (key == "schedule") {
            ok = v.is_string() && (v.get_string() == "absolute" || v.get_string() == "relative");
            ov.absolute_schedule = ok && v.get_string() == "absolute";
        } else if (key == "headers") {
            ok = v.is_object();
            if (ok) {
                for (const auto& h : v.get_object()) {
                    const std::string name = lower(h.key());
                    if (!valid_header_name(name) || !h.value().is_string() ||
                        !valid_header_value(h.value().get_string()) || name == "content-length" ||
                        name == "transfer-encoding" || name == "connection") {
                        return "mock.headers: bad or reserved header \"" + std::string(h.key()) +
                               "\"";
                    }
                    ov.headers.emplace_back(name, std::string(h.value().get_string()));
                }
            }
        } else {
            return "unknown mock override \"" + std::string(key) + "\"";
        }
        if (!ok) {
            return "bad value for mock override \"" + std::string(key) + "\"";
        }
    }
    return {};
}

// ---------------------------------------------------------------------------------------------
// The answer in Perplexity's shape (wire-format §1.3, §1.4).

struct answer {
    std::string id, model, body8;
    std::int64_t created = 0;
    std::uint64_t prompt_tokens = 0;
};

json::object usage_json(std::uint64_t prompt, std::uint64_t completion) {
    // $1 per million tokens plus $0.005 per request, rounded to micro-dollars.
    const auto dollars = [](std::uint64_t micro) { return static_cast<double>(micro) / 1e6; };
    json::object cost;
    cost["input_tokens_cost"] = dollars(prompt);
    cost["output_tokens_cost"] = dollars(completion);
    cost["request_cost"] = dollars(5000);
    cost["total_cost"] = dollars(prompt + completion + 5000);
    json::object u;
    u["prompt_tokens"] = prompt;
    u["completion_tokens"] = completion;
    u["total_tokens"] = prompt + completion;
    u["search_context_size"] = "low";
    u["citation_tokens"] = 0;
    u["num_search_queries"] = 1;
    u["cost"] = std::move(cost);
    return u;
}

json::object completion_json(const answer& a, std::string_view object, const std::string& message,
                             const std::string& delta, std::uint64_t completion_tokens, bool last) {
    json::object o;
    o["id"] = a.id;
    o["model"] = a.model;
    o["created"] = a.created;
    o["object"] = object;
    o["usage"] = usage_json(a.prompt_tokens, completion_tokens);
    const std::string base = "https://example.com/mock/" + a.body8;
    json::array citations;
    citations.emplace_back(base + "/1");
    citations.emplace_back(base + "/2");
    o["citations"] = std::move(citations);
    json::object result;
    result["title"] = "Mock source " + a.body8;
    result["url"] = base + "/1";
    result["date"] = "2025-01-01";
    result["last_updated"] = "2025-01-02";
    result["snippet"] = "Deterministic mock search result.";
    result["source"] = "web";
    json::array results;
    results.emplace_back(std::move(result));
    o["search_results"] = std::move(results);
    json::object msg;
    msg["role"] = "assistant";
    msg["content"] = message;
    json::object dlt;
    dlt["role"] = "assistant";
    dlt["content"] = delta;
    json::object choice;
    choice["index"] = 0;
    choice["finish_reason"] = last ? json::value("stop") : json::value(nullptr);
    choice["message"] = std::move(msg);
    choice["delta"] = std::move(dlt);
    json::array choices;
    choices.emplace_back(std::move(choice));
    o["choices"] = std::move(choices);
    return o;
}

json::object to_json(const mock_stats& s) {
    json::object o;
    o["calls"] = s.calls;
    o["connections"] = s.connections;
    o["in_flight"] = s.in_flight;
    o["max_concurrency"] = s.max_concurrency;
    o["completed"] = s.completed;
    o["aborted"] = s.aborted;
    json::object by_hash;
    for (const auto& [k, v] : s.calls_per_body_hash) {
        by_hash[k] = v;
    }
    json::object by_path;
    for (const auto& [k, v] : s.calls_per_path) {
        by_path[k] = v;
    }
    o["calls_per_body_hash"] = std::move(by_hash);
    o["calls_per_path"] = std::move(by_path);
    return o;
}

json::object to_json(const call_record& r) {
    json::object o;
    o["seq"] = r.seq;
    o["method"] = r.method;
    o["target"] = r.target;
    o["body_sha256"] = r.body_sha256;
    o["auth_sha256"] = r.auth_sha256;
    json::object headers;
    for (const auto& [k, v] : r.headers) {
        headers[k] = v;
    }
    o["headers"] = std::move(headers);
    o["connection_id"] = r.connection_id;
    o["status"] = r.status;
    o["stream"] = r.stream;
    o["completed"] = r.completed;
    o["aborted"] = r.aborted;
    o["bytes_sent"] = r.bytes_sent;
    o["received_at_ms"] = r.received_at_ms;
    return o;
}

struct report_exception {
    void operator()(std::exception_ptr e) const {
        if (!e) {
            return;
        }
        try {
            std::rethrow_exception(e);
        } catch (const std::exception& ex) {
            std::fprintf(stderr, "mock-provider: %s\n", ex.what());
        } catch (...) {
            std::fprintf(stderr, "mock-provider: unknown exception\n");
        }
    }
};

}  // namespace

// The server's internals. A named namespace (not anonymous): mock_server::impl derives from
// server_state, and GCC warns about members whose types have internal linkage.
namespace detail {

// A connection that stop() can interrupt. Touched only on its worker's thread.
class live_session {
  public:
    virtual void shutdown() = 0;

  protected:
    ~live_session() = default;
};

// ---------------------------------------------------------------------------------------------
// Shared state

struct server_state {
    struct worker {
        std::set<live_session*> sessions;  // declared before ioc: frames destroyed with ioc use it
        asio::io_context ioc{1};
        std::optional<asio::executor_work_guard<asio::io_context::executor_type>> guard;
        std::thread thread;
    };

    // One call from head to last byte. Not copyable; finishes as aborted if never finished.
    class call_ticket {
      public:
        call_ticket() = default;
        call_ticket(const call_ticket&) = delete;
        call_ticket& operator=(const call_ticket&) = delete;
        ~call_ticket() {
            if (owner_ != nullptr && !finished_) {
                owner_->finish_call(*this, false, true);
            }
        }
        void finish(bool completed, bool aborted) {
            if (owner_ != nullptr && !finished_) {
                owner_->finish_call(*this, completed, aborted);
            }
        }
        void head_sent(int status, bool stream, std::uint64_t bytes) {
            status_ = status;
            stream_ = stream;
            bytes_ += bytes;
            if (owner_ != nullptr) {
                owner_->note_head(*this);
            }
        }
        // finish_before_last_write() counts the call as completed, with `planned` more bytes,
        // just before its last write, so that a client holding the whole response always finds
        // it counted; last_write_failed() turns it into an abort when that write fails.
        void finish_before_last_write(std::uint64_t planned) {
            bytes_ += planned;
            finish(true, false);
        }
        void last_write_failed(std::uint64_t planned, std::uint64_t written) {
            bytes_ = bytes_ - planned + written;
            if (owner_ != nullptr) {
                owner_->amend_call(*this, true);
            }
        }
        void add_bytes(std::uint64_t n) { bytes_ += n; }
        std::uint64_t seq() const { return seq_; }

      private:
        friend struct server_state;
        server_state* owner_ = nullptr;
        std::uint64_t seq_ = 0, epoch_ = 0, bytes_ = 0;
        int status_ = 0;
        bool stream_ = false, finished_ = false;
    };

    explicit server_state(mock_options options) : options_(std::move(options)) {}

    // --- accounting ------------------------------------------------------------------------
    void note_connection() {
        std::lock_guard lock(mutex_);
        ++stats_.connections;
    }

    void begin_call(call_ticket& t, const beast_http::request_header<>& head, std::string_view path,
                    std::uint64_t connection_id) {
        call_record r;
        r.method = std::string(head.method_string());
        r.target = std::string(head.target());
        for (const auto& f : head) {
            auto [it, inserted] = r.headers.try_emplace(lower(f.name_string()), f.value());
            if (!inserted) {
                it->second += ", ";
                it->second += f.value();
            }
        }
        if (auto it = head.find(beast_http::field::authorization); it != head.end()) {
            r.auth_sha256 = sha256_hex(it->value());
        } else if (auto key = head.find("x-api-key"); key != head.end()) {
            r.auth_sha256 = sha256_hex(key->value());
        }
        r.connection_id = connection_id;
        r.received_at_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count();
        std::lock_guard lock(mutex_);
        r.seq = next_seq_++;
        t.owner_ = this;
        t.seq_ = r.seq;
        t.epoch_ = epoch_;
        ++stats_.calls;
        ++stats_.in_flight;
        stats_.max_concurrency = std::max(stats_.max_concurrency, stats_.in_flight);
        ++stats_.calls_per_path[std::string(path)];
        records_.push_back(std::move(r));
        if (records_.size() > max_records) {
            records_.pop_front();
            ++first_seq_;
        }
    }

    // Records the body hash; returns how many calls (this one included) had this body.
    std::uint64_t note_body(const call_ticket& t, const std::string& body_hex) {
        std::lock_guard lock(mutex_);
        if (auto* r = find_record(t.seq_)) {
            r->body_sha256 = body_hex;
        }
        if (t.epoch_ != epoch_) {
            return 1;  // a call from before reset(): not counted in the new epoch
        }
        return ++stats_.calls_per_body_hash[body_hex];
    }

    void note_head(const call_ticket& t) {
        std::lock_guard lock(mutex_);
        if (auto* r = find_record(t.seq_)) {
            r->status = t.status_;
            r->stream = t.stream_;
            r->bytes_sent = t.bytes_;
        }
    }

    void finish_call(call_ticket& t, bool completed, bool aborted) {
        t.finished_ = true;
        std::lock_guard lock(mutex_);
        if (stats_.in_flight > 0) {
            --stats_.in_flight;
        }
        if (t.epoch_ != epoch_) {
            return;
        }
        stats_.completed += completed ? 1 : 0;
        stats_.aborted += aborted ? 1 : 0;
        if (auto* r = find_record(t.seq_)) {
            r->status = t.status_;
            r->stream = t.stream_;
            r->completed = completed;
            r->aborted = aborted;
            r->bytes_sent = t.bytes_;
        }
    }

    void amend_call(const call_ticket& t, bool failed) {
        std::lock_guard lock(mutex_);
        if (t.epoch_ != epoch_) {
            return;
        }
        if (failed && stats_.completed > 0) {
            --stats_.completed;
            ++stats_.aborted;
        }
        if (auto* r = find_record(t.seq_)) {
            r->completed = !failed;
            r->aborted = failed;
            r->bytes_sent = t.bytes_;
        }
    }

    call_record* find_record(std::uint64_t seq) {  // under mutex_
        if (seq < first_seq_ || seq - first_seq_ >= records_.size()) {
            return nullptr;
        }
        return &records_[seq - first_seq_];
    }

    mock_stats stats() const {
        std::lock_guard lock(mutex_);
        return stats_;
    }

    std::vector<call_record> calls() const {
        std::lock_guard lock(mutex_);
        return {records_.begin(), records_.end()};
    }

    void reset() {
        std::lock_guard lock(mutex_);
        const auto in_flight = stats_.in_flight;
        stats_ = mock_stats{};
        stats_.in_flight = in_flight;
        stats_.max_concurrency = in_flight;
        records_.clear();
        first_seq_ = next_seq_;
        ++epoch_;
    }

    // --- lifecycle ---------------------------------------------------------------------------
    void session_started(worker& w, live_session* s) {
        w.sessions.insert(s);
        std::lock_guard lock(life_mutex_);
        ++live_sessions_;
    }

    void session_ended(worker& w, live_session* s) {
        w.sessions.erase(s);
        std::lock_guard lock(life_mutex_);
        --live_sessions_;
        life_cv_.notify_all();
    }

    mock_options options_;
    std::optional<ssl::context> tls_;
    std::atomic<bool> stopping_{false};
    std::atomic<std::uint16_t> port_{0};
    std::atomic<std::uint64_t> next_connection_id_{1};

    mutable std::mutex mutex_;  // guards the accounting below
    mock_stats stats_;
    std::deque<call_record> records_;
    std::uint64_t first_seq_ = 1, next_seq_ = 1, epoch_ = 0;

    std::mutex life_mutex_;
    std::condition_variable life_cv_;
    std::size_t live_sessions_ = 0;

    std::mutex control_mutex_;  // start/stop
    bool started_ = false, stopped_ = false;
    std::vector<std::unique_ptr<worker>> workers_;
    std::unique_ptr<tcp::acceptor> acceptor_;
    std::size_t next_worker_ = 0;  // accept loop only
};

using impl = server_state;
using call_ticket = impl::call_ticket;
using worker = impl::worker;
using ssl_stream = beast::ssl_stream<beast::tcp_stream>;

// ---------------------------------------------------------------------------------------------
// One connection: a coroutine reads requests one at a time and answers them.
//
// While a call is being answered, a "watch" read stays pending on the socket so that a client
// that hangs up is noticed at once, also while the mock is only waiting (latency, chunk
// intervals, stalls). Bytes it reads (a pipelined next request) are kept in buffer_ for the next
// parser, up to watch_limit. Works the same over TLS, where a raw peek could not tell a
// close_notify from data.
template <class Stream>
class connection final : public live_session {
  public:
    connection(impl& owner, Stream stream, std::uint64_t id)
        : owner_(owner),
          stream_(std::move(stream)),
          pace_timer_(stream_.get_executor()),
          watch_timer_(stream_.get_executor()),
          id_(id) {}

    static constexpr bool tls = !std::is_same_v<Stream, beast::tcp_stream>;

    beast::tcp_stream& lowest() { return beast::get_lowest_layer(stream_); }
    Stream& stream() { return stream_; }

    void shutdown() override {
        closing_ = true;
        pace_timer_.cancel();
        lowest().close();
    }

    asio::awaitable<void> run() {
        for (;;) {
            beast_http::request_parser<beast_http::string_body> parser;
            parser.header_limit(header_limit);
            parser.body_limit(body_limit);
            lowest().expires_after(idle_timeout);
            auto [ec, n] =
                co_await beast_http::async_read_header(stream_, buffer_, parser, use_tuple);
            if (ec) {
                co_await on_read_error(ec, nullptr, 11);
                break;
            }
            const auto& head = parser.get();
            const unsigned version = head.version() == 10 ? 10 : 11;
            if (const auto why = bad_framing(parser); !why.empty()) {
                co_await send_simple(version, beast_http::status::bad_request, false,
                                     error_body(why, "invalid_request", 400), nullptr);
                break;
            }
            const std::string path(path_of(head.target()));
            std::optional<call_ticket> ticket;
            if (!is_control_path(path)) {
                ticket.emplace();
                owner_.begin_call(*ticket, head, path, id_);
            }
            if (version == 11 && beast::iequals(head[beast_http::field::expect], "100-continue")) {
                static constexpr std::string_view cont = "HTTP/1.1 100 Continue\r\n\r\n";
                lowest().expires_after(write_timeout);
                auto [wec, wn] = co_await asio::async_write(stream_, asio::buffer(cont), use_tuple);
                if (wec) {
                    peer_gone_ = true;
                    break;
                }
            }
            if (!parser.is_done()) {
                lowest().expires_after(body_timeout);
                auto [bec, bn] =
                    co_await beast_http::async_read(stream_, buffer_, parser, use_tuple);
                if (bec) {
                    co_await on_read_error(bec, ticket ? &*ticket : nullptr, version);
                    break;
                }
            }
            beast_http::request<beast_http::string_body> req = parser.release();
            const bool keep = req.keep_alive();
            bool again = false;
            if (ticket) {
                lowest().expires_never();
                start_watch();
                again = co_await answer_call(req, path, *ticket, keep);
                co_await stop_watch();
            } else {
                again = co_await answer_control(req, path, keep);
            }
            if (!again || peer_gone_ || closing_ || dropped_) {
                break;
            }
        }
        co_await stop_watch();
        co_await close_gracefully();
    }

  private:
    // --- reading -----------------------------------------------------------------------------
    static std::string bad_framing(const beast_http::request_parser<beast_http::string_body>& p) {
        const auto& h = p.get();
        if (h.version() != 10 && h.version() != 11) {
            return "unsupported HTTP version";
        }
        const bool te = h.find(beast_http::field::transfer_encoding) != h.end();
        if (te && h.find(beast_http::field::content_length) != h.end()) {
            return "Transfer-Encoding together with Content-Length";
        }
        if (te && h.version() == 10) {
            return "Transfer-Encoding in an HTTP/1.0 request";
        }
        if (te && !p.chunked()) {
            return "Transfer-Encoding that does not end in chunked";
        }
        return {};
    }

    // A failed read: garbage gets an answer (400/413/431) and a close, a hang-up just ends.
    asio::awaitable<void> on_read_error(error_code ec, call_ticket* ticket, unsigned version) {
        const bool http_error =
            ec.category() ==
            beast_http::make_error_code(beast_http::error::end_of_stream).category();
        if (!http_error || ec == beast_http::error::end_of_stream ||
            ec == beast_http::error::partial_message) {
            peer_gone_ = true;  // EOF, reset, timeout, TLS truncation, stop()
            if (ticket != nullptr) {
                ticket->finish(false, true);
            }
            co_return;
        }
        auto status = beast_http::status::bad_request;
        int code = 400;
        std::string message = "malformed request: " + ec.message();
        if (ec == beast_http::error::header_limit || ec == beast_http::error::buffer_overflow) {
            status = beast_http::status::request_header_fields_too_large;
            code = 431;
            message = "request header too large";
        } else if (ec == beast_http::error::body_limit) {
            status = beast_http::status::payload_too_large;
            code = 413;
            message = "request body too large";
        }
        co_await send_simple(version, status, false, error_body(message, "invalid_request", code),
                             ticket);
    }

    // --- the watch for a client that hangs up --------------------------------------------------
    void start_watch() {
        watching_ = true;
        watch_stop_ = false;
        read_more();
    }

    void read_more() {
        if (buffer_.size() >= watch_limit) {
            watching_ = false;  // a client pipelining this much is not hanging up
            return;
        }
        stream_.async_read_some(buffer_.prepare(4096),
                                [this](error_code ec, std::size_t n) { on_watch(ec, n); });
    }

    void on_watch(error_code ec, std::size_t n) {
        buffer_.commit(n);
        if (!ec && !watch_stop_ && !closing_) {
            read_more();
            return;
        }
        watching_ = false;
        if (ec && !watch_stop_) {
            peer_gone_ = true;
            pace_timer_.cancel();
        }
        watch_timer_.cancel();
    }

    asio::awaitable<void> stop_watch() {
        if (!watching_) {
            co_return;
        }
        watch_stop_ = true;
        // The pending read may be between TLS records; cancel until it gives up, then close.
        for (int i = 0; watching_; ++i) {
            if (i < 20) {
                lowest().cancel();
            } else {
                closing_ = true;
                lowest().close();
            }
            watch_timer_.expires_after(50ms);
            co_await watch_timer_.async_wait(use_tuple);
        }
    }

    // --- writing -----------------------------------------------------------------------------
    // One write of raw bytes; returns how many went out, or nothing if the write failed.
    asio::awaitable<std::optional<std::size_t>> write_bytes(std::string_view bytes) {
        lowest().expires_after(write_timeout);
        auto [ec, n] = co_await asio::async_write(stream_, asio::buffer(bytes), use_tuple);
        if (ec) {
            co_return std::nullopt;
        }
        co_return n;
    }

    // A whole response in one go. With a ticket, the call counts as completed before the write
    // (see last_write_done).
    asio::awaitable<bool> write_response(beast_http::response<beast_http::string_body>& res,
                                         call_ticket* ticket) {
        std::ostringstream os;  // serialised first, so the byte count is known before the write
        os << res;
        const std::string bytes = std::move(os).str();
        if (ticket != nullptr) {
            ticket->head_sent(static_cast<int>(res.result_int()), false, 0);
            ticket->finish_before_last_write(bytes.size());
        }
        lowest().expires_after(write_timeout);
        auto [ec, n] = co_await asio::async_write(stream_, asio::buffer(bytes), use_tuple);
        if (ec) {
            if (ticket != nullptr) {
                ticket->last_write_failed(bytes.size(), n);
            }
            peer_gone_ = true;
        }
        co_return !ec;
    }

    // A complete small response; finishes the ticket if there is one. Returns "keep going".
    asio::awaitable<bool> send_simple(unsigned version, beast_http::status status, bool keep,
                                      std::string body, call_ticket* ticket,
                                      std::string_view content_type = "application/json",
                                      const overrides* ov = nullptr,
                                      const std::string* request_id = nullptr) {
        beast_http::response<beast_http::string_body> res{status, version};
        res.set(beast_http::field::server, server_name);
        const auto code = static_cast<unsigned>(status);
        if (code != 204 && code != 304) {
            res.set(beast_http::field::content_type, content_type);
            res.body() = std::move(body);
        }
        if (request_id != nullptr) {
            res.set("x-request-id", *request_id);
        }
        if (ov != nullptr) {
            for (const auto& [name, value] : ov->headers) {
                res.set(name, value);
            }
        }
        res.keep_alive(keep);
        res.prepare_payload();
        const bool ok = co_await write_response(res, ticket);
        co_return ok&& keep;
    }

    // Waits until `when` (not at all if it has passed); false as for pause().
    asio::awaitable<bool> pause_until(std::chrono::steady_clock::time_point when) {
        if (peer_gone_ || closing_) {
            co_return false;
        }
        if (when > std::chrono::steady_clock::now()) {
            pace_timer_.expires_at(when);
            co_await pace_timer_.async_wait(use_tuple);
        }
        co_return !(peer_gone_ || closing_);
    }

    // Waits; false when the client went away or stop() was called meanwhile.
    asio::awaitable<bool> pause(std::int64_t ms) {
        if (peer_gone_ || closing_) {
            co_return false;
        }
        if (ms > 0) {
            pace_timer_.expires_after(std::chrono::milliseconds(ms));
            co_await pace_timer_.async_wait(use_tuple);
        }
        co_return !(peer_gone_ || closing_);
    }

    // Closes without a proper end: no terminating chunk, no close_notify; RST if asked.
    void drop(bool rst) {
        dropped_ = true;
        error_code ec;
        if (rst) {
            lowest().socket().set_option(asio::socket_base::linger(true, 0), ec);
        } else {
            lowest().socket().shutdown(tcp::socket::shutdown_both, ec);
        }
        lowest().close();
    }

    asio::awaitable<void> close_gracefully() {
        if (peer_gone_ || closing_ || dropped_ || !lowest().socket().is_open()) {
            co_return;
        }
        lowest().expires_after(close_timeout);
        if constexpr (tls) {
            auto [ec] = co_await stream_.async_shutdown(use_tuple);
            (void)ec;
        } else {
            // Half-close, then drain what the client still sends, so that closing with unread
            // bytes does not turn into a reset that destroys the reply in flight.
            error_code ec;
            lowest().socket().shutdown(tcp::socket::shutdown_send, ec);
            std::array<char, 4096> sink;
            std::size_t total = 0;
            while (total < (1u << 20)) {
                auto [rec, n] = co_await lowest().async_read_some(asio::buffer(sink), use_tuple);
                if (rec) {
                    break;
                }
                total += n;
            }
        }
    }

    // --- control endpoints ---------------------------------------------------------------------
    asio::awaitable<bool> answer_control(const beast_http::request<beast_http::string_body>& req,
                                         const std::string& path, bool keep) {
        const unsigned version = req.version();
        const auto method = req.method();
        if (path == "/__stats" && method == beast_http::verb::get) {
            co_return co_await send_simple(version, beast_http::status::ok, keep,
                                           json::serialize(to_json(owner_.stats())), nullptr);
        }
        if (path == "/__calls" && method == beast_http::verb::get) {
            json::array all;
            for (const auto& r : owner_.calls()) {
                all.emplace_back(to_json(r));
            }
            co_return co_await send_simple(version, beast_http::status::ok, keep,
                                           json::serialize(all), nullptr);
        }
        if (path == "/__reset" && method == beast_http::verb::post) {
            owner_.reset();
            co_return co_await send_simple(version, beast_http::status::no_content, keep, {},
                                           nullptr);
        }
        if ((path == "/models" || path == "/v1/models") && method == beast_http::verb::get) {
            json::array data;
            for (const char* id : {"sonar", "sonar-pro", "sonar-reasoning", "sonar-reasoning-pro",
                                   "sonar-deep-research"}) {
                json::object m;
                m["id"] = id;
                m["object"] = "model";
                m["created"] = 1700000000;
                m["owned_by"] = "perplexity";
                data.emplace_back(std::move(m));
            }
            json::object list;
            list["object"] = "list";
            list["data"] = std::move(data);
            co_return co_await send_simple(version, beast_http::status::ok, keep,
                                           json::serialize(list), nullptr);
        }
        co_return co_await send_simple(
            version, beast_http::status::method_not_allowed, keep,
            error_body("method not allowed on " + path, "invalid_request", 405), nullptr);
    }

    // --- calls -----------------------------------------------------------------------------------
    asio::awaitable<bool> answer_call(const beast_http::request<beast_http::string_body>& req,
                                      const std::string& path, call_ticket& ticket, bool keep) {
        const auto received = std::chrono::steady_clock::now();
        const unsigned version = req.version();
        const std::string body_hex = sha256_hex(req.body());
        const std::uint64_t same_body = owner_.note_body(ticket, body_hex);
        answer a;
        a.body8 = body_hex.substr(0, 8);
        a.id = "mock-" + std::to_string(ticket.seq()) + "-" + a.body8;
        a.created = std::chrono::duration_cast<std::chrono::seconds>(
                        std::chrono::system_clock::now().time_since_epoch())
                        .count();
        a.prompt_tokens = std::max<std::uint64_t>(1, req.body().size() / 4);

        if (path != "/chat/completions" && path != "/v1/chat/completions") {
            co_return co_await send_simple(
                version, beast_http::status::not_found, keep,
                error_body("no such endpoint: " + path, "not_found", 404), &ticket,
                "application/json", nullptr, &a.id);
        }
        if (req.method() != beast_http::verb::post) {
            co_return co_await send_simple(
                version, beast_http::status::method_not_allowed, keep,
                error_body("use POST for " + path, "invalid_request", 405), &ticket,
                "application/json", nullptr, &a.id);
        }
        error_code jec;
        const json::value body = json::parse(req.body(), jec);
        std::string problem;
        overrides ov;
        if (jec || !body.is_object()) {
            problem = "request body is not a JSON object";
        } else if (problem = parse_overrides(body.get_object(), ov); problem.empty()) {
            const auto& obj = body.get_object();
            const auto* model = obj.if_contains("model");
            const auto* messages = obj.if_contains("messages");
            if (model == nullptr || !model->is_string()) {
                problem = "model is required (a string)";
            } else if (messages == nullptr || !messages->is_array()) {
                problem = "messages is required (an array)";
            } else {
                a.model = std::string(model->get_string());
            }
        }
        if (!problem.empty()) {
            co_return co_await send_simple(version, beast_http::status::bad_request, keep,
                                           error_body(problem, "invalid_request", 400), &ticket,
                                           "application/json", nullptr, &a.id);
        }
        const auto& obj = body.get_object();
        const auto* stream_flag = obj.if_contains("stream");
        const bool stream =
            stream_flag != nullptr && stream_flag->is_bool() && stream_flag->get_bool();
        const bool fault =
            !ov.fail_times || same_body <= static_cast<std::uint64_t>(*ov.fail_times);

        if (fault && ov.drop_before_head.value_or(false)) {
            // A per-request latency_ms holds the request first: an upstream that worked on it,
            // then died.
            if (ov.latency_ms && !co_await pause(*ov.latency_ms)) {
                ticket.finish(false, true);
                co_return false;
            }
            drop(ov.drop_rst.value_or(false));
            ticket.finish(false, false);
            co_return false;
        }
        const std::int64_t latency = ov.latency_ms.value_or(owner_.options_.latency_ms);
        // With the absolute schedule, the origin of the event times (event 0 is due then).
        const auto origin = received + std::chrono::milliseconds(latency);
        bool waited = false;
        if (ov.absolute_schedule) {
            waited = co_await pause_until(origin);
        } else {
            waited = co_await pause(latency);
        }
        if (!waited) {
            ticket.finish(false, true);
            co_return false;
        }
        if (fault && ov.status) {
            const auto code = static_cast<int>(*ov.status);
            beast_http::response<beast_http::string_body> res;
            res.version(version);
            res.result(static_cast<unsigned>(code));
            res.set(beast_http::field::server, server_name);
            res.set("x-request-id", a.id);
            if (code != 204 && code != 304) {
                res.set(beast_http::field::content_type,
                        ov.content_type.value_or("application/json"));
                res.body() = ov.error_body ? *ov.error_body
                                           : error_body("mock injected " + std::to_string(code),
                                                        "mock_error", code);
            }
            if (ov.retry_after) {
                res.set(beast_http::field::retry_after, *ov.retry_after);
            }
            if (ov.retry_after_ms) {
                res.set("retry-after-ms", std::to_string(*ov.retry_after_ms));
            }
            for (const auto& [name, value] : ov.headers) {
                res.set(name, value);
            }
            res.keep_alive(keep);
            res.prepare_payload();
            const bool ok = co_await write_response(res, &ticket);
            co_return ok&& keep;
        }

        std::string tenant = "none";
        if (const auto it = req.find(beast_http::field::authorization); it != req.end()) {
            tenant = sha256_hex(it->value()).substr(0, 8);
        } else if (const auto key = req.find("x-api-key"); key != req.end()) {
            tenant = sha256_hex(key->value()).substr(0, 8);
        }
        const int chunks =
            static_cast<int>(ov.chunks.value_or(std::max(1, owner_.options_.chunks)));
        const auto pieces = make_pieces(body_hex, tenant, chunks);
        if (stream) {
            co_return co_await answer_stream(req, a, ov, pieces, fault, ticket, keep, origin);
        }
        co_return co_await answer_json(req, a, ov, pieces, ticket, keep);
    }

    asio::awaitable<bool> answer_json(const beast_http::request<beast_http::string_body>& req,
                                      const answer& a, const overrides& ov,
                                      const std::vector<std::string>& pieces, call_ticket& ticket,
                                      bool keep) {
        std::string content;
        for (const auto& p : pieces) {
            content += p;
        }
        const std::string object = ov.object.value_or("chat.completion");
        std::string body =
            json::serialize(completion_json(a, object, content, "", count_words(content), true));
        if (ov.body_bytes && static_cast<std::uint64_t>(*ov.body_bytes) > body.size() + 1) {
            // Pad the answer so the body is about body_bytes long (for size-limit tests).
            std::size_t need = static_cast<std::size_t>(*ov.body_bytes) - body.size();
            content.reserve(content.size() + need);
            std::uint64_t state = seed_from_hex(a.body8);
            while (need > 0) {
                std::string word(" ");
                word += word_list[splitmix64(state) % word_list.size()];
                if (word.size() > need) {
                    word.resize(need);
                }
                need -= word.size();
                content += word;
            }
            body = json::serialize(
                completion_json(a, object, content, "", count_words(content), true));
        }
        beast_http::response<beast_http::string_body> res{beast_http::status::ok, req.version()};
        res.set(beast_http::field::server, server_name);
        res.set(beast_http::field::content_type, ov.content_type.value_or("application/json"));
        res.set("x-request-id", a.id);
        for (const auto& [name, value] : ov.headers) {
            res.set(name, value);
        }
        res.body() = std::move(body);
        res.keep_alive(keep);
        res.prepare_payload();
        const bool ok = co_await write_response(res, &ticket);
        co_return ok&& keep;
    }

    // One SSE event, flushed at once as its own HTTP chunk (or raw bytes for HTTP/1.0).
    asio::awaitable<bool> write_event(const std::string& event, bool chunked, call_ticket& ticket) {
        const std::string bytes = chunked ? chunk_frame(event) : event;
        const auto n = co_await write_bytes(bytes);
        if (n) {
            ticket.add_bytes(*n);
        }
        co_return n.has_value();
    }

    static std::string chunk_frame(std::string_view payload) {
        char size[20];
        const int len = std::snprintf(size, sizeof size, "%zx\r\n", payload.size());
        std::string out(size, static_cast<std::size_t>(len));
        out += payload;
        out += "\r\n";
        return out;
    }

    asio::awaitable<bool> answer_stream(const beast_http::request<beast_http::string_body>& req,
                                        const answer& a, const overrides& ov,
                                        const std::vector<std::string>& pieces, bool fault,
                                        call_ticket& ticket, bool keep,
                                        std::chrono::steady_clock::time_point origin) {
        const auto& opts = owner_.options_;
        const bool chunked = req.version() >= 11;
        keep = keep && chunked;  // HTTP/1.0: the body ends when the connection does
        const std::string object = ov.object.value_or(opts.object);
        const bool done = ov.done.value_or(opts.send_done);
        const bool timestamps = ov.timestamps.value_or(false);
        const std::int64_t interval = ov.chunk_interval_ms.value_or(opts.chunk_interval_ms);
        const std::int64_t stall_ms = ov.stall_ms.value_or(0);
        const std::optional<std::int64_t> stall_after = ov.stall_after;
        const std::optional<std::int64_t> drop_after = fault ? ov.drop_after : std::nullopt;
        const std::optional<std::int64_t> error_after = fault ? ov.error_after : std::nullopt;

        beast_http::response<beast_http::empty_body> res{beast_http::status::ok, req.version()};
        res.set(beast_http::field::server, server_name);
        res.set(beast_http::field::content_type, ov.content_type.value_or("text/event-stream"));
        res.set(beast_http::field::cache_control, "no-cache");
        res.set("x-request-id", a.id);
        for (const auto& [name, value] : ov.headers) {
            res.set(name, value);
        }
        if (chunked) {
            res.chunked(true);
        }
        res.keep_alive(keep);
        beast_http::response_serializer<beast_http::empty_body> sr{res};
        lowest().expires_after(write_timeout);
        auto [hec, hn] = co_await beast_http::async_write_header(stream_, sr, use_tuple);
        ticket.head_sent(200, true, hn);
        if (hec) {
            peer_gone_ = true;
            ticket.finish(false, true);
            co_return false;
        }

        // At each step i events have been sent; a drop, an error or a stall may come first.
        std::string message;
        std::uint64_t tokens = 0;
        const auto n = static_cast<std::int64_t>(pieces.size());
        bool errored = false, gone = false;
        for (std::int64_t i = 0; i <= n && !gone; ++i) {
            if (drop_after && *drop_after == i) {
                drop(ov.drop_rst.value_or(false));
                ticket.finish(false, false);
                co_return false;
            }
            if (error_after && *error_after == i) {
                const std::string ev =
                    "data: " + error_body("mock injected stream error", "mock_error", 500) + "\n\n";
                gone = !co_await write_event(ev, chunked, ticket);
                errored = true;
                break;
            }
            if (stall_after && *stall_after == i) {
                gone = !co_await pause(stall_ms);
            }
            if (gone || i == n) {
                break;
            }
            const auto due = origin + std::chrono::milliseconds(interval * i);
            if (ov.absolute_schedule) {
                gone = !co_await pause_until(due);
            } else if (i > 0) {
                gone = !co_await pause(interval);
            }
            if (gone) {
                break;
            }
            const auto& piece = pieces[static_cast<std::size_t>(i)];
            message += piece;
            tokens += count_words(piece);
            json::object ev_json = completion_json(a, object, message, piece, tokens, i + 1 == n);
            if (timestamps) {
                ev_json["mock_sent_us"] =
                    ov.absolute_schedule ? std::chrono::duration_cast<std::chrono::microseconds>(
                                               due.time_since_epoch())
                                               .count()
                                         : steady_us();
            }
            const std::string ev = "data: " + json::serialize(ev_json) + "\n\n";
            gone = !co_await write_event(ev, chunked, ticket);
        }
        if (gone) {
            peer_gone_ = true;
            ticket.finish(false, true);
            co_return false;
        }
        // The end: [DONE] (if wanted) and the terminating chunk in one last write.
        std::string tail;
        if (done && !errored) {
            tail = "data: [DONE]\n\n";
            if (chunked) {
                tail = chunk_frame(tail);
            }
        }
        if (chunked) {
            tail += "0\r\n\r\n";
        }
        ticket.finish_before_last_write(tail.size());
        if (!tail.empty()) {
            const auto n = co_await write_bytes(tail);
            if (!n) {
                ticket.last_write_failed(tail.size(), 0);
                peer_gone_ = true;
                co_return false;
            }
        }
        co_return keep;
    }

    impl& owner_;
    Stream stream_;
    beast::flat_buffer buffer_;
    asio::steady_timer pace_timer_;   // latency, intervals, stalls; cancelled on hang-up/stop
    asio::steady_timer watch_timer_;  // wakes stop_watch() when the watch read ends
    std::uint64_t id_;
    bool watching_ = false, watch_stop_ = false;
    bool peer_gone_ = false, closing_ = false, dropped_ = false;
};

// Registers a connection with its worker so stop() can reach it.
template <class Conn>
class session_registration {
  public:
    session_registration(impl& owner, worker& w, Conn& c) : owner_(owner), worker_(w), conn_(c) {
        owner_.session_started(worker_, &conn_);
    }
    ~session_registration() { owner_.session_ended(worker_, &conn_); }
    session_registration(const session_registration&) = delete;
    session_registration& operator=(const session_registration&) = delete;

  private:
    impl& owner_;
    worker& worker_;
    Conn& conn_;
};

asio::awaitable<void> run_session(impl& owner, worker& w, tcp::socket socket) {
    if (owner.stopping_) {
        co_return;
    }
    const std::uint64_t id = owner.next_connection_id_++;
    owner.note_connection();
    if (!owner.tls_) {
        connection<beast::tcp_stream> conn(owner, beast::tcp_stream(std::move(socket)), id);
        session_registration reg(owner, w, conn);
        co_await conn.run();
        co_return;
    }
    connection<ssl_stream> conn(owner,
                                ssl_stream(beast::tcp_stream(std::move(socket)), *owner.tls_), id);
    session_registration reg(owner, w, conn);
    conn.lowest().expires_after(handshake_timeout);
    auto [ec] = co_await conn.stream().async_handshake(ssl::stream_base::server, use_tuple);
    if (!ec) {
        co_await conn.run();
    }
}

asio::awaitable<void> accept_loop(impl& owner) {
    asio::steady_timer backoff(co_await asio::this_coro::executor);
    for (;;) {
        worker& w = *owner.workers_[owner.next_worker_++ % owner.workers_.size()];
        auto [ec, socket] = co_await owner.acceptor_->async_accept(w.ioc, use_tuple);
        if (ec) {
            if (owner.stopping_ || ec == asio::error::operation_aborted ||
                !owner.acceptor_->is_open()) {
                co_return;
            }
            if (ec != asio::error::connection_aborted) {
                // Out of descriptors or similar: back off instead of spinning.
                backoff.expires_after(100ms);
                co_await backoff.async_wait(use_tuple);
            }
            continue;
        }
        error_code ignored;
        socket.set_option(tcp::no_delay(true), ignored);
        asio::co_spawn(w.ioc, run_session(owner, w, std::move(socket)), report_exception{});
    }
}

void run_worker(asio::io_context& ioc) {
    for (;;) {
        try {
            ioc.run();
            return;
        } catch (const std::exception& e) {
            std::fprintf(stderr, "mock-provider: worker: %s\n", e.what());
        }
    }
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// mock_server

struct mock_server::impl : detail::server_state {
    using server_state::server_state;
};

using detail::live_session;
using detail::worker;

mock_server::mock_server(mock_options options)
    : impl_(std::make_unique<impl>(std::move(options))) {}

mock_server::~mock_server() {
    stop();
}

void mock_server::start() {
    impl& s = *impl_;
    std::lock_guard lock(s.control_mutex_);
    if (s.started_) {
        throw std::logic_error("mock_server::start called twice");
    }
    auto& o = s.options_;
    o.latency_ms = std::clamp<int>(o.latency_ms, 0, max_delay_ms);
    o.chunk_interval_ms = std::clamp<int>(o.chunk_interval_ms, 0, max_delay_ms);
    o.chunks = std::clamp(o.chunks, 1, 100'000);
    o.threads = std::clamp(o.threads, 1u, 256u);
    if (o.tls_cert_file.empty() != o.tls_key_file.empty()) {
        throw std::invalid_argument(
            "mock_server: set both tls_cert_file and tls_key_file, or neither");
    }
    try {
        if (!o.tls_cert_file.empty()) {
            s.tls_.emplace(ssl::context::tls_server);
            s.tls_->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                                ssl::context::no_sslv3 | ssl::context::no_tlsv1 |
                                ssl::context::no_tlsv1_1);
            s.tls_->use_certificate_chain_file(o.tls_cert_file);
            s.tls_->use_private_key_file(o.tls_key_file, ssl::context::pem);
        }
        for (unsigned i = 0; i < o.threads; ++i) {
            s.workers_.push_back(std::make_unique<worker>());
        }
        s.acceptor_ = std::make_unique<tcp::acceptor>(s.workers_.front()->ioc);
        const tcp::endpoint ep(asio::ip::make_address(o.address), o.port);
        s.acceptor_->open(ep.protocol());
        s.acceptor_->set_option(asio::socket_base::reuse_address(true));
        s.acceptor_->bind(ep);
        s.acceptor_->listen(asio::socket_base::max_listen_connections);
        s.port_ = s.acceptor_->local_endpoint().port();
    } catch (...) {
        s.acceptor_.reset();
        s.workers_.clear();
        s.tls_.reset();
        throw;
    }
    asio::co_spawn(s.workers_.front()->ioc, detail::accept_loop(s), report_exception{});
    for (auto& w : s.workers_) {
        w->guard.emplace(w->ioc.get_executor());
        w->thread = std::thread([ioc = &w->ioc] { detail::run_worker(*ioc); });
    }
    s.started_ = true;
}

void mock_server::stop() {
    impl& s = *impl_;
    std::lock_guard lock(s.control_mutex_);
    if (!s.started_ || s.stopped_) {
        return;
    }
    s.stopped_ = true;
    s.stopping_ = true;
    asio::post(s.workers_.front()->ioc, [acceptor = s.acceptor_.get()] {
        error_code ec;
        acceptor->close(ec);
    });
    for (auto& w : s.workers_) {
        asio::post(w->ioc, [wp = w.get()] {
            // shutdown() does not remove the session from the set; copy to be safe anyway.
            const std::vector<live_session*> sessions(wp->sessions.begin(), wp->sessions.end());
            for (auto* session : sessions) {
                session->shutdown();
            }
        });
    }
    {
        std::unique_lock life(s.life_mutex_);
        s.life_cv_.wait_for(life, 3s, [&] { return s.live_sessions_ == 0; });
    }
    for (auto& w : s.workers_) {
        w->guard.reset();
        w->ioc.stop();
    }
    for (auto& w : s.workers_) {
        if (w->thread.joinable()) {
            w->thread.join();
        }
    }
    // Whatever did not finish is destroyed with its io_context; the listener's context first,
    // since a pending accept may hold a socket of another context.
    s.acceptor_.reset();
    for (auto& w : s.workers_) {
        w.reset();
    }
    s.workers_.clear();
}

std::uint16_t mock_server::port() const {
    return impl_->port_;
}

mock_stats mock_server::stats() const {
    return impl_->stats();
}

std::vector<call_record> mock_server::calls() const {
    return impl_->calls();
}

void mock_server::reset() {
    impl_->reset();
}

}  // namespace coalescer::mock
