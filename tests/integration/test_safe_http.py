"""The fetcher and the webhook sender against real HTTP servers (SPEC "Fetching", "Webhook").

Every server listens on loopback, on a free port, and is stopped after its test. Addresses the
guard must refuse are loopback too (127.0.0.2, ::1 when only 127.0.0.1/32 is allowed): a canary
server listens there and the test asserts it never saw a request, so no packet ever has to go
to a private or metadata address to prove that none would.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from shared.adapters.egress.address_guard import AddressGuard
from shared.adapters.egress.safe_http import HttpImageFetcher, HttpWebhookTransport
from shared.config import FetchPolicy, Limits, Settings, parse_networks
from shared.domain.errors import ErrorCode, ImageFailure

pytestmark = pytest.mark.integration

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(256)) * 4
Route = Callable[["Handler"], None]


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def do_GET(self) -> None:
        self.dispatch()

    def do_POST(self) -> None:
        self.dispatch()

    def dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.seen.append(Seen(self.command, self.path, dict(self.headers.items()), body))
        route = self.server.routes.get(self.path.split("?", 1)[0])
        if route is None:
            reply(self, 404, b"not found")
        else:
            route(self)

    def log_message(self, format: str, *args: object) -> None:
        pass


class Server(ThreadingHTTPServer):
    seen: list[Seen]
    routes: dict[str, Route]
    release: threading.Event

    def base(self) -> str:
        host, port = self.server_address[:2]
        shown = f"[{host}]" if ":" in str(host) else str(host)
        return f"{self.scheme}://{shown}:{port}"

    scheme = "http"


class Server6(Server):
    address_family = socket.AF_INET6


@dataclass
class Servers:
    """Starts servers for one test and stops every one of them afterwards."""

    started: list[Server] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def start(
        self,
        host: str = "127.0.0.1",
        routes: dict[str, Route] | None = None,
        tls: ssl.SSLContext | None = None,
        port: int = 0,
    ) -> Server:
        cls = Server6 if ":" in host else Server
        server = cls((host, port), Handler)
        server.seen = []
        server.routes = routes or {}
        server.release = self.release
        if tls is not None:
            server.socket = tls.wrap_socket(server.socket, server_side=True)
            server.scheme = "https"
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        self.started.append(server)
        return server

    def stop(self) -> None:
        self.release.set()  # lets slow handlers finish
        for server in self.started:
            server.shutdown()
            server.server_close()


@pytest.fixture
def servers() -> Iterator[Servers]:
    pool = Servers()
    yield pool
    pool.stop()


def reply(
    handler: Handler,
    status: int,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> None:
    handler.send_response(status)
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def image(handler: Handler) -> None:
    reply(handler, 200, PNG, {"Content-Type": "image/png"})


def redirect_to(location: str, status: int = 302) -> Route:
    return lambda handler: reply(handler, status, headers={"Location": location})


def answers(*statuses: tuple[int, dict[str, str]]) -> Route:
    """Answers each status in turn, then the image."""
    remaining = list(statuses)

    def route(handler: Handler) -> None:
        if remaining:
            status, headers = remaining.pop(0)
            reply(handler, status, b"try later", headers)
        else:
            image(handler)

    return route


class SleepRecorder:
    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


LOOPBACK_ONLY = parse_networks("127.0.0.1/32")


def fetcher(
    sleep: SleepRecorder | None = None,
    *,
    allowed: str = "127.0.0.1/32",
    max_image_bytes: int = 1024 * 1024,
    guard: AddressGuard | None = None,
    ca_certs: str | None = None,
    **policy: float,
) -> HttpImageFetcher:
    settings = {"connect_timeout": 2.0, "total_timeout": 10.0, "retry_backoff": 0.5, **policy}
    return HttpImageFetcher(
        FetchPolicy(
            allowed_networks=parse_networks(allowed),
            connect_timeout=settings["connect_timeout"],
            total_timeout=settings["total_timeout"],
            max_redirects=int(policy.get("max_redirects", 5)),
            retries=int(policy.get("retries", 2)),
            retry_backoff=settings["retry_backoff"],
        ),
        Limits(max_image_bytes=max_image_bytes),
        guard=guard,
        sleep=sleep or SleepRecorder(),
        ca_certs=ca_certs,
    )


def failure_of(call: Callable[[], object]) -> ImageFailure:
    with pytest.raises(ImageFailure) as caught:
        call()
    return caught.value


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- fetching ---------------------------------------------------------------------------------


def test_fetches_the_bytes_from_an_allowed_loopback_server(servers: Servers) -> None:
    origin = servers.start(routes={"/a.png": image})
    fetched = fetcher().fetch(origin.base() + "/a.png?size=large")

    assert fetched.data == PNG
    assert fetched.content_type == "image/png"
    assert fetched.final_url == origin.base() + "/a.png?size=large"
    [request] = origin.seen
    assert request.path == "/a.png?size=large"
    assert request.headers["Host"] == f"127.0.0.1:{origin.server_address[1]}"
    assert request.headers["Accept-Encoding"] == "identity"
    assert request.headers["Accept"] == "image/*"
    assert request.headers["User-Agent"] == FetchPolicy().user_agent


def test_format_is_not_decided_by_content_type(servers: Servers) -> None:
    origin = servers.start(
        routes={"/a": lambda h: reply(h, 200, PNG, {"Content-Type": "text/html"})}
    )
    fetched = fetcher().fetch(origin.base() + "/a")
    assert fetched.data == PNG
    assert fetched.content_type == "text/html"


def test_refused_loopback_address_is_never_contacted(servers: Servers) -> None:
    canary = servers.start("127.0.0.2", {"/a.png": image})
    failure = failure_of(lambda: fetcher().fetch(canary.base() + "/a.png"))
    assert failure.code == ErrorCode.BLOCKED_ADDRESS
    assert not failure.transient
    assert canary.seen == []


def test_redirect_to_a_refused_address_is_blocked_before_contacting_it(servers: Servers) -> None:
    canary = servers.start("127.0.0.2", {"/a.png": image})
    origin = servers.start(routes={"/a.png": redirect_to(canary.base() + "/a.png")})
    sleep = SleepRecorder()

    failure = failure_of(lambda: fetcher(sleep).fetch(origin.base() + "/a.png"))

    assert failure.code == ErrorCode.BLOCKED_ADDRESS
    assert canary.seen == []
    assert len(origin.seen) == 1
    assert sleep.waits == []


def test_redirect_chain_within_the_limit_is_followed(servers: Servers) -> None:
    origin = servers.start(
        routes={
            "/1": redirect_to("/2", 301),
            "/2": redirect_to("3", 303),  # relative to /2
            "/3": redirect_to("/final.png?v=1", 307),
            "/final.png": image,
        }
    )
    fetched = fetcher(max_redirects=3).fetch(origin.base() + "/1")
    assert fetched.data == PNG
    assert fetched.final_url == origin.base() + "/final.png?v=1"
    assert [r.path for r in origin.seen] == ["/1", "/2", "/3", "/final.png?v=1"]


def test_redirect_chain_beyond_the_limit_fails(servers: Servers) -> None:
    routes: dict[str, Route] = {f"/{n}": redirect_to(f"/{n + 1}", 308) for n in range(10)}
    origin = servers.start(routes=routes)
    sleep = SleepRecorder()

    failure = failure_of(lambda: fetcher(sleep, max_redirects=3).fetch(origin.base() + "/0"))

    assert failure.code == ErrorCode.TOO_MANY_REDIRECTS
    assert not failure.transient
    assert len(origin.seen) == 4  # the request and three redirects followed
    assert sleep.waits == []


def test_announced_size_over_the_cap_fails_without_reading_the_body(servers: Servers) -> None:
    def huge(handler: Handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(50 * 1024 * 1024))
        handler.end_headers()
        handler.wfile.flush()
        # The body never comes: a client that tried to read it would end in a timeout instead.
        handler.server.release.wait(30)

    origin = servers.start(routes={"/big.png": huge})
    failure = failure_of(lambda: fetcher(max_image_bytes=1000).fetch(origin.base() + "/big.png"))
    assert failure.code == ErrorCode.TOO_LARGE
    assert not failure.transient


def test_chunked_body_over_the_cap_is_cut_off(servers: Servers) -> None:
    outcome: dict[str, object] = {}
    finished = threading.Event()

    def endless(handler: Handler) -> None:
        handler.send_response(200)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        chunk = b"\xff" * 65536
        sent = 0
        try:
            for _ in range(4096):  # 256 MiB if nobody hangs up
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
            handler.wfile.write(b"0\r\n\r\n")
            outcome["completed"] = True
        except OSError:
            outcome["completed"] = False
        finally:
            outcome["sent"] = sent
            finished.set()

    origin = servers.start(routes={"/endless.png": endless})
    failure = failure_of(
        lambda: fetcher(max_image_bytes=100_000).fetch(origin.base() + "/endless.png")
    )

    assert failure.code == ErrorCode.TOO_LARGE
    assert finished.wait(30)
    assert outcome["completed"] is False  # the client hung up long before the end


def test_body_exactly_at_the_cap_is_accepted(servers: Servers) -> None:
    origin = servers.start(routes={"/a.png": image})
    assert fetcher(max_image_bytes=len(PNG)).fetch(origin.base() + "/a.png").data == PNG


def test_server_that_never_answers_times_out(servers: Servers) -> None:
    def silent(handler: Handler) -> None:
        handler.server.release.wait(30)

    origin = servers.start(routes={"/slow.png": silent})
    failure = failure_of(
        lambda: fetcher(total_timeout=0.3, connect_timeout=0.3).fetch(origin.base() + "/slow.png")
    )
    assert failure.code == ErrorCode.TIMEOUT
    assert failure.transient


class Drip:
    """Sends `head`, then one more byte every 50 ms, for at most 10 s.

    Each byte arrives well within any per-read timeout, so only the total deadline can stop the
    client; `hung_up` tells whether the client did hang up before the server ran out of bytes.
    """

    def __init__(self, head: bytes, byte: bytes) -> None:
        self.head = head
        self.byte = byte
        self.hung_up = False
        self.finished = threading.Event()

    def __call__(self, handler: Handler) -> None:
        try:
            handler.wfile.write(self.head)
            for _ in range(200):
                if handler.server.release.wait(0.05):
                    break
                handler.wfile.write(self.byte)
                handler.wfile.flush()
        except OSError:
            self.hung_up = True
        finally:
            self.finished.set()


def test_server_dripping_headers_cannot_outlast_the_deadline(servers: Servers) -> None:
    drip = Drip(b"HTTP/1.1 200 OK\r\nX-Slow: ", b"x")
    origin = servers.start(routes={"/drip.png": drip})

    failure = failure_of(lambda: fetcher(total_timeout=0.5).fetch(origin.base() + "/drip.png"))

    assert failure.code == ErrorCode.TIMEOUT
    assert failure.transient
    assert drip.finished.wait(30)
    assert drip.hung_up


def test_server_dripping_the_body_cannot_outlast_the_deadline(servers: Servers) -> None:
    # No Content-Length: the body ends when the connection does.
    drip = Drip(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n\r\n", b"\x89")
    origin = servers.start(routes={"/drip.png": drip})

    failure = failure_of(lambda: fetcher(total_timeout=0.5).fetch(origin.base() + "/drip.png"))

    assert failure.code == ErrorCode.TIMEOUT
    assert failure.transient
    assert drip.finished.wait(30)
    assert drip.hung_up


def test_service_unavailable_then_ok_succeeds_after_a_backoff(servers: Servers) -> None:
    origin = servers.start(routes={"/a.png": answers((503, {}))})
    sleep = SleepRecorder()

    fetched = fetcher(sleep, retry_backoff=0.5).fetch(origin.base() + "/a.png")

    assert fetched.data == PNG
    assert len(origin.seen) == 2
    [wait] = sleep.waits
    assert 0.5 <= wait <= 0.5 * 1.25


def test_backoff_doubles_and_the_failure_stays_transient_when_retries_run_out(
    servers: Servers,
) -> None:
    origin = servers.start(routes={"/a.png": answers(*[(502, {})] * 10)})
    sleep = SleepRecorder()

    failure = failure_of(lambda: fetcher(sleep, retries=2).fetch(origin.base() + "/a.png"))

    assert failure.code == ErrorCode.UPSTREAM_ERROR
    assert failure.transient
    assert "502" in failure.message
    assert len(origin.seen) == 3
    assert len(sleep.waits) == 2
    assert 0.5 <= sleep.waits[0] <= 0.625
    assert 1.0 <= sleep.waits[1] <= 1.25


@pytest.mark.parametrize("status", [408, 500, 504])
def test_timeout_and_server_errors_are_retried(servers: Servers, status: int) -> None:
    origin = servers.start(routes={"/a.png": answers((status, {}))})
    assert fetcher().fetch(origin.base() + "/a.png").data == PNG
    assert len(origin.seen) == 2


def test_too_many_requests_honours_a_short_retry_after(servers: Servers) -> None:
    origin = servers.start(routes={"/a.png": answers((429, {"Retry-After": "1"}))})
    sleep = SleepRecorder()

    assert fetcher(sleep).fetch(origin.base() + "/a.png").data == PNG
    assert sleep.waits == [1.0]


def test_retry_after_as_an_http_date_is_honoured(servers: Servers) -> None:
    soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=5)
    date = soon.strftime("%a, %d %b %Y %H:%M:%S GMT")
    origin = servers.start(routes={"/a.png": answers((503, {"Retry-After": date}))})
    sleep = SleepRecorder()

    assert fetcher(sleep).fetch(origin.base() + "/a.png").data == PNG
    [wait] = sleep.waits
    assert 2 <= wait <= 5


def test_long_retry_after_goes_back_to_the_task_queue(servers: Servers) -> None:
    origin = servers.start(routes={"/a.png": answers((429, {"Retry-After": "120"}))})
    sleep = SleepRecorder()

    failure = failure_of(lambda: fetcher(sleep).fetch(origin.base() + "/a.png"))

    assert failure.code == ErrorCode.UPSTREAM_ERROR
    assert failure.transient
    assert failure.retry_after == 120
    assert sleep.waits == []
    assert len(origin.seen) == 1


def test_not_found_is_permanent_and_not_retried(servers: Servers) -> None:
    origin = servers.start()
    sleep = SleepRecorder()

    failure = failure_of(lambda: fetcher(sleep).fetch(origin.base() + "/missing.png"))

    assert failure.code == ErrorCode.HTTP_ERROR
    assert not failure.transient
    assert "404" in failure.message
    assert len(origin.seen) == 1
    assert sleep.waits == []


def test_connection_refused_is_retried_then_transient() -> None:
    sleep = SleepRecorder()
    failure = failure_of(
        lambda: fetcher(sleep, retries=2).fetch(f"http://127.0.0.1:{closed_port()}/a.png")
    )
    assert failure.code == ErrorCode.CONNECT_FAILED
    assert failure.transient
    assert len(sleep.waits) == 2


def test_next_checked_address_is_tried_when_the_first_refuses(servers: Servers) -> None:
    origin = servers.start(routes={"/a.png": image})
    port = origin.server_address[1]
    # 127.0.0.3 is allowed here but nobody listens on it; 127.0.0.1 is the second answer.
    guard = AddressGuard(
        parse_networks("127.0.0.1/32,127.0.0.3/32"),
        resolver=lambda host, p: ["127.0.0.3", "127.0.0.1"],
    )
    fetched = fetcher(guard=guard).fetch(f"http://images.test:{port}/a.png")
    assert fetched.data == PNG
    assert origin.seen[0].headers["Host"] == f"images.test:{port}"


def test_empty_body_is_not_an_image(servers: Servers) -> None:
    origin = servers.start(routes={"/empty.png": lambda h: reply(h, 200, b"")})
    failure = failure_of(lambda: fetcher().fetch(origin.base() + "/empty.png"))
    assert failure.code == ErrorCode.NOT_AN_IMAGE
    assert not failure.transient


def test_compressed_body_sent_despite_identity_is_refused(servers: Servers) -> None:
    origin = servers.start(
        routes={"/a.png": lambda h: reply(h, 200, b"\x1f\x8b...", {"Content-Encoding": "gzip"})}
    )
    failure = failure_of(lambda: fetcher().fetch(origin.base() + "/a.png"))
    assert failure.code == ErrorCode.HTTP_ERROR
    assert not failure.transient


def test_failure_messages_never_show_the_query_string(servers: Servers) -> None:
    origin = servers.start()
    failure = failure_of(lambda: fetcher().fetch(origin.base() + "/x.png?token=s3cret"))
    assert "s3cret" not in str(failure)


def _can_bind_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def test_ipv6_loopback_is_fetched_only_when_allowed(servers: Servers) -> None:
    if not _can_bind_ipv6_loopback():
        # No IPv6 here: the decision alone must still refuse ::1 under a 127.0.0.1/32 allow-list
        # and accept it under ::1/128.
        guard = AddressGuard(LOOPBACK_ONLY)
        assert failure_of(lambda: guard.check_url("http://[::1]:80/")).code == (
            ErrorCode.BLOCKED_ADDRESS
        )
        assert AddressGuard(parse_networks("::1/128")).check("http://[::1]/").addresses == ("::1",)
        return
    server = servers.start("::1", {"/a.png": image})
    url = server.base() + "/a.png"

    refused = failure_of(lambda: fetcher(allowed="127.0.0.1/32").fetch(url))
    assert refused.code == ErrorCode.BLOCKED_ADDRESS
    assert server.seen == []

    fetched = fetcher(allowed="::1/128").fetch(url)
    assert fetched.data == PNG
    assert server.seen[0].headers["Host"] == f"[::1]:{server.server_address[1]}"


# --- TLS --------------------------------------------------------------------------------------


@dataclass
class Pki:
    ca_file: str
    server_context: ssl.SSLContext


def make_pki(tmp_path: Path, names: list[str]) -> Pki:
    """A throwaway CA and a server certificate for `names` (DNS names or IP addresses)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    alt_names: list[x509.GeneralName] = []
    for name in names:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt_names.append(x509.DNSName(name))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_file = tmp_path / "server.pem"
    cert_file.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file)
    return Pki(str(ca_file), context)


