"""Which hosts a stranger's URL may make us contact (SPEC "Fetching").

Every test here decides without sending a packet: names go through a fake resolver, and a
resolver that fails the test stands in wherever no lookup may happen at all.
"""

from __future__ import annotations

import ipaddress
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.adapters.egress.address_guard import (
    AddressGuard,
    CheckedUrl,
    no_lookups,
    refusal_reason,
)
from shared.config import parse_networks
from shared.domain.errors import ErrorCode, ImageFailure


class FakeResolver:
    """Answers from a table; an unknown name does not exist."""

    def __init__(self, answers: dict[str, list[str]] | None = None) -> None:
        self.answers = answers or {}
        self.calls: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.answers[host]


def no_lookup(host: str, port: int) -> list[str]:
    raise AssertionError(f"{host} must be decided without a DNS lookup")


def parts(checked: CheckedUrl) -> tuple[str, str, int, list[str]]:
    """What a check decided: scheme, ASCII host, port and the addresses that may be used."""
    return checked.scheme, checked.host, checked.port, list(checked.addresses)


def refusal(url: str, guard: AddressGuard) -> ImageFailure:
    with pytest.raises(ImageFailure) as caught:
        guard.check_url(url)
    return caught.value


def reason_of(address: str, allowed: str = "") -> str | None:
    return refusal_reason(ipaddress.ip_address(address), parse_networks(allowed))


# --- the decision for one address -------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("::", "unspecified"),
        ("::1", "loopback"),
        ("169.254.169.254", "link-local (cloud metadata)"),
        ("169.254.170.2", "link-local (cloud metadata)"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "shared address space"),
        ("fc00::1", "private"),
        ("fd12::1", "private"),
        ("fe80::1", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("ff02::1", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("240.0.0.1", "reserved"),
        ("192.0.2.10", "documentation"),
        ("2001:db8::1", "documentation"),
        ("198.18.0.1", "benchmarking"),
    ],
)
def test_non_public_address_is_refused_with_its_reason(address: str, reason: str) -> None:
    assert reason_of(address) == reason


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
        ("::ffff:169.254.169.254", "link-local (cloud metadata)"),
        ("::7f00:1", "loopback"),  # IPv4-compatible ::127.0.0.1
        ("64:ff9b::7f00:1", "loopback"),  # NAT64 of 127.0.0.1
        ("64:ff9b::a9fe:a9fe", "link-local (cloud metadata)"),  # NAT64 of 169.254.169.254
        ("2002:7f00:1::1", "loopback"),  # 6to4 of 127.0.0.1
        ("2002:a00:1::1", "private"),  # 6to4 of 10.0.0.1
        ("::ffff:0:7f00:1", "loopback"),  # IPv4-translated (SIIT)
    ],
)
def test_ipv6_form_embedding_a_refused_ipv4_is_refused_like_it(address: str, reason: str) -> None:
    found = reason_of(address)
    assert found is not None
    assert found.startswith(reason)


def test_teredo_is_refused_whatever_it_embeds() -> None:
    # 2001:0:4136:e378:8000:63bf:3fff:fdd2 is RFC 4380's example, embedding public addresses.
    assert reason_of("2001:0:4136:e378:8000:63bf:3fff:fdd2") == "Teredo tunnel"


def test_local_use_nat64_is_refused_outright() -> None:
    assert reason_of("64:ff9b:1::808:808") == "local-use NAT64"


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "1.1.1.1", "2001:4860:4860::8888", "::ffff:8.8.8.8", "64:ff9b::808:808"],
)
def test_public_address_is_allowed(address: str) -> None:
    assert reason_of(address) is None


def test_6to4_of_a_public_address_is_decided_by_that_address() -> None:
    assert reason_of("2002:808:808::1") is None


def test_allowed_network_exempts_exactly_its_addresses() -> None:
    assert reason_of("127.0.0.1", "127.0.0.1/32") is None
    assert reason_of("127.0.0.2", "127.0.0.1/32") == "loopback"
    assert reason_of("::1", "127.0.0.1/32") == "loopback"
    assert reason_of("::1", "::1/128") is None
    assert reason_of("10.20.0.5", "10.20.0.0/16") is None
    assert reason_of("10.21.0.5", "10.20.0.0/16") == "private"


def test_allowed_ipv4_network_also_exempts_its_ipv6_embedded_forms() -> None:
    assert reason_of("::ffff:127.0.0.1", "127.0.0.1/32") is None
    assert reason_of("::ffff:127.0.0.2", "127.0.0.1/32") is not None


