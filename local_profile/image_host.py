"""A loopback HTTP server that plays "the internet" for the demo, the tests and the benchmarks.

Serves fixed bytes per path, optionally after a delay per request (a far-away host), and counts
the requests it got.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType


class ImageHost:
    def __init__(
        self,
        files: Mapping[str, tuple[bytes, str]],
        *,
        latency: float = 0.0,
        host: str = "127.0.0.1",
        fail_first: Mapping[str, int] | None = None,
        hold: set[str] | None = None,
    ) -> None:
        self.files = dict(files)
        self.latency = latency
        # Paths that answer 503 to their first n requests: a host having a bad minute.
        self.fail_first = dict(fail_first or {})
        # Paths whose answers wait until release() is called: an image still on its way.
        self.hold = set(hold or ())
        self.released = threading.Event()
        self.hits: Counter[str] = Counter()
        host_self = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                host_self.hits[self.path] += 1
                if self.path in host_self.hold:
                    host_self.released.wait(timeout=60)
                if host_self.latency:
                    time.sleep(host_self.latency)
                if host_self.hits[self.path] <= host_self.fail_first.get(self.path, 0):
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                found = host_self.files.get(self.path)
                if found is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data, content_type = found
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                return

        self._server = ThreadingHTTPServer((host, 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.base_url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def release(self) -> None:
        self.released.set()

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def __enter__(self) -> ImageHost:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()
