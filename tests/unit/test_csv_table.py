"""SPEC "CSV" (input side) and "POST /upload": what the user's CSV is read as, and the 400 list."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from shared.config import Limits
from shared.domain.csv_table import (
    MAX_REPORTED_PROBLEMS,
    CsvInvalid,
    Problem,
    ProductTable,
    _parsed_url_problem,
    _url_problem,
    canonical_header,
    parse_product_csv,
)

SAMPLES = Path(__file__).parents[3] / "shared" / "samples"
HEADER = "Serial Number,Product Name,Input Image Urls\n"
LIMITS = Limits()


def parse(text: str, limits: Limits = LIMITS) -> ProductTable:
    return parse_product_csv(text.encode("utf-8"), limits)


def invalid(data: str | bytes, limits: Limits = LIMITS) -> CsvInvalid:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    with pytest.raises(CsvInvalid) as caught:
        parse_product_csv(raw, limits)
    return caught.value


def lines_of(error: CsvInvalid) -> list[int]:
    return [problem.line for problem in error.problems]


def only_problem(data: str | bytes, limits: Limits = LIMITS) -> Problem:
    error = invalid(data, limits)
    assert error.total == 1, error.problems
    return error.problems[0]


# --- the sample files ------------------------------------------------------------------------


def test_brief_example_parses_two_rows_of_three_urls() -> None:
    table = parse_product_csv((SAMPLES / "brief-example.csv").read_bytes(), LIMITS)

    assert table.header == ("S. No.", "Product Name", "Input Image Urls")
    assert [row.serial for row in table.rows] == ["1", "2"]
    assert [row.product_name for row in table.rows] == ["SKU1", "SKU2"]
    assert [len(row.urls) for row in table.rows] == [3, 3]
    assert table.rows[0].urls[2] == "https://www.public-image-url3.jpg"
    assert table.url_count == 6
    assert not table.had_bom


def test_quirks_sample_parses_with_bom_passthrough_and_trailing_comma() -> None:
    table = parse_product_csv((SAMPLES / "quirks.csv").read_bytes(), LIMITS)

    assert table.had_bom
    assert table.header == ("Serial Number", "Product Name", "Input Image Urls", "Brand")
    assert [row.product_name for row in table.rows] == [
        "Chair, oak",
        '=HYPERLINK("http://x")',
        "Table",
    ]
    assert table.rows[1].urls == (
        "https://img.example.com/b.png",
        "https://img.example.com/c.webp",
    )
    assert [row.cells[3] for row in table.rows] == ["Acme", "Acme", ""]
    assert table.url_count == 4


def test_invalid_sample_lists_its_four_bad_lines() -> None:
    error = invalid((SAMPLES / "invalid.csv").read_bytes())

    assert sorted(set(lines_of(error))) == [2, 3, 4, 5]
    by_line = {(p.line, p.column): p.message for p in error.problems}
    assert by_line[(2, "Product Name")] == "product name is empty"
    assert by_line[(3, "Serial Number")] == "serial number '1' is a duplicate of line 2"
    assert "not an absolute http(s) URL" in by_line[(3, "Input Image Urls")]
    assert by_line[(4, "Input Image Urls")] == "no image URL"
    assert "carries credentials" in by_line[(5, "Input Image Urls")]
    assert error.total == len(error.problems) == 5


def test_invalid_sample_does_not_echo_credentials() -> None:
    error = invalid((SAMPLES / "invalid.csv").read_bytes())

    text = " ".join(str(p.as_dict()) for p in error.problems) + str(error)
    assert "pw" not in text
    assert "user:" not in text
    assert "https://***@img.example.com/c.jpg" in text


# --- header names ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ("S. No.", "sno"),
        (" Input Image URLs ", "inputimageurls"),
        ("Product_Name", "productname"),
        ("SERIAL-NUMBER", "serialnumber"),
    ],
)
def test_canonical_header_ignores_case_spaces_and_punctuation(written: str, canonical: str) -> None:
    assert canonical_header(written) == canonical


@pytest.mark.parametrize(
    "header",
    [
        "Serial Number,Product Name,Input Image Urls",
        "S. No.,Product Name,Input Image URLs",
        "sr no,product,image urls",
        "Sl. No.,PRODUCT NAME,Image URL",
        " serial , Product  Name , input_image_url ",
        "Serial No,Product,Input Image Url",
    ],
)
def test_accepted_header_spellings(header: str) -> None:
    table = parse(header + "\n1,Lamp,https://img.example.com/a.jpg\n")

    assert (table.serial_column, table.name_column, table.urls_column) == (0, 1, 2)
    assert table.header == tuple(header.split(","))


def test_columns_are_found_in_any_order_and_extra_columns_are_kept() -> None:
    table = parse(
        "Brand,Input Image Urls,Notes,S. No.,Product Name\n"
        "Acme,https://img.example.com/a.jpg,fragile,7,Lamp\n"
    )

    assert (table.serial_column, table.name_column, table.urls_column) == (3, 4, 1)
    row = table.rows[0]
    assert row.cells == ("Acme", "https://img.example.com/a.jpg", "fragile", "7", "Lamp")
    assert (row.serial, row.product_name) == ("7", "Lamp")


def test_each_missing_column_is_reported_on_line_1_with_accepted_names() -> None:
    error = invalid("Id,Title\n1,Lamp\n")

    assert [(p.line, p.column) for p in error.problems] == [
        (1, "Serial Number"),
        (1, "Product Name"),
        (1, "Input Image Urls"),
    ]
    assert "'S. No.'" in error.problems[0].message
    assert "'Product'" in error.problems[1].message
    assert "'Image Urls'" in error.problems[2].message


def test_column_matched_twice_is_a_problem() -> None:
    problem = only_problem(
        "Serial Number,S. No.,Product Name,Input Image Urls\n1,1,Lamp,https://img.example.com/a.jpg\n"
    )

    assert (problem.line, problem.column) == (1, "S. No.")
    assert "second 'Serial Number' column" in problem.message


def test_input_with_an_output_column_is_a_problem() -> None:
    problem = only_problem(
        "Serial Number,Product Name,Input Image Urls,Output Image URLs\n"
        "1,Lamp,https://img.example.com/a.jpg,\n"
    )

    assert (problem.line, problem.column) == (1, "Output Image URLs")
    assert "already has an 'Output Image Urls' column" in problem.message


# --- encoding, line endings, quoting ---------------------------------------------------------


def test_bom_is_stripped_from_the_header_and_remembered() -> None:
    table = parse_product_csv(
        b"\xef\xbb\xbf" + (HEADER + "1,Lamp,https://img.example.com/a.jpg\n").encode(), LIMITS
    )

    assert table.had_bom
    assert table.header[0] == "Serial Number"


def test_file_without_bom_is_remembered_as_such() -> None:
    assert not parse(HEADER + "1,Lamp,https://img.example.com/a.jpg\n").had_bom


def test_non_utf8_byte_is_reported_with_its_line_and_nothing_else() -> None:
    data = (HEADER + ",,ftp://x\r\n2,Caf").encode() + b"\xe9,https://img.example.com/a.jpg\r\n"

    problem = only_problem(data)

    assert problem.line == 3
    assert problem.column is None
    assert problem.message.startswith("file is not UTF-8: invalid byte 0xe9 on line 3")


def test_utf16_file_is_not_utf8_on_line_1() -> None:
    problem = only_problem(HEADER.encode("utf-16"))

    assert problem.line == 1
    assert "invalid byte 0xff" in problem.message


def test_non_ascii_text_is_kept() -> None:
    table = parse(HEADER + "1,Chaise longue é 椅子,https://img.example.com/a.jpg\n")

    assert table.rows[0].product_name == "Chaise longue é 椅子"


def test_crlf_lines_are_numbered_like_lf_lines() -> None:
    error = invalid(
        HEADER.replace("\n", "\r\n") + "1,Lamp,https://img.example.com/a.jpg\r\n2,,x\r\n"
    )

    assert lines_of(error) == [3, 3]


def test_mixed_line_endings_parse() -> None:
    table = parse(
        "Serial Number,Product Name,Input Image Urls\r\n"
        "1,Lamp,https://img.example.com/a.jpg\n"
        "2,Desk,https://img.example.com/b.jpg\r\n"
        "3,Sofa,https://img.example.com/c.jpg"
    )

    assert [row.line for row in table.rows] == [2, 3, 4]
    assert table.rows[0].urls == ("https://img.example.com/a.jpg",)


def test_quoted_commas_and_doubled_quotes_are_one_cell() -> None:
    table = parse(HEADER + '1,"Lamp, ""Nordic"" style",https://img.example.com/a.jpg\n')

    assert table.rows[0].product_name == 'Lamp, "Nordic" style'


def test_quoted_newline_stays_in_the_cell_and_the_row_starts_where_it_starts() -> None:
    table = parse(
        HEADER + '1,"Lamp\r\nwith shade",https://img.example.com/a.jpg\r\n'
        "2,Desk,https://img.example.com/b.jpg\n"
    )

    assert table.rows[0].product_name == "Lamp\r\nwith shade"
    assert [row.line for row in table.rows] == [2, 4]


def test_problem_in_a_multiline_record_is_reported_on_the_line_where_it_starts() -> None:
    error = invalid(
        HEADER + '1,"Lamp\nwith\nshade",https://img.example.com/a.jpg\n'
        '2,,"https://img.example.com/b.jpg,\nftp://img.example.com/c.jpg"\n'
        "3,,https://img.example.com/d.jpg\n"
    )

    assert lines_of(error) == [5, 5, 7]
    assert error.problems[1].message.startswith("URL 2 is not an absolute http(s) URL")


def test_blank_lines_are_skipped_and_do_not_shift_line_numbers() -> None:
    error = invalid(HEADER + "\n1,Lamp,https://img.example.com/a.jpg\n\r\n\n2,,x\n")

    assert lines_of(error) == [6, 6]


def test_rows_of_empty_cells_are_skipped() -> None:
    table = parse(HEADER + " , ,\n,,\n1,Lamp,https://img.example.com/a.jpg\n")

    assert len(table.rows) == 1
    assert (table.rows[0].line, table.rows[0].index) == (4, 0)


def test_blank_lines_before_the_header_are_skipped() -> None:
    table = parse("\n\n" + HEADER + "1,Lamp,https://img.example.com/a.jpg\n")

    assert table.rows[0].line == 4


def test_unterminated_quote_is_a_problem_on_the_line_where_its_record_starts() -> None:
    problem = only_problem(HEADER + '1,Lamp,https://img.example.com/a.jpg\n2,"Desk,x\n3,Sofa,y\n')

    assert (problem.line, problem.column) == (3, None)
    assert problem.message == 'a quoted cell is never closed (a " is missing)'


def test_text_after_a_closing_quote_is_a_problem_and_later_rows_are_still_checked() -> None:
    error = invalid(HEADER + '1,"Lamp" shade,https://img.example.com/a.jpg\n2,,x\n')

    assert lines_of(error) == [2, 3, 3]
    assert "must end right after its closing quote" in error.problems[0].message


def test_unreadable_header_is_the_only_problem() -> None:
    problem = only_problem('"Serial Number,Product Name,Input Image Urls\n1,Lamp,x\n')

    assert problem.line == 1
    assert "never closed" in problem.message


# --- empty files -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data", [b"", b"   ", b"\r\n\n  \n", b"\xef\xbb\xbf", b"\xef\xbb\xbf\n", b",,\n , \n"]
)
def test_empty_file_is_one_problem(data: bytes) -> None:
    problem = only_problem(data)

    assert (problem.line, problem.column, problem.message) == (1, None, "file is empty")


def test_header_only_is_no_data_rows() -> None:
    problem = only_problem(HEADER)

    assert (problem.line, problem.message) == (1, "no data rows")


def test_header_followed_by_blank_rows_is_no_data_rows() -> None:
    assert only_problem(HEADER + "\n,,\n\n").message == "no data rows"


# --- row shape -------------------------------------------------------------------------------


def test_short_row_is_padded_to_the_header_width() -> None:
    table = parse(
        "Serial Number,Product Name,Input Image Urls,Brand,Notes\n"
        "1,Lamp,https://img.example.com/a.jpg\n"
    )

    assert table.rows[0].cells == ("1", "Lamp", "https://img.example.com/a.jpg", "", "")


def test_row_with_more_cells_than_the_header_is_a_problem() -> None:
    problem = only_problem(
        HEADER + "1,Lamp,https://img.example.com/a.jpg,https://img.example.com/b.jpg\n"
    )

    assert (problem.line, problem.column) == (2, None)
    assert problem.message == (
        "row has 4 cells but the header has 3; quote cells that contain commas"
    )


def test_empty_cells_beyond_the_header_are_dropped() -> None:
    table = parse(HEADER + "1,Lamp,https://img.example.com/a.jpg, ,\n")

    assert table.rows[0].cells == ("1", "Lamp", "https://img.example.com/a.jpg")
    assert table.rows[0].urls == ("https://img.example.com/a.jpg",)


# --- serial numbers and names ----------------------------------------------------------------


def test_serial_and_name_are_stripped_but_cells_are_kept_as_written() -> None:
    row = parse(HEADER + "  7 ,  Lamp  ,https://img.example.com/a.jpg\n").rows[0]

    assert (row.serial, row.product_name) == ("7", "Lamp")
    assert row.cells[:2] == ("  7 ", "  Lamp  ")


def test_empty_serial_number_is_a_problem() -> None:
    problem = only_problem(HEADER + "  ,Lamp,https://img.example.com/a.jpg\n")

    assert (problem.line, problem.column, problem.message) == (
        2,
        "Serial Number",
        "serial number is empty",
    )


def test_duplicate_serial_number_is_reported_on_the_later_line_naming_the_first() -> None:
    error = invalid(
        "S. No.,Product Name,Input Image Urls\n"
        "A1,Lamp,https://img.example.com/a.jpg\n"
        "B2,Desk,https://img.example.com/b.jpg\n"
        " A1 ,Sofa,https://img.example.com/c.jpg\n"
        "A1,Bed,https://img.example.com/d.jpg\n"
    )

    assert [(p.line, p.column, p.message) for p in error.problems] == [
        (4, "S. No.", "serial number 'A1' is a duplicate of line 2"),
        (5, "S. No.", "serial number 'A1' is a duplicate of line 2"),
    ]


def test_serial_numbers_differing_in_case_are_distinct() -> None:
    table = parse(
        HEADER + "a,Lamp,https://img.example.com/a.jpg\nA,Desk,https://img.example.com/b.jpg\n"
    )

    assert [row.serial for row in table.rows] == ["a", "A"]


def test_empty_product_name_is_a_problem() -> None:
    problem = only_problem(HEADER + '1," ",https://img.example.com/a.jpg\n')

    assert (problem.line, problem.column, problem.message) == (
        2,
        "Product Name",
        "product name is empty",
    )


# --- the URL cell ----------------------------------------------------------------------------


def test_urls_are_split_trimmed_and_kept_in_input_order() -> None:
    row = parse(
        HEADER + '1,Lamp," https://img.example.com/c.jpg ,https://img.example.com/a.jpg,'
        '\thttps://img.example.com/b.jpg"\n'
    ).rows[0]

    assert row.urls == (
        "https://img.example.com/c.jpg",
        "https://img.example.com/a.jpg",
        "https://img.example.com/b.jpg",
    )


@pytest.mark.parametrize("tail", [",", ", ", " ,  "])
def test_a_trailing_comma_is_tolerated(tail: str) -> None:
    row = parse(HEADER + f'1,Lamp,"https://img.example.com/a.jpg{tail}"\n').rows[0]

    assert row.urls == ("https://img.example.com/a.jpg",)


def test_an_empty_entry_between_urls_is_a_problem() -> None:
    problem = only_problem(
        HEADER + '1,Lamp,"https://img.example.com/a.jpg,,https://img.example.com/b.jpg"\n'
    )

    assert (problem.line, problem.column) == (2, "Input Image Urls")
    assert problem.message == "URL 2 is empty (two commas in a row)"


def test_two_trailing_commas_leave_an_empty_entry() -> None:
    problem = only_problem(HEADER + '1,Lamp,"https://img.example.com/a.jpg,,"\n')

    assert problem.message.startswith("URL 2 is empty")


@pytest.mark.parametrize("cell", ["", "   ", '","', '" , "'])
def test_a_row_without_a_url_is_a_problem(cell: str) -> None:
    problem = only_problem(HEADER + f"1,Lamp,{cell}\n")

    assert (problem.line, problem.column, problem.message) == (
        2,
        "Input Image Urls",
        "no image URL",
    )


def test_more_urls_than_allowed_is_a_problem() -> None:
    limits = Limits(max_urls_per_row=3)
    urls = ",".join(f"https://img.example.com/{n}.jpg" for n in range(4))

    problem = only_problem(HEADER + f'1,Lamp,"{urls}"\n', limits)

    assert (problem.line, problem.column) == (2, "Input Image Urls")
    assert problem.message == "row has 4 image URLs; at most 3 are allowed"


def test_exactly_the_allowed_number_of_urls_is_accepted() -> None:
    limits = Limits(max_urls_per_row=3)
    urls = ",".join(f"https://img.example.com/{n}.jpg" for n in range(3))

    assert len(parse(HEADER + f'1,Lamp,"{urls},"\n', limits).rows[0].urls) == 3


# --- each URL --------------------------------------------------------------------------------


def url_problem(url: str, limits: Limits = LIMITS) -> str:
    problem = only_problem(HEADER + f'1,Lamp,"https://img.example.com/ok.jpg,{url}"\n', limits)
    assert (problem.line, problem.column) == (2, "Input Image Urls")
    return problem.message


@pytest.mark.parametrize(
    "url",
    [
        "ftp://img.example.com/b.jpg",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "img.example.com/a.jpg",
        "//img.example.com/a.jpg",
        "/images/a.jpg",
        "https:img.example.com/a.jpg",
        "https:///a.jpg",
    ],
)
def test_a_url_that_is_not_absolute_http_or_https_is_a_problem(url: str) -> None:
    assert url_problem(url) == f"URL 2 is not an absolute http(s) URL: {url!r}"


@pytest.mark.parametrize(
    "url",
    [
        "HTTPS://IMG.EXAMPLE.COM/A.JPG",
        "Http://img.example.com/a.jpg",
        "http://img.example.com:8080/a.jpg?size=large#top",
        "https://bücher.example/a.jpg",
        "https://例え.jp/画像.jpg",
        "http://[2001:db8::1]/a.jpg",
        "http://192.0.2.7/a.jpg",
    ],
)
def test_absolute_http_urls_are_accepted_whatever_the_scheme_case_or_host_script(
    url: str,
) -> None:
    assert parse(HEADER + f"1,Lamp,{url}\n").rows[0].urls == (url,)


def test_a_url_with_a_port_but_no_host_is_a_problem() -> None:
    assert url_problem("https://:8080/a.jpg") == "URL 2 has no host name: 'https://:8080/a.jpg'"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:pw@img.example.com/a.jpg", "https://***@img.example.com/a.jpg"),
        ("https://user@img.example.com/a.jpg", "https://***@img.example.com/a.jpg"),
        ("https://:secret@img.example.com/a.jpg", "https://***@img.example.com/a.jpg"),
        ("HTTP://u:p%40ss@img.example.com/a.jpg", "HTTP://***@img.example.com/a.jpg"),
    ],
)
def test_a_url_with_credentials_is_a_problem_and_they_are_not_echoed(url: str, shown: str) -> None:
    message = url_problem(url)

    assert message.startswith("URL 2 carries credentials")
    assert message.endswith(f": {shown!r}")


@pytest.mark.parametrize(
    "url",
    ["ftp://admin:hunter2@img.example.com/a.jpg", "admin:hunter2@img.example.com/a.jpg"],
)
def test_credentials_are_masked_in_any_problem_message(url: str) -> None:
    message = url_problem(url)

    assert "hunter2" not in message
    assert "admin" not in message
    assert "***@img.example.com/a.jpg" in message


def test_a_url_longer_than_the_limit_is_a_problem_shown_shortened() -> None:
    limits = Limits(max_url_length=100)
    url = "https://img.example.com/" + "a" * 77 + ".jpg"

    message = url_problem(url, limits)

    assert message.startswith(
        "URL 2 is longer than 100 characters (105): 'https://img.example.com/aaa"
    )
    shown = message.split(": ", 1)[1]
    assert len(shown) <= 82  # 80 characters and the quotes around them
    assert shown.endswith("...'")


def test_a_url_exactly_at_the_length_limit_is_accepted() -> None:
    limits = Limits(max_url_length=100)
    url = "https://img.example.com/" + "a" * 72 + ".jpg"

    assert parse(HEADER + f"1,Lamp,{url}\n", limits).rows[0].urls == (url,)


@pytest.mark.parametrize(
    "url",
    [
        "https://img.example.com/my photo.jpg",
        "https://img.example.com/a\tb.jpg",
        "https://img.example.com/a\nb.jpg",
        "https://img.example.com/a\x00b.jpg",
        "https://img.example.com/a\x7fb.jpg",
        "https://img.example.com/a\u200bb.jpg",
        "https://img.example.com/a\u00a0b.jpg",
    ],
)
def test_a_url_with_whitespace_or_control_characters_is_a_problem(url: str) -> None:
    message = url_problem(url)

    assert message == (
        "URL 2 contains whitespace or control characters (write a space as %20): " + repr(url)
    )


@pytest.mark.parametrize(
    "url",
    [
        "https://img.example.com:99999/a.jpg",
        "https://img.example.com:http/a.jpg",
        "http://[2001:db8::1/a.jpg",
    ],
)
def test_a_url_with_an_invalid_port_or_address_is_a_problem(url: str) -> None:
    assert url_problem(url) == f"URL 2 has an invalid port or IPv6 address: {url!r}"


def test_every_bad_url_of_a_row_is_reported_with_its_position() -> None:
    error = invalid(
        HEADER + '1,Lamp,"ftp://img.example.com/a.jpg,https://img.example.com/b.jpg,'
        'https://u:p@img.example.com/c.jpg"\n'
    )

    assert [p.message.split(" ", 2)[:2] for p in error.problems] == [["URL", "1"], ["URL", "3"]]


# --- limits and reporting --------------------------------------------------------------------


def rows(count: int, start: int = 1) -> str:
    return "".join(
        f"{n},Product {n},https://img.example.com/{n}.jpg\n" for n in range(start, start + count)
    )


def test_exactly_the_allowed_number_of_rows_is_accepted() -> None:
    assert len(parse(HEADER + rows(5), Limits(max_rows=5)).rows) == 5


def test_too_many_rows_is_one_problem_on_the_first_line_beyond_the_limit() -> None:
    problem = only_problem(HEADER + "\n" + rows(8), Limits(max_rows=5))

    assert (problem.line, problem.column) == (8, None)
    assert problem.message == "too many rows: at most 5 data rows are allowed"


def test_rows_beyond_the_row_limit_are_not_examined() -> None:
    error = invalid(HEADER + ",Lamp,x\n" + rows(3) + ",,ftp://x\n" * 50, Limits(max_rows=3))

    assert [(p.line, p.message) for p in error.problems] == [
        (2, "serial number is empty"),
        (2, "URL 1 is not an absolute http(s) URL: 'x'"),
        (5, "too many rows: at most 3 data rows are allowed"),
    ]


def test_problems_from_every_rule_are_collected_in_one_pass_in_line_order() -> None:
    error = invalid(
        "S. No.,Product Name,Input Image Urls,Output Image Urls\n"
        "1,,https://img.example.com/a.jpg,\n"
        "1,Lamp,ftp://x/b.jpg,\n"
        "3,Desk,,\n"
        "4,Shelf,https://img.example.com/a.jpg,https://x/y.jpg,more\n"
        '5,Sofa,"https://img.example.com/a.jpg,,https://u:p@h/c.jpg"\n'
    )

    assert [(p.line, p.column) for p in error.problems] == [
        (1, "Output Image Urls"),
        (2, "Product Name"),
        (3, "S. No."),
        (3, "Input Image Urls"),
        (4, "Input Image Urls"),
        (5, None),
        (6, "Input Image Urls"),
        (6, "Input Image Urls"),
    ]
    assert error.total == 8


def test_at_most_100_problems_are_listed_but_all_are_counted() -> None:
    error = invalid(HEADER + "".join(f"{n},,https://img.example.com/a.jpg\n" for n in range(250)))

    assert len(error.problems) == MAX_REPORTED_PROBLEMS == 100
    assert error.total == 250
    assert lines_of(error) == list(range(2, 102))


def test_problem_as_dict_has_line_column_and_message() -> None:
    problem = only_problem(HEADER + "1,,https://img.example.com/a.jpg\n")

    assert problem.as_dict() == {
        "line": 2,
        "column": "Product Name",
        "message": "product name is empty",
    }


def test_rows_know_their_index_line_and_the_table_its_url_count() -> None:
    table = parse(
        HEADER + "1,Lamp,https://img.example.com/a.jpg\n\n"
        '2,Desk,"https://img.example.com/b.jpg,https://img.example.com/c.jpg"\n'
    )

    assert [(row.index, row.line) for row in table.rows] == [(0, 2), (1, 4)]
    assert table.url_count == 3


# --- robustness ------------------------------------------------------------------------------


def parses_or_explains(data: bytes) -> None:
    try:
        table = parse_product_csv(data, Limits(max_rows=50, max_urls_per_row=5))
    except CsvInvalid as error:
        assert error.problems
        assert error.total >= len(error.problems)
        assert all(p.line >= 1 for p in error.problems)
    else:
        assert table.rows
        assert all(row.urls for row in table.rows)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_arbitrary_bytes_parse_or_raise_csv_invalid(data: bytes) -> None:
    parses_or_explains(data)


_PIECES = st.sampled_from(
    [
        ",",
        '"',
        '""',
        "\n",
        "\r",
        "\r\n",
        " ",
        "\t",
        "\x00",
        "1",
        "Lamp",
        "=1+2",
        "https://img.example.com/a.jpg",
        "http://u:p@h/",
        "ftp://x",
        "https://[::1",
        "https://h:99999/",
        "@",
        "é",
        "\ufeff",
        "\u200b",
    ]
)
_CSVISH = st.lists(_PIECES, max_size=60).map("".join)
_HEADERS = st.sampled_from(["", HEADER, "S. No.,Product,Image Urls,Brand\r\n", "a,b\n"])


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(_HEADERS, _CSVISH, st.booleans())
def test_csv_like_text_parses_or_raises_csv_invalid(header: str, body: str, bom: bool) -> None:
    parses_or_explains((b"\xef\xbb\xbf" if bom else b"") + (header + body).encode("utf-8"))


# URLs the unparsed shortcut takes or only just misses, and others: every one must get the
# answer the full checks give.
_SCHEMES = st.sampled_from(["http", "https", "HTTP", "hTtPs", "ftp", "", "http:"])
_HOSTS = st.sampled_from(
    [
        "img.test",
        "IMG.Test",
        "a-b.c9",
        "127.0.0.1",
        "x",
        "-",
        ".",
        "",
        "[::1]",
        "[::1",
        "u@h",
        ":@h",
    ]
)
_PORTS = st.sampled_from(["", ":", ":0", ":80", ":65535", ":65536", ":99999", ":123456", ":x"])
_TAILS = st.text(alphabet="/?#@\\:%aZ9.~ \t\u200b\u00e9", max_size=12)


@settings(max_examples=1000)
@given(st.one_of(st.builds("{}://{}{}{}".format, _SCHEMES, _HOSTS, _PORTS, _TAILS), st.text()))
@example("http://u@h/a.jpg")
@example("https://h:65536/a.jpg")
@example("http://h/a b.jpg")
@example("http://h/\u200b.jpg")
def test_a_url_passed_without_parsing_gets_the_answer_parsing_gives(url: str) -> None:
    assert _url_problem(url, 2048) == _parsed_url_problem(url)
