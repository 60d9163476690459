"""Loopback servers of the suite's own that misbehave on purpose: a webhook receiver that
answers 503, hangs past the sender's timeout, or holds a POST open until its sender has been
killed; and image hosts that hang, trickle bytes or reset the connection mid-body.

Not the gateway's reference receiver: that one always answers 200, and a fault test must be
able to make the receiver the fault.
"""

from __future__ import annotations

import select
import socket
import struct
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self

from standardwebhooks.webhooks import Webhook

# What a receiver does with one POST: answer 200 ("ok") or 503, "hang" (answer nothing for
# longer than the sender waits, then 503), or "hold" (keep the POST open until the test
# releases it, then answer 200: the test kills the sender meanwhile).
RECEIVER_ACTIONS = ("ok", "503", "hang", "hold")
# What an image host does with one GET before it serves the image properly: "hang" (answer
# nothing for longer than the fetch deadline), "trickle" (the headers, then a byte every
# 0.2 s), "reset" (the headers and half the body, then a TCP reset), or "503".
HOST_ACTIONS = ("hang", "trickle", "reset", "503")


@dataclass
class Arrival:
    """One POST the receiver got, and what became of it."""

    token: str
    number: int  # 1 for the first POST to this receiver URL
    action: str
    at: float  # time.time()
    headers: dict[str, str]
    body: bytes
    sender_port: int
    # What the standardwebhooks library made of it on arrival (as a receiver verifies: the
    # library refuses a timestamp more than 5 minutes from its own clock), or why it refused.
    payload: object = None
    refused: str | None = None
    answered: int | None = None  # the status we answered (or tried to)
    # Set by the test that killed the process sending this POST: whatever we answered never
    # reached a live sender, so it accepted nothing.
    sender_killed: bool = False
    arrived: threading.Event = field(default_factory=threading.Event, repr=False)
    release: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def webhook_id(self) -> str:
        return self.headers.get("webhook-id", "")

    @property
    def accepted(self) -> bool:
        """Answered 2xx to a sender that was alive to read it."""
        return self.answered is not None and 200 <= self.answered < 300 and not self.sender_killed


def _reset(connection: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0) rather than an orderly FIN."""
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    connection.close()


def _closed_by_peer(connection: socket.socket) -> bool:
    readable, _, _ = select.select([connection], [], [], 0)
    if not readable:
        return False
    try:
        return connection.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        # A client killed mid-exchange (the point of most scenarios) is no error of ours.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class Receiver:
    """A webhook receiver whose behaviour is scripted per webhook URL (`url(script)`): each
    URL's n-th POST gets the script's n-th action, every POST after the script gets 200."""

    def __init__(self, secret: str, *, host: str = "127.0.0.1", hang: float = 5.0) -> None:
        self.webhook = Webhook(secret)
        self.hang = hang
        self.arrivals: list[Arrival] = []
        self._scripts: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                token = self.path.rsplit("/", 1)[-1]
                arrival = receiver._arrive(token, self, body)
                if arrival.action == "503":
                    status = 503
                elif arrival.action == "hang":
                    time.sleep(receiver.hang)
                    status = 503
                elif arrival.action == "hold":
                    arrival.release.wait(timeout=600)
                    status = 200
                else:
                    status = 200
                arrival.answered = status
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the sender is gone (timed out, or killed)

            def log_message(self, format: str, *args: object) -> None:
                return

        self._server = _Server((host, 0), Handler)
        self.port = self._server.server_address[1]
        self.base_url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _arrive(self, token: str, handler: BaseHTTPRequestHandler, body: bytes) -> Arrival:
        with self._changed:
            script = self._scripts.get(token, [])
            number = sum(1 for a in self.arrivals if a.token == token) + 1
            action = script[number - 1] if number <= len(script) else "ok"
            arrival = Arrival(
                token=token,
                number=number,
                action=action,
                at=time.time(),
                headers={k.lower(): v for k, v in handler.headers.items()},
                body=body,
                sender_port=handler.client_address[1],
            )
            try:
                arrival.payload = self.webhook.verify(body, arrival.headers)
            except Exception as exc:  # the library's own error, whatever its class
                arrival.refused = f"{type(exc).__name__}: {exc}"
            self.arrivals.append(arrival)
            self._changed.notify_all()
        arrival.arrived.set()
        return arrival

    def url(self, script: Sequence[str] = ()) -> str:
        """A webhook URL of its own, whose POSTs follow `script` (then 200 each)."""
        unknown = set(script) - set(RECEIVER_ACTIONS)
        if unknown:
            raise ValueError(f"unknown receiver actions {sorted(unknown)}")
        token = uuid.uuid4().hex
        with self._lock:
            self._scripts[token] = list(script)
        return f"{self.base_url}/hook/{token}"

    def for_request(self, request_id: str) -> list[Arrival]:
        with self._lock:
            return [a for a in self.arrivals if a.webhook_id == f"msg_{request_id}"]

    def at_url(self, url: str) -> list[Arrival]:
        token = url.rsplit("/", 1)[-1]
        with self._lock:
            return [a for a in self.arrivals if a.token == token]

    def wait_arrival(self, url: str, number: int, timeout: float) -> Arrival:
        """The `number`-th POST to `url`, once it has arrived."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [a for a in self.arrivals if a.token == url.rsplit("/", 1)[-1]]
                if len(found) >= number:
                    return found[number - 1]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no POST number {number} to {url} in {timeout:.0f}s")
                self._changed.wait(left)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with self._lock:
            for arrival in self.arrivals:
                arrival.release.set()
        self._server.shutdown()
        self._server.server_close()


