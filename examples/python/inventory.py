#!/usr/bin/env python3
"""`inventory`: the example's Python service, standard library only, behind its mesher.

It knows nothing about the registry. Its mesher registers it, health-checks GET /health, and
admits calls on its inbound port; to call another service it sends the request to its mesher's
outbound port with the Host header naming the service (here `pricing`, for the unit cost).

    GET /stock/<sku>   {"sku", "available", "unitCostCents", "from"}
    GET /health        200

Usage: inventory.py (env APP_PORT, OUTBOUND=host:port of its mesher's outbound proxy, INSTANCE)
"""

import http.client
import json
import os
import signal
import sys
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(os.environ.get("APP_PORT", "0"))
OUTBOUND = os.environ.get("OUTBOUND", "127.0.0.1:15001")
INSTANCE = os.environ.get("INSTANCE", "inventory-1")
# Headers passed on from the request served to the calls made, so one trace spans them.
PROPAGATED = ("traceparent", "tracestate", "x-request-id")

_lock = threading.Lock()
_counts = {}


def call_service(service, path, headers):
    """GET `path` on `service` through the local mesher; returns (status, parsed JSON body)."""
    host, port = OUTBOUND.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        # http.client would send Host: <mesher address>; the mesher needs the service's name.
        conn.putrequest("GET", path, skip_host=True)
        conn.putheader("Host", service)
        conn.putheader("Accept", "application/json")
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.endheaders()
        res = conn.getresponse()
        body = res.read()
        try:
            return res.status, json.loads(body)
        except ValueError:
            return res.status, body.decode("utf-8", "replace")
    finally:
        conn.close()


def available(sku):
    """A stock level that goes down by one per call and is refilled at zero."""
    with _lock:
        start = 20 + zlib.crc32(sku.encode()) % 80
        n = _counts.get(sku, start) - 1
        if n < 0:
            n = start
        _counts[sku] = n
        return n


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the mesher pools its connections to the app
    server_version = "inventory/1"

    def send_json(self, status, body):
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/health":
            self.send_json(200, {"ok": True})
            return
        if not path.startswith("/stock/") or len(path) <= len("/stock/"):
            self.send_json(404, {"error": "inventory: no route for GET " + path})
            return
        sku = path[len("/stock/"):]
        headers = {h: self.headers[h] for h in PROPAGATED if self.headers.get(h)}
        try:
            status, cost = call_service("pricing", "/cost/" + sku, headers)
        except OSError as e:
            self.send_json(502, {"error": "inventory: pricing: %s" % e})
            return
        if status != 200:
            self.send_json(502, {"error": "inventory: pricing answered %d: %s" % (status, cost)})
            return
        self.send_json(200, {
            "sku": sku,
            "available": available(sku),
            "unitCostCents": cost["unitCostCents"],
            "from": INSTANCE,
        })

    def log_message(self, format, *args):
        pass  # the meshers log every call; /v1/calls on their admin port shows them


def main():
    server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
    server.daemon_threads = True

    def stop(signum, frame):
        # shutdown() waits for serve_forever to return, so it must run on another thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(json.dumps({"service": "inventory", "listening": server.server_address[1]}), flush=True)
    server.serve_forever()
    server.server_close()
    sys.exit(0)


if __name__ == "__main__":
    main()
