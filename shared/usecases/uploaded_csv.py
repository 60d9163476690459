"""Reading a request's uploaded CSV back, for the output CSV and for recovery."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from shared.config import Limits
from shared.domain.csv_table import (
    CsvInvalid,
    ProductHeader,
    ProductRow,
    ProductTable,
    parse_product_csv,
    stream_product_rows,
)
from shared.domain.model import RequestRecord
from shared.ports import BlobMissing
from shared.usecases.services import Services

# The CSV was validated when it was accepted; reading it back must not fail because limits
# were lowered since.
NO_LIMITS = Limits(
    max_upload_bytes=2**62, max_rows=2**62, max_urls_per_row=2**62, max_url_length=2**62
)


class InputLost(Exception):
    """The uploaded CSV can no longer be had: the request can only fail as a whole."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def read_uploaded_table(services: Services, request: RequestRecord) -> ProductTable:
    """Raises InputLost when the CSV is gone or no longer parses."""
    try:
        return parse_product_csv(services.blobs.get_upload(request.input_path), NO_LIMITS)
    except BlobMissing as exc:
        raise InputLost("input_missing", "the uploaded CSV is gone") from exc
    except CsvInvalid as exc:
        # Only if the CSV rules changed between acceptance and now: the images may be done,
        # but there is no table to put their URLs in.
        raise InputLost("input_unreadable", "the uploaded CSV no longer parses") from exc


@contextlib.contextmanager
def uploaded_rows(
    services: Services, request: RequestRecord
) -> Iterator[tuple[ProductHeader, Iterator[ProductRow]]]:
    """The uploaded CSV's header and its rows one at a time, for the output CSV: memory does
    not grow with the rows. Raises InputLost, on entering or while the rows are read."""
    try:
        stream = services.blobs.open_upload(request.input_path)
    except BlobMissing as exc:
        raise InputLost("input_missing", "the uploaded CSV is gone") from exc
    with stream:
        try:
            header, rows = stream_product_rows(stream, NO_LIMITS)
            yield header, _checked(rows)
        except CsvInvalid as exc:
            raise InputLost("input_unreadable", "the uploaded CSV no longer parses") from exc


def _checked(rows: Iterator[ProductRow]) -> Iterator[ProductRow]:
    try:
        yield from rows
    except CsvInvalid as exc:
        raise InputLost("input_unreadable", "the uploaded CSV no longer parses") from exc
