#!/usr/bin/env python3
"""Writes the seed corpora under tests/fuzz/corpus/ (run it after changing a seed here).

Files that are not written by this script (regression inputs saved from crashes, named
regression-*) are left alone. The layouts of the inputs are described at the top of each
target's source file.
"""
import json
import pathlib
import shutil

HERE = pathlib.Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
REPO = HERE.parent.parent


def write(target, name, data):
    if isinstance(data, str):
        data = data.encode()
    path = CORPUS / target / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def crlf(*lines):
    return "".join(line + "\r\n" for line in lines)


# --- request_head: raw bytes from the client, head then body (then maybe another request) ---

chat = json.dumps({"model": "sonar", "messages": [{"role": "user", "content": "hi"}]},
                  separators=(",", ":"))
req = {
    "get": crlf("GET /v1/models HTTP/1.1", "Host: 127.0.0.1:8080",
                "Authorization: Bearer k", ""),
    "post_json": crlf("POST /chat/completions HTTP/1.1", "Host: a",
                      "Content-Type: application/json", "Authorization: Bearer k",
                      f"Content-Length: {len(chat)}", "") + chat,
    "post_chunked": crlf("POST /chat/completions HTTP/1.1", "Host: a",
                         "Transfer-Encoding: chunked", "") +
                    crlf("a", chat[:10], f"{len(chat) - 10:x}", chat[10:], "0", ""),
    "chunked_ext_trailer": crlf("POST /v1/messages HTTP/1.1", "Host: a", "x-api-key: k",
                                "Transfer-Encoding: chunked", "") +
                           crlf("4;name=value;q=\"quoted\"", "abcd", "0;last",
                                "Authorization: Bearer other", "X-Trailer: t", ""),
    "pipelined": crlf("GET /a HTTP/1.1", "Host: a", "") +
                 crlf("POST /b HTTP/1.1", "Host: a", "Content-Length: 3", "") + "xyz" +
                 crlf("GET /c HTTP/1.1", "Host: a", "Connection: close", "") +
                 crlf("GET /d HTTP/1.1", "Host: a", ""),
    "http10_no_host": crlf("GET / HTTP/1.0", ""),
    "http10_keep_alive": crlf("GET / HTTP/1.0", "Connection: keep-alive", "") +
                         crlf("GET / HTTP/1.0", ""),
    "expect_continue": crlf("POST / HTTP/1.1", "Host: a", "Expect: 100-continue",
                            "Content-Length: 2", "") + "{}",
    "bad_cl_and_te": crlf("POST / HTTP/1.1", "Host: a", "Content-Length: 4",
                          "Transfer-Encoding: chunked", "") + crlf("0", ""),
    "bad_two_cl": crlf("POST / HTTP/1.1", "Host: a", "Content-Length: 1",
                       "Content-Length: 2", "") + "ab",
    "bad_cl_sign": crlf("POST / HTTP/1.1", "Host: a", "Content-Length: +1", "") + "a",
    "bad_te_gzip": crlf("POST / HTTP/1.1", "Host: a", "Transfer-Encoding: gzip", ""),
    "bad_te_gzip_chunked": crlf("POST / HTTP/1.1", "Host: a",
                                "Transfer-Encoding: gzip, chunked", "") + crlf("0", ""),
    "bad_te_two_lines": crlf("POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked",
                             "Transfer-Encoding: chunked", "") + crlf("0", ""),
    "bad_te_http10": crlf("POST / HTTP/1.0", "Transfer-Encoding: chunked", "") + crlf("0", ""),
    "bad_obs_fold": crlf("GET / HTTP/1.1", "Host: a", "X-A: b", " folded", ""),
    "bad_bare_lf": "GET / HTTP/1.1\nHost: a\n\n",
    "bad_bare_cr": crlf("GET / HTTP/1.1", "Host: a", "X-A: b\rc", ""),
    "bad_nul": crlf("GET / HTTP/1.1", "Host: a", "X-A: b\0c", ""),
    "bad_version": crlf("GET / HTTP/2.0", "Host: a", ""),
    "bad_version_garbage": crlf("GET / HTTP/1.x", "Host: a", ""),
    "bad_connect": crlf("CONNECT a:443 HTTP/1.1", "Host: a:443", ""),
    "bad_absolute_form": crlf("GET http://evil/ HTTP/1.1", "Host: a", ""),
    "bad_asterisk": crlf("OPTIONS * HTTP/1.1", "Host: a", ""),
    "bad_fragment": crlf("GET /a#b HTTP/1.1", "Host: a", ""),
    "bad_two_hosts": crlf("GET / HTTP/1.1", "Host: a", "Host: b", ""),
    "bad_host_chars": crlf("GET / HTTP/1.1", "Host: a/b@c", ""),
    "bad_expect": crlf("POST / HTTP/1.1", "Host: a", "Expect: 200-ok", "Content-Length: 0", ""),
    "bad_underscore": crlf("GET / HTTP/1.1", "Host: a", "X_Api_Key: k", ""),
    "bad_connection_credential": crlf("GET / HTTP/1.1", "Host: a",
                                      "Connection: keep-alive, x-api-key", "x-api-key: k", ""),
    "bad_two_credentials": crlf("GET / HTTP/1.1", "Host: a", "Authorization: Bearer k1",
                                "x-api-key: k2", ""),
    "same_two_credentials": crlf("GET / HTTP/1.1", "Host: a", "Authorization: Bearer  k1",
                                 "x-api-key: k1 ", ""),
    "bad_two_authorizations": crlf("GET / HTTP/1.1", "Host: a", "Authorization: a",
                                   "authorization: a", ""),
    "bad_too_many_fields": crlf("GET / HTTP/1.1", "Host: a",
                                *[f"X-{i}: {i}" for i in range(100)], ""),
    "bad_body_too_large": crlf("POST / HTTP/1.1", "Host: a", "Content-Length: 16777217", ""),
    "bad_chunk_size": crlf("POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked", "") +
                      crlf("zz", "ab", "0", ""),
    "bad_chunk_huge": crlf("POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked", "") +
                      crlf("ffffffffffffffff", "ab"),
    "incomplete_body": crlf("POST / HTTP/1.1", "Host: a", "Content-Length: 100", "") + "short",
    "incomplete_head": "POST / HTTP/1.1\r\nHost: a\r\n",
    "method_odd": crlf("PATCH /x?y=1&z=%20 HTTP/1.1", "Host: [::1]:80", "Content-Length: 0", ""),
}
for name, data in req.items():
    write("request_head", name, data)


