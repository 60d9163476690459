"""Where a request's files live in Cloud Storage.

    <uploads bucket>/uploads/<request_id>/input.csv         the CSV as uploaded (private)
    <outputs bucket>/outputs/<request_id>/<serial>-<n>.<ext> each output image, n from 1
    <outputs bucket>/outputs/<request_id>/output.csv        the output CSV

Every name is fixed by the request and the image, never by the attempt: a retried or
duplicated task writes the same bytes to the same name, so nothing is stored twice.
"""

from __future__ import annotations

import re

from shared.domain.model import ImageRecord

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def upload_path(request_id: str) -> str:
    return f"uploads/{request_id}/input.csv"


def output_image_path(record: ImageRecord, extension: str) -> str:
    """Serials with characters unsafe in a URL path are slugged and suffixed with their row,
    so that two slugs can never collide (`A_1_x~r3-1.jpg`)."""
    slug = _UNSAFE.sub("_", record.serial)[:64]
    name = slug if slug == record.serial else f"{slug}~r{record.row + 1}"
    return f"outputs/{record.request_id}/{name}-{record.position + 1}.{extension}"


def output_csv_path(request_id: str) -> str:
    return f"outputs/{request_id}/output.csv"
