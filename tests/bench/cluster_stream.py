#!/usr/bin/env python3
"""One SSE stream watched by three clients: the leader and a local follower on the first port,
a remote follower on the second. Prints one line of JSON: for every event, how much later than
the leader's client each follower received it (ms), and whether all three got the same bytes.
The client of the stream section of tests/bench/cluster-bench.sh.

    cluster_stream.py --ports 8081,8082 --body '{"model":...,"stream":true}' --join-after-ms 50
"""
import argparse
import json
import selectors
import socket
import time

MARK = b"data: "


def connect(port, payload):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(payload)
    s.setblocking(False)
    return s


class watcher:
    """One response, its chunked framing undone as it arrives, and when each `data: ` line of
    the payload first appeared."""

    def __init__(self, sock):
        self.sock, self.payload, self.times, self.scanned = sock, bytearray(), [], 0
        self.pending = b""  # framing not yet complete
        self.in_head, self.left = True, 0  # left: bytes of the current chunk still to come

    def read(self, now):
        piece = self.sock.recv(1 << 16)
        if not piece:
            return False
        self.unframe(self.pending + piece if self.pending else piece)
        at = self.payload.find(MARK, self.scanned)
        while at >= 0:
            self.times.append(now)
            self.scanned = at + len(MARK)
            at = self.payload.find(MARK, self.scanned)
        self.scanned = max(self.scanned, len(self.payload) - len(MARK) + 1)
        return True

    def unframe(self, data):
        view, at = memoryview(data), 0
        if self.in_head:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.pending = data
                return
            at, self.in_head = end + 4, False
        while at < len(data):
            if self.left:
                take = min(self.left, len(data) - at)
                self.payload += view[at:at + take]
                at, self.left = at + take, self.left - take
                continue
            if data.startswith(b"\r\n", at):
                at += 2
                continue
            line_end = data.find(b"\r\n", at)
            if line_end < 0:
                break
            self.left = int(bytes(data[at:line_end]).split(b";")[0], 16)
            at = line_end + 2
            if self.left == 0:
                at = len(data)
        self.pending = bytes(data[at:])

def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ports", required=True)
    parser.add_argument("--body", required=True)
    parser.add_argument("--join-after-ms", type=int, default=50)
    parser.add_argument("--timeout-s", type=float, default=60)
    args = parser.parse_args()
    local, remote = [int(p) for p in args.ports.split(",")[:2]]
    body = args.body.encode()
    payload = (b"POST /chat/completions HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer k\r\n"
               b"Content-Type: application/json\r\nConnection: close\r\nContent-Length: %d\r\n\r\n"
               % len(body)) + body

    leader = watcher(connect(local, payload))
    time.sleep(args.join_after_ms / 1000)  # the leader pod holds the lease by now
    followers = [watcher(connect(local, payload)), watcher(connect(remote, payload))]
    everyone = [leader] + followers
    sel = selectors.DefaultSelector()
    for w in everyone:
        sel.register(w.sock, selectors.EVENT_READ, w)
    open_count, deadline = len(everyone), time.monotonic() + args.timeout_s
    while open_count and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=1):
            if not key.data.read(time.monotonic()):
                sel.unregister(key.fileobj)
                key.fileobj.close()
                open_count -= 1
    events = len(leader.times)
    lag = lambda w: [round((t - l) * 1000, 3) for t, l in zip(w.times, leader.times)]
    bodies = {bytes(w.payload) for w in everyone}
    print(json.dumps({"events": events, "same_bytes": len(bodies) == 1,
                      "counts": [len(w.times) for w in everyone],
                      "local_ms": lag(followers[0]), "remote_ms": lag(followers[1])}))


if __name__ == "__main__":
    main()
