"""When two slots of a request name the same image, and when two images are the same bytes.

A catalogue repeats itself: a brand's logo on every row, one photograph for several variants.
Within a request, slots whose URLs are the same once normalised share one fetch and one
compression: the first slot does the work and the others copy its outcome. Only what cannot
change which resource a conforming server returns is normalised: what the fetcher sends the
same way anyway (the case of the scheme and host, a trailing dot on the host, the default
port, an empty path, and the fragment, which is never sent), and what RFC 3986 (section
6.2.2) makes equivalent though it is sent as written (the case of percent-escapes, escapes of
unreserved characters). The path's case and the query (but for its escapes) are kept as
written: servers may tell them apart.

Different URLs whose bytes turn out identical are compressed and stored once too, found by a
SHA-256 of the fetched bytes.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _normal_escapes(text: str) -> str:
    def one(match: re.Match[str]) -> str:
        char = chr(int(match.group(1), 16))
        return char if char in _UNRESERVED else f"%{match.group(1).upper()}"

    return _ESCAPE.sub(one, text)


# A URL already in the form image_key gives (a lower-case http(s) host with no dot at its
# end or user info, a port that is not a default one, a path, no escape, fragment or empty
# query, nothing to strip) is its own key: most URLs of a catalogue, which the upload then
# keys without parsing them (parsing 30,000 URLs cost a third of a big upload's time).
_ALREADY_NORMAL = re.compile(
    r"https?://[a-z0-9.-]*[a-z0-9](?::([1-9][0-9]{0,4}))?/[^\s%#?]*(?:\?[^\s%#]+)?"
)


def image_key(url: str) -> str:
    """The identity of the image a URL names, for telling repeated slots apart. A URL too
    broken to parse is its own key (it will fail on its own)."""
    plain = _ALREADY_NORMAL.fullmatch(url)
    if plain and plain.group(1) not in ("80", "443"):
        return url
    return _parsed_key(url)


def _parsed_key(url: str) -> str:
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return url
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    netloc = host if port in (None, _DEFAULT_PORTS.get(scheme)) else f"{host}:{port}"
    path = _normal_escapes(parts.path) or "/"
    query = f"?{_normal_escapes(parts.query)}" if parts.query else ""
    return f"{scheme}://{netloc}{path}{query}"


def content_key(data: bytes) -> str:
    """The identity of fetched bytes."""
    return hashlib.sha256(data).hexdigest()
