"""The HTTP plumbing both sandbox servers share: quiet threaded servers and fault injection.

Fault semantics live here once, for the Vertex emulator and the Cloud Storage proxy alike.
"""

from __future__ import annotations

import contextlib
import socket
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

from vertex_tuner.sandbox.faults import FaultInjector

#: :meth:`FaultyHandler.inject` answered the request itself: the handler must stop.
ANSWERED = "answered"
_REJECTIONS = {
    "503": (503, "UNAVAILABLE", "The service is currently unavailable (injected by the sandbox)."),
    "429": (
        429,
        "RESOURCE_EXHAUSTED",
        "Resource exhausted. Please try again later (injected by the sandbox).",
    ),
}


class FaultyServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], faults: FaultInjector
    ) -> None:
        super().__init__(address, handler)
        self.faults = faults


class FaultyHandler(BaseHTTPRequestHandler):
    server: FaultyServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out as two writes; with Nagle's algorithm on, the body waits for the
    # client's delayed ACK of the headers (about 40 ms on Linux) on every kept-alive request.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def send_json(
        self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        data = orjson.dumps(body)
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def reset(self) -> None:
        """Drop the connection without an answer."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def inject(self) -> str | None:
        """Apply this request's latency and fault.

        Returns :data:`ANSWERED` when the fault already answered (503, 429, reset), ``"lost"``
        when the request must be handled and its answer then dropped, else None.
        """
        faults = self.server.faults
        if faults.spec.latency_s:
            time.sleep(faults.spec.latency_s)
        fault = faults.draw()
        if fault in _REJECTIONS:
            status, name, message = _REJECTIONS[fault]
            headers = {"Retry-After": "1"} if status == 429 else None
            self.send_json(
                status, {"error": {"code": status, "message": message, "status": name}}, headers
            )
            return ANSWERED
        if fault == "reset":
            self.reset()
            return ANSWERED
        return fault