def resolving_to_loopback(name: str) -> AddressGuard:
    def resolver(host: str, port: int) -> list[str]:
        assert host == name
        return ["127.0.0.1"]

    return AddressGuard(LOOPBACK_ONLY, resolver=resolver)


def test_https_verifies_the_host_name_while_connecting_to_the_checked_address(
    servers: Servers, tmp_path: Path
) -> None:
    pki = make_pki(tmp_path, ["images.test"])
    origin = servers.start(routes={"/a.png": image}, tls=pki.server_context)
    port = origin.server_address[1]

    fetched = fetcher(guard=resolving_to_loopback("images.test"), ca_certs=pki.ca_file).fetch(
        f"https://images.test:{port}/a.png"
    )

    assert fetched.data == PNG
    assert origin.seen[0].headers["Host"] == f"images.test:{port}"


def test_https_to_an_ip_literal_checks_the_address_in_the_certificate(
    servers: Servers, tmp_path: Path
) -> None:
    pki = make_pki(tmp_path, ["127.0.0.1"])
    origin = servers.start(routes={"/a.png": image}, tls=pki.server_context)
    fetched = fetcher(ca_certs=pki.ca_file).fetch(origin.base() + "/a.png")
    assert fetched.data == PNG


def test_certificate_for_another_name_is_a_permanent_tls_error(
    servers: Servers, tmp_path: Path
) -> None:
    pki = make_pki(tmp_path, ["other.test"])
    origin = servers.start(routes={"/a.png": image}, tls=pki.server_context)
    port = origin.server_address[1]
    sleep = SleepRecorder()

    failure = failure_of(
        lambda: fetcher(
            sleep, guard=resolving_to_loopback("images.test"), ca_certs=pki.ca_file
        ).fetch(f"https://images.test:{port}/a.png")
    )

    assert failure.code == ErrorCode.TLS_ERROR
    assert not failure.transient
    assert origin.seen == []
    assert sleep.waits == []


