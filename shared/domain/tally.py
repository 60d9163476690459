"""How a request's progress is counted without a hot document, and without reading its images.

A request's images are dealt round-robin, in input order, to `shards` tally documents
(`requests/{id}/tally/{k}`): image number n (0-based, in input order) belongs to shard
n mod shards. Each tally keeps how many of its images are left unsettled, and the done and
failed counts and bytes of the settled ones; the write that records an image's outcome updates
its tally in the same commit, so the counts are exact. Images are processed roughly in input
order, so consecutive outcomes land on different tallies: with 128 shards, a request settling
at the images queue's full rate (100 a second, deploy.sh) writes each tally less than once a
second, whatever its size.

What this buys: the status of a running request reads its tallies (at most 128 documents)
instead of counting its images; the finaliser learns that a shard has just settled from the
very write that settled it, and asks only whether any shard is left (one query over at most
128 documents); the Firestore trigger watches the tallies, one event per image, and needs no
read at all for most of them.
"""

from __future__ import annotations

from typing import Final

# Enough shards that the images queue's full rate writes each less than once a second.
TALLY_SHARDS: Final = 128
# ... but no fewer images than this to a tally. With a tally per image, every outcome of a
# small request settled a tally, and each settling makes the finaliser look (a task and a
# query locally, a query and a read in production): make bench measured a request of 60
# images 13% faster with 8 tallies than with 60. A small request is over in seconds, so its
# tallies' few writes a second do not last.
IMAGES_PER_TALLY: Final = 8


def shard_count(total_images: int) -> int:
    """Tallies of a request of `total_images` images: never one without images."""
    return max(1, min(TALLY_SHARDS, -(-total_images // IMAGES_PER_TALLY)))


def shard_of(ordinal: int, shards: int) -> int:
    """The tally of the image at `ordinal` in input order."""
    return ordinal % shards


def shard_totals(total_images: int) -> list[int]:
    """How many images each tally of the request counts."""
    shards = shard_count(total_images)
    base, extra = divmod(total_images, shards)
    return [base + (1 if k < extra else 0) for k in range(shards)]
