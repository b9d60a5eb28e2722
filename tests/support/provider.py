#!/usr/bin/env python3
"""A mock payment provider for payedge's failover tests, run as its own process so a test can
kill it like a real one.

It prints one JSON line per event on stdout, flushed at once, so the counts survive a SIGKILL:
  {"event":"listening","port":N}
  {"event":"received","method":"POST","path":"/api/pay","mode":"ok","request_id":"…"}
  {"event":"answered","method":"POST","path":"/api/pay","status":200,"request_id":"…"}

With --dual-stack it listens on [::] with IPV6_V6ONLY off (127.0.0.1 and ::1 alike, for a
provider named `localhost`) instead of 127.0.0.1 only.

With --tls-cert and --tls-key it speaks HTTPS (TLS 1.2 and 1.3); with --client-ca as well, it
requires a client certificate signed by that CA. Each handshake is reported before any request:
  {"event":"handshake","ok":true,"client_subject":"CN=…"}  or  {"event":"handshake","ok":false,"error":"…"}

Modes, switched with GET /_mock/mode?set=MODE (answered in every mode):
  ok         200 {"provider": NAME, ...}
  503        503 {"error": ...}
  204        204 with no body (X-Mock-Sequence still says which answer it was)
  blackhole  accepts the request and never answers
  slow:MS    answers 200 after MS milliseconds
"""

import argparse
import json
import socket
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

LOCK = threading.Lock()
STATE = {"mode": "ok"}


def emit(**fields):
    with LOCK:
        sys.stdout.write(json.dumps(fields) + "\n")
        sys.stdout.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mock-provider"

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.handle_any()

    def do_POST(self):
        self.handle_any()

    def do_PUT(self):
        self.handle_any()

    def do_DELETE(self):
        self.handle_any()

    def reply(self, status, body):
        data = b"" if status == 204 else json.dumps(body).encode()
        with LOCK:
            STATE["sequence"] = STATE.get("sequence", 0) + 1
            sequence = STATE["sequence"]
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        # Which answer of this process this is: a replay repeats an earlier one's.
        self.send_header("X-Mock-Sequence", str(sequence))
        if status != 204:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def handle_any(self):
        url = urlparse(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if url.path == "/_mock/mode":
            STATE["mode"] = parse_qs(url.query).get("set", ["ok"])[0]
            self.reply(200, {"mode": STATE["mode"]})
            return
        mode = STATE["mode"]
        request_id = self.headers.get("X-Request-Id", "")
        emit(event="received", method=self.command, path=url.path, mode=mode,
             request_id=request_id, body=body.decode(errors="replace"),
             expect=self.headers.get("Expect"))
        if mode == "blackhole":
            while True:
                time.sleep(3600)
        if mode.startswith("slow:"):
            time.sleep(int(mode.split(":", 1)[1]) / 1000)
        status = {"503": 503, "204": 204}.get(mode, 200)
        payload = {"provider": self.server.name, "path": url.path}
        if status == 503:
            payload = {"error": {"code": "provider_unavailable", "message": "try later"}}
        self.reply(status, payload)
        emit(event="answered", method=self.command, path=url.path, status=status,
             request_id=request_id)


class TlsServer(ThreadingHTTPServer):
    """Accepts TCP, then shakes hands in the connection's own thread (a slow or failing client
    never blocks the others), reporting each handshake."""

    context = None

    def finish_request(self, request, client_address):
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as e:
            emit(event="handshake", ok=False, error=str(e))
            return
        peer = tls.getpeercert()
        subject = None
        if peer:
            subject = ",".join(f"{k}={v}" for rdn in peer.get("subject", ()) for k, v in rdn)
        emit(event="handshake", ok=True, client_subject=subject)
        super().finish_request(tls, client_address)


class DualStack:
    """Mixed into a server class: binds [::] accepting IPv4 (mapped) and IPv6 connections."""

    address_family = socket.AF_INET6

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


class DualStackServer(DualStack, ThreadingHTTPServer):
    pass


class DualStackTlsServer(DualStack, TlsServer):
    pass


def tls_context(cert, key, client_ca):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    if client_ca:
        context.load_verify_locations(client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--mode", default="ok")
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--client-ca")
    parser.add_argument("--dual-stack", action="store_true")
    args = parser.parse_args()
    STATE["mode"] = args.mode
    host = "::" if args.dual_stack else "127.0.0.1"
    if args.tls_cert:
        server_class = DualStackTlsServer if args.dual_stack else TlsServer
        server = server_class((host, args.port), Handler)
        server.context = tls_context(args.tls_cert, args.tls_key, args.client_ca)
    else:
        server_class = DualStackServer if args.dual_stack else ThreadingHTTPServer
        server = server_class((host, args.port), Handler)
    server.daemon_threads = True
    server.name = args.name
    emit(event="listening", port=server.server_address[1])
    server.serve_forever()


if __name__ == "__main__":
    main()