def test_certificate_from_an_unknown_authority_is_a_tls_error(
    servers: Servers, tmp_path: Path
) -> None:
    pki = make_pki(tmp_path, ["127.0.0.1"])
    origin = servers.start(routes={"/a.png": image}, tls=pki.server_context)
    failure = failure_of(lambda: fetcher().fetch(origin.base() + "/a.png"))  # certifi's CAs
    assert failure.code == ErrorCode.TLS_ERROR
    assert not failure.transient
    assert origin.seen == []


# --- webhook transport ------------------------------------------------------------------------


def transport(allowed: str = "127.0.0.1/32", timeout: float = 5.0) -> HttpWebhookTransport:
    return HttpWebhookTransport(FetchPolicy(allowed_networks=parse_networks(allowed)), timeout)


def test_webhook_2xx_is_ok_and_delivers_body_and_headers(servers: Servers) -> None:
    receiver = servers.start(routes={"/hook": lambda h: reply(h, 204)})
    body = b'{"request_id": "r1", "status": "completed"}'
    headers = {"Content-Type": "application/json", "webhook-id": "msg_1", "Host": "evil.test"}

    response = transport().post(receiver.base() + "/hook", body, headers)

    assert response.ok
    assert response.status_code == 204
    assert response.error is None
    [request] = receiver.seen
    assert request.method == "POST"
    assert request.body == body
    assert request.headers["webhook-id"] == "msg_1"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Host"] == f"127.0.0.1:{receiver.server_address[1]}"