_REFUSED_V4 = parse_networks("0.0.0.0/8,10.0.0.0/8,127.0.0.0/8,169.254.0.0/16,172.16.0.0/12")
_REFUSED_V4 += parse_networks("192.168.0.0/16,100.64.0.0/10,224.0.0.0/4,240.0.0.0/4")


@st.composite
def refused_ipv4(draw: st.DrawFn) -> ipaddress.IPv4Address:
    network = draw(st.sampled_from(_REFUSED_V4))
    offset = draw(st.integers(0, network.num_addresses - 1))
    return ipaddress.IPv4Address(int(network.network_address) + offset)


@given(refused_ipv4())
def test_every_ipv6_wrapping_of_a_refused_ipv4_is_refused(v4: ipaddress.IPv4Address) -> None:
    wrappings = [
        f"::ffff:{v4}",
        f"64:ff9b::{v4}",
        str(ipaddress.IPv6Address((0x2002 << 112) | (int(v4) << 80) | 1)),  # 6to4
    ]
    assert refusal_reason(v4, ()) is not None
    for wrapped in wrappings:
        assert refusal_reason(ipaddress.ip_address(wrapped), ()) is not None, wrapped


# --- the URL and the host name ----------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x.jpg",
        "http://127.1/x.jpg",
        "http://2130706433/x.jpg",
        "http://0x7f000001/x.jpg",
        "http://0177.0.0.1/x.jpg",
        "http://0x7f.1/x.jpg",
        "http://127.0.0.1./x.jpg",
        # Fullwidth digits and dots, which IDNA maps to "127.0.0.1".
        "http://\uff11\uff12\uff17\uff0e\uff10\uff0e\uff10\uff0e\uff11/x.jpg",
    ],
)
def test_every_numeric_spelling_of_loopback_is_refused_without_a_lookup(url: str) -> None:
    failure = refusal(url, AddressGuard(resolver=no_lookup))
    assert failure.code == ErrorCode.BLOCKED_ADDRESS
    assert "127.0.0.1" in failure.message
    assert "loopback" in failure.message
    assert not failure.transient


@pytest.mark.parametrize(
    "url",
    [
        "http://0.0.0.0/",
        "http://[::]/",
        "http://[::1]:8080/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:10.0.0.1]/",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.1.2.3/",
        "http://172.16.0.1/",
        "http://172.31.255.255/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",
        "http://[fc00::1]/",
        "http://[fd12::1]/",
        "http://[fe80::1]/",
        "http://224.0.0.1/",
        "http://[ff02::1]/",
        "http://255.255.255.255/",
        "http://[64:ff9b::7f00:1]/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://[2002:7f00:1::1]/",
    ],
)
def test_literal_non_public_address_in_url_is_blocked(url: str) -> None:
    failure = refusal(url, AddressGuard(resolver=no_lookup))
    assert failure.code == ErrorCode.BLOCKED_ADDRESS


def test_localhost_is_refused_through_its_resolved_addresses() -> None:
    resolver = FakeResolver({"localhost": ["127.0.0.1", "::1"]})
    failure = refusal("http://localhost:8000/a.png", AddressGuard(resolver=resolver))
    assert failure.code == ErrorCode.BLOCKED_ADDRESS
    assert resolver.calls == [("localhost", 8000)]


def test_name_allowed_only_when_every_address_is_allowed() -> None:
    # localhost answers ::1 as well; allowing only 127.0.0.1/32 must not let it through.
    resolver = FakeResolver({"localhost": ["127.0.0.1", "::1"]})
    guard = AddressGuard(parse_networks("127.0.0.1/32"), resolver=resolver)
    assert refusal("http://localhost/", guard).code == ErrorCode.BLOCKED_ADDRESS
    guard = AddressGuard(parse_networks("127.0.0.1/32,::1/128"), resolver=resolver)
    assert parts(guard.check("http://localhost/")) == (
        "http",
        "localhost",
        80,
        ["127.0.0.1", "::1"],
    )


def test_name_resolving_to_public_and_private_addresses_is_refused() -> None:
    resolver = FakeResolver({"rebind.example": ["93.184.215.14", "10.0.0.7"]})
    failure = refusal("https://rebind.example/x.jpg", AddressGuard(resolver=resolver))
    assert failure.code == ErrorCode.BLOCKED_ADDRESS
    assert "10.0.0.7" in failure.message


@pytest.mark.parametrize(
    "host", ["metadata.google.internal", "METADATA.google.internal.", "metadata"]
)
def test_metadata_names_are_refused_by_name_whatever_they_resolve_to(host: str) -> None:
    everything = parse_networks("0.0.0.0/0,::/0")
    guard = AddressGuard(everything, resolver=no_lookup)
    failure = refusal(f"http://{host}/computeMetadata/v1/", guard)
    assert failure.code == ErrorCode.BLOCKED_ADDRESS


