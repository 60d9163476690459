"""`make demo`: the whole job on the local profile, end to end, in one command.

Serves a few generated images from a loopback server, uploads samples/demo.csv (which has the
awkward parts of real CSVs: BOM, CRLF, quoted commas, an `S. No.` header, a passthrough column,
a formula-looking name and a broken link between two good ones), follows the progress, and
prints the status, the output CSV and the webhook that arrived.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import requests

from local_profile import sample_images
from local_profile.image_host import ImageHost
from local_profile.processes import ROOT, StackError
from local_profile.recipes import Stack
from local_profile.stack import down, up

TEMPLATE = ROOT / "samples" / "demo.csv"


def demo_images() -> dict[str, tuple[bytes, str]]:
    return {
        "/chair-front.jpg": (sample_images.photo_jpeg(1200, 900, 90, seed=1), "image/jpeg"),
        "/chair-side.jpg": (sample_images.photo_jpeg(900, 1200, 75, seed=2), "image/jpeg"),
        "/lamp.png": (sample_images.transparent_png(600, 600, seed=3), "image/png"),
        "/table-rotated.jpg": (sample_images.rotated_jpeg(800, 600, 85), "image/jpeg"),
    }


def api_headers() -> dict[str, str]:
    """With API_KEYS set on the stack, the demo's client needs a key of its own: IMGSVC_API_KEY
    (one that `make apikey` printed)."""
    key = os.environ.get("IMGSVC_API_KEY")
    return {"Authorization": f"Bearer {key}"} if key else {}


def follow(base: str, request_id: str, timeout: float = 180) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        status = requests.get(
            f"{base}/status/{request_id}", headers=api_headers(), timeout=10
        ).json()
        progress = status["progress"]
        line = (
            f"  {status['status']:<12} {progress['done']} done, {progress['failed']} failed, "
            f"{progress['pending']} pending"
        )
        if line != last:
            print(line)
            last = line
        if status["status"] != "in progress":
            return dict(status)
        time.sleep(0.3)
    raise TimeoutError(f"request {request_id} did not finish in {timeout:.0f}s")


def wait_for_webhook(base: str, request_id: str, timeout: float = 30) -> dict[str, object] | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in requests.get(f"{base}/webhook", timeout=10).json()["received"]:
            if request_id in message["body"]:
                return dict(message)
        time.sleep(0.3)
    return None


def run(base: str) -> int:
    with ImageHost(demo_images()) as images:
        csv_bytes = TEMPLATE.read_bytes().replace(b"{images}", images.base_url.encode())
        print(f"\n== Uploading {TEMPLATE.relative_to(ROOT)} (images served from {images.base_url})")
        answer = requests.post(
            f"{base}/upload",
            files={"file": ("demo.csv", csv_bytes, "text/csv")},
            data={"webhook_url": f"{base}/webhook"},
            headers=api_headers(),
            timeout=30,
        )
        print(f"  HTTP {answer.status_code} {answer.text}")
        if answer.status_code != 202:
            return 1
        request_id = answer.json()["request_id"]
        print(f"\n== Progress of {request_id}")
        status = follow(base, request_id)

    detailed = requests.get(
        f"{base}/status/{request_id}?details=1", headers=api_headers(), timeout=10
    ).json()
    print("\n== Status (GET /status/{id})")
    print(json.dumps(status, indent=2))
    print("\n== Images (GET /status/{id}?details=1)")
    for image in detailed["images"]:
        outcome = (
            f"{image['source_format']} q{image['source_quality']} -> {image['output_format']} "
            f"q{image['output_quality']}, {image['source_bytes']} -> {image['output_bytes']} bytes"
            if image["state"] == "done"
            else f"{image['error']['code']}: {image['error']['message']}"
        )
        print(f"  row {image['row']} #{image['position']} {image['state']:<6} {outcome}")
    if "csv_url" in status:
        print(f"\n== Output CSV ({status['csv_url']})")
        print(requests.get(str(status["csv_url"]), timeout=10).content.decode("utf-8-sig"))
    message = wait_for_webhook(base, request_id)
    print("== Webhook received by the reference receiver (POST /webhook)")
    print(json.dumps(message, indent=2) if message else "  none arrived within 30 s")
    return 0 if status["status"] == "completed" and message and message["verified"] else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run-dir", type=Path, default=ROOT / ".run")
    parser.add_argument("--profile", choices=["local", "cloud"], default="local")
    args = parser.parse_args()
    already_up = Stack.load(args.run_dir) is not None
    try:
        print(
            "== Starting the local stack (Firestore and Storage emulators, Redis, Celery, gateway)"
        )
        stack = up(args.run_dir, os.environ, args.profile)
    except StackError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    try:
        return run(stack.base_url)
    finally:
        if not already_up:
            down(args.run_dir)
            print("\n(stopped the stack the demo started; `make up` keeps one running)")


if __name__ == "__main__":
    sys.exit(main())