def test_webhook_server_error_is_not_ok_and_keeps_the_status(servers: Servers) -> None:
    receiver = servers.start(routes={"/hook": lambda h: reply(h, 500, b"boom")})
    response = transport().post(receiver.base() + "/hook", b"{}", {})
    assert not response.ok
    assert response.status_code == 500
    assert response.error is not None
    assert len(receiver.seen) == 1  # retrying is the delivery schedule's job, not the transport's


def test_webhook_redirect_is_a_failed_attempt_and_is_not_followed(servers: Servers) -> None:
    canary = servers.start(routes={"/hook": lambda h: reply(h, 200)})
    receiver = servers.start(routes={"/hook": redirect_to(canary.base() + "/hook")})
    # Both addresses are allowed: the redirect is refused as a redirect, not as an address.
    response = transport("127.0.0.0/8").post(receiver.base() + "/hook", b"{}", {})
    assert not response.ok
    assert response.status_code == 302
    assert canary.seen == []


def test_webhook_connection_refused_is_reported_not_raised() -> None:
    response = transport().post(f"http://127.0.0.1:{closed_port()}/hook", b"{}", {})
    assert not response.ok
    assert response.status_code is None
    assert response.error is not None
    assert ErrorCode.CONNECT_FAILED in response.error


def test_webhook_to_a_refused_address_is_reported_and_sends_nothing(servers: Servers) -> None:
    canary = servers.start("127.0.0.2", {"/hook": lambda h: reply(h, 200)})
    response = transport().post(canary.base() + "/hook", b"{}", {})
    assert response.status_code is None
    assert response.error is not None
    assert ErrorCode.BLOCKED_ADDRESS in response.error
    assert canary.seen == []