# --- canonical_json: a mode byte (ignore list), then JSON; 0xFF separates two documents ---

def cj(mode, *docs):
    return bytes([mode]) + b"\xff".join(d.encode() if isinstance(d, str) else d for d in docs)


canon = {
    "chat": cj(0, '{"model":"gpt-4o","messages":[{"role":"user","content":"Hi \\"there\\"\\n'
                  '\\u00e9\\ud83d\\ude00\\/"}],"temperature":0.7,"n":1,"stop":null,'
                  '"stream":false}'),
    "chat_ignore_user": cj(1, '{"model":"m","user":"u1","metadata":{"trace_id":"t",'
                              '"keep":1},"stream_options":{"include_usage":true}}'),
    "messages_ignore": cj(2, '{"messages":[{"role":"system","content":"s"},'
                             '{"role":"user","content":"c"}],"a/b":1,"~":2,"a~1b":3}'),
    "array_ignore": cj(3, '[[0],[1,2,3],{"":1,"x":[{"y":1,"z":2}]}]'),
    "empty_name_ignore": cj(3, '{"":1,"x":[{"y":1},{"y":2}],"0":"zero"}'),
    "numbers": cj(0, '[1,1.0,1e0,10e-1,-0,0.0,0e5,1e20,1e21,1.5e-7,0.00012,123.45,1.50,'
                     '-12.5e+10,1E400,12345678901234567890123,9223372036854775808,'
                     '-9223372036854775809,18446744073709551616,0.000001,1e-400]'),
    "strings": cj(0, '["\\u0041\\/\\\\\\"","\\b\\f\\n\\r\\t\\u001F\\u001f","\\u2028",'
                     '"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80","\\u00e9","\\uD83D\\uDE00"]'),
    "same_pair": cj(0, '{"b":1,"a":[1.0,"x",{"d":null,"c":true}]}',
                    ' { "a" : [ 1 , "\\u0078", {"c":true,"d":null} ] , "b" : 1e0 } '),
    "same_pair_numbers": cj(0, '[1.50, 1e400, 0.1e-5]', '[15e-1,10E399,1e-6]'),
    "different_pair": cj(0, '{"a":[1,2]}', '{"a":[2,1]}'),
    "scalar_pair": cj(0, '"x"', '"\\u0078"'),
    "nested_63": cj(0, "[" * 63 + "]" * 63),
    "bad_nested_65": cj(0, "[" * 65 + "]" * 65),
    "bad_trailing_comma": cj(0, '{"a":1,}'),
    "bad_duplicate": cj(0, '{"a":1,"\\u0061":2}'),
    "bad_duplicate_removed": cj(1, '{"user":1,"user":2}'),
    "bad_lone_surrogate": cj(0, '["\\ud800"]'),
    "bad_lone_low_surrogate": cj(0, '["\\udc00x"]'),
    "bad_overlong_utf8": cj(0, b'["\xc0\xaf"]'),
    "bad_encoded_surrogate": cj(0, b'["\xed\xa0\x80"]'),
    "bad_beyond_unicode": cj(0, b'["\xf4\x90\x80\x80"]'),
    "bad_comment": cj(0, '{"a":1 /* c */}'),
    "bad_nan": cj(0, '[NaN]'),
    "bad_leading_zero": cj(0, '[01]'),
    "bad_after_value": cj(0, '{} {}'),
    "bad_control_in_string": cj(0, b'["a\x01b"]'),
    "bad_exponent_beyond": cj(0, '[1e1000000000000001]'),
    "exponent_beyond_boost": cj(0, '[1e2147483648]', '[10e2147483647]'),
    "whitespace": cj(0, ' \t\r\n{ "k" :\t[ true ,false, null ]\r\n}\n'),
}
for name, data in canon.items():
    write("canonical_json", name, data)


