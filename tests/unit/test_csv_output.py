"""SPEC "CSV" (output side): the input as it came, plus `Output Image Urls` last, made safe."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from shared.config import Limits
from shared.domain.csv_output import OUTPUT_COLUMN, neutralise_cell, render_output_csv
from shared.domain.csv_table import ProductTable, parse_product_csv

SAMPLES = Path(__file__).parents[3] / "shared" / "samples"
HEADER = "Serial Number,Product Name,Input Image Urls"


def table_of(text: str, *, bom: bool = False) -> ProductTable:
    return parse_product_csv((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"), Limits())


def read_back(data: bytes) -> list[list[str]]:
    text = data.decode("utf-8-sig")
    return list(csv.reader(io.StringIO(text, newline="")))


def test_output_column_is_last_after_the_input_header() -> None:
    table = table_of(f"{HEADER},Brand\n1,Lamp,https://in/a.jpg,Acme\n")

    header = read_back(render_output_csv(table, [["https://out/a.jpg"]]))[0]

    assert header == ["Serial Number", "Product Name", "Input Image Urls", "Brand", OUTPUT_COLUMN]
    assert OUTPUT_COLUMN == "Output Image Urls"


def test_header_is_echoed_as_the_user_wrote_it() -> None:
    data = (SAMPLES / "brief-example.csv").read_bytes()
    table = parse_product_csv(data, Limits())

    header = read_back(render_output_csv(table, [[None] * 3, [None] * 3]))[0]

    assert header == ["S. No.", "Product Name", "Input Image Urls", "Output Image Urls"]


def test_rows_keep_the_input_order_and_pass_extra_columns_through() -> None:
    table = table_of(
        "Brand,S. No.,Product Name,Input Image Urls,Notes\n"
        "Acme,9,Lamp,https://in/a.jpg,fragile\n"
        "Bolt,3,Desk,https://in/b.jpg,\n"
    )

    rows = read_back(render_output_csv(table, [["https://out/a.jpg"], ["https://out/b.jpg"]]))

    assert rows[1:] == [
        ["Acme", "9", "Lamp", "https://in/a.jpg", "fragile", "https://out/a.jpg"],
        ["Bolt", "3", "Desk", "https://in/b.jpg", "", "https://out/b.jpg"],
    ]


def test_output_urls_are_joined_in_the_order_of_the_input_urls() -> None:
    table = table_of(f'{HEADER}\n1,Lamp,"https://in/c.jpg,https://in/a.jpg,https://in/b.jpg"\n')

    rows = read_back(
        render_output_csv(table, [["https://out/c.jpg", "https://out/a.jpg", "https://out/b.jpg"]])
    )

    assert rows[1][3] == "https://out/c.jpg,https://out/a.jpg,https://out/b.jpg"


def test_a_failed_image_leaves_an_empty_slot_so_positions_line_up() -> None:
    table = table_of(f'{HEADER}\n1,Lamp,"https://in/a.jpg,https://in/b.jpg,https://in/c.jpg"\n')

    rows = read_back(render_output_csv(table, [["https://out/a.jpg", None, "https://out/c.jpg"]]))

    assert rows[1][3] == "https://out/a.jpg,,https://out/c.jpg"
    assert rows[1][3].split(",")[2] == "https://out/c.jpg"


def test_failed_first_and_last_images_leave_leading_and_trailing_slots() -> None:
    table = table_of(f'{HEADER}\n1,Lamp,"https://in/a.jpg,https://in/b.jpg,https://in/c.jpg"\n')

    rows = read_back(render_output_csv(table, [[None, "https://out/b.jpg", None]]))

    assert rows[1][3] == ",https://out/b.jpg,"


def test_the_only_image_failing_gives_an_empty_cell() -> None:
    table = table_of(f"{HEADER}\n1,Lamp,https://in/a.jpg\n")

    rows = read_back(render_output_csv(table, [[None]]))

    assert rows[1] == ["1", "Lamp", "https://in/a.jpg", ""]


def test_short_rows_are_rendered_padded_to_the_header_width() -> None:
    table = table_of(f"{HEADER},Brand,Notes\n1,Lamp,https://in/a.jpg\n")

    rows = read_back(render_output_csv(table, [["https://out/a.jpg"]]))

    assert rows[1] == ["1", "Lamp", "https://in/a.jpg", "", "", "https://out/a.jpg"]


def test_bom_is_written_when_the_input_had_one() -> None:
    table = table_of(f"{HEADER}\n1,Lamp,https://in/a.jpg\n", bom=True)

    data = render_output_csv(table, [["https://out/a.jpg"]])

    assert data.startswith(b"\xef\xbb\xbfSerial Number,")


def test_no_bom_is_written_when_the_input_had_none() -> None:
    table = table_of(f"{HEADER}\n1,Lamp,https://in/a.jpg\n")

    assert render_output_csv(table, [["https://out/a.jpg"]]).startswith(b"Serial Number,")


def test_lines_end_with_crlf_even_for_lf_input() -> None:
    table = table_of(f"{HEADER}\n1,Lamp,https://in/a.jpg\n2,Desk,https://in/b.jpg\n")

    data = render_output_csv(table, [["https://out/a.jpg"], [None]])

    assert data == (
        b"Serial Number,Product Name,Input Image Urls,Output Image Urls\r\n"
        b"1,Lamp,https://in/a.jpg,https://out/a.jpg\r\n"
        b"2,Desk,https://in/b.jpg,\r\n"
    )


def test_cells_with_commas_quotes_and_newlines_are_quoted() -> None:
    table = table_of(f'{HEADER}\n1,"Chair, ""oak""\nlarge","https://in/a.jpg,https://in/b.jpg"\n')

    data = render_output_csv(table, [["https://out/a.jpg", "https://out/b.jpg"]])

    assert data.split(b"\r\n", 1)[1] == (
        b'1,"Chair, ""oak""\nlarge","https://in/a.jpg,https://in/b.jpg",'
        b'"https://out/a.jpg,https://out/b.jpg"\r\n'
    )


def test_non_ascii_text_is_written_as_utf8() -> None:
    table = table_of(f"{HEADER}\n1,Chaise é 椅子,https://in/a.jpg\n")

    data = render_output_csv(table, [["https://out/a.jpg"]])

    assert "Chaise é 椅子".encode() in data


@pytest.mark.parametrize(
    ("cell", "shown"),
    [
        ("=1+2", "'=1+2"),
        ("+31 20 555", "'+31 20 555"),
        ("-5", "'-5"),
        ("@cmd", "'@cmd"),
        ("\tindented", "'\tindented"),
        ("\r=1", "'\r=1"),
        ("https://out/a.jpg", "https://out/a.jpg"),
        ("Lamp = light", "Lamp = light"),
        ("5-3", "5-3"),
        ("'quoted", "'quoted"),
        ("", ""),
    ],
)
def test_neutralise_cell_prefixes_formula_starts_with_a_quote(cell: str, shown: str) -> None:
    assert neutralise_cell(cell) == shown


def test_formula_product_name_from_the_quirks_sample_is_neutralised() -> None:
    table = parse_product_csv((SAMPLES / "quirks.csv").read_bytes(), Limits())
    outputs = [
        [f"https://out/{row.serial}-{n}.jpg" for n in range(len(row.urls))] for row in table.rows
    ]

    rows = read_back(render_output_csv(table, outputs))

    assert rows[2][1] == '\'=HYPERLINK("http://x")'
    assert rows[1][1] == "Chair, oak"
    assert rows[2][4] == "https://out/2-0.jpg,https://out/2-1.jpg"


def test_passthrough_and_header_cells_are_neutralised_too() -> None:
    table = table_of(f"{HEADER},=Brand,Stock,Note\n1,Lamp,https://in/a.jpg,@cmd,-5,\tleft\n")

    rows = read_back(render_output_csv(table, [["https://out/a.jpg"]]))

    assert rows[0][3] == "'=Brand"
    assert rows[1][3:] == ["'@cmd", "'-5", "'\tleft", "https://out/a.jpg"]


def test_output_urls_are_not_altered() -> None:
    table = table_of(f'{HEADER}\n1,Lamp,"https://in/a.jpg,https://in/b.jpg"\n')

    rows = read_back(render_output_csv(table, [[None, "https://out/b.jpg?x=-1"]]))

    assert rows[1][3] == ",https://out/b.jpg?x=-1"


def test_fewer_output_rows_than_input_rows_is_refused() -> None:
    table = table_of(f"{HEADER}\n1,Lamp,https://in/a.jpg\n2,Desk,https://in/b.jpg\n")

    with pytest.raises(ValueError, match="1 output rows for 2 input rows"):
        render_output_csv(table, [["https://out/a.jpg"]])


def test_a_row_whose_slots_do_not_match_its_urls_is_refused() -> None:
    table = table_of(f'{HEADER}\n1,Lamp,"https://in/a.jpg,https://in/b.jpg"\n')

    with pytest.raises(ValueError, match="2 input URLs but 1 output slots"):
        render_output_csv(table, [["https://out/a.jpg"]])


def test_round_trip_gives_the_input_cells_plus_the_output_column() -> None:
    source = (
        "S. No.,Product Name,Input Image Urls,Brand\r\n"
        '1,"Chair, oak","https://in/a.jpg , https://in/b.jpg,",Acme\r\n'
        '2,"Lamp ""Nordic""\nwith shade",https://in/c.jpg,\r\n'
        "3,Desk,https://in/d.jpg\r\n"
    )
    table = table_of(source, bom=True)
    outputs = [["https://out/1-0.jpg", None], ["https://out/2-0.jpg"], [None]]

    rendered = read_back(render_output_csv(table, outputs))
    original = list(csv.reader(io.StringIO(source, newline="")))

    assert rendered[0] == [*original[0], "Output Image Urls"]
    assert rendered[1] == [*original[1], "https://out/1-0.jpg,"]
    assert rendered[2] == [*original[2], "https://out/2-0.jpg"]
    assert rendered[3] == [*original[3], "", ""]
    assert len(rendered) == 4
