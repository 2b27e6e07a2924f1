#!/usr/bin/env python3
"""A counting HTTP proxy for the off-site benchmark (benches/offsite.sh).

Sits on 127.0.0.1 between a backup tool and an S3-compatible server and counts what
crosses it: requests by method, request body bytes (uploaded) and response body bytes
(downloaded). Requests are forwarded unchanged, Host header included, so signed requests
stay valid. `GET /__stats` returns the counters as JSON; `POST /__reset` zeroes them.

usage: s3count.py LISTEN_PORT UPSTREAM_PORT
"""
import http.client
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
STATS = {}


def reset():
    STATS.clear()
    STATS.update({"requests": 0, "by_method": {}, "bytes_up": 0, "bytes_down": 0})


reset()
UPSTREAM = ("127.0.0.1", int(sys.argv[2]))


class Proxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out, True
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return (self.rfile.read(n) if n else b""), False

    def _forward(self):
        if self.path == "/__stats":
            body = json.dumps(STATS).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if self.path == "/__reset":
            with LOCK:
                reset()
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body, chunked = self._read_body()
        headers = {k: v for k, v in self.headers.items()}
        if chunked:
            headers.pop("Transfer-Encoding", None)
            headers["Content-Length"] = str(len(body))
        conn = http.client.HTTPConnection(*UPSTREAM, timeout=300)
        conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.endheaders()
        if body:
            conn.send(body)
        resp = conn.getresponse()
        data = resp.read()
        with LOCK:
            if LOG:
                LOG.write(f"{self.command} {self.path.split('?')[0]} {self.headers.get('Range', '-')} {len(body)} {len(data)}\n")
                LOG.flush()
            STATS["requests"] += 1
            m = STATS["by_method"]
            m[self.command] = m.get(self.command, 0) + 1
            STATS["bytes_up"] += len(body)
            STATS["bytes_down"] += len(data)
        self.send_response_only(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in ("transfer-encoding", "content-length", "connection"):
                self.send_header(k, v)
        # A HEAD answer states the object's length without a body.
        length = resp.getheader("Content-Length", "0") if self.command == "HEAD" else len(data)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        conn.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward


# S3COUNT_LOG=FILE: one line per request (method, path, range, bytes up, bytes down).
LOG = open(os.environ["S3COUNT_LOG"], "a") if os.environ.get("S3COUNT_LOG") else None
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Proxy).serve_forever()