def test_webhook_receiver_that_never_answers_is_a_timeout(servers: Servers) -> None:
    def silent(handler: Handler) -> None:
        handler.server.release.wait(30)

    receiver = servers.start(routes={"/hook": silent})
    response = transport(timeout=0.3).post(receiver.base() + "/hook", b"{}", {})
    assert response.status_code is None
    assert response.error is not None
    assert ErrorCode.TIMEOUT in response.error


# --- the canary: every spelling of a refused address, never contacted -------------------------
#
# The allow-list is built from the FETCH_ALLOWED_NETWORKS setting, as the service builds it, and
# holds 127.0.0.1 alone; the canary listens on 127.0.0.2, which every spelling below means.

CANARY_SPELLINGS = [
    "127.0.0.2",
    "127.2",
    "2130706434",
    "0x7f000002",
    "0x7f.0.0.2",
    "0177.0.0.2",
    "017700000002",
    "[::ffff:127.0.0.2]",
    "[::ffff:7f00:2]",
]


def configured_policy() -> FetchPolicy:
    return Settings.from_env({"FETCH_ALLOWED_NETWORKS": "127.0.0.1/32"}).fetch


def configured_fetcher(guard: AddressGuard | None = None) -> HttpImageFetcher:
    return HttpImageFetcher(configured_policy(), Limits(), guard=guard, sleep=SleepRecorder())


