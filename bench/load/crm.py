#!/usr/bin/env python3
"""The load benchmark's HTTP CRM: a REST lookup as pincoderouting's `http_lookup` CRM asks it.

    GET /contacts?phone=+15553000042&org=bench-http
    200 {"results": [{"id": "h-42", "name": "Bench 42", "pin": "1234"}]}   (a bench number)
    200 {"results": []}                                                   (any other)

The contacts are generated, not stored: PREFIX + an index below COUNT, zero-padded to a
North American number (+1 and 10 digits: +1555 3nnnnnn for the prefix +15553), all with one
PIN, in clear (the service compares it in constant time; no argon2).
GET /stats gives {"requests": N} (the benchmark reads it per step).

Standard library only (ThreadingHTTPServer, HTTP/1.1 keep-alive, a deep accept backlog so a
burst of new connections is not refused). Prints "listening http://HOST:PORT" once ready.
    python3 bench/load/crm.py --port 0 --prefix +15553 --count 20000 --pin 1234
"""
import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 4096
    allow_reuse_address = True


def handler(prefix, count, pin):
    width = 12 - len(prefix)  # "+1" and 10 digits
    lock = threading.Lock()
    stats = {"requests": 0}

    class Crm(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # The headers and the body leave in two writes: with Nagle on, the body would wait
        # for the client's delayed ACK of the headers (~40 ms) on a kept-alive connection.
        disable_nagle_algorithm = True

        def do_GET(self):  # noqa: N802 (http.server's name)
            url = urlparse(self.path)
            if url.path == "/stats":
                with lock:
                    return self.reply(200, dict(stats))
            if url.path != "/contacts":
                return self.reply(404, {"error": "not found"})
            with lock:
                stats["requests"] += 1
            phone = parse_qs(url.query).get("phone", [""])[0]
            found = []
            rest = phone[len(prefix):] if phone.startswith(prefix) else ""
            if len(rest) == width and rest.isdigit() and int(rest) < count:
                i = int(rest)
                found = [{"id": f"h-{i}", "name": f"Bench {i}", "pin": pin}]
            return self.reply(200, {"results": found})

        def reply(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, fmt, *args):
            pass

    return Crm


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0: a free port (printed)")
    p.add_argument("--prefix", default="+15553")
    p.add_argument("--count", type=int, default=20000)
    p.add_argument("--pin", default="1234")
    a = p.parse_args()
    server = Server((a.host, a.port), handler(a.prefix, a.count, a.pin))
    print(f"listening http://{a.host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
