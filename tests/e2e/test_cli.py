"""The `imgsvc` command line as a person or a script runs it, against the live local stack:
`.venv/bin/imgsvc` in a process of its own, with no terminal (progress as periodic lines on
stderr) and under a pseudo-terminal of a given size (a live progress bar that fits it).
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
import requests

from local_profile import sample_images
from local_profile.image_host import ImageHost
from local_profile.processes import free_port
from local_profile.recipes import Stack
from shared.domain.access import new_api_key
from tests.e2e.helpers import wait_for, wait_until_finished, webhooks_for

pytestmark = pytest.mark.e2e

IMGSVC = Path(sys.executable).with_name("imgsvc")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


@pytest.fixture(scope="module")
def image_host() -> Iterator[ImageHost]:
    files = {
        f"/p{n}.jpg": (sample_images.photo_jpeg(480, 360, 60 + 10 * n, seed=n), "image/jpeg")
        for n in range(4)
    }
    files["/logo.png"] = (sample_images.transparent_png(120, 90, seed=5), "image/png")
    # A far-away host: each image takes a moment, so progress is seen moving.
    with ImageHost(files, latency=0.2, hold={"/held.jpg"}) as host:
        host.files["/held.jpg"] = files["/p0.jpg"]
        yield host


def products(host: ImageHost, *, broken: bool) -> str:
    rows = [
        f'1,Chair,"{host.url("/p0.jpg")},{host.url("/p1.jpg")}"',
        f"2,Lamp,{host.url('/logo.png')}",
        f'3,Desk,"{host.url("/p2.jpg")},{host.url("/p3.jpg")}"',
    ]
    if broken:
        rows.append(f"4,Gone,{host.url('/missing.jpg')}")
    return "Serial Number,Product Name,Input Image Urls\n" + "\n".join(rows) + "\n"


def imgsvc(
    gateway: str, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(IMGSVC), "--url", gateway, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "IMGSVC_API_KEY": "", **(env or {})},
        check=False,
    )


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_submit_wait_out_leaves_the_csv_and_every_image_and_exits_3_for_a_failed_one(
    gateway_url: str, image_host: ImageHost, tmp_path: Path
) -> None:
    results = tmp_path / "results"
    csv_path = write(tmp_path, "products.csv", products(image_host, broken=True))
    run = imgsvc(gateway_url, "submit", str(csv_path), "--wait", "--out", str(results))
    assert run.returncode == 3, run.stderr  # completed, with a failed image
    # No terminal: the progress came as plain lines on stderr, the last one at 100%.
    lines = [line for line in run.stderr.splitlines() if "img/s" in line]
    assert lines and "completed, 100% (6/6): 5 done, 1 failed, 0 pending" in lines[-1]
    assert "\x1b[" not in run.stderr
    assert "completed" in run.stdout and "5 done, 1 failed" in run.stdout

    rows = list(csv.reader(io.StringIO((results / "output.csv").read_text(encoding="utf-8-sig"))))
    assert rows[0][-1] == "Output Image Urls"
    named = [url.rsplit("/", 1)[-1] for row in rows[1:] for url in row[-1].split(",") if url]
    # Every output image the CSV names is in the folder, under that name, and nothing else.
    assert sorted(named) == sorted(p.name for p in results.iterdir() if p.name != "output.csv")
    assert sorted(named) == ["1-1.jpg", "1-2.jpg", "2-1.webp", "3-1.jpg", "3-2.jpg"]
    assert (results / "1-1.jpg").read_bytes()[:2] == b"\xff\xd8"
    assert rows[4][-1] == ""  # the failed image's slot


def test_all_images_done_exits_0_and_json_is_one_document_on_stdout(
    gateway_url: str, image_host: ImageHost, tmp_path: Path
) -> None:
    csv_path = write(tmp_path, "products.csv", products(image_host, broken=False))
    run = imgsvc(gateway_url, "submit", str(csv_path), "--wait", "--json")
    assert run.returncode == 0, run.stderr
    document = json.loads(run.stdout)
    assert document["status"]["status"] == "completed"
    assert document["status"]["progress"] == {"total": 5, "done": 5, "failed": 0, "pending": 0}
    assert document["page_url"] == f"{gateway_url}/requests/{document['request_id']}"


def test_an_invalid_csv_is_listed_by_line_and_column_and_nothing_is_sent(
    tmp_path: Path,
) -> None:
    received: list[str] = []

    class Recorder(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(self.path)
            self.send_response(500)
            self.end_headers()

        do_GET = do_POST

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    bad = write(
        tmp_path,
        "bad.csv",
        "Serial Number,Product Name,Input Image Urls\n"
        "1,,https://203.0.113.5/a.jpg\n"
        "1,Lamp,ftp://203.0.113.5/b.jpg\n"
        "3,Desk,\n",
    )
    try:
        run = imgsvc(f"http://127.0.0.1:{server.server_address[1]}", "submit", str(bad))
    finally:
        server.shutdown()
        server.server_close()
    assert run.returncode == 2
    assert received == []  # nothing was uploaded, not even tried
    table = run.stderr
    assert "4 problem(s); nothing was uploaded" in table
    for line, column in [("2", "Product Name"), ("3", "Serial Number"),
                         ("3", "Input Image Urls"), ("4", "Input Image Urls")]:  # fmt: skip
        assert re.search(rf"│\s+{line} │ {column}", table), table

    as_json = imgsvc("http://127.0.0.1:9", "submit", str(bad), "--json")
    assert as_json.returncode == 2
    error = json.loads(as_json.stdout)["error"]
    assert error["code"] == "invalid_csv" and error["total_problems"] == 4
    assert [(d["line"], d["column"]) for d in error["details"]][:2] == [
        (2, "Product Name"),
        (3, "Serial Number"),
    ]


def test_an_unreachable_service_exits_5_and_a_bad_id_2_and_an_unknown_one_6(
    gateway_url: str,
) -> None:
    nobody = imgsvc(f"http://127.0.0.1:{free_port()}", "status", "A" * 22)
    assert nobody.returncode == 5 and "did not answer" in nobody.stderr
    assert imgsvc(gateway_url, "status", "not-an-id").returncode == 2
    unknown = imgsvc(gateway_url, "status", "A" * 22)
    assert unknown.returncode == 6 and "no request" in unknown.stderr
    # An id that starts with '-' (as the service's ids did, one in 64) after '--'.
    dashed = imgsvc(gateway_url, "status", "--", "-" + "A" * 21)
    assert dashed.returncode == 6 and "no request" in dashed.stderr


def test_status_failed_lists_only_the_failed_images_with_their_errors(
    gateway_url: str, image_host: ImageHost, tmp_path: Path
) -> None:
    csv_path = write(tmp_path, "products.csv", products(image_host, broken=True))
    request_id = imgsvc(gateway_url, "submit", str(csv_path)).stdout.strip()
    wait_until_finished(gateway_url, request_id)
    run = imgsvc(gateway_url, "status", request_id, "--failed", "--json")
    assert run.returncode == 0, run.stderr
    failed = json.loads(run.stdout)["images"]
    assert [(i["row"], i["state"], i["error"]["code"]) for i in failed] == [
        (4, "failed", "http_error")
    ]
    table = imgsvc(gateway_url, "status", request_id, "--failed")
    assert "http_error" in table.stdout and "p0.jpg" not in table.stdout


def test_wait_times_out_with_7_and_download_of_an_unfinished_request_is_7(
    gateway_url: str, image_host: ImageHost, tmp_path: Path
) -> None:
    held = write(
        tmp_path,
        "held.csv",
        f"Serial Number,Product Name,Input Image Urls\n1,Held,{image_host.url('/held.jpg')}\n",
    )
    request_id = imgsvc(gateway_url, "submit", str(held)).stdout.strip()
    assert imgsvc(gateway_url, "wait", request_id, "--timeout", "1").returncode == 7
    assert imgsvc(gateway_url, "download", request_id, "--out", str(tmp_path / "x")).returncode == 7
    image_host.release()
    assert imgsvc(gateway_url, "wait", request_id).returncode == 0
    assert imgsvc(gateway_url, "download", request_id, "--out", str(tmp_path / "y")).returncode == 0
    assert sorted(p.name for p in (tmp_path / "y").iterdir()) == ["1-1.jpg", "output.csv"]


def test_webhook_resend_sends_the_same_message_again_once_the_request_ended(
    gateway_url: str, image_host: ImageHost, tmp_path: Path
) -> None:
    csv_path = write(tmp_path, "products.csv", products(image_host, broken=False))
    run = imgsvc(gateway_url, "submit", str(csv_path), "--webhook", f"{gateway_url}/webhook")
    request_id = run.stdout.strip()
    early = imgsvc(gateway_url, "webhook", "resend", request_id)
    assert early.returncode in (0, 6)  # 6 (409) while it runs; 0 if it was already over
    wait_until_finished(gateway_url, request_id)
    wait_for(lambda: webhooks_for(gateway_url, request_id), 30, "the first webhook")

    def delivered() -> bool:
        status = requests.get(f"{gateway_url}/status/{request_id}?details=1", timeout=10).json()
        return bool(status["webhook"]["state"] == "delivered")

    wait_for(delivered, 30, "the first series to end")
    before = len(webhooks_for(gateway_url, request_id))
    resent = imgsvc(gateway_url, "webhook", "resend", request_id, "--json")
    assert resent.returncode == 0, resent.stderr
    assert json.loads(resent.stdout)["webhook"]["earlier_series"][-1]["state"] == "delivered"
    messages = wait_for(
        lambda: (m := webhooks_for(gateway_url, request_id)) and len(m) > before and m,
        30,
        "the resent webhook",
    )
    assert {m["webhook_id"] for m in messages} == {f"msg_{request_id}"}
    assert messages[-1]["body"] == messages[0]["body"] and messages[-1]["verified"] is True


def test_an_api_key_from_the_environment_is_sent_and_a_wrong_one_is_refused_with_6(
    live: Stack, image_host: ImageHost, tmp_path: Path
) -> None:
    key = new_api_key("cli")
    url = live.start_gateway(
        name="gateway-cli", extra_env={"API_KEYS": key.entry, "UPLOAD_RATE_LIMIT": "off"}
    )
    try:
        csv_path = write(tmp_path, "products.csv", products(image_host, broken=False))
        refused = imgsvc(url, "submit", str(csv_path), env={"IMGSVC_API_KEY": "isk_wrong"})
        assert refused.returncode == 6 and "401" in refused.stderr
        run = imgsvc(url, "submit", str(csv_path), "--wait", env={"IMGSVC_API_KEY": key.key})
        assert run.returncode == 0, run.stderr
        request_id = re.search(r"accepted (\S+):", run.stderr).group(1)  # type: ignore[union-attr]
        # Someone without the key learns nothing about it.
        assert imgsvc(url, "status", request_id).returncode == 6
    finally:
        live.stop("gateway-cli")


def run_in_terminal(
    argv: list[str], columns: int, rows: int, timeout: float = 120
) -> tuple[int, str]:
    """Run `argv` with a pseudo-terminal of `columns` x `rows` as its stdout and stderr."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "IMGSVC_API_KEY": ""}
    for variable in ("COLUMNS", "LINES", "NO_COLOR", "CI", "TERM_PROGRAM"):
        env.pop(variable, None)
    process = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower, env=env
    )
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if ready:
            try:
                data = os.read(leader, 65536)
            except OSError:
                break  # the terminal closed: the process is gone
            if not data:
                break
            chunks.append(data)
        elif process.poll() is not None:
            break
    os.close(leader)
    code = process.wait(timeout=10)
    return code, b"".join(chunks).decode("utf-8", errors="replace")