def configured_transport(guard: AddressGuard | None = None) -> HttpWebhookTransport:
    return HttpWebhookTransport(configured_policy(), 5.0, guard=guard)


def canary_url(canary: Server, spelling: str, path: str) -> str:
    return f"http://{spelling}:{canary.server_address[1]}{path}"


@pytest.mark.parametrize("spelling", CANARY_SPELLINGS)
def test_no_spelling_of_a_refused_address_reaches_it_by_fetch(
    servers: Servers, spelling: str
) -> None:
    canary = servers.start("127.0.0.2", {"/a.png": image})
    failure = failure_of(lambda: configured_fetcher().fetch(canary_url(canary, spelling, "/a.png")))
    assert failure.code == ErrorCode.BLOCKED_ADDRESS
    assert canary.seen == []


@pytest.mark.parametrize("spelling", CANARY_SPELLINGS)
def test_no_spelling_of_a_refused_address_reaches_it_by_redirect(
    servers: Servers, spelling: str
) -> None:
    canary = servers.start("127.0.0.2", {"/a.png": image})
    origin = servers.start(routes={"/a.png": redirect_to(canary_url(canary, spelling, "/a.png"))})
    failure = failure_of(lambda: configured_fetcher().fetch(origin.base() + "/a.png"))
    assert failure.code == ErrorCode.BLOCKED_ADDRESS
    assert len(origin.seen) == 1
    assert canary.seen == []