# --- response_head: flags, body buffer size, split seed, then the upstream's bytes ---

def rh(flags, buffer, seed, wire):
    return bytes([flags, buffer, seed]) + (wire.encode() if isinstance(wire, str) else wire)


completion = json.dumps({"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-mini",
                         "choices": [{"index": 0, "message": {"role": "assistant",
                                                              "content": "Hi!"},
                                      "finish_reason": "stop"}],
                         "usage": {"prompt_tokens": 9, "completion_tokens": 2,
                                   "total_tokens": 11}}, separators=(",", ":"))
sse_events = ['data: {"choices":[{"delta":{"content":"Hi"}}],"usage":null}\n\n',
              'data: {"choices":[],"usage":{"total_tokens":11}}\n\n', "data: [DONE]\n\n"]
resp = {
    "json_cl": rh(0, 16, 0, crlf("HTTP/1.1 200 OK", "Content-Type: application/json",
                                 f"Content-Length: {len(completion)}", "x-request-id: r1", "")
                  + completion),
    "json_cl_pieces": rh(0, 7, 5, crlf("HTTP/1.1 200 OK", "Content-Type: application/json",
                                       f"Content-Length: {len(completion)}", "") + completion),
    "sse_chunked": rh(0, 32, 9, crlf("HTTP/1.1 200 OK", "Content-Type: text/event-stream",
                                     "Transfer-Encoding: chunked", "") +
                      "".join(f"{len(e):x}\r\n{e}\r\n" for e in sse_events) + "0\r\n\r\n"),
    "chunked_ext_trailer": rh(0, 3, 1, crlf("HTTP/1.1 200 OK", "Transfer-Encoding: chunked", "",
                                            "5;a=b;c=\"d e\"", "hello", "0;end",
                                            "X-Trailer: t", "")),
    "eof_body": rh(0, 64, 2, crlf("HTTP/1.1 200 OK", "Connection: close", "") + "until eof"),
    "http10_eof_body": rh(0, 5, 0, crlf("HTTP/1.0 200 OK", "") + "old style body"),
    "continue_then_200": rh(0, 8, 3, crlf("HTTP/1.1 100 Continue", "") +
                            crlf("HTTP/1.1 103 Early Hints", "Link: </a>; rel=preload", "") +
                            crlf("HTTP/1.1 200 OK", "Content-Length: 2", "") + "ok"),
    "switching_101": rh(0, 8, 0, crlf("HTTP/1.1 101 Switching Protocols", "Upgrade: x",
                                      "Connection: upgrade", "") + "raw"),
    "no_content_204": rh(0, 8, 0, crlf("HTTP/1.1 204 No Content", "Content-Length: 5", "")),
    "not_modified_304": rh(0, 8, 0, crlf("HTTP/1.1 304 Not Modified", "Content-Length: 10", "")),
    "head_response": rh(1, 8, 0, crlf("HTTP/1.1 200 OK", "Content-Length: 1000", "")),
    "retry_429": rh(0, 16, 4, crlf("HTTP/1.1 429 Too Many Requests", "retry-after-ms: 250",
                                   "Retry-After: 1", "Content-Type: application/json",
                                   "Content-Length: 29", "") +
                    '{"error":{"code":429,"x":""}}'),
    "keep_alive_extra": rh(0, 8, 0, crlf("HTTP/1.1 200 OK", "Content-Length: 2", "") + "ok" +
                           crlf("HTTP/1.1 200 OK", "Content-Length: 0", "")),
    "empty_reason": rh(0, 8, 0, crlf("HTTP/1.1 200 ", "Content-Length: 0", "")),
    "bad_cl_and_te": rh(0, 8, 0, crlf("HTTP/1.1 200 OK", "Content-Length: 3",
                                      "Transfer-Encoding: chunked", "") + crlf("3", "abc", "0", "")),
    "bad_two_cl": rh(0, 8, 0, crlf("HTTP/1.1 200 OK", "Content-Length: 3", "Content-Length: 4", "")
                     + "abcd"),
    "bad_cl": rh(0, 8, 0, crlf("HTTP/1.1 200 OK", "Content-Length: -1", "")),
    "bad_status_line": rh(0, 8, 0, crlf("HTTP/1.1 2000 OK", "")),
    "bad_version": rh(0, 8, 0, crlf("HTTP/2 200", "")),
    "bad_obs_fold": rh(0, 8, 0, crlf("HTTP/1.1 200 OK", "X-A: a", " b", "Content-Length: 0", "")),
    "bad_chunk": rh(0, 8, 0, crlf("HTTP/1.1 200 OK", "Transfer-Encoding: chunked", "", "g", "")),
    "cut_chunked": rh(0, 4, 6, crlf("HTTP/1.1 200 OK", "Transfer-Encoding: chunked", "",
                                    "10", "only part")),
    "cut_head": rh(0, 8, 7, "HTTP/1.1 200 OK\r\nContent-Le"),
    "empty": rh(0, 8, 0, ""),
}
for name, data in resp.items():
    write("response_head", name, data)


