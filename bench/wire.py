"""Counting what the functions ask of the cloud, on the wire, for the cost benchmark.

Nothing in the service counts its own calls: each function of the emulated cloud profile is
given addresses of taps instead of the emulators', and the taps pass every call through,
unchanged, counting it on the way:

- `GrpcTap`: one gRPC server per function that the function's Firestore and Cloud Tasks
  clients take for the emulators (FIRESTORE_EMULATOR_HOST, CLOUD_TASKS_EMULATOR_HOST). It
  forwards each RPC as raw bytes to the real emulator and decodes a copy with the public
  protobuf types to count what Google bills: documents read (each document a get or a query
  returns; a query that returns none still counts one), documents written (each write of a
  commit, by the kind of document), queries, aggregation reads (one per 1,000 index entries
  counted), and Cloud Tasks created (by queue).
- `HttpTap`: an HTTP pass-through. In front of each function, on the port the other
  processes know as the function's, it counts invocations (by the kind of message or event
  they carry, and by answer); between a function and the Storage emulator
  (STORAGE_EMULATOR_HOST) it counts Cloud Storage requests (writes, reads).

The counts are what crossed the wire, retries and all, whatever code path made them.
"""

from __future__ import annotations

import http.client
import json
import math
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import grpc
from google.cloud.firestore_v1.types import firestore as fs
from google.cloud.tasks_v2.types import cloudtasks

FIRESTORE = "/google.firestore.v1.Firestore/"
CLOUD_TASKS = "/google.cloud.tasks.v2.CloudTasks/"
# Firestore's RPCs whose answer is a stream; every other one is unary (Listen and Write are
# bidirectional streams the functions never use).
SERVER_STREAMING = {"BatchGetDocuments", "RunQuery", "RunAggregationQuery", "PartitionQuery"}
BIDI_STREAMING = {"Listen", "Write"}
# An aggregation is billed one read per batch of up to this many index entries.
AGGREGATION_BATCH = 1000


def document_kind(name: str) -> str:
    """The kind of a document from its path: `requests/{id}` is a request, and a document of a
    request's subcollection is named for the subcollection (images, tally, contents...)."""
    path = name.split("/documents/", 1)[-1].split("/")
    if len(path) >= 4 and path[0] == "requests":
        return path[2]
    return path[0] if len(path) == 2 else "/".join(path[::2])


class Counts:
    """What one tap saw, by name; thread-safe, and copied whole for a snapshot."""

    def __init__(self) -> None:
        self._counter: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counter[key] += n

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self._counter)


def _count_firestore(
    method: str, request: bytes, responses: list[bytes], counts: Counts, *, ok: bool
) -> None:
    counts.add(f"rpc:{method}")
    if method == "Commit" and not ok:
        # Refused as a whole (a precondition, a document that exists): nothing was written.
        counts.add("refused commit")
        return
    if method == "Commit":
        commit = fs.CommitRequest.deserialize(request)
        for write in commit.writes:
            kind = write._pb.WhichOneof("operation")
            name = {"update": write.update.name, "delete": write.delete}.get(kind or "")
            name = name or write.transform.document
            counts.add(f"delete:{document_kind(name)}" if kind == "delete" else "write")
            if kind != "delete":
                counts.add(f"write:{document_kind(name)}")
    elif method == "BatchGetDocuments":
        for raw in responses:
            answer = fs.BatchGetDocumentsResponse.deserialize(raw)
            name = answer.found.name or answer.missing
            if name:
                counts.add("read")
                counts.add(f"read:{document_kind(name)}")
                if not answer.found.name:
                    counts.add("read missing")
    elif method == "RunQuery":
        query = fs.RunQueryRequest.deserialize(request)
        # Named for the collection it reads (images, tally, requests...).
        kind = query.structured_query.from_[0].collection_id
        found = sum(1 for raw in responses if fs.RunQueryResponse.deserialize(raw).document.name)
        counts.add("query")
        counts.add(f"query:{kind}")
        # A query that matches nothing is still billed one read.
        counts.add("read", max(1, found))
        counts.add(f"read:{kind}", max(1, found))
    elif method == "RunAggregationQuery":
        counts.add("aggregation")
        counts.add("aggregation read", _aggregation_reads(request, responses))
    elif method == "GetDocument":
        counts.add("read")


