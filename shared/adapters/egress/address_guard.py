"""Which addresses a URL written by a stranger may make the service contact.

The service fetches image URLs (and posts webhooks) on behalf of anyone who can upload a CSV, so
every URL is a request to make our machine talk to a host of the stranger's choosing. This module
decides, before any packet leaves, whether that host is somewhere on the public internet; the
HTTP layer (safe_http) then connects to exactly the addresses decided here, so that a DNS answer
cannot change between the check and the connection (DNS rebinding).

The decision is pure (`refusal_reason`) and the resolver is injectable, so tests exercise every
hostile form without sending a packet.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import SplitResult, quote, urlsplit

from shared.config import IPNetwork
from shared.domain.errors import ErrorCode, ImageFailure

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# host, port -> IP address strings, in the order they should be tried.
Resolver = Callable[[str, int], list[str]]

_DEFAULT_PORTS = {"http": 80, "https": 443}

# Cloud metadata servers answer on link-local addresses that the address rules refuse anyway;
# refusing their well-known names too costs nothing and survives a resolver that maps them
# somewhere unexpected (a split-horizon DNS, a /etc/hosts entry). No allow-list exempts them.
_REFUSED_NAMES = frozenset({"metadata", "metadata.google.internal"})

_V4_RULES: tuple[tuple[ipaddress.IPv4Network, str], ...] = tuple(
    (ipaddress.IPv4Network(cidr), reason)
    for cidr, reason in (
        ("0.0.0.0/8", "unspecified"),
        ("127.0.0.0/8", "loopback"),
        # The whole /16, not only .254: AWS ECS (169.254.170.2), NTP and DNS helpers of several
        # clouds live there too.
        ("169.254.0.0/16", "link-local (cloud metadata)"),
        ("10.0.0.0/8", "private"),
        ("172.16.0.0/12", "private"),
        ("192.168.0.0/16", "private"),
        ("100.64.0.0/10", "shared address space"),
        ("255.255.255.255/32", "broadcast"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),
        ("192.0.0.0/24", "reserved"),
        ("192.0.2.0/24", "documentation"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("198.18.0.0/15", "benchmarking"),
    )
)
_V6_RULES: tuple[tuple[ipaddress.IPv6Network, str], ...] = tuple(
    (ipaddress.IPv6Network(cidr), reason)
    for cidr, reason in (
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        # Teredo tunnels to an IPv4 host through a relay we do not control; nothing legitimate
        # serves images there, so it is refused whatever IPv4 address it embeds.
        ("2001::/32", "Teredo tunnel"),
        # RFC 8215 local-use NAT64: the operator picks where the IPv4 address sits inside the
        # /48, so it cannot be checked; by definition it only reaches a local network.
        ("64:ff9b:1::/48", "local-use NAT64"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local"),
        ("fc00::/7", "private"),
        ("ff00::/8", "multicast"),
        ("2001:db8::/32", "documentation"),
        ("3fff::/20", "documentation"),
        ("100::/64", "discard-only"),
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")

# inet_aton accepts trailing garbage after whitespace ("1.2.3.4 evil"), so only hand it hosts
# made of the characters a numeric IPv4 form can contain.
_NUMERIC_HOST = re.compile(r"^[0-9a-fx.]+$")
_HOST_CHARS = re.compile(r"^[a-z0-9_-]+(?:\.[a-z0-9_-]+)*$")
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
# RFC 3986 characters that may stay as they are in a request target; anything else (spaces,
# non-ASCII) is percent-encoded the way browsers do it, existing escapes are kept.
_SAFE_PATH = "/%:@!$&'()*+,;=-._~"
_SAFE_QUERY = _SAFE_PATH + "?"


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, str] | None:
    """The IPv4 address that an IPv6 form delivers to, with the form's name."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped, "IPv4-mapped"
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _NAT64:
        return low32, "NAT64"
    if ip in _IPV4_TRANSLATED:
        return low32, "IPv4-translated"
    if ip in _IPV4_COMPATIBLE:
        return low32, "IPv4-compatible"
    if ip.sixtofour is not None:
        return ip.sixtofour, "6to4"
    return None


def _in_any(ip: IPAddress, networks: Sequence[IPNetwork]) -> bool:
    # `in` is simply False across IP versions, so mixed allow-lists need no special care.
    return any(ip in network for network in networks)


