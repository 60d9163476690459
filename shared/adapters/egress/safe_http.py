"""HTTP to hosts that strangers chose: the image fetcher and the webhook sender.

Both go through `_open_exchange`, which checks the URL with the AddressGuard and connects to the
very address that was checked (never resolving the name a second time), so what the guard allows
is exactly what is contacted. urllib3's connection classes are used rather than a pool or
requests: a pool would hide the socket, and the socket is what enforces the deadline; nothing
could be reused anyway, as every redirect hop is a fresh, freshly checked, connection.

The total deadline covers the whole fetch: connect, TLS handshake, request, headers, redirects,
body and the waits between retries. Per-operation socket timeouts are set to the remaining time,
and a watchdog shuts the socket down when the deadline passes, because a server that drips one
byte every few seconds would otherwise never trip a per-read timeout. Only DNS lookups cannot be
interrupted (getaddrinfo blocks); their time counts against the deadline and the system
resolver's own timeout bounds them.
"""

from __future__ import annotations

import contextlib
import email.utils
import http.client
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urljoin

import certifi
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)
from urllib3.response import HTTPResponse
from urllib3.util.ssl_match_hostname import CertificateError

from shared.adapters.egress.address_guard import AddressGuard, CheckedUrl
from shared.config import FetchPolicy, Limits
from shared.domain.errors import ErrorCode, ImageFailure
from shared.ports import FetchedImage, WebhookResponse

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# A Retry-After longer than this is not slept through inside one task: the failure goes back to
# the task queue with the delay, so a worker is not held idle.
_MAX_INLINE_RETRY_AFTER = 10.0
_CHUNK = 64 * 1024


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self._end = time.monotonic() + seconds

    def remaining(self) -> float:
        return self._end - time.monotonic()

    def expired(self) -> bool:
        return self.remaining() <= 0


class _Watchdog:
    """Shuts a socket down at the deadline, whatever call is blocked on it."""

    def __init__(self, sock: socket.socket, deadline: _Deadline) -> None:
        self.fired = False
        self._sock = sock
        self._lock = threading.Lock()
        self._cancelled = False
        self._timer = threading.Timer(max(deadline.remaining(), 0.0), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            if self._cancelled:
                return
            self.fired = True
            # The plain-socket method on purpose: SSLSocket.shutdown would also unwrap TLS under
            # the feet of the thread blocked in a read; shutting the descriptor down just makes
            # that read return.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(self._sock, socket.SHUT_RDWR)

    def cancel(self) -> None:
        # Taken under the lock so the socket is never shut down after it was closed (its
        # descriptor number may belong to another connection by then).
        with self._lock:
            self._cancelled = True
        self._timer.cancel()


@dataclass
class _Exchange:
    """One request sent to a checked address, its response headers read, body not yet read."""

    checked: CheckedUrl
    connection: HTTPConnection
    response: HTTPResponse
    watchdog: _Watchdog

    def close(self) -> None:
        self.watchdog.cancel()
        with contextlib.suppress(Exception):
            self.response.close()
        with contextlib.suppress(Exception):
            self.connection.close()


def _timeout(host: str) -> ImageFailure:
    return ImageFailure(ErrorCode.TIMEOUT, f"{host} took too long to answer", transient=True)


def _tls_failure(host: str, exc: Exception) -> ImageFailure:
    if isinstance(exc, ssl.SSLCertVerificationError | CertificateError):
        detail = getattr(exc, "verify_message", None) or "certificate verification failed"
        return ImageFailure(ErrorCode.TLS_ERROR, f"TLS certificate of {host} rejected: {detail}")
    # An unexpected EOF mid-handshake is a dropped connection; any other handshake failure
    # (no common protocol, plain HTTP on the HTTPS port) will not fix itself.
    transient = isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError)
    reason = getattr(exc, "reason", None) or type(exc).__name__
    return ImageFailure(
        ErrorCode.TLS_ERROR, f"TLS handshake with {host} failed: {reason}", transient=transient
    )


