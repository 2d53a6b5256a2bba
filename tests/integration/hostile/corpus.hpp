// The hostile-upstream corpus: one entry per misbehaviour, grouped by the numbered cases of the
// brief (reliability checklist H-20, U-cases, D-05/D-06). Each entry says how the scripted
// upstream answers the first request it receives (every later request gets a genuine answer of
// its own) and what every client of that flight must see. To add a case, add a line to its
// group; a new group also needs a TEST_CASE line in hostile_upstream_test.cpp.
#pragma once

#include "../raw_upstream.hpp"

#include <chrono>
#include <string>
#include <vector>

namespace coalescer::test::hostile {

using namespace std::chrono_literals;

// What the clients of the faulty exchange must see.
enum class expect {
    answer,                    // exactly `status` and `body`, complete
    answer_or_protocol_error,  // that, or a 502 upstream_protocol_error
    error,                     // a complete `error_status` JSON error with `code` ("" = any code)
    cut,                       // `status`, then a prefix of `body`, then the end without framing
    error_or_cut,              // the error before any byte, or the cut after them
};

// Short upstream timeouts, so that an outcome that waits for one of them shows as late: every
// outcome must arrive within `hostile_case::within`, and a client gives up at `client_bound`.
inline const std::string default_timeouts =
    "    timeouts: {connect: 1s, head: 2s, idle: 2s, total: 4s}\n";
inline const std::string stall_timeouts =
    "    timeouts: {connect: 1s, head: 500ms, idle: 500ms, total: 4s}\n";
inline constexpr std::chrono::milliseconds client_bound{5000};

struct hostile_case {
    int group;
    std::string name;
    script_step step;  // the upstream's answer to the first request
    expect outcome;
    unsigned status = 200;        // answer and cut: the status line the clients see
    std::string body;             // answer: the exact body; cut: the body of which a prefix
    unsigned error_status = 502;  // error: the status the sidecar must make
    std::string code = "upstream_protocol_error";  // error: its code ("" = any)
    // The upstream connection may not carry another request after this answer.
    bool poisons = true;
    std::string method = "POST";
    std::string timeouts = default_timeouts;  // the upstream's `timeouts:` line
    std::string extra;                        // more top-level config
    // The outcome comes this soon (from the first byte the upstream could send): not after a
    // timeout that the misbehaviour did not call for.
    std::chrono::milliseconds within{1500};
};

// --- building blocks ---------------------------------------------------------------------------

// A complete response that nobody asked for: a client that receives it got another answer's bytes.
inline const std::string injected = "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nINJECTED";

inline const std::string valid_body =
    R"({"id":"hostile-answer","object":"chat.completion","choices":[{"index":0,)"
    R"("message":{"role":"assistant","content":"the one true answer"}}]})";

inline std::string cl_response(const std::string& body, const std::string& status_line = "200 OK",
                               const std::string& fields = "") {
    return "HTTP/1.1 " + status_line + "\r\nContent-Type: application/json\r\n" + fields +
           "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

inline std::string hex(std::size_t n) {
    static const char* digits = "0123456789abcdef";
    std::string out;
    do {
        out.insert(out.begin(), digits[n % 16]);
        n /= 16;
    } while (n != 0);
    return out;
}

inline std::string chunk(const std::string& data) {
    return hex(data.size()) + "\r\n" + data + "\r\n";
}

// The SSE stream the chunked cases carry, as two chunks and as the body a client must see.
inline const std::string event_1 = "data: {\"choices\":[{\"delta\":{\"content\":\"one\"}}]}\n\n";
inline const std::string event_2 = "data: {\"choices\":[{\"delta\":{\"content\":\"two\"}}]}\n\n";
inline const std::string sse_body = event_1 + event_2;
inline const std::string sse_head =
    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nX-Upstream-Id: sse-1\r\n"
    "Transfer-Encoding: chunked\r\n\r\n";
inline const std::string sse_response = sse_head + chunk(event_1) + chunk(event_2) + "0\r\n\r\n";

// The bytes of `whole` up to the first occurrence of `marker` (with `marker` if `inclusive`).
inline std::string up_to(const std::string& whole, const std::string& marker, bool inclusive) {
    const auto at = whole.find(marker);
    return whole.substr(0, at + (inclusive ? marker.size() : 0));
}

// --- the corpus --------------------------------------------------------------------------------

inline std::vector<hostile_case> corpus() {
    std::vector<hostile_case> out;
    auto add = [&](hostile_case c) { out.push_back(std::move(c)); };

    // 1. Out of step: a valid answer, then (150 ms later, a TCP segment of its own, unless said)
    // a whole response to nothing. The next request on that connection must not get it.
    const auto later = 150ms;
    add({1, "a second response 150 ms after a Content-Length answer",
         answer(cl_response(valid_body)).after(later, injected), expect::answer, 200, valid_body});
    add({1, "a second response 150 ms after a chunked answer",
         answer(sse_response).after(later, injected), expect::answer, 200, sse_body});
    {
        // 204 and 304 have no content whatever their fields say: the "body" they announce is
        // the next response on the wire. Refusing the answer (H-20) is as good as ending it.
        hostile_case c{1,
                       "a 204 announcing a body that arrives 150 ms later",
                       answer("HTTP/1.1 204 No Content\r\nContent-Length: " +
                              std::to_string(injected.size()) + "\r\n\r\n")
                           .after(later, injected),
                       expect::answer_or_protocol_error,
                       204,
                       ""};
        add(c);
        c.name = "a 304 announcing a body that arrives 150 ms later";
        c.step = answer("HTTP/1.1 304 Not Modified\r\nContent-Length: " +
                        std::to_string(injected.size()) + "\r\n\r\n")
                     .after(later, injected);
        c.status = 304;
        add(c);
    }
    {
        hostile_case c{1,
                       "a HEAD answer followed 150 ms later by the body it announced",
                       answer("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                              "Content-Length: " +
                              std::to_string(injected.size()) + "\r\n\r\n")
                           .after(later, injected),
                       expect::answer,
                       200,
                       ""};
        c.method = "HEAD";
        add(c);
    }
    add({1, "a second response in the same segment as a Content-Length answer",
         answer(cl_response(valid_body) + injected), expect::answer, 200, valid_body});
    add({1, "a second response in the same segment as a chunked answer",
         answer(sse_response + injected), expect::answer, 200, sse_body});

    // The connection ends under the pooled connection: a FIN (the upstream may still read what
    // is sent to it, and act on it) or a full close, 150 ms after a valid answer. A request sent
    // there afterwards could be processed and then sent again on a new connection.
    add({1, "a valid answer, then a half-close (FIN) 150 ms later",
         answer(cl_response(valid_body)).after(later, "").ending_with(ending::half_close),
         expect::answer, 200, valid_body});
    add({1, "a valid answer, then a close 150 ms later",
         answer(cl_response(valid_body)).after(later, "").ending_with(ending::close),
         expect::answer, 200, valid_body});

    // 2. An upgrade nobody asked for.
    add({2, "101 Switching Protocols to a POST",
         answer("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: "
                "Upgrade\r\n\r\n"),
         expect::error});
    add({2, "101 Switching Protocols to a POST, then the connection closes",
         answer("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: "
                "Upgrade\r\n\r\n")
             .after(50ms, "")
             .ending_with(ending::close),
         expect::error});

    // 3. Interim answers are consumed; the final one is what every client sees.
    {
        hostile_case c{3,
                       "100 Continue, then 200 in another segment",
                       answer("HTTP/1.1 100 Continue\r\n\r\n").after(30ms, cl_response(valid_body)),
                       expect::answer,
                       200,
                       valid_body};
        c.poisons = false;
        add(c);
        c.name = "103 Early Hints, then 200 in another segment";
        c.step = answer("HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
                     .after(30ms, cl_response(valid_body));
        add(c);
        c.name = "100 and 103 and a chunked 200 in one segment";
        c.step =
            answer("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" +
                   sse_response);
        c.body = sse_body;
        add(c);
    }

    // 4. Statuses outside 100–599.
    add({4, "status 600", answer(cl_response("weird", "600 Weird")), expect::error});
    add({4, "status 999", answer(cl_response("weird", "999 Weird")), expect::error});
    add({4, "status 099", answer(cl_response("weird", "099 Weird")), expect::error});

    // 5. Transfer codings the sidecar did not ask for and does not decode.
    add({5, "Transfer-Encoding: gzip, chunked",
         answer("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: gzip, "
                "chunked\r\n\r\n" +
                chunk(std::string("\x1f\x8b\x08", 3) + "garbage") + "0\r\n\r\n"),
         expect::error});
    add({5, "Transfer-Encoding: gzip alone, body ended by the close",
         answer("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: "
                "gzip\r\n\r\n\x1f\x8b\x08"
                "garbage")
             .after(30ms, "")
             .ending_with(ending::close),
         expect::error});

    // 6. A header section over limits.max_header_bytes.
    add({6, "a 20 KiB header section (default max_header_bytes 16 KiB)",
         answer(
             cl_response(valid_body, "200 OK", "X-Big: " + std::string(20 * 1024, 'b') + "\r\n")),
         expect::error});
    {
        hostile_case c{6, "a 6 KiB header section with max_header_bytes: 4KiB",
                       answer(cl_response(valid_body, "200 OK",
                                          "X-Big: " + std::string(6 * 1024, 'b') + "\r\n")),
                       expect::error};
        c.extra = "limits: {max_header_bytes: 4KiB}\n";
        add(c);
    }
    {
        std::string many;
        for (int i = 0; i < 2000; ++i)
            many += "X-F" + std::to_string(i) + ": " + std::string(40, 'v') + "\r\n";
        add({6, "a 100 KiB header section of 2000 fields",
             answer(cl_response(valid_body, "200 OK", many)), expect::error});
    }

    // 7. Bytes a field line may not hold.
    add({7, "a field line ended by a bare LF",
         answer(
             "HTTP/1.1 200 OK\r\nX-Odd: yes\nContent-Type: application/json\r\nContent-Length: " +
             std::to_string(valid_body.size()) + "\r\n\r\n" + valid_body),
         expect::error});
    add({7, "the status line ended by a bare LF",
         answer("HTTP/1.1 200 OK\nContent-Type: application/json\r\nContent-Length: " +
                std::to_string(valid_body.size()) + "\r\n\r\n" + valid_body),
         expect::error});
    add({7, "a field value holding NUL",
         answer(cl_response(valid_body, "200 OK", std::string("X-Odd: a") + '\0' + "b\r\n")),
         expect::error});
    add({7, "a field value holding a bare CR",
         answer(cl_response(valid_body, "200 OK", "X-Odd: a\rb\r\n")), expect::error});

    // 8. Ambiguous framing.
    add({8, "Content-Length: 5 and Content-Length: 6",
         answer("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
         expect::error});
    add({8, "Content-Length: 5, 6", answer("HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello!"),
         expect::error});
    add({8, "Content-Length then Transfer-Encoding: chunked",
         answer("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n" +
                chunk("hello") + "0\r\n\r\n"),
         expect::error});
    add({8, "Transfer-Encoding: chunked then Content-Length",
         answer("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n" +
                chunk("hello") + "0\r\n\r\n"),
         expect::error});

    // 9. A body that disagrees with its Content-Length.
    add({9, "a body shorter than Content-Length, then the close",
         answer(up_to(cl_response(valid_body), "the one true", false))
             .after(30ms, "")
             .ending_with(ending::close),
         expect::cut, 200, valid_body});
    add({9, "a body shorter than Content-Length, then a reset",
         answer(up_to(cl_response(valid_body), "the one true", false))
             .after(30ms, "")
             .ending_with(ending::reset),
         expect::cut, 200, valid_body});
    add({9, "a body longer than Content-Length (extra bytes in the same segment)",
         answer(cl_response(valid_body) + "EXTRA-BYTES-AFTER-THE-BODY"), expect::answer, 200,
         valid_body});

    // 10. Chunked framing gone wrong.
    add({10, "a chunk size that overflows 64 bits",
         answer(sse_head + chunk(event_1) + "FFFFFFFFFFFFFFFFF\r\n" + event_2 + "\r\n0\r\n\r\n"),
         expect::error_or_cut, 200, sse_body});
    add({10, "a chunk size that overflows 64 bits, in a later segment",
         answer(sse_head + chunk(event_1))
             .after(50ms, "FFFFFFFFFFFFFFFFF\r\n" + event_2 + "\r\n0\r\n\r\n"),
         expect::cut, 200, sse_body});
    add({10, "no last chunk, then the close",
         answer(sse_head + chunk(event_1) + chunk(event_2))
             .after(30ms, "")
             .ending_with(ending::close),
         expect::cut, 200, sse_body});
    add({10, "a chunk extension of garbage",
         answer(sse_head + chunk(event_1) + hex(event_2.size()) + ";\x01\x7f=\"\r\n" + event_2 +
                "\r\n0\r\n\r\n"),
         expect::error_or_cut, 200, sse_body});
    add({10, "a chunk size that is not hex",
         answer(sse_head + chunk(event_1) + "zz\r\n" + event_2 + "\r\n0\r\n\r\n"),
         expect::error_or_cut, 200, sse_body});
    {
        hostile_case c{10,
                       "a well-formed chunk extension (control: a valid answer)",
                       answer(sse_head + chunk(event_1) + hex(event_2.size()) + ";name=value\r\n" +
                              event_2 + "\r\n0\r\n\r\n"),
                       expect::answer,
                       200,
                       sse_body};
        c.poisons = false;
        add(c);
    }

    // 11. The upstream closes (or resets) at every point of a valid chunked answer: before the
    // head is whole the clients get a 502, after it a cut (or still the 502: nothing was sent).
    struct cut_point {
        const char* name;
        std::string prefix;
        bool head_whole;
    };
    const std::string status_line = "HTTP/1.1 200 OK\r\n";
    const std::vector<cut_point> points = {
        {"mid status line", "HTTP/1.1 20", false},
        {"after the status line", status_line, false},
        {"mid fields", up_to(sse_response, "event-str", false), false},
        {"after the fields, before the blank line", up_to(sse_response, "\r\n\r\n", false) + "\r\n",
         false},
        {"after the head", sse_head, true},
        {"mid chunk size line", sse_head + hex(event_1.size()), true},
        {"mid chunk data", sse_head + chunk(event_1).substr(0, 20), true},
        {"after a whole chunk", sse_head + chunk(event_1), true},
        {"just before the terminating chunk", sse_head + chunk(event_1) + chunk(event_2), true},
        {"mid terminating chunk", sse_head + chunk(event_1) + chunk(event_2) + "0\r\n", true},
        {"mid Content-Length body", up_to(cl_response(valid_body), "true answer", false), true},
    };
    for (const auto& p : points) {
        for (const auto how : {ending::close, ending::reset}) {
            hostile_case c{
                11,
                std::string(how == ending::close ? "close " : "reset ") + p.name,
                answer(p.prefix).after(30ms, "").ending_with(how),
                p.head_whole ? expect::error_or_cut : expect::error,
                200,
                p.prefix.find("Content-Length") != std::string::npos ? valid_body : sse_body};
            c.code = "";  // upstream_closed, most likely: any well-formed 502 will do
            add(c);
        }
    }

    // 12. Stalls: each must end at its own timeout, not later.
    {
        // The head may have gone out already: then the cut, else the idle timeout's 504.
        hostile_case c{12,
                       "the head, then nothing (idle 500ms)",
                       answer(sse_head),
                       expect::error_or_cut,
                       200,
                       sse_body};
        c.error_status = 504;
        c.code = "upstream_idle_timeout";
        c.timeouts = stall_timeouts;
        add(c);
        c.name = "the head and one chunk, then nothing (idle 500ms)";
        c.step = answer(sse_head + chunk(event_1));
        c.outcome = expect::cut;
        add(c);
        c.name = "no head at all (head 500ms)";
        c.step = script_step{};
        c.outcome = expect::error;
        c.error_status = 504;
        c.code = "upstream_head_timeout";
        add(c);
        c.name = "half a head, then nothing (head 500ms)";
        c.step = answer(status_line + "Content-Type: appl");
        add(c);
    }
    return out;
}

}  // namespace coalescer::test::hostile
