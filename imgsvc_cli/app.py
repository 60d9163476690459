"""The `imgsvc` commands: submit, status, wait, download, webhook resend."""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, NoReturn
from urllib.parse import unquote, urlsplit

import typer
from rich.console import Console
from rich.table import Table

from imgsvc_cli.client import DEFAULT_URL, ApiError, Client, Unreachable
from imgsvc_cli.exit_codes import HELP, Exit, outcome
from imgsvc_cli.progress import StillRunning, follow

app = typer.Typer(
    name="imgsvc",
    help="Upload a CSV of products and image URLs to imgsvc, follow it, fetch the results.",
    epilog=HELP,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
webhook_app = typer.Typer(help="The request's webhook message.", no_args_is_help=True)
app.add_typer(webhook_app, name="webhook")

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
RequestId = Annotated[
    str,
    typer.Argument(
        help="The request id that submit printed (one that starts with '-' goes after '--')."
    ),
]
Timeout = Annotated[
    float | None,
    typer.Option(help="Give up waiting after this many seconds (exit 7).", min=0.1),
]


@dataclass
class Context:
    client: Client
    url: str
    out: Console
    err: Console


@app.callback()
def options(
    ctx: typer.Context,
    url: Annotated[
        str, typer.Option(envvar="IMGSVC_URL", help="The service's base URL.")
    ] = DEFAULT_URL,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="IMGSVC_API_KEY", help="An API key (isk_...), when the service asks."),
    ] = None,
) -> None:
    # Progress and messages go to stderr, results to stdout: `id=$(imgsvc submit x.csv)`.
    ctx.obj = Context(Client(url, api_key), url.rstrip("/"), Console(), Console(stderr=True))


def run(ctx: typer.Context, command: Callable[[Context], Exit]) -> NoReturn:
    """Run a command and exit with the code its outcome means (exit_codes.py)."""
    context: Context = ctx.obj
    try:
        code = command(context)
    except ApiError as error:
        context.err.print(f"imgsvc: {error}", markup=False, highlight=False)
        code = Exit.USAGE if error.status == 400 else Exit.REFUSED
    except Unreachable as error:
        context.err.print(f"imgsvc: {error}", markup=False, highlight=False)
        code = Exit.UNREACHABLE
    except StillRunning as error:
        context.err.print(f"imgsvc: request {error} is still in progress", highlight=False)
        code = Exit.STILL_RUNNING
    except KeyboardInterrupt:
        code = Exit.INTERRUPTED
    except Exception:
        traceback.print_exc()
        code = Exit.UNEXPECTED
    raise typer.Exit(int(code))


def print_json(context: Context, document: object) -> None:
    context.out.print_json(json.dumps(document), highlight=False)


# ---- what a CSV's problems and a request's state look like --------------------------------


def problems_table(problems: list[dict[str, Any]]) -> Table:
    table = Table()
    table.add_column("Line", justify="right")
    table.add_column("Column")
    table.add_column("Problem", overflow="fold")
    for problem in problems:
        table.add_row(
            str(problem.get("line") or ""), problem.get("column") or "", problem["message"]
        )
    return table


def summary_table(status: dict[str, Any], page_url: str) -> Table:
    progress = status["progress"]
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row("Request", status["request_id"])
    table.add_row("Status", status["status"])
    table.add_row(
        "Images",
        f"{progress['total']} total, {progress['done']} done, {progress['failed']} failed, "
        f"{progress['pending']} pending",
    )
    if status.get("csv_url"):
        table.add_row("Output CSV", status["csv_url"])
    if status.get("error"):
        table.add_row("Error", f"{status['error'].get('code')}: {status['error'].get('message')}")
    table.add_row("Page", page_url)
    return table


def images_table(images: list[dict[str, Any]]) -> Table:
    table = Table()
    for name, justify in (("Row", "right"), ("#", "right"), ("Serial", "left"),
                          ("State", "left"), ("Quality", "left"), ("Bytes", "right"),
                          ("Output or error", "left")):  # fmt: skip
        table.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for image in images:
        if image["state"] == "done":
            quality = f"q{image['source_quality']} → q{image['output_quality']}"
            size = f"{image['source_bytes']} → {image['output_bytes']}"
            last = image["output_url"]
        else:
            quality = size = ""
            error = image.get("error") or {}
            last = f"{error.get('code')}: {error.get('message')}" if error else ""
        table.add_row(
            str(image["row"]), str(image["position"]), image["serial_number"], image["state"],
            quality, size, last,
        )  # fmt: skip
    return table