def _aggregation_reads(request: bytes, responses: list[bytes]) -> int:
    """A read per batch of up to 1,000 index entries: for a count, the count itself; a sum or
    an average does not say how many it matched, so it is taken as one batch."""
    query = fs.RunAggregationQueryRequest.deserialize(request).structured_aggregation_query
    counted = {a.alias for a in query.aggregations if a._pb.WhichOneof("operator") == "count"}
    entries = 0
    for raw in responses:
        fields = fs.RunAggregationQueryResponse.deserialize(raw).result.aggregate_fields
        for alias, value in fields.items():
            if alias in counted:
                entries = max(entries, int(value.integer_value or 0))
    return max(1, math.ceil(entries / AGGREGATION_BATCH))


def _count_tasks(method: str, request: bytes, counts: Counts) -> None:
    counts.add(f"rpc:{method}")
    if method == "CreateTask":
        queue = cloudtasks.CreateTaskRequest.deserialize(request).parent.rsplit("/", 1)[-1]
        counts.add("task")
        counts.add(f"task:{queue}")


class GrpcTap:
    """A gRPC pass-through to the Firestore and Cloud Tasks emulators, counting per RPC."""

    def __init__(self, firestore: str, tasks: str | None) -> None:
        self.counts = Counts()
        self._upstream = {
            FIRESTORE: grpc.insecure_channel(firestore),
            **({CLOUD_TASKS: grpc.insecure_channel(tasks)} if tasks else {}),
        }
        self._server = grpc.server(ThreadPoolExecutor(64, thread_name_prefix="tap"))
        self._server.add_generic_rpc_handlers([_Handler(self)])
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def channel_for(self, method: str) -> grpc.Channel | None:
        for prefix, channel in self._upstream.items():
            if method.startswith(prefix):
                return channel
        return None

    def stop(self) -> None:
        self._server.stop(grace=None)
        for channel in self._upstream.values():
            channel.close()


def _forwarded(context: grpc.ServicerContext) -> list[tuple[str, str | bytes]]:
    return [(k, v) for k, v in context.invocation_metadata() if k != "user-agent"]


