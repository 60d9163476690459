"""Reading the uploaded product CSV: decoding, header matching and the row rules of SPEC "CSV".

Every problem is collected in one pass so that the 400 answer lists everything the user has to
fix, not only the first thing the parser tripped over. Pure functions over bytes: the upload use
case decides where the bytes come from and what to do with the problems.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO, TextIO
from urllib.parse import urlsplit

from shared.config import Limits

MAX_REPORTED_PROBLEMS = 100

_UTF8_BOM = b"\xef\xbb\xbf"
# Long enough to recognise a URL in an error message, short enough that a 2 KB URL (or a
# hostile one) does not blow up the 400 answer.
_SHOWN_CHARS = 80
_HTTP_SCHEMES = frozenset({"http", "https"})
_SCHEME_AND_SLASHES = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[/\\]+")


@dataclass(frozen=True)
class Problem:
    line: int
    column: str | None
    message: str

    def as_dict(self) -> dict[str, object]:
        return {"line": self.line, "column": self.column, "message": self.message}


class CsvInvalid(Exception):
    """The upload cannot be accepted; `problems` is what the 400 answer lists."""

    def __init__(self, problems: list[Problem], total: int) -> None:
        first = f" (first, line {problems[0].line}: {problems[0].message})" if problems else ""
        super().__init__(f"invalid CSV: {total} problem(s){first}")
        self.problems = problems
        self.total = total


@dataclass(frozen=True)
class ProductRow:
    index: int
    line: int
    cells: tuple[str, ...]
    serial: str
    product_name: str
    urls: tuple[str, ...]


@dataclass(frozen=True)
class ProductHeader:
    """What the output CSV keeps of the input besides its rows."""

    header: tuple[str, ...]
    had_bom: bool


@dataclass(frozen=True)
class ProductTable:
    header: tuple[str, ...]
    rows: tuple[ProductRow, ...]
    serial_column: int
    name_column: int
    urls_column: int
    had_bom: bool

    @property
    def url_count(self) -> int:
        return sum(len(row.urls) for row in self.rows)

    @property
    def product_header(self) -> ProductHeader:
        return ProductHeader(self.header, self.had_bom)


def canonical_header(name: str) -> str:
    """The form header names are compared in: `S. No.` and `sno` are the same column."""
    return "".join(ch for ch in name.lower() if ch.isalnum())


@dataclass(frozen=True)
class _Column:
    name: str
    accepted: frozenset[str]
    # How the accepted names look to a person, for the "missing column" message.
    examples: tuple[str, ...]


_SERIAL = _Column(
    "Serial Number",
    frozenset({"serialnumber", "serialno", "sno", "srno", "slno", "serial"}),
    ("Serial Number", "Serial No", "S. No.", "Sr. No.", "Sl. No.", "Serial"),
)
_NAME = _Column(
    "Product Name",
    frozenset({"productname", "product"}),
    ("Product Name", "Product"),
)
_URLS = _Column(
    "Input Image Urls",
    frozenset({"inputimageurls", "inputimageurl", "imageurls", "imageurl"}),
    ("Input Image Urls", "Input Image Url", "Image Urls", "Image Url"),
)
_REQUIRED = (_SERIAL, _NAME, _URLS)
# The output CSV appends this column; an input that already has one would come back with two
# columns of the same name, and nobody could tell which one the service wrote.
_OUTPUT_FORMS = frozenset({"outputimageurls", "outputimageurl"})


@dataclass
class _Problems:
    """Keeps the first MAX_REPORTED_PROBLEMS and counts the rest.

    Problems arrive in line order (header first, then records as the reader meets them), so
    dropping everything after the first hundred keeps exactly the ones the user sees first, and
    a file with a bad URL on each of 100,000 rows does not build 100,000 objects.
    """

    kept: list[Problem] = field(default_factory=list)
    total: int = 0

    def add(self, line: int, column: str | None, message: str) -> None:
        self.total += 1
        if len(self.kept) < MAX_REPORTED_PROBLEMS:
            self.kept.append(Problem(line, column, message))

    def error(self) -> CsvInvalid:
        return CsvInvalid(list(self.kept), self.total)


def parse_product_csv(data: bytes, limits: Limits) -> ProductTable:
    had_bom = data.startswith(_UTF8_BOM)
    text = _decode(data[len(_UTF8_BOM) :] if had_bom else data)
    problems = _Problems()
    records = _records(io.StringIO(text, newline=""), problems)
    first = next(records, None)
    if first is None:
        problems.add(1, None, "file is empty")
        raise problems.error()
    header_line, header_cells = first
    if header_cells is None:
        # A header we could not read gives nothing to match later records against; reading
        # on would only pile guesses on top of the one real problem.
        raise problems.error()
    header = tuple(header_cells)
    columns = _match_header(header, header_line, problems)
    checker = _RowChecker(header, columns, limits, problems)
    rows = checker.read(records, header_line)
    if problems.total:
        raise problems.error()
    serial, name, urls = (columns[spec.name] for spec in _REQUIRED)
    assert serial is not None and name is not None and urls is not None  # no problems => all found
    return ProductTable(header, tuple(rows), serial, name, urls, had_bom)


def stream_product_rows(
    stream: BinaryIO, limits: Limits
) -> tuple[ProductHeader, Iterator[ProductRow]]:
    """The rows of a CSV that was accepted before, read one at a time: for the output CSV of a
    request, whose memory must not grow with its rows. Checked by the same rules as at upload
    except for duplicate serial numbers (remembering every serial is what would grow), which
    the upload refused already. Raises CsvInvalid (at once, or while iterating) when it no
    longer parses."""
    had_bom = stream.read(len(_UTF8_BOM)) == _UTF8_BOM
    if not had_bom:
        stream.seek(0)
    text = io.TextIOWrapper(stream, encoding="utf-8", newline="")
    problems = _Problems()
    records = _records(text, problems)
    first = _next_decoded(records)
    if first is None or first[1] is None:
        raise problems.error() if problems.total else CsvInvalid([], 0)
    header = tuple(first[1])
    columns = _match_header(header, first[0], problems)
    if problems.total:
        raise problems.error()
    checker = _RowChecker(header, columns, limits, problems, remember_serials=False)

    def rows() -> Iterator[ProductRow]:
        index = 0
        while (record := _next_decoded(records)) is not None:
            line, cells = record
            if cells is None:
                raise problems.error()
            row = checker.check(index, line, cells)
            if problems.total:
                raise problems.error()
            index += 1
            yield row

    return ProductHeader(header, had_bom), rows()


def _next_decoded(records: Iterator[_Record]) -> _Record | None:
    try:
        return next(records, None)
    except UnicodeDecodeError as exc:
        raise CsvInvalid([Problem(1, None, f"file is not UTF-8: {exc.reason}")], 1) from None


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = _line_of_offset(data, exc.start)
        message = (
            f"file is not UTF-8: invalid byte 0x{data[exc.start]:02x} on line {line}"
            " (save it as 'CSV UTF-8')"
        )
        raise CsvInvalid([Problem(line, None, message)], 1) from None


def _line_of_offset(data: bytes, offset: int) -> int:
    # Counted the way the CSV reader counts lines (CRLF, LF and a lone CR each end one), so
    # that this line number agrees with the ones the other problems carry.
    head = data[:offset]
    return head.count(b"\n") + head.count(b"\r") - head.count(b"\r\n") + 1


_Record = tuple[int, list[str] | None]


def _records(text: TextIO, problems: _Problems) -> Iterator[_Record]:
    """(line where the record starts, cells) for every record that is not blank.

    A record the csv module cannot parse is reported here and yielded with cells None, so that
    the caller can count it as a data row without checking it.
    """
    # newline="" (the caller's) hands the reader each physical line with its own ending, which
    # is what lets a quoted cell keep its line breaks and lets line_num count physical lines.
    reader = csv.reader(text, strict=True)
    previous_end = 0
    while True:
        start = previous_end + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            previous_end = reader.line_num
            problems.add(start, None, _quoting_message(exc))
            yield start, None
            continue
        # line_num is the line where the record ENDS; the user looks for where it starts.
        previous_end = reader.line_num
        if any(cell.strip() for cell in cells):
            yield start, cells


def _quoting_message(exc: csv.Error) -> str:
    reason = str(exc)
    if "unexpected end of data" in reason:
        return 'a quoted cell is never closed (a " is missing)'
    if "expected after" in reason:
        return (
            "a quoted cell must end right after its closing quote; "
            'write a quote inside a quoted cell as two quotes ("")'
        )
    if "field larger than field limit" in reason:
        return f"a cell is longer than {csv.field_size_limit():,} characters"
    return f"the row is not valid CSV: {reason}"


def _match_header(header: tuple[str, ...], line: int, problems: _Problems) -> dict[str, int | None]:
    found: dict[str, int | None] = {spec.name: None for spec in _REQUIRED}
    for position, written in enumerate(header):
        canonical = canonical_header(written)
        if canonical in _OUTPUT_FORMS:
            problems.add(
                line,
                written,
                "the input already has an 'Output Image Urls' column; remove it before uploading",
            )
            continue
        spec = next((s for s in _REQUIRED if canonical in s.accepted), None)
        if spec is None:
            continue
        earlier = found[spec.name]
        if earlier is None:
            found[spec.name] = position
        else:
            problems.add(
                line,
                written,
                f"column {written!r} is a second {spec.name!r} column"
                f" (column {header[earlier]!r} is the first); keep only one",
            )
    for spec in _REQUIRED:
        if found[spec.name] is None:
            accepted = ", ".join(repr(example) for example in spec.examples)
            problems.add(
                line,
                spec.name,
                f"missing column {spec.name!r} (accepted header names, ignoring case, spaces"
                f" and punctuation: {accepted})",
            )
    return found


class _RowChecker:
    def __init__(
        self,
        header: tuple[str, ...],
        columns: dict[str, int | None],
        limits: Limits,
        problems: _Problems,
        *,
        remember_serials: bool = True,
    ) -> None:
        self.remember_serials = remember_serials
        self.header = header
        self.width = len(header)
        self.serial_at = columns[_SERIAL.name]
        self.name_at = columns[_NAME.name]
        self.urls_at = columns[_URLS.name]
        self.limits = limits
        self.problems = problems
        self.first_line_of_serial: dict[str, int] = {}

    def read(self, records: Iterator[_Record], header_line: int) -> list[ProductRow]:
        rows: list[ProductRow] = []
        seen = 0
        for line, cells in records:
            seen += 1
            if seen > self.limits.max_rows:
                # Stop here: a file of millions of rows gets one clear answer, quickly.
                self.problems.add(
                    line,
                    None,
                    f"too many rows: at most {self.limits.max_rows:,} data rows are allowed",
                )
                break
            if cells is not None:
                rows.append(self.check(len(rows), line, cells))
        if seen == 0:
            self.problems.add(header_line, None, "no data rows")
        return rows

    def check(self, index: int, line: int, cells: list[str]) -> ProductRow:
        fitted = self._fit(line, cells)
        if fitted is None:
            return ProductRow(index, line, tuple(cells), "", "", ())
        serial = self._serial(line, fitted)
        name = self._name(line, fitted)
        urls = self._urls(line, fitted)
        return ProductRow(index, line, fitted, serial, name, urls)

    def _fit(self, line: int, cells: list[str]) -> tuple[str, ...] | None:
        if len(cells) > self.width:
            if any(cell.strip() for cell in cells[self.width :]):
                # The other checks would read shifted columns and mislead; this one says it all.
                self.problems.add(
                    line,
                    None,
                    f"row has {len(cells)} cells but the header has {self.width};"
                    " quote cells that contain commas",
                )
                return None
            # Empty cells past the header (a trailing comma) carry nothing to keep.
            return tuple(cells[: self.width])
        return tuple(cells) + ("",) * (self.width - len(cells))

    def _serial(self, line: int, cells: tuple[str, ...]) -> str:
        if self.serial_at is None:
            return ""
        serial = cells[self.serial_at].strip()
        column = self.header[self.serial_at]
        if not serial:
            self.problems.add(line, column, "serial number is empty")
            return serial
        if not self.remember_serials:
            return serial
        first = self.first_line_of_serial.setdefault(serial, line)
        if first != line:
            self.problems.add(
                line,
                column,
                f"serial number {_shorten(serial)!r} is a duplicate of line {first}",
            )
        return serial

    def _name(self, line: int, cells: tuple[str, ...]) -> str:
        if self.name_at is None:
            return ""
        name = cells[self.name_at].strip()
        if not name:
            self.problems.add(line, self.header[self.name_at], "product name is empty")
        return name

    def _urls(self, line: int, cells: tuple[str, ...]) -> tuple[str, ...]:
        if self.urls_at is None:
            return ()
        column = self.header[self.urls_at]
        entries = [entry.strip() for entry in cells[self.urls_at].split(",")]
        if not any(entries):
            self.problems.add(line, column, "no image URL")
            return ()
        if not entries[-1]:
            entries.pop()  # one trailing comma is tolerated (SPEC)
        if len(entries) > self.limits.max_urls_per_row:
            self.problems.add(
                line,
                column,
                f"row has {len(entries)} image URLs;"
                f" at most {self.limits.max_urls_per_row} are allowed",
            )
        for position, url in enumerate(entries, start=1):
            if not url:
                self.problems.add(line, column, f"URL {position} is empty (two commas in a row)")
                continue
            reason = _url_problem(url, self.limits.max_url_length)
            if reason is not None:
                self.problems.add(line, column, f"URL {position} {reason}: {_shown_url(url)!r}")
        return tuple(entries)


# A URL with nothing to find wrong in it: http(s), a plain host name or IPv4 address, perhaps a
# port of at most five digits, then printable ASCII with no space. Most URLs of a catalogue look
# like this; they pass without being parsed (urlsplit took two thirds of a big upload's
# parsing). Anything else, and a port above 65535, goes through the checks below.
_PLAINLY_FINE = re.compile(
    r"(?i:https?)://[A-Za-z0-9.-]*[A-Za-z0-9](?::([0-9]{1,5}))?(?:[/?#][!-~]*)?"
)


def _url_problem(url: str, max_length: int) -> str | None:
    """Why `url` cannot be fetched, or None. Only cheap checks: the fetcher does the rest."""
    if len(url) > max_length:
        return f"is longer than {max_length:,} characters ({len(url):,})"
    plain = _PLAINLY_FINE.fullmatch(url)
    if plain and (plain.group(1) is None or int(plain.group(1)) <= 65535):
        return None
    return _parsed_url_problem(url)


def _parsed_url_problem(url: str) -> str | None:
    # isprintable() is False for control, format (zero-width, bidi) and separator characters
    # other than the plain space, which is checked on its own.
    if " " in url or not url.isprintable():
        return "contains whitespace or control characters (write a space as %20)"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  # parsing the port is what raises for a bad one
    except ValueError:
        return "has an invalid port or IPv6 address"
    if parts.scheme not in _HTTP_SCHEMES or not parts.netloc:
        return "is not an absolute http(s) URL"
    if "@" in parts.netloc:
        return "carries credentials (a user name or password before '@'); remove them"
    if not parts.hostname:
        return "has no host name"
    return None


def _shown_url(url: str) -> str:
    """A copy of `url` that is safe to put in an error message: no credentials, bounded."""
    # Where userinfo would start as a browser reads it ("https:/u:p@h" and "u:p@h" included),
    # so that the mask holds for malformed URLs too: a password must not come back in the
    # 400 answer, in logs or in the status API.
    prefix = _SCHEME_AND_SLASHES.match(url)
    start = prefix.end() if prefix else 0
    end = len(url)
    for stop in "/\\?#":
        found = url.find(stop, start)
        if 0 <= found < end:
            end = found
    at = url.rfind("@", start, end)
    if at >= 0:
        url = url[:start] + "***" + url[at:]
    return _shorten(url)


def _shorten(value: str) -> str:
    return value if len(value) <= _SHOWN_CHARS else value[: _SHOWN_CHARS - 3] + "..."