def _ipv4_reason(ip: ipaddress.IPv4Address) -> str | None:
    for network, reason in _V4_RULES:
        if ip in network:
            return reason
    if ip.is_reserved:
        return "reserved"
    if not ip.is_global:
        return "not globally routable"
    return None


def refusal_reason(ip: IPAddress, allowed: Sequence[IPNetwork]) -> str | None:
    """None if `ip` may be contacted, else a short reason for people ("loopback", "private"...).

    An address is allowed when it, or the IPv4 address an IPv6 form embeds, lies in `allowed`;
    otherwise it must be globally routable. The rules are spelled out network by network rather
    than left to `ipaddress.is_global`, which calls multicast and NAT64 forms of loopback global.
    """
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        # fe80::1%eth0: the zone only says which interface; the address decides.
        ip = ipaddress.IPv6Address(str(ip).split("%", 1)[0])
    if _in_any(ip, allowed):
        return None
    if isinstance(ip, ipaddress.IPv4Address):
        return _ipv4_reason(ip)
    for network, reason in _V6_RULES:
        if ip in network:
            return reason
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        v4, form = embedded
        if _in_any(v4, allowed):
            return None
        v4_reason = _ipv4_reason(v4)
        return None if v4_reason is None else f"{v4_reason} ({form} {v4})"
    if ip.is_reserved:
        return "reserved"
    if not ip.is_global:
        return "not globally routable"
    return None


def system_resolver(host: str, port: int) -> list[str]:
    """Every address of `host` (IPv4 and IPv6), deduplicated, in getaddrinfo's preference order."""
    addresses: dict[str, None] = {}
    for family, _type, _proto, _name, sockaddr in socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM
    ):
        if family in (socket.AF_INET, socket.AF_INET6):
            addresses.setdefault(str(sockaddr[0]), None)
    return list(addresses)


def no_lookups(host: str, port: int) -> list[str]:
    """The resolver of FETCH_DNS=off: only IP literals can be fetched. The test stacks run this
    way, so that no test, however its URLs were made (a fuzzer's, say), sends a DNS query."""
    raise ImageFailure(
        ErrorCode.DNS_FAILURE, f"{host} is not looked up: name lookups are off (FETCH_DNS=off)"
    )


# getaddrinfo answers meaning "this name does not exist"; anything else (EAI_AGAIN above all, a
# resolver that timed out or a SERVFAIL) may well work on the next attempt.
_NAME_NOT_FOUND = frozenset(
    code
    for code in (getattr(socket, "EAI_NONAME", None), getattr(socket, "EAI_NODATA", None))
    if code is not None
)


@dataclass(frozen=True)
class CheckedUrl:
    """A URL that passed the guard, with everything needed to send the request to it."""

    scheme: str
    host: str  # ASCII: punycode for IDN names, the canonical text for IP literals
    port: int
    addresses: tuple[str, ...]  # the only addresses a connection may go to, in order
    target: str  # path and query, percent-encoded, as sent in the request line

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == _DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    @property
    def origin(self) -> str:
        """scheme://host[:port], safe to show people: no credentials, no query tokens."""
        return f"{self.scheme}://{self.host_header}"


def _invalid(message: str) -> ImageFailure:
    return ImageFailure(ErrorCode.INVALID_URL, message)


def _blocked(message: str) -> ImageFailure:
    return ImageFailure(ErrorCode.BLOCKED_ADDRESS, message)


def _ascii_host(host: str) -> str:
    if host.isascii():
        return host
    try:
        import idna

        try:
            return idna.encode(host, uts46=True).decode("ascii")
        except idna.IDNAError:
            # IDNA 2008 rejects some names (emoji, symbols) that IDNA 2003, and browsers, accept.
            pass
    except ImportError:  # pragma: no cover - idna comes with requests
        pass
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise _invalid("the host name is not a valid internationalised domain name") from exc