class _Handler(grpc.GenericRpcHandler):
    def __init__(self, tap: GrpcTap) -> None:
        self.tap = tap

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        full: str = details.method  # type: ignore[attr-defined]
        channel = self.tap.channel_for(full)
        if channel is None:
            return None
        name = full.rsplit("/", 1)[-1]
        counts = self.tap.counts
        is_firestore = full.startswith(FIRESTORE)

        def count(request: bytes, responses: list[bytes], ok: bool = True) -> None:
            if is_firestore:
                _count_firestore(name, request, responses, counts, ok=ok)
            else:
                _count_tasks(name, request, counts)

        if name in BIDI_STREAMING:
            upstream_bidi = channel.stream_stream(full)

            def bidi(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
                counts.add(f"rpc:{name}")
                yield from _relayed(
                    lambda: upstream_bidi(requests, metadata=_forwarded(context)), context
                )

            return grpc.stream_stream_rpc_method_handler(bidi)
        if name in SERVER_STREAMING:
            upstream_stream = channel.unary_stream(full)

            def stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
                answers: list[bytes] = []
                try:
                    for answer in _relayed(
                        lambda: upstream_stream(request, metadata=_forwarded(context)), context
                    ):
                        answers.append(answer)
                        yield answer
                finally:
                    count(request, answers)

            return grpc.unary_stream_rpc_method_handler(stream)
        upstream_unary = channel.unary_unary(full)

        def unary(request: bytes, context: grpc.ServicerContext) -> bytes:
            try:
                answer: bytes = upstream_unary(request, metadata=_forwarded(context))
            except grpc.RpcError as exc:
                count(request, [], ok=False)
                context.abort(exc.code(), exc.details() or "")  # type: ignore[attr-defined]
            count(request, [])
            return answer

        return grpc.unary_unary_rpc_method_handler(unary)


def _relayed(call: Callable[[], Iterator[bytes]], context: grpc.ServicerContext) -> Iterator[bytes]:
    try:
        yield from call()
    except grpc.RpcError as exc:
        context.abort(exc.code(), exc.details() or "")  # type: ignore[attr-defined]


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client closing its idle keep-alive connection is not news.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


# Hop-by-hop headers are the connection's own, never passed on.
_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host"}


class HttpTap:
    """An HTTP pass-through to `upstream` on `port` (0: any free port), counting each request
    with `classify(method, path, headers, body)` and its answer's status class."""

    def __init__(
        self,
        upstream: str,
        classify: Callable[[str, str, dict[str, str], bytes], str],
        port: int = 0,
    ) -> None:
        self.counts = Counts()
        target = urlsplit(upstream)
        host, target_port = target.hostname or "127.0.0.1", target.port or 80
        tap = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _relay(self) -> None:
                headers = {k.lower(): v for k, v in self.headers.items()}
                body = self._body(headers)
                kind = classify(self.command, self.path, headers, body)
                # A connection per request: the upstream may close an idle one at any moment.
                connection = http.client.HTTPConnection(host, target_port, timeout=600)
                forwarded = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                started = time.perf_counter()
                try:
                    connection.request(self.command, self.path, body=body, headers=forwarded)
                    answer = connection.getresponse()
                    data = answer.read()
                except (OSError, http.client.HTTPException):
                    tap.counts.add(f"{kind} unreachable")
                    self.send_error(502)
                    return
                finally:
                    connection.close()
                tap.counts.add(kind)
                tap.counts.add(f"{kind} {answer.status // 100}xx")
                # Milliseconds spent answering, for the mean time an invocation takes.
                tap.counts.add(f"{kind} ms", round((time.perf_counter() - started) * 1000))
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in _HOP and name.lower() != "content-length":
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _body(self, headers: dict[str, str]) -> bytes:
                if headers.get("transfer-encoding", "").lower() == "chunked":
                    parts = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return b"".join(parts)
                        parts.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(headers.get("content-length") or 0))

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _relay

            def log_message(self, format: str, *args: object) -> None:
                return

        self._server = _QuietServer(("127.0.0.1", port), Handler)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def invocation_kind(method: str, path: str, headers: dict[str, str], body: bytes) -> str:
    """What a function was invoked for: the queued message's kind (process_image, and
    finalize's Cloud Tasks events), the Firestore event (finalize), or the HTTP route."""
    event = headers.get("ce-type")
    if event == "google.cloud.firestore.document.v1.written":
        return "firestore event"
    if event is not None or headers.get("content-type", "").startswith("application/json"):
        try:
            kind = json.loads(body or b"{}").get("kind")
        except (ValueError, AttributeError):
            kind = None
        if kind:
            return f"task {kind}"
    return f"{method} {urlsplit(path).path.split('/')[1] if path != '/' else '/'}"


def storage_kind(method: str, path: str, headers: dict[str, str], body: bytes) -> str:
    """A Cloud Storage JSON API request: a write (an upload, or a piece of a resumable one) or a
    read (an object's bytes or its metadata)."""
    if method in ("POST", "PUT", "PATCH", "DELETE"):
        return "storage write"
    return "storage read"


def snapshot_all(taps: dict[str, Any]) -> dict[str, Counter[str]]:
    return {name: tap.counts.snapshot() for name, tap in taps.items()}


__all__ = [
    "Counts",
    "GrpcTap",
    "HttpTap",
    "document_kind",
    "invocation_kind",
    "snapshot_all",
    "storage_kind",
]