def test_on_a_terminal_the_progress_bar_fits_its_width_and_reaches_100(
    gateway_url: str, image_host: ImageHost, tmp_path: Path
) -> None:
    csv_path = write(tmp_path, "products.csv", products(image_host, broken=True))
    code, screen = run_in_terminal(
        [str(IMGSVC), "--url", gateway_url, "submit", str(csv_path), "--wait"], columns=90, rows=30
    )
    assert code == 3, screen
    assert "\x1b[" in screen  # a live display, redrawn in place
    # Each redraw starts over at the line's beginning: every one is a line of the screen.
    text = ANSI.sub("", screen).replace("\r\n", "\n").replace("\r", "\n")
    bar_lines = [line for line in text.splitlines() if "img/s" in line]
    assert bar_lines, text
    final = bar_lines[-1]
    assert "100%" in final and "6/6" in final and "5 done" in final and "1 failed" in final
    assert "━" in final  # Rich's bar
    assert all(len(line) <= 90 for line in text.splitlines()), text


class AnswerLostOnce(BaseHTTPRequestHandler):
    """In front of the gateway: the first upload reaches it, but its answer never reaches the
    client (the connection is cut), as when a proxy times out; everything else passes."""

    gateway: ClassVar[str] = ""
    answers: ClassVar[list[dict[str, object]]] = []  # what the gateway answered each upload
    keys: ClassVar[list[str | None]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        headers = {
            k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")
        }
        upstream = requests.post(self.gateway + self.path, data=body, headers=headers, timeout=30)
        type(self).answers.append(upstream.json())
        type(self).keys.append(self.headers.get("Idempotency-Key"))
        if len(type(self).answers) == 1:
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.send_response(upstream.status_code)
        for name in ("Content-Type", "Location", "Idempotent-Replayed"):
            if name in upstream.headers:
                self.send_header(name, upstream.headers[name])
        self.send_header("Content-Length", str(len(upstream.content)))
        self.end_headers()
        self.wfile.write(upstream.content)

    def log_message(self, *args: object) -> None:
        return


def test_an_upload_whose_answer_was_lost_is_sent_again_and_makes_one_request(
    gateway_url: str, image_host: ImageHost, tmp_path: Path
) -> None:
    AnswerLostOnce.gateway, AnswerLostOnce.answers, AnswerLostOnce.keys = gateway_url, [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), AnswerLostOnce)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        front = f"http://127.0.0.1:{server.server_port}"
        csv_path = write(tmp_path, "products.csv", products(image_host, broken=False))
        run = imgsvc(front, "submit", str(csv_path), "--json")
    finally:
        server.shutdown()
        server.server_close()
    assert run.returncode == 0, run.stderr
    first, again = AnswerLostOnce.answers
    # Sent twice under one key; the second answer is the first request, not a new one.
    assert AnswerLostOnce.keys[0] and AnswerLostOnce.keys[0] == AnswerLostOnce.keys[1]
    assert first["request_id"] == again["request_id"] == json.loads(run.stdout)["request_id"]
    status = wait_until_finished(gateway_url, str(first["request_id"]))
    assert status["progress"]["total"] == 5