def _new_connection(
    checked: CheckedUrl, address: str, timeout: float, ca_certs: str
) -> HTTPConnection:
    if checked.scheme == "https":
        # The TCP connection goes to the checked address; certificate and SNI still name the
        # host, so verification is exactly what it would be for a normal client.
        return HTTPSConnection(
            address,
            checked.port,
            timeout=timeout,
            server_hostname=checked.host,
            assert_hostname=checked.host,
            cert_reqs="CERT_REQUIRED",
            ca_certs=ca_certs,
        )
    return HTTPConnection(address, checked.port, timeout=timeout)


def _connect(
    checked: CheckedUrl, connect_timeout: float, deadline: _Deadline, ca_certs: str
) -> HTTPConnection:
    """A connection to the first checked address that answers."""
    host = checked.origin
    failure = ImageFailure(ErrorCode.CONNECT_FAILED, f"could not connect to {host}", transient=True)
    for address in checked.addresses:
        remaining = deadline.remaining()
        if remaining <= 0:
            raise _timeout(host)
        # The socket timeout bounds the TCP connect and (as CPython applies it to the whole
        # handshake) the TLS handshake, before any watchdog exists.
        connection = _new_connection(checked, address, min(connect_timeout, remaining), ca_certs)
        try:
            connection.connect()
        except NewConnectionError as exc:  # before ConnectTimeoutError: it subclasses it
            cause = exc.__cause__
            reason = getattr(cause, "strerror", None) or "connection failed"
            failure = ImageFailure(
                ErrorCode.CONNECT_FAILED, f"could not connect to {host}: {reason}", transient=True
            )
        except (ConnectTimeoutError, TimeoutError):
            failure = ImageFailure(
                ErrorCode.TIMEOUT, f"connecting to {host} timed out", transient=True
            )
        except (ssl.SSLError, CertificateError) as exc:
            connection.close()
            raise _tls_failure(host, exc) from exc
        except (OSError, HTTPError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            failure = ImageFailure(
                ErrorCode.CONNECT_FAILED, f"could not connect to {host}: {reason}", transient=True
            )
        else:
            return connection
        connection.close()
    raise failure


def _open_exchange(
    guard: AddressGuard,
    url: str,
    *,
    method: str,
    headers: dict[str, str],
    body: bytes | None,
    connect_timeout: float,
    deadline: _Deadline,
    ca_certs: str,
) -> _Exchange:
    """Check `url`, connect to a checked address, send one request and read the response head.

    Every failure comes out as an ImageFailure; the caller must close() the exchange.
    """
    checked = guard.check(url)
    connection = _connect(checked, connect_timeout, deadline, ca_certs)
    sock = connection.sock
    if not isinstance(sock, socket.socket):  # pragma: no cover - only proxies tunnel TLS in TLS
        connection.close()
        raise ImageFailure(ErrorCode.INTERNAL, "unexpected socket type")
    watchdog = _Watchdog(sock, deadline)
    try:
        # Whatever a caller passes, the Host header names the checked host.
        request_headers = {k: v for k, v in headers.items() if k.lower() != "host"}
        request_headers["Host"] = checked.host_header
        connection.timeout = max(deadline.remaining(), 0.001)
        connection.request(
            method,
            checked.target,
            body=body,
            headers=request_headers,
            preload_content=False,
            # Never inflate what the server sends: a small gzip can expand to gigabytes.
            decode_content=False,
        )
        connection.timeout = max(deadline.remaining(), 0.001)
        response = connection.getresponse()
    except Exception as exc:
        watchdog.cancel()
        connection.close()
        raise _transfer_failure(exc, checked.origin, watchdog, deadline) from exc
    return _Exchange(checked, connection, response, watchdog)


def _transfer_failure(
    exc: Exception, host: str, watchdog: _Watchdog, deadline: _Deadline
) -> ImageFailure:
    """What went wrong while a request or response was on the wire, for people."""
    if watchdog.fired or deadline.expired():
        return _timeout(host)
    if isinstance(exc, ImageFailure):
        return exc
    if isinstance(exc, TimeoutError | ReadTimeoutError):
        return _timeout(host)
    if isinstance(exc, ssl.SSLError | CertificateError):
        return _tls_failure(host, exc)
    if isinstance(exc, OSError | ProtocolError):
        return ImageFailure(
            ErrorCode.CONNECT_FAILED, f"the connection to {host} broke off", transient=True
        )
    if isinstance(exc, http.client.HTTPException | HTTPError):
        return ImageFailure(
            ErrorCode.UPSTREAM_ERROR, f"{host} sent a malformed HTTP response", transient=True
        )
    raise exc


def _read_body(exchange: _Exchange, cap: int, deadline: _Deadline) -> bytes:
    """The response body, refusing it as soon as it is known to exceed `cap` bytes."""
    host = exchange.checked.origin
    response = exchange.response
    declared = response.headers.get("Content-Length")
    if declared is not None and declared.strip().isdigit() and int(declared) > cap:
        raise ImageFailure(
            ErrorCode.TOO_LARGE, f"{host} announced {int(declared)} bytes, the limit is {cap}"
        )
    body = bytearray()
    sock = exchange.connection.sock
    try:
        while True:
            remaining = deadline.remaining()
            if remaining <= 0:
                raise _timeout(host)
            if sock is not None:
                sock.settimeout(remaining)
            # read1 makes one socket read at most, so the deadline is checked between them.
            chunk = response.read1(_CHUNK)
            if not chunk:
                break
            body += chunk
            if len(body) > cap:
                raise ImageFailure(
                    ErrorCode.TOO_LARGE, f"the image from {host} is larger than {cap} bytes"
                )
    except ImageFailure:
        raise
    except Exception as exc:
        raise _transfer_failure(exc, host, exchange.watchdog, deadline) from exc
    # A watchdog shutdown reads as a clean end of a body without Content-Length.
    if exchange.watchdog.fired:
        raise _timeout(host)
    return bytes(body)


def _retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds from now: delay-seconds or an HTTP date (RFC 9110 10.2.3)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _status_failure(status: int, reason: str, host: str, retry_after: str | None) -> ImageFailure:
    if status in (408, 429) or status >= 500:
        return ImageFailure(
            ErrorCode.UPSTREAM_ERROR,
            f"{host} answered HTTP {status} {reason}".rstrip(),
            transient=True,
            retry_after=_retry_after_seconds(retry_after),
        )
    return ImageFailure(ErrorCode.HTTP_ERROR, f"{host} answered HTTP {status} {reason}".rstrip())


class HttpImageFetcher:
    """Fetches one image URL under the SPEC's rules (implements shared.ports.ImageFetcher)."""

    def __init__(
        self,
        policy: FetchPolicy,
        limits: Limits,
        guard: AddressGuard | None = None,
        sleep: Callable[[float], None] = time.sleep,
        *,
        ca_certs: str | None = None,
    ) -> None:
        self._policy = policy
        self._limits = limits
        self._guard = guard or AddressGuard(policy.allowed_networks)
        self._sleep = sleep
        self._ca_certs = ca_certs or certifi.where()
        self._headers = {
            "User-Agent": policy.user_agent,
            "Accept": "image/*",
            "Accept-Encoding": "identity",
            "Connection": "close",
        }

    def fetch(self, url: str) -> FetchedImage:
        deadline = _Deadline(self._policy.total_timeout)
        attempt = 0
        while True:
            try:
                return self._fetch_once(url, deadline)
            except ImageFailure as failure:
                wait = self._wait_before_retry(failure, attempt, deadline)
                if wait is None:
                    raise
            self._sleep(wait)
            attempt += 1

    def _wait_before_retry(
        self, failure: ImageFailure, attempt: int, deadline: _Deadline
    ) -> float | None:
        """Seconds to wait before trying again inside this fetch, or None to give up now."""
        if not failure.transient or attempt >= self._policy.retries:
            return None
        if failure.retry_after is not None:
            if failure.retry_after > _MAX_INLINE_RETRY_AFTER:
                return None
            wait = failure.retry_after
        else:
            base = self._policy.retry_backoff * 2**attempt
            # Jitter keeps many workers that failed together from retrying in lockstep.
            wait = base + random.uniform(0, base / 4)
        if wait >= deadline.remaining():
            # No time left for another try: hand the task queue the wait instead.
            if failure.retry_after is None:
                failure.retry_after = wait
            return None
        return wait

    def _fetch_once(self, url: str, deadline: _Deadline) -> FetchedImage:
        current = url
        for _hop in range(self._policy.max_redirects + 1):
            exchange = _open_exchange(
                self._guard,
                current,
                method="GET",
                headers=self._headers,
                body=None,
                connect_timeout=self._policy.connect_timeout,
                deadline=deadline,
                ca_certs=self._ca_certs,
            )
            try:
                response = exchange.response
                host = exchange.checked.origin
                status = response.status
                if status in _REDIRECTS:
                    location = response.headers.get("Location")
                    if not location:
                        raise ImageFailure(
                            ErrorCode.HTTP_ERROR, f"{host} redirected without a Location"
                        )
                    # The next hop goes through the guard again in _open_exchange.
                    current = urljoin(current, location.strip())
                    continue
                if not 200 <= status < 300:
                    raise _status_failure(
                        status, response.reason or "", host, response.headers.get("Retry-After")
                    )
                encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
                if encoding not in ("", "identity"):
                    raise ImageFailure(
                        ErrorCode.HTTP_ERROR,
                        f"{host} sent a {encoding}-encoded body although identity was asked for",
                    )
                data = _read_body(exchange, self._limits.max_image_bytes, deadline)
                if not data:
                    # Nothing to decode: say so here rather than let the codec guess.
                    raise ImageFailure(ErrorCode.NOT_AN_IMAGE, f"{host} sent an empty body")
                return FetchedImage(
                    data=data,
                    final_url=current,
                    content_type=response.headers.get("Content-Type"),
                )
            finally:
                exchange.close()
        raise ImageFailure(
            ErrorCode.TOO_MANY_REDIRECTS,
            f"more than {self._policy.max_redirects} redirects",
        )


class HttpWebhookTransport:
    """POSTs one webhook message (implements shared.ports.WebhookTransport).

    Redirects are not followed: a receiver that moved must be reconfigured, and following a
    302 would let any receiver point our signed POST at an internal address.
    """

    def __init__(
        self,
        policy: FetchPolicy,
        timeout: float,
        guard: AddressGuard | None = None,
        *,
        ca_certs: str | None = None,
    ) -> None:
        self._policy = policy
        self._timeout = timeout
        self._guard = guard or AddressGuard(policy.allowed_networks)
        self._ca_certs = ca_certs or certifi.where()

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> WebhookResponse:
        deadline = _Deadline(self._timeout)
        request_headers = {"User-Agent": self._policy.user_agent, "Connection": "close"}
        request_headers.update(headers)
        try:
            exchange = _open_exchange(
                self._guard,
                url,
                method="POST",
                headers=request_headers,
                body=body,
                connect_timeout=min(self._policy.connect_timeout, self._timeout),
                deadline=deadline,
                ca_certs=self._ca_certs,
            )
        except ImageFailure as failure:
            return WebhookResponse(status_code=None, error=str(failure))
        # The receiver's answer body is not needed; closing without reading it is fine as the
        # connection is never reused.
        status = exchange.response.status
        exchange.close()
        if 200 <= status < 300:
            return WebhookResponse(status_code=status, error=None)
        if status in _REDIRECTS:
            return WebhookResponse(status_code=status, error=f"redirect ({status}) not followed")
        return WebhookResponse(status_code=status, error=f"HTTP {status}")
