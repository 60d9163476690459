"""How long a V4 signed URL lives: it says so itself, in its `X-Goog-Date` (when it was
signed) and `X-Goog-Expires` (for how many seconds). A public object URL never expires.

The webhook and the status API read it from the URL they hand out, so what they say is what
Cloud Storage will enforce, whoever signed the URL and whenever.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

# Cloud Storage refuses V4 signatures meant to live longer than this.
MAX_LIFETIME_SECONDS = 7 * 86400


def expires_at(url: str | None) -> datetime | None:
    """When `url` stops working, or None for a URL that does not expire (or is not one)."""
    if not url:
        return None
    query = parse_qs(urlsplit(url).query)
    signed, lifetime = query.get("X-Goog-Date"), query.get("X-Goog-Expires")
    if not signed or not lifetime or not lifetime[0].isdigit():
        return None
    try:
        moment = datetime.strptime(signed[0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None
    return moment + timedelta(seconds=int(lifetime[0]))
