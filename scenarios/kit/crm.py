#!/usr/bin/env python3
"""The kit's HTTP CRM: a REST lookup as pincoderouting's `http_lookup` CRM expects it.

    GET /contacts?phone=+15550200001&org=kit-http
    200 {"results": [{"id": "http-1", "name": "...", "pin": "2580"}]}    (known number)
    200 {"results": []}                                                   (unknown number)

Contacts come from --contacts FILE (JSON: {"+1555...": {"id": "...", "pin": "..."}}) or
the built-in table below. It prints "listening http://127.0.0.1:PORT" once ready and serves
until killed. Standard library only:

    python3 scenarios/kit/crm.py --port 8080
    curl 'http://127.0.0.1:8080/contacts?phone=%2B15550200001'

It logs each request's path (a phone number, never a PIN) to standard error.
"""
import argparse
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

# Test data: the kit's REST CRM contacts (organization kit-http).
CONTACTS = {
    "+15550200001": {"id": "http-1", "name": "Kit HTTP One", "pin": "2580"},
    "+15550200002": {"id": "http-2", "name": "Kit HTTP Two", "pin": "0007"},
}


def handler(contacts, quiet):
    class Crm(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):  # noqa: N802 (http.server's name)
            url = urlparse(self.path)
            if url.path != "/contacts":
                return self.reply(404, {"error": "not found"})
            phone = parse_qs(url.query).get("phone", [""])[0]
            found = contacts.get(phone)
            return self.reply(200, {"results": [found] if found else []})

        def reply(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, fmt, *args):
            if not quiet:
                sys.stderr.write("crm: " + (fmt % args) + "\n")

    return Crm


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0: a free port (printed)")
    p.add_argument("--contacts", help="JSON file of contacts by E.164 number")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args()
    contacts = CONTACTS
    if a.contacts:
        with open(a.contacts, encoding="utf-8") as f:
            contacts = json.load(f)
    server = ThreadingHTTPServer((a.host, a.port), handler(contacts, a.quiet))
    print(f"listening http://{a.host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
