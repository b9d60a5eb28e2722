#!/usr/bin/env python3
"""A mock identity provider's JWKS endpoint over HTTPS, run as its own process so a test can
kill it like an unreachable IdP.

GET /jwks.json answers the current content of --document (read on every request) with
Cache-Control from --cache-control. One JSON line per event on stdout, flushed at once:
  {"event":"listening","port":N}
  {"event":"fetch","path":"/jwks.json"}
"""

import argparse
import json
import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def emit(**fields):
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        emit(event="fetch", path=self.path)
        try:
            with open(self.server.document, "rb") as f:
                body = f.read()
            status = 200
        except OSError:
            body, status = b'{"error":"unavailable"}', 503
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", self.server.cache_control)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--document", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--cache-control", default="max-age=300")
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.document = args.document
    server.cache_control = args.cache_control
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    emit(event="listening", port=server.server_address[1])
    server.serve_forever()


if __name__ == "__main__":
    main()
