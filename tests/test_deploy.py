"""deploy.sh: a complete, least-privilege deployment, printed by --dry-run without running
anything, and idempotent when the resources already exist.

The real gcloud, npx and python3 are replaced on PATH by a recorder, so no test ever talks to
Google Cloud; the dry run must not call even the recorder.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = {"PROJECT_ID": "demo-proj", "REGION": "europe-west1"}

RECORDER = """#!/usr/bin/env bash
# Records its command line; answers describe calls as if the resource existed when asked to.
printf '%s\\n' "$(basename "$0") $*" >> "$RECORD"
case " $* " in
  *" projects describe "*) echo 123456789012 ;;
  *" describe "*) [[ ${FAKE_EXISTS:-0} == 1 ]] || exit 1 ;;
esac
exit 0
"""


@pytest.fixture
def fake_path(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("gcloud", "npx"):
        script = bin_dir / tool
        script.write_text(RECORDER)
        script.chmod(0o755)
    record = tmp_path / "record.txt"
    record.touch()
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "RECORD": str(record)}


def deploy(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROOT / "deploy.sh"), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def commands(output: str) -> list[list[str]]:
    return [shlex.split(line[2:]) for line in output.splitlines() if line.startswith("+ ")]


def flag(command: list[str], name: str) -> str | None:
    for arg in command:
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
    return None


def test_deploy_script_passes_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is missing: `make install` installs it (Debian: shellcheck)"
    scripts = [ROOT / "deploy.sh", ROOT / "scripts" / "system-deps.sh", ROOT / ".ci" / "run"]
    result = subprocess.run(
        [shellcheck, *map(str, scripts)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout


def test_dry_run_runs_nothing(fake_path: dict[str, str]) -> None:
    result = deploy("--dry-run", env={**ENV, **fake_path})
    assert result.returncode == 0, result.stderr
    assert Path(fake_path["RECORD"]).read_text() == ""
    assert result.stdout.rstrip().endswith("dry run: nothing was run or changed")


def test_dry_run_prints_the_four_gen2_functions(fake_path: dict[str, str]) -> None:
    printed = commands(deploy("--dry-run", env={**ENV, **fake_path}).stdout)
    deploys = {c[3]: c for c in printed if c[:3] == ["gcloud", "functions", "deploy"]}
    assert set(deploys) == {"upload", "status", "process_image", "finalize"}
    for name, command in deploys.items():
        assert "--gen2" in command
        assert flag(command, "--runtime") == "python311"
        assert flag(command, "--region") == "europe-west1"
        assert flag(command, "--source") == f".build/functions/{name}"
        assert flag(command, "--memory") and flag(command, "--timeout")
        assert flag(command, "--concurrency") and flag(command, "--max-instances")
        assert (flag(command, "--service-account") or "").startswith("imgsvc-")
    # Public: the API. Never public: the task target and the trigger.
    assert "--allow-unauthenticated" in deploys["upload"]
    assert "--allow-unauthenticated" in deploys["status"]
    for internal in ("process_image", "finalize"):
        assert "--no-allow-unauthenticated" in deploys[internal]
        assert "--allow-unauthenticated" not in deploys[internal]
        assert flag(deploys[internal], "--ingress-settings") == "internal-only"
    settings = flag(deploys["upload"], "--set-env-vars") or ""
    env = dict(pair.split("=", 1) for pair in settings.split(","))
    assert env["TASK_BACKEND"] == "cloudtasks"
    assert env["PROCESS_IMAGE_URL"].startswith("https://process-image-")
    assert env["FINALIZE_URL"].startswith("https://finalize-")
    assert flag(deploys["finalize"], "--set-secrets") == (
        "WEBHOOK_SECRET=imgsvc-webhook-secret:latest"
    )
    assert flag(deploys["upload"], "--set-secrets") == "API_KEYS=imgsvc-api-keys:latest"


def test_the_finaliser_is_a_firestore_trigger_on_image_documents(
    fake_path: dict[str, str],
) -> None:
    printed = commands(deploy("--dry-run", env={**ENV, **fake_path}).stdout)
    (finalize,) = [c for c in printed if c[:4] == ["gcloud", "functions", "deploy", "finalize"]]
    filters = [a.split("=", 1)[1] for a in finalize if a.startswith("--trigger-event-filters=")]
    assert "type=google.cloud.firestore.document.v1.written" in filters
    assert "database=(default)" in filters
    assert (
        flag(finalize, "--trigger-event-filters-path-pattern")
        == "document=requests/{requestId}/tally/{shard}"
    )
    assert "--retry" in finalize
    assert flag(finalize, "--trigger-service-account") == (
        "imgsvc-trigger@demo-proj.iam.gserviceaccount.com"
    )


def test_queues_are_created_with_rate_limits_and_retries(fake_path: dict[str, str]) -> None:
    printed = commands(deploy("--dry-run", env={**ENV, **fake_path}).stdout)
    queues = {c[4]: c for c in printed if c[:4] == ["gcloud", "tasks", "queues", "create"]}
    assert set(queues) == {"fan-out", "images", "webhooks"}
    for command in queues.values():
        for name in ("--max-dispatches-per-second", "--max-concurrent-dispatches",
                     "--max-attempts", "--min-backoff", "--max-backoff"):  # fmt: skip
            assert flag(command, name), (name, command)


def test_only_the_task_and_trigger_identities_may_invoke_internal_functions(
    fake_path: dict[str, str],
) -> None:
    printed = commands(deploy("--dry-run", env={**ENV, **fake_path}).stdout)
    invokers = {
        (c[3], flag(c, "--member"))
        for c in printed
        if c[:3] == ["gcloud", "functions", "add-invoker-policy-binding"]
    }
    tasks = "serviceAccount:imgsvc-tasks@demo-proj.iam.gserviceaccount.com"
    trigger = "serviceAccount:imgsvc-trigger@demo-proj.iam.gserviceaccount.com"
    assert invokers == {("process_image", tasks), ("finalize", tasks), ("finalize", trigger)}
    roles = {
        (flag(c, "--member"), flag(c, "--role"))
        for c in printed
        if "add-iam-policy-binding" in c and c[1] != "functions"
    }
    # No one gets an owner, editor or admin role over the project.
    assert not any(re.search(r"owner|editor|\.admin$", role or "") for _, role in roles)
    assert ("allUsers", "roles/storage.objectViewer") in roles  # public output URLs
    status = "serviceAccount:imgsvc-status@demo-proj.iam.gserviceaccount.com"
    assert (status, "roles/datastore.viewer") in roles  # status only reads


def test_rate_limit_windows_expire_by_a_ttl_policy(fake_path: dict[str, str]) -> None:
    printed = commands(deploy("--dry-run", env={**ENV, **fake_path}).stdout)
    (ttl,) = [c for c in printed if c[:4] == ["gcloud", "firestore", "fields", "ttls"]]
    assert ttl[5] == "expires_at" and "--collection-group=rate_limits" in ttl
    assert "--enable-ttl" in ttl


def test_secrets_are_stored_but_never_printed(fake_path: dict[str, str]) -> None:
    secret = "whsec_c2VjcmV0LXZhbHVlLW5vdC10by1wcmludA=="
    result = deploy("--dry-run", env={**ENV, **fake_path, "WEBHOOK_SECRET": secret})
    assert secret not in result.stdout + result.stderr
    assert "gcloud secrets versions add imgsvc-webhook-secret --data-file=-" in result.stdout


def test_a_second_run_updates_instead_of_creating(fake_path: dict[str, str]) -> None:
    result = deploy(env={**ENV, **fake_path, "FAKE_EXISTS": "1"})
    assert result.returncode == 0, result.stderr
    ran = Path(fake_path["RECORD"]).read_text().splitlines()
    assert not [line for line in ran if re.search(r" (create|databases create) ", line)]
    assert sum(" tasks queues update " in f" {line} " for line in ran) == 3
    assert sum(line.startswith("gcloud functions deploy") for line in ran) == 4
    assert any(line.startswith("npx --yes firebase-tools@") for line in ran)
    staged = json.dumps(sorted(p.name for p in (ROOT / ".build" / "functions").iterdir()))
    assert staged == json.dumps(["finalize", "process_image", "status", "upload"])