# --- sse_usage: content type (0 json, 1 sse, 2 sse; charset, 3 json; charset), split seed, body ---

def su(ct, seed, body):
    return bytes([ct, seed]) + body.encode()


def sse(events, crlf_lines=False, named=False):
    out = ""
    for e in events:
        if e == "[DONE]":
            out += "data: [DONE]\n\n"
            continue
        if named:
            out += f"event: {json.loads(e)['type']}\n"
        out += f"data: {e}\n\n"
    return out.replace("\n", "\r\n") if crlf_lines else out


def j(v):
    return json.dumps(v, separators=(",", ":"))


pplx_json = j({"id": "6f1d", "model": "sonar", "created": 1760000000, "object": "chat.completion",
               "usage": {"prompt_tokens": 18, "completion_tokens": 41, "total_tokens": 59,
                         "search_context_size": "low", "citation_tokens": 0,
                         "num_search_queries": 1,
                         "cost": {"input_tokens_cost": 0.00002, "total_cost": 0.00506}},
               "citations": ["https://example.org/a"],
               "choices": [{"index": 0, "finish_reason": "stop",
                            "message": {"role": "assistant", "content": "Linus [1]."},
                            "delta": {"role": "assistant", "content": ""}}]})
anthropic_json = j({"id": "msg_01", "type": "message", "role": "assistant",
                    "model": "claude-sonnet-4-5", "content": [{"type": "text", "text": "Hello!"}],
                    "stop_reason": "end_turn", "stop_sequence": None,
                    "usage": {"input_tokens": 12, "output_tokens": 4}})
responses_usage = {"input_tokens": 36, "input_tokens_details": {"cached_tokens": 0},
                   "output_tokens": 87, "output_tokens_details": {"reasoning_tokens": 0},
                   "total_tokens": 123}
responses_obj = {"id": "resp_67cc", "object": "response", "created_at": 1741476542,
                 "status": "completed", "model": "gpt-4.1-2025-04-14",
                 "output": [{"type": "message", "id": "msg_67cc", "status": "completed",
                             "role": "assistant",
                             "content": [{"type": "output_text", "text": "Hi", "annotations": []}]}],
                 "usage": responses_usage}