def test_public_name_is_allowed_with_all_its_addresses_in_order() -> None:
    resolver = FakeResolver({"dns.google": ["8.8.8.8", "2001:4860:4860::8888", "8.8.8.8"]})
    result = parts(AddressGuard(resolver=resolver).check("https://dns.google/logo.png"))
    assert result == ("https", "dns.google", 443, ["8.8.8.8", "2001:4860:4860::8888"])


def test_allowed_loopback_is_exempt_but_its_neighbour_is_not() -> None:
    guard = AddressGuard(parse_networks("127.0.0.1/32"), resolver=no_lookup)
    assert parts(guard.check("http://127.0.0.1:9000/a.png")) == (
        "http",
        "127.0.0.1",
        9000,
        ["127.0.0.1"],
    )
    assert refusal("http://127.0.0.2:9000/a.png", guard).code == ErrorCode.BLOCKED_ADDRESS


def test_allowed_ipv6_loopback_literal_keeps_its_host_without_brackets() -> None:
    guard = AddressGuard(parse_networks("::1/128"), resolver=no_lookup)
    assert parts(guard.check("http://[::1]:9000/a.png")) == ("http", "::1", 9000, ["::1"])
    checked = guard.check("http://[::1]:9000/a.png")
    assert checked.host_header == "[::1]:9000"


def test_ipv4_mapped_address_is_connected_to_over_ipv4() -> None:
    guard = AddressGuard(parse_networks("127.0.0.1/32"), resolver=no_lookup)
    assert parts(guard.check("http://[::ffff:127.0.0.1]/"))[3] == ["127.0.0.1"]


@pytest.mark.parametrize(
    "url",
    [
        "http://user:s3cret@example.com/a.png",
        "https://user@example.com/a.png",
        "http://:s3cret@example.com/a.png",
        "http://@example.com/a.png",
    ],
)
def test_url_with_credentials_is_invalid_and_the_message_does_not_repeat_them(url: str) -> None:
    failure = refusal(url, AddressGuard(resolver=no_lookup))
    assert failure.code == ErrorCode.INVALID_URL
    assert "s3cret" not in failure.message
    assert "s3cret" not in str(failure)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/a.png",
        "file:///etc/passwd",
        "gopher://127.0.0.1:6379/_FLUSHALL",
        "javascript:alert(1)",
        "example.com/a.png",
        "//example.com/a.png",
    ],
)
def test_only_http_and_https_are_accepted(url: str) -> None:
    assert refusal(url, AddressGuard(resolver=no_lookup)).code == ErrorCode.INVALID_URL


@pytest.mark.parametrize(
    "url",
    [
        "http:///a.png",
        "http://:80/a.png",
        "https://",
        "http://example.com:99999/a.png",
        "http://example.com:0/a.png",
        "http://exa mple.com/a.png",
        "http://example.com/a.png\r\nX-Injected: 1",
        "http://[not-an-address]/a.png",
        "http://%31%32%37.0.0.1/a.png",
    ],
)
def test_malformed_url_is_invalid(url: str) -> None:
    assert refusal(url, AddressGuard(resolver=no_lookup)).code == ErrorCode.INVALID_URL


def test_idn_host_is_resolved_by_its_punycode_name() -> None:
    seen: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        assert host == "xn--bcher-kva.example"
        seen.append(host)
        return ["93.184.215.14"]

    result = parts(AddressGuard(resolver=resolver).check("http://bücher.example/x.jpg"))
    assert result == ("http", "xn--bcher-kva.example", 80, ["93.184.215.14"])
    assert seen == ["xn--bcher-kva.example"]


def test_request_target_is_percent_encoded_like_a_browser_does() -> None:
    resolver = FakeResolver({"img.example": ["93.184.215.14"]})
    checked = AddressGuard(resolver=resolver).check("http://img.example/a b/ü.jpg?q=ä b&x=%41#frag")
    assert checked.target == "/a%20b/%C3%BC.jpg?q=%C3%A4%20b&x=%41"
    assert checked.host_header == "img.example"
    assert checked.origin == "http://img.example"


def test_unknown_name_is_a_permanent_dns_failure() -> None:
    failure = refusal("http://missing.example/a.png", AddressGuard(resolver=FakeResolver()))
    assert failure.code == ErrorCode.DNS_FAILURE
    assert not failure.transient