@pytest.mark.parametrize("spelling", CANARY_SPELLINGS)
def test_no_spelling_of_a_refused_address_reaches_it_by_webhook(
    servers: Servers, spelling: str
) -> None:
    canary = servers.start("127.0.0.2", {"/hook": lambda h: reply(h, 200)})
    response = configured_transport().post(canary_url(canary, spelling, "/hook"), b"{}", {})
    assert response.status_code is None
    assert response.error is not None
    assert ErrorCode.BLOCKED_ADDRESS in response.error
    assert canary.seen == []


def resolving(table: dict[str, list[str]]) -> AddressGuard:
    def resolver(host: str, port: int) -> list[str]:
        return table[host]

    return AddressGuard(configured_policy().allowed_networks, resolver=resolver)


def test_a_name_resolving_to_a_refused_address_is_never_contacted(servers: Servers) -> None:
    canary = servers.start("127.0.0.2", {"/a.png": image, "/hook": lambda h: reply(h, 200)})
    port = canary.server_address[1]
    guard = resolving({"images.test": ["127.0.0.2"]})

    failure = failure_of(
        lambda: configured_fetcher(guard).fetch(f"http://images.test:{port}/a.png")
    )
    response = configured_transport(guard).post(f"http://images.test:{port}/hook", b"{}", {})

    assert failure.code == ErrorCode.BLOCKED_ADDRESS
    assert response.error is not None and ErrorCode.BLOCKED_ADDRESS in response.error
    assert canary.seen == []


def test_a_redirect_to_a_name_resolving_to_a_refused_address_is_never_followed(
    servers: Servers,
) -> None:
    canary = servers.start("127.0.0.2", {"/a.png": image})
    target = f"http://internal.test:{canary.server_address[1]}/a.png"
    origin = servers.start(routes={"/a.png": redirect_to(target)})
    guard = resolving({"internal.test": ["127.0.0.2"]})

    failure = failure_of(lambda: configured_fetcher(guard).fetch(origin.base() + "/a.png"))

    assert failure.code == ErrorCode.BLOCKED_ADDRESS
    assert canary.seen == []


def test_the_metadata_name_is_refused_even_where_its_address_is_allowed(
    servers: Servers,
) -> None:
    canary = servers.start("127.0.0.2", {"/computeMetadata/v1/": image})
    port = canary.server_address[1]
    url = f"http://metadata.google.internal:{port}/computeMetadata/v1/"
    # Everything on loopback is allowed here, and the name resolves to the canary: only the
    # name rule stands between the fetch and the "metadata server".
    guard = AddressGuard(parse_networks("127.0.0.0/8"), resolver=lambda host, p: ["127.0.0.2"])
    origin = servers.start(routes={"/a.png": redirect_to(url)})

    direct = failure_of(lambda: configured_fetcher(guard).fetch(url))
    redirected = failure_of(lambda: configured_fetcher(guard).fetch(origin.base() + "/a.png"))
    hook = configured_transport(guard).post(url, b"{}", {})

    assert direct.code == redirected.code == ErrorCode.BLOCKED_ADDRESS
    assert hook.error is not None and ErrorCode.BLOCKED_ADDRESS in hook.error
    assert canary.seen == []


def test_the_connection_goes_to_the_checked_address_whatever_dns_says_next(
    servers: Servers,
) -> None:
    # DNS rebinding: the first answer is allowed, every later one points at the canary, which
    # listens on the same port. The name is resolved once and that very address is connected
    # to, so a second lookup (by the HTTP library, say) could not send the request elsewhere.
    origin = servers.start(routes={"/a.png": image})
    port = origin.server_address[1]
    canary = servers.start("127.0.0.2", {"/a.png": image}, port=port)
    answers: list[str] = []

    def rebinding(host: str, p: int) -> list[str]:
        answers.append("127.0.0.1" if not answers else "127.0.0.2")
        return [answers[-1]]

    guard = AddressGuard(configured_policy().allowed_networks, resolver=rebinding)
    fetched = configured_fetcher(guard).fetch(f"http://rebind.test:{port}/a.png")

    assert fetched.data == PNG
    assert answers == ["127.0.0.1"]
    assert len(origin.seen) == 1
    assert canary.seen == []