class HostileHost:
    """Serves fixed images, each path misbehaving on its first hits as `behaviours` says
    (e.g. `{"/a.jpg": ["hang"], "/b.jpg": ["reset"] * 99}`), then serving properly, each
    proper answer after `latency` seconds (a far-away host)."""

    def __init__(
        self,
        files: Mapping[str, bytes],
        behaviours: Mapping[str, Sequence[str]] | None = None,
        *,
        host: str = "127.0.0.1",
        hang: float = 5.0,
        latency: float = 0.0,
    ) -> None:
        behaviours = behaviours or {}
        unknown = {a for actions in behaviours.values() for a in actions} - set(HOST_ACTIONS)
        if unknown:
            raise ValueError(f"unknown host actions {sorted(unknown)}")
        self.files = dict(files)
        self.behaviours = {path: list(actions) for path, actions in behaviours.items()}
        self.hang = hang
        self.latency = latency
        self.hits: Counter[str] = Counter()
        self.last_hit: dict[str, float] = {}
        # When each path last stopped misbehaving (its client gave up on it, or it reset):
        # from then on its next hit is served well.
        self.bad_until: dict[str, float] = {}
        self._lock = threading.Lock()
        hostile = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                with hostile._lock:
                    hostile.hits[self.path] += 1
                    hostile.last_hit[self.path] = time.time()
                    number = hostile.hits[self.path]
                    actions = hostile.behaviours.get(self.path, [])
                    action = actions[number - 1] if number <= len(actions) else None
                data = hostile.files.get(self.path)
                try:
                    self._serve(data, action)
                finally:
                    if action is not None:
                        with hostile._lock:
                            hostile.bad_until[self.path] = time.time()

            def _serve(self, data: bytes | None, action: str | None) -> None:
                if data is None:
                    self._answer(404, b"")
                elif action is None:
                    time.sleep(hostile.latency)
                    self._answer(200, data)
                elif action == "503":
                    self._answer(503, b"")
                elif action == "hang":
                    # Nothing, until the fetcher gives up (or `hang` passes).
                    deadline = time.monotonic() + hostile.hang
                    while time.monotonic() < deadline and not _closed_by_peer(self.connection):
                        time.sleep(0.05)
                    self.close_connection = True
                else:
                    self._misbehave(action, data)

            def _answer(self, status: int, data: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _misbehave(self, action: str, data: bytes) -> None:
                self.close_connection = True
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    if action == "reset":
                        self.wfile.write(data[: len(data) // 2])
                        self.wfile.flush()
                        self.rfile.close()  # its reference would keep the socket open
                        _reset(self.connection)
                        return
                    deadline = time.monotonic() + hostile.hang
                    for offset in range(len(data)):  # trickle: until the client gives up
                        if time.monotonic() > deadline:
                            break
                        self.wfile.write(data[offset : offset + 1])
                        self.wfile.flush()
                        time.sleep(0.2)
                except OSError:
                    pass  # the fetcher gave up on us, as it should

            def log_message(self, format: str, *args: object) -> None:
                return

        self._server = _Server((host, 0), Handler)
        self.port = self._server.server_address[1]
        self.base_url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
