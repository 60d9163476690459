"""How units of work travel through a task queue (JSON, the same for Celery and Cloud Tasks)."""

from __future__ import annotations

from typing import Any

from shared.domain.model import ImageJob, ImageSlice


def slice_to_payload(image_slice: ImageSlice) -> dict[str, Any]:
    # Compact rows instead of objects: a slice of 500 jobs stays far below Cloud Tasks'
    # 1 MB task limit even with long URLs.
    return {
        "request_id": image_slice.request_id,
        "index": image_slice.index,
        "jobs": [[j.image_id, j.row, j.position, j.serial, j.url] for j in image_slice.jobs],
    }


def slice_from_payload(payload: dict[str, Any]) -> ImageSlice:
    request_id = str(payload["request_id"])
    return ImageSlice(
        request_id=request_id,
        index=int(payload["index"]),
        jobs=tuple(
            ImageJob(
                request_id=request_id,
                image_id=str(image_id),
                row=int(row),
                position=int(position),
                serial=str(serial),
                url=str(url),
            )
            for image_id, row, position, serial, url in payload["jobs"]
        ),
    )