def _literal_ip(host: str) -> IPAddress | None:
    """The address if `host` is an IP literal in any form the system resolver would accept.

    getaddrinfo (through inet_aton) reads 127.1, 2130706433, 0x7f000001 and 0177.0.0.1 as
    127.0.0.1; normalising them here means the decision never depends on the resolver.
    """
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _NUMERIC_HOST.match(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _connect_form(ip: IPAddress) -> str:
    # ::ffff:a.b.c.d is delivered to a.b.c.d anyway; connecting over IPv4 does not depend on
    # the kernel allowing IPv4-mapped IPv6 sockets.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def _describe_dns_error(exc: OSError, host: str) -> ImageFailure:
    if isinstance(exc, socket.gaierror) and exc.errno in _NAME_NOT_FOUND:
        return ImageFailure(ErrorCode.DNS_FAILURE, f"the host name {host} does not exist")
    reason = exc.strerror or type(exc).__name__
    return ImageFailure(
        ErrorCode.DNS_FAILURE, f"could not resolve {host}: {reason}", transient=True
    )


class AddressGuard:
    """Validates a URL and decides which addresses of its host may be contacted."""

    def __init__(
        self, allowed_networks: Sequence[IPNetwork] = (), resolver: Resolver | None = None
    ) -> None:
        self._allowed = tuple(allowed_networks)
        self._resolve: Resolver = resolver or system_resolver

    def check_url(self, url: str) -> None:
        """`shared.ports.UrlGuard`: raises ImageFailure with INVALID_URL, BLOCKED_ADDRESS or
        DNS_FAILURE when the URL may not be contacted."""
        self.check(url)

    def check(self, url: str) -> CheckedUrl:
        parts, scheme = self._parse(url)
        host = self._host(parts)
        try:
            explicit_port = parts.port
        except ValueError as exc:
            raise _invalid("the URL has an invalid port") from exc
        if explicit_port == 0:
            raise _invalid("the URL has an invalid port")
        port = explicit_port or _DEFAULT_PORTS[scheme]
        target = quote(parts.path or "/", safe=_SAFE_PATH)
        if parts.query:
            target += "?" + quote(parts.query, safe=_SAFE_QUERY)

        literal = _literal_ip(host)
        if literal is not None:
            reason = refusal_reason(literal, self._allowed)
            if reason is not None:
                raise _blocked(f"address {literal} is not allowed: {reason}")
            canonical = str(literal).split("%", 1)[0]
            return CheckedUrl(scheme, canonical, port, (_connect_form(literal),), target)

        if host in _REFUSED_NAMES:
            raise _blocked(f"{host} is a cloud metadata service")
        addresses = self._resolve_all(host, port)
        return CheckedUrl(scheme, host, port, addresses, target)

    def _parse(self, url: str) -> tuple[SplitResult, str]:
        url = url.strip()
        if _CONTROL_CHARS.search(url):
            raise _invalid("the URL contains control characters")
        try:
            parts = urlsplit(url)
        except ValueError as exc:
            raise _invalid("the URL cannot be parsed") from exc
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS:
            shown = f"{scheme}:" if scheme else "no scheme"
            raise _invalid(f"only http and https URLs can be fetched, not {shown}")
        if "@" in parts.netloc:
            # The credentials themselves are never repeated in the message.
            raise _invalid("URLs carrying credentials (user:password@) are not accepted")
        return parts, scheme

    def _host(self, parts: SplitResult) -> str:
        raw = parts.hostname
        if not raw:
            raise _invalid("the URL has no host")
        if "[" in parts.netloc:
            try:
                return str(ipaddress.IPv6Address(raw))
            except ValueError as exc:
                raise _invalid("the URL has an invalid IPv6 address") from exc
        host = _ascii_host(raw).lower().rstrip(".")
        if not host or len(host) > 253 or not _HOST_CHARS.match(host):
            raise _invalid("the URL has an invalid host name")
        return host

    def _resolve_all(self, host: str, port: int) -> tuple[str, ...]:
        try:
            answers = self._resolve(host, port)
        except UnicodeError as exc:  # a label longer than 63 characters, say
            raise _invalid("the URL has an invalid host name") from exc
        except OSError as exc:
            raise _describe_dns_error(exc, host) from exc
        if not answers:
            raise ImageFailure(ErrorCode.DNS_FAILURE, f"the host name {host} has no address")
        addresses: list[str] = []
        for answer in answers:
            try:
                ip = ipaddress.ip_address(answer)
            except ValueError as exc:
                raise ImageFailure(
                    ErrorCode.DNS_FAILURE, f"the resolver returned a non-address for {host}"
                ) from exc
            reason = refusal_reason(ip, self._allowed)
            if reason is not None:
                # One refused address refuses the host: a name that resolves to a public and a
                # private address is how rebinding attacks pick the address after our check.
                raise _blocked(f"{host} resolves to {ip}, which is not allowed: {reason}")
            form = _connect_form(ip)
            if form not in addresses:
                addresses.append(form)
        return tuple(addresses)