pplx_chunks = [j({"id": "6f1d", "model": "sonar", "object": "chat.completion.chunk",
                  "usage": {"prompt_tokens": 18, "completion_tokens": n, "total_tokens": 18 + n},
                  "choices": [{"index": 0, "finish_reason": fr,
                               "message": {"role": "assistant", "content": text},
                               "delta": {"role": "assistant", "content": text[-5:]}}]})
               for n, text, fr in [(1, "Linus", None), (6, "Linus Torvalds", None),
                                   (41, "Linus Torvalds leads it.", "stop")]]
openai_chunks = [j({"id": "chatcmpl-9xE", "object": "chat.completion.chunk", "created": 1760000000,
                    "model": "gpt-4o-mini-2024-07-18",
                    "choices": [{"index": 0, "delta": d, "logprobs": None, "finish_reason": fr}],
                    "usage": None})
                 for d, fr in [({"role": "assistant", "content": ""}, None),
                               ({"content": "Hi"}, None), ({}, "stop")]]
openai_chunks.append(j({"id": "chatcmpl-9xE", "object": "chat.completion.chunk",
                        "created": 1760000000, "model": "gpt-4o-mini-2024-07-18", "choices": [],
                        "usage": {"prompt_tokens": 9, "completion_tokens": 2,
                                  "total_tokens": 11}}))