def test_temporary_resolver_failure_is_transient() -> None:
    def flaky(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    failure = refusal("http://img.example/a.png", AddressGuard(resolver=flaky))
    assert failure.code == ErrorCode.DNS_FAILURE
    assert failure.transient


def test_name_without_addresses_is_a_dns_failure() -> None:
    failure = refusal(
        "http://img.example/", AddressGuard(resolver=FakeResolver({"img.example": []}))
    )
    assert failure.code == ErrorCode.DNS_FAILURE


# --- every refused form, reached through a name ---------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.0.0.2",
        "0.0.0.0",
        "::",
        "::1",
        "::ffff:127.0.0.1",
        "169.254.169.254",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.0.10",
        "100.64.1.1",
        "fc00::1",
        "fd00:ec2::254",  # AWS's IPv6 metadata address
        "fe80::a9fe:a9fe",
        "224.0.0.251",
        "ff02::fb",
        "255.255.255.255",
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "64:ff9b:1::a00:1",  # local-use NAT64
    ],
)
def test_name_resolving_to_a_refused_address_is_blocked(address: str) -> None:
    resolver = FakeResolver({"images.example": [address]})
    failure = refusal("https://images.example/a.jpg", AddressGuard(resolver=resolver))
    assert failure.code == ErrorCode.BLOCKED_ADDRESS
    assert not failure.transient


@pytest.mark.parametrize(
    "url",
    [
        "HTTP://0X7F000001/",  # case does not help
        "http://0x7f.0x0.0x0.0x1/",
        "http://017700000001/",  # one octal number
        "http://127.000.000.001/",
        "http://[0:0:0:0:0:ffff:7f00:1]/",
        "http://[::ffff:7f00:1]/",
        "http://[0000::1]/",
        "http://0/",  # 0.0.0.0 reaches the local host on Linux
        "http://169.254.43518/",  # 169.254.169.254 with a 16-bit last part
        "http://0xa9fea9fe/",
        "http://2852039166/",  # 169.254.169.254 as one number
        "http://[::a9fe:a9fe]/",  # IPv4-compatible 169.254.169.254
    ],
)
def test_unusual_spellings_of_refused_addresses_are_blocked_without_a_lookup(url: str) -> None:
    failure = refusal(url, AddressGuard(resolver=no_lookup))
    assert failure.code == ErrorCode.BLOCKED_ADDRESS


def test_idn_spelling_of_the_metadata_name_is_refused_by_name() -> None:
    # Fullwidth letters fold to "metadata.google.internal" under IDNA; no allow-list helps.
    guard = AddressGuard(parse_networks("0.0.0.0/0,::/0"), resolver=no_lookup)
    url = "http://\uff4d\uff45\uff54\uff41\uff44\uff41\uff54\uff41.google.internal/"
    assert refusal(url, guard).code == ErrorCode.BLOCKED_ADDRESS


def test_idn_name_resolving_to_a_private_address_is_blocked() -> None:
    resolver = FakeResolver({"xn--bcher-kva.example": ["10.0.0.8"]})
    failure = refusal("http://bücher.example/x.jpg", AddressGuard(resolver=resolver))
    assert failure.code == ErrorCode.BLOCKED_ADDRESS
    assert resolver.calls == [("xn--bcher-kva.example", 80)]


@pytest.mark.parametrize(
    "url",
    [
        "data:image/png;base64,iVBORw0KGgo=",
        "ws://example.com/a",
        "wss://example.com/a",
        "dict://127.0.0.1:11211/stat",
        "ldap://127.0.0.1/",
        "jar:http://example.com/a.jar!/",
        "view-source:http://example.com/",
        "mailto:a@example.com",
    ],
)
def test_other_schemes_are_invalid_without_a_lookup(url: str) -> None:
    assert refusal(url, AddressGuard(resolver=no_lookup)).code == ErrorCode.INVALID_URL


@pytest.mark.parametrize(
    "url",
    [
        "http://user:pw@127.0.0.1/a.png",  # credentials and a refused address
        "http://example.com@127.0.0.1/a.png",  # the classic confusion: the host is 127.0.0.1
        "http://127.0.0.1%2523@example.com/a.png",
    ],
)
def test_credentials_are_refused_before_the_host_is_considered(url: str) -> None:
    assert refusal(url, AddressGuard(resolver=no_lookup)).code == ErrorCode.INVALID_URL


def test_lookups_off_refuses_every_name_but_still_decides_literals() -> None:
    guard = AddressGuard(parse_networks("127.0.0.1/32"), resolver=no_lookups)
    failure = refusal("http://images.example/a.png", guard)
    assert failure.code == ErrorCode.DNS_FAILURE
    assert not failure.transient
    assert parts(guard.check("http://127.0.0.1:9/a.png"))[3] == ["127.0.0.1"]
    assert refusal("http://127.0.0.2:9/a.png", guard).code == ErrorCode.BLOCKED_ADDRESS
