"""Rendering the output CSV: the input as it came, plus the output URLs as the last column."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Sequence

from shared.domain.csv_table import ProductHeader, ProductRow, ProductTable

OUTPUT_COLUMN = "Output Image Urls"

# What a spreadsheet runs as a formula when a cell starts with it (OWASP "CSV Injection").
_FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def neutralise_cell(value: str) -> str:
    """`value`, made inert for spreadsheets: a leading quote makes it text, not a formula.

    Applied to every cell, the user's own included: the output CSV is opened by people who did
    not write the input, and a product name like =HYPERLINK(...) must not run on their machine.
    """
    return "'" + value if value.startswith(_FORMULA_TRIGGERS) else value


def render_output_csv(table: ProductTable, outputs: Sequence[Sequence[str | None]]) -> bytes:
    """The output CSV for `table`; outputs[i] holds one slot per input URL of table.rows[i].

    A slot of None (that image failed) stays an empty entry, so that the n-th output URL
    always belongs to the n-th input URL.
    """
    if len(outputs) != len(table.rows):
        raise ValueError(f"{len(outputs)} output rows for {len(table.rows)} input rows")
    return b"".join(output_csv_chunks(table.product_header, zip(table.rows, outputs, strict=True)))


# Rows written per chunk handed on: a chunk is some tens of kilobytes.
_ROWS_PER_CHUNK = 200


def output_csv_chunks(
    header: ProductHeader, rows: Iterable[tuple[ProductRow, Sequence[str | None]]]
) -> Iterator[bytes]:
    """The output CSV a few rows at a time, for a writer that streams it to storage: memory
    does not grow with the request. Each row comes with one slot per input URL."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n")
    # Echo the BOM only when the input had one: it is what makes Excel read UTF-8, and a
    # user whose tools wrote none would not expect one back.
    if header.had_bom:
        buffer.write("\ufeff")
    writer.writerow([neutralise_cell(cell) for cell in (*header.header, OUTPUT_COLUMN)])
    for written, (row, slots) in enumerate(rows, start=1):
        if len(slots) != len(row.urls):
            raise ValueError(
                f"row {row.index} (line {row.line}) has {len(row.urls)} input URLs"
                f" but {len(slots)} output slots"
            )
        joined = ",".join(url or "" for url in slots)
        writer.writerow([neutralise_cell(cell) for cell in (*row.cells, joined)])
        if written % _ROWS_PER_CHUNK == 0:
            yield buffer.getvalue().encode("utf-8")
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode("utf-8")