anthropic_events = [
    j({"type": "message_start", "message": {"id": "msg_01", "type": "message",
                                            "role": "assistant", "model": "claude-sonnet-4-5",
                                            "content": [], "stop_reason": None,
                                            "usage": {"input_tokens": 12, "output_tokens": 1}}}),
    j({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    j({"type": "ping"}),
    j({"type": "content_block_delta", "index": 0,
       "delta": {"type": "text_delta", "text": "Hello"}}),
    j({"type": "content_block_stop", "index": 0}),
    j({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
       "usage": {"output_tokens": 4}}),
    j({"type": "message_stop"}),
]
responses_events = [
    j({"type": "response.created", "sequence_number": 0,
       "response": {**responses_obj, "status": "in_progress", "output": [], "usage": None}}),
    j({"type": "response.output_text.delta", "sequence_number": 1, "item_id": "msg_67cc",
       "output_index": 0, "content_index": 0, "delta": "Hi"}),
    j({"type": "response.completed", "sequence_number": 2, "response": responses_obj}),
]
usage = {
    "openai_json": su(0, 0, completion),
    "perplexity_json": su(3, 11, pplx_json),
    "anthropic_json": su(0, 3, anthropic_json),
    "responses_json": su(0, 0, j(responses_obj)),
    "perplexity_sse_every_chunk": su(1, 0, sse(pplx_chunks)),
    "perplexity_sse_done_crlf": su(2, 17, sse(pplx_chunks + ["[DONE]"], crlf_lines=True)),
    "openai_sse_final_usage": su(1, 5, sse(openai_chunks + ["[DONE]"])),
    "anthropic_sse": su(1, 0, sse(anthropic_events, named=True)),
    "anthropic_sse_pieces": su(2, 29, sse(anthropic_events, named=True)),
    "responses_sse": su(1, 0, sse(responses_events, named=True)),
    "deep_research_no_usage_then_usage": su(1, 2, sse(
        [j({"model": "sonar-deep-research", "object": "chat.completion.chunk"})] * 2 +
        [pplx_chunks[-1], "[DONE]"])),
    "sse_error_event": su(1, 0, "event: error\ndata: " +
                          j({"type": "error", "error": {"type": "overloaded_error",
                                                         "message": "Overloaded"}}) + "\n\n"),
    "sse_comments_and_fields": su(1, 0, ": ping\nid: 1\nretry: 10\ndata:" + pplx_chunks[0] +
                                  "\n\n"),
    "json_escaped_keys": su(0, 7, '{"\\u006dodel":"m\\u00e9","us\\u0061ge":{"total_t\\u006fkens"'
                                  ':5},"a_key_much_longer_than_any_usage_field_name":1}'),
    "json_repeated_usage": su(0, 0, '{"usage":{"total_tokens":1},"model":"a","usage":'
                                    '{"prompt_tokens":2},"model":7}'),
    "json_big_numbers": su(0, 0, '{"usage":{"total_tokens":18446744073709551615,'
                                 '"prompt_tokens":1,"input_tokens":-5,"output_tokens":1.5e3}}'),
    "json_not_json": su(0, 0, "<html><head><title>401 Authorization Required</title></head>"),
    "openai_json_cached_reasoning": su(0, 9, j({"model": "o3", "usage": {
        "prompt_tokens": 2006, "completion_tokens": 300, "total_tokens": 2306,
        "prompt_tokens_details": {"cached_tokens": 1920},
        "completion_tokens_details": {"reasoning_tokens": 192}}})),
    "anthropic_json_cache": su(0, 0, j({"model": "claude-sonnet-4-5", "usage": {
        "input_tokens": 21, "cache_creation_input_tokens": 19000,
        "cache_read_input_tokens": 26731, "output_tokens": 393,
        "cache_creation": {"ephemeral_5m_input_tokens": 19000}}})),
    "anthropic_sse_cache_input_in_delta": su(1, 13, sse([
        j({"type": "message_start", "message": {"model": "claude-opus-4-1", "usage": {
            "input_tokens": 5, "cache_creation_input_tokens": 100,
            "cache_read_input_tokens": 0, "output_tokens": 1}}}),
        j({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {
            "input_tokens": 21, "cache_creation_input_tokens": None,
            "cache_read_input_tokens": 7, "output_tokens": 50}}),
        j({"type": "message_stop"})], named=True)),
    "anthropic_sse_cut_before_delta": su(1, 0, sse(anthropic_events[:4], named=True)),
    "responses_sse_incomplete": su(1, 0, sse([
        responses_events[0],
        j({"type": "response.incomplete", "sequence_number": 9, "response": {
            **responses_obj, "status": "incomplete",
            "incomplete_details": {"reason": "max_output_tokens"}}})], named=True)),
    "responses_sse_cut": su(1, 0, sse(responses_events[:2], named=True)),
    "openai_sse_cut_before_usage": su(1, 0, sse(openai_chunks[:3])),
    "perplexity_cost_parts": su(0, 0, j({"model": "sonar-pro", "usage": {
        "prompt_tokens": 5, "completion_tokens": 7, "reasoning_tokens": 3,
        "cost": {"input_tokens_cost": 0.25, "output_tokens_cost": 0.5, "request_cost": 0.125}}})),
    "json_deep": su(0, 0, '{"usage":' + "[" * 40 + "]" * 40 + "}"),
}
for name, data in usage.items():
    write("sse_usage", name, data)


# --- config_loader: YAML text ---

for path in sorted((REPO / "config").glob("*.yaml")):
    shutil.copyfile(path, CORPUS / "config_loader" / path.name)

minimal = "upstreams:\n  - {name: u, url: http://127.0.0.1:1}\nroutes:\n  - {prefix: /, upstream: u}\n"
configs = {
    "minimal": minimal,
    "minimal_block": "upstreams:\n  - name: u\n    url: https://api.openai.com/v1/\nroutes:\n"
                     "  - prefix: /openai/\n    upstream: u\n    strip_prefix: /openai\n"
                     "    coalesce: false\n",
    "all_sections": minimal + "workers: 2\npin_workers: true\n"
                    "listen: {address: '::1', port: 0}\nadmin: {address: localhost, port: 9091}\n"
                    "coalesce: {result_ttl: 0, max_response_bytes: 1MB, max_cache_bytes: 1GiB,\n"
                    "  identity_headers: [authorization, x-api-key, x-tenant],\n"
                    "  vary_headers: [openai-organization], ignore_fields: [/user, /a~1b/~0, /0],\n"
                    "  bypass_header: x-bypass, orphan: cancel, max_subscribers_per_flight: 1}\n"
                    "limits: {max_request_body: 1KiB, max_header_bytes: 1KiB, header_timeout: 250ms,\n"
                    "  idle_timeout: 1h, write_timeout: 2m, max_connections: 1}\n"
                    "shutdown: {drain_delay: 0, drain_timeout: 1s}\n"
                    "log: {level: debug, format: text}\n",
    "upstream_options": "upstreams:\n  - name: a\n    url: 'http://[::1]:8081/base'\n"
                        "    tls: {verify: false}\n"
                        "    max_concurrent: 1\n    queue_timeout: 1ms\n"
                        "    timeouts: {connect: 1s, head: 1m, idle: 1h, total: 24h}\n"
                        "    retries: {max_attempts: 1, base_delay: 0, max_delay: 1s}\n"
                        "    rate_limit: {requests_per_second: 0.5, burst: 3}\n"
                        "  - {name: b, url: 'HTTPS://Example.COM:443'}\n"
                        "routes:\n  - {prefix: /a, upstream: a}\n  - {prefix: /, upstream: b}\n",
    "bad_ca_file_missing": "upstreams:\n  - {name: u, url: https://a, tls: {ca_file: /nonexistent.pem}}\n"
                           "routes:\n  - {prefix: /, upstream: u}\n",
    "bad_listen_tls_missing_files": minimal + "listen: {tls: {cert_file: /nonexistent/c.pem, "
                                          "key_file: /nonexistent/k.pem}}\n",
    "anchors_and_aliases": "upstreams:\n  - {name: a, url: 'http://127.0.0.1:1', timeouts: &t {connect: 1s}}\n"
                           "  - {name: b, url: 'http://127.0.0.1:2', timeouts: *t}\n"
                           "routes:\n  - {prefix: &p /a, upstream: a}\n  - {prefix: /, upstream: b}\n",
    "bad_merge_key": "base: &b {url: 'http://127.0.0.1:1'}\nupstreams:\n  - <<: *b\n"
                     "    name: u\nroutes:\n  - {prefix: /, upstream: u}\n",
    "bad_empty": "",
    "bad_two_documents": minimal + "---\n" + minimal,
    "bad_not_mapping": "- a\n- b\n",
    "bad_unknown_key": minimal + "colaesce: {}\n",
    "bad_duplicate_key": minimal + "log: {}\nlog: {}\n",
    "bad_route_unknown_upstream": "upstreams:\n  - {name: u, url: http://a}\n"
                                  "routes:\n  - {prefix: /, upstream: v}\n",
    "bad_duplicate_upstream": "upstreams:\n  - {name: u, url: http://a}\n"
                              "  - {name: u, url: http://b}\nroutes:\n  - {prefix: /, upstream: u}\n",
    "bad_url_scheme": "upstreams:\n  - {name: u, url: ftp://a}\nroutes:\n  - {prefix: /, upstream: u}\n",
    "bad_url_credentials": "upstreams:\n  - {name: u, url: 'http://user:pw@a'}\n"
                           "routes:\n  - {prefix: /, upstream: u}\n",
    "bad_url_port": "upstreams:\n  - {name: u, url: 'http://a:65536'}\n"
                    "routes:\n  - {prefix: /, upstream: u}\n",
    "bad_url_ipv6": "upstreams:\n  - {name: u, url: 'http://[::1'}\n"
                    "routes:\n  - {prefix: /, upstream: u}\n",
    "bad_duration": minimal + "limits: {header_timeout: fast}\n",
    "bad_duration_overflow": minimal + "limits: {header_timeout: 99999999999999999999h}\n",
    "bad_size_overflow": minimal + "limits: {max_request_body: 18446744073709551615GiB}\n",
    "bad_negative": minimal + "workers: -1\n",
    "bad_quoted_integer": minimal + "workers: '2'\n",
    "bad_float_integer": minimal + "workers: 1.5\n",
    "bad_pointer": minimal + "coalesce: {ignore_fields: [user, '/a~2']}\n",
    "bad_empty_pointer": minimal + "coalesce: {ignore_fields: ['']}\n",
    "bad_header_name": minimal + "coalesce: {identity_headers: ['x y']}\n",
    "bad_rate": "upstreams:\n  - {name: u, url: http://a, rate_limit: {requests_per_second: .nan}}\n"
                "routes:\n  - {prefix: /, upstream: u}\n",
    "bad_yaml_tab": "upstreams:\n\t- {name: u}\n",
    "bad_yaml_unclosed": "upstreams: [{name: u, url: 'http://a\n",
    "bad_alias_unknown": "upstreams: *nope\n",
    "bad_complex_key": "? [a, b]\n: c\n",
    "bad_tagged": minimal + "workers: !!binary aGVsbG8=\n",
    "bad_null_routes": "upstreams:\n  - {name: u, url: http://a}\nroutes:\n",
    "bad_sequence_of_null": "upstreams:\n  -\n  -\nroutes: []\n",
}
for name, data in configs.items():
    write("config_loader", name + ".yaml", data)