def page_url(context: Context, request_id: str) -> str:
    return f"{context.url}/requests/{request_id}"


# ---- checking a CSV before anything is sent ----------------------------------------------


def local_problems(data: bytes) -> tuple[list[dict[str, Any]], int]:
    """The CSV rules the service applies (shared/domain/csv_table.py), checked here first so
    that an invalid CSV is never sent. The service's own limits (rows, URLs per row, URL
    length) are its to apply: they are configurable there."""
    from shared.config import Limits
    from shared.domain.csv_table import CsvInvalid, parse_product_csv

    unlimited = Limits(max_rows=10**9, max_urls_per_row=10**6, max_url_length=10**6)
    try:
        parse_product_csv(data, unlimited)
    except CsvInvalid as invalid:
        return [p.as_dict() for p in invalid.problems], invalid.total
    return [], 0


# ---- downloading the results -------------------------------------------------------------


def file_name(url: str, fallback: str) -> str:
    """The object's own name (the one the output CSV shows), never a path."""
    name = unquote(PurePosixPath(urlsplit(url).path).name)
    if not name or name in (".", "..") or "/" in name or "\\" in name or name.startswith("."):
        return fallback
    return name


def download_results(context: Context, status: dict[str, Any], out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    client = context.client
    files: list[str] = []
    csv_path = out / file_name(status["csv_url"], "output.csv")
    client.download(status["csv_url"], csv_path)
    files.append(str(csv_path))
    images = [i for i in client.images(status["request_id"], state="done") if i.get("output_url")]
    for index, image in enumerate(images, 1):
        target = out / file_name(image["output_url"], f"{image['id']}.{image['output_format']}")
        client.download(image["output_url"], target)
        files.append(str(target))
        if not context.err.is_terminal and (index % 100 == 0 or index == len(images)):
            context.err.print(f"downloaded {index}/{len(images)} images", highlight=False)
    context.err.print(f"saved the output CSV and {len(images)} image(s) in {out}", highlight=False)
    return {"directory": str(out), "csv": str(csv_path), "images": len(images), "files": files}


def finish(
    context: Context, status: dict[str, Any], out: Path | None, as_json: bool
) -> tuple[Exit, dict[str, Any]]:
    """What waiting ends with: downloads when asked, the summary, the outcome's code."""
    result: dict[str, Any] = {"status": status, "page_url": page_url(context, status["request_id"])}
    if out is not None and status.get("csv_url"):
        result["downloaded"] = download_results(context, status, out)
    if not as_json:
        context.out.print(summary_table(status, result["page_url"]))
    return outcome(status), result


# ---- the commands ------------------------------------------------------------------------


@app.command()
def submit(
    ctx: typer.Context,
    csv: Annotated[Path, typer.Argument(help="The products CSV.", show_default=False)],
    webhook: Annotated[
        str | None, typer.Option(help="Where to POST the signed notification when it ends.")
    ] = None,
    wait: Annotated[bool, typer.Option(help="Follow the progress until the request ends.")] = False,
    out: Annotated[
        Path | None,
        typer.Option(help="Save the output CSV and every output image here (implies --wait)."),
    ] = None,
    timeout: Timeout = None,
    as_json: JsonOption = False,
) -> None:
    """Upload a CSV; with --wait follow it to the end, with --out fetch the results too.

    The CSV is checked first with the service's own rules: an invalid one is listed problem
    by problem (line, column) and nothing is sent.
    """

    def command(context: Context) -> Exit:
        try:
            data = csv.read_bytes()
        except OSError as exc:
            context.err.print(f"imgsvc: cannot read {csv}: {exc.strerror}", highlight=False)
            return Exit.USAGE
        problems, total = local_problems(data)
        if not problems:
            try:
                accepted = context.client.upload(csv, webhook)
            except ApiError as error:
                if error.code != "invalid_csv":
                    raise
                problems, total = error.details, int(error.body["error"].get("total_problems", 0))
        if problems:
            headline = f"{csv} has {total} problem(s); nothing was uploaded"
            if as_json:
                error = {"code": "invalid_csv", "message": headline, "details": problems}
                print_json(context, {"error": {**error, "total_problems": total}})
            else:
                context.err.print(headline, highlight=False, markup=False, soft_wrap=True)
                context.err.print(problems_table(problems))
            return Exit.USAGE
        request_id = accepted["request_id"]
        context.err.print(
            f"accepted {request_id}: {accepted['rows']} row(s), {accepted['images']} image(s); "
            f"follow it at {page_url(context, request_id)}",
            highlight=False,
        )
        if not (wait or out):
            if as_json:
                print_json(context, {**accepted, "page_url": page_url(context, request_id)})
            else:
                context.out.print(request_id, highlight=False)
            return Exit.OK
        status = follow(context.client, request_id, context.err, timeout=timeout)
        code, result = finish(context, status, out, as_json)
        if as_json:
            print_json(context, {**accepted, **result})
        return code

    run(ctx, command)


@app.command()
def status(
    ctx: typer.Context,
    request_id: RequestId,
    details: Annotated[bool, typer.Option(help="List every image too.")] = False,
    failed: Annotated[bool, typer.Option(help="List the failed images (and why).")] = False,
    state: Annotated[
        str | None, typer.Option(help="List the images in this state: pending, done or failed.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Where a request stands; exits 0 whatever that is (see wait for an outcome's code)."""

    def command(context: Context) -> Exit:
        wanted = "failed" if failed else state
        if wanted not in (None, "pending", "done", "failed"):
            context.err.print("imgsvc: --state is pending, done or failed", highlight=False)
            return Exit.USAGE
        current = context.client.status(request_id)
        images = None
        if details or wanted:
            images = list(context.client.images(request_id, state=wanted))
        if as_json:
            print_json(context, {**current, **({"images": images} if images is not None else {})})
            return Exit.OK
        context.out.print(summary_table(current, page_url(context, request_id)))
        if images is not None:
            context.out.print(images_table(images) if images else "no images to list")
        return Exit.OK

    run(ctx, command)


@app.command("wait")
def wait_command(
    ctx: typer.Context, request_id: RequestId, timeout: Timeout = None, as_json: JsonOption = False
) -> None:
    """Follow a request until it ends; the exit code says how it ended."""

    def command(context: Context) -> Exit:
        final = follow(context.client, request_id, context.err, timeout=timeout)
        code, result = finish(context, final, None, as_json)
        if as_json:
            print_json(context, result)
        return code

    run(ctx, command)


@app.command()
def download(
    ctx: typer.Context,
    request_id: RequestId,
    out: Annotated[Path, typer.Option(help="The folder to save into.", show_default=False)],
    as_json: JsonOption = False,
) -> None:
    """Save a finished request's output CSV and every output image, by their own names."""

    def command(context: Context) -> Exit:
        current = context.client.status(request_id)
        if current["status"] == "in progress":
            context.err.print(
                f"imgsvc: {request_id} is still in progress; `imgsvc wait {request_id}` first",
                highlight=False,
            )
            return Exit.STILL_RUNNING
        code, result = finish(context, current, out, as_json)
        if as_json:
            print_json(context, result)
        return code

    run(ctx, command)


@webhook_app.command()
def resend(ctx: typer.Context, request_id: RequestId, as_json: JsonOption = False) -> None:
    """Send the webhook message again (same webhook-id), once the request has ended."""

    def command(context: Context) -> Exit:
        answer = context.client.resend_webhook(request_id)
        if as_json:
            print_json(context, answer)
        else:
            hook = answer["webhook"]
            context.out.print(
                f"sending {hook['message_id']} to {hook['url']} again "
                f"(series {len(hook['earlier_series']) + 1})",
                highlight=False,
                markup=False,
            )
        return Exit.OK

    run(ctx, command)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(int(Exit.INTERRUPTED))
