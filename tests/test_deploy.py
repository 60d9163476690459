"""deploy.sh: a complete, least-privilege deployment, printed by --dry-run without running
anything, idempotent when the resources already exist, and careful where a first real deploy
would fail: the region of the Hosting rewrites, where the Firestore database is, Firebase not
yet added, secrets without a version, the build's service account, functions-framework's
threads, Hosting's 60 s, and what Google applies only eventually.

The real gcloud and npx are replaced on PATH by a recorder that answers as the test tells it
(`Fake`), so no test ever talks to Google Cloud; the dry run must not call even the recorder.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from local_profile.hosting_router import rewrites
from scripts.stage_firebase import rewrite_target

ROOT = Path(__file__).resolve().parents[1]
SECRETS = {
    "WEBHOOK_SECRET": "whsec_c2VjcmV0LXZhbHVlLW5vdC10by1wcmludA==",
    "API_KEYS": "acme:" + "ab" * 32,
}
ENV = {"PROJECT_ID": "demo-proj", "REGION": "europe-west1", **SECRETS}
TASKS = "imgsvc-tasks@demo-proj.iam.gserviceaccount.com"
TRIGGER = "imgsvc-trigger@demo-proj.iam.gserviceaccount.com"
BUILD = "imgsvc-build@demo-proj.iam.gserviceaccount.com"
SCHEDULER = "imgsvc-scheduler@demo-proj.iam.gserviceaccount.com"

# Answers in order of the rules; the first whose words all occur in the command line wins.
RECORDER = """#!{python}
import json, os, sys
from pathlib import Path

line = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
with open(os.environ["RECORD"], "a") as record:
    record.write(line + "\\n")
counts = Path(os.environ["RECORD"] + ".counts")
seen = json.loads(counts.read_text()) if counts.exists() else {{}}
for index, rule in enumerate(json.loads(os.environ["FAKE_RULES"])):
    if all(word in line for word in rule["when"]):
        seen[str(index)] = seen.get(str(index), 0) + 1
        counts.write_text(json.dumps(seen))
        if seen[str(index)] <= rule.get("fail_first", 0):
            sys.stderr.write(rule.get("failure", "ERROR: failed") + "\\n")
            sys.exit(1)
        sys.stdout.write(rule.get("stdout", ""))
        sys.stderr.write(rule.get("stderr", ""))
        sys.exit(rule.get("exit", 0))
sys.exit(0)
"""
NOT_FOUND = "ERROR: (gcloud) NOT_FOUND: Requested entity was not found."


@dataclass
class Fake:
    """How the recorded gcloud and npx answer. By default the project is new: every describe,
    list and access answers NOT_FOUND (storage's own way for buckets)."""

    exists: bool = False
    database: str | None = None  # "location TYPE", as describe --format prints it
    firebase_projects: list[str] = field(default_factory=list)
    secret_versions: bool = True
    secret_values: dict[str, str] = field(default_factory=dict)
    rules: list[dict[str, object]] = field(default_factory=list)

    def all_rules(self) -> list[dict[str, object]]:
        rules = list(self.rules)
        rules.append({"when": ["projects describe"], "stdout": "123456789012\n"})
        listed = [{"projectId": p} for p in self.firebase_projects]
        rules.append(
            {
                "when": ["projects:list"],
                "stdout": json.dumps({"status": "success", "result": listed}),
            }
        )
        database = self.database or ("europe-west1 FIRESTORE_NATIVE" if self.exists else None)
        rules.append(_answer(["firestore databases describe"], database))
        for name, value in self.secret_values.items():
            rules.append(_answer(["secrets versions access", name], value if self.exists else None))
        rules.append(
            _answer(
                ["secrets versions list"],
                "projects/1/secrets/s/versions/1\n" if self.secret_versions else "",
            )
        )
        rules.append({"when": ["storage buckets describe"], **_missing(self.exists, storage=True)})
        rules.append({"when": ["describe"], **_missing(self.exists)})
        return rules


def _answer(when: list[str], stdout: str | None) -> dict[str, object]:
    return {"when": when, "stdout": stdout} if stdout is not None else {
        "when": when, "stderr": NOT_FOUND, "exit": 1
    }  # fmt: skip


def _missing(exists: bool, storage: bool = False) -> dict[str, object]:
    if exists:
        return {}
    message = (
        "ERROR: (gcloud.storage.buckets.describe) gs://b not found: 404." if storage else NOT_FOUND
    )
    return {"stderr": message, "exit": 1}


@dataclass
class Deploy:
    result: subprocess.CompletedProcess[str]
    record: Path

    @property
    def ran(self) -> list[str]:
        return self.record.read_text().splitlines()

    def printed(self) -> list[list[str]]:
        return commands(self.result.stdout)


@pytest.fixture
def deploy(tmp_path: Path):  # type: ignore[no-untyped-def]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("gcloud", "npx"):
        script = bin_dir / tool
        script.write_text(RECORDER.format(python=sys.executable))
        script.chmod(0o755)

    def run(*args: str, fake: Fake | None = None, **env: str) -> Deploy:
        record = tmp_path / f"record-{len(list(tmp_path.glob('record-*.txt')))}.txt"
        record.touch()
        settings = {**os.environ, **ENV, **env}
        for name in [k for k, v in env.items() if v == ""]:
            settings.pop(name)
        settings.update(
            PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            RECORD=str(record),
            FAKE_RULES=json.dumps((fake or Fake()).all_rules()),
            RETRY_BASE_SECONDS="0",
        )
        result = subprocess.run(
            [str(ROOT / "deploy.sh"), *args],
            env=settings,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        return Deploy(result, record)

    return run


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> list[list[str]]:
    """The dry run's commands, once for the tests that only read them."""
    bin_dir = tmp_path_factory.mktemp("bin")
    settings = {**os.environ, **ENV, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        [str(ROOT / "deploy.sh"), "--dry-run"],
        env=settings,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return commands(result.stdout)


def commands(output: str) -> list[list[str]]:
    return [shlex.split(line[2:]) for line in output.splitlines() if line.startswith("+ ")]


def flag(command: list[str], name: str) -> str | None:
    for arg in command:
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
    return None


def function_deploys(printed: list[list[str]]) -> dict[str, list[str]]:
    return {c[3]: c for c in printed if c[:3] == ["gcloud", "functions", "deploy"]}


def env_of(command: list[str]) -> dict[str, str]:
    settings = flag(command, "--set-env-vars") or ""
    return dict(pair.split("=", 1) for pair in settings.split(","))


def recorded(ran: list[str]) -> list[list[str]]:
    return [shlex.split(line) for line in ran]


def test_deploy_script_passes_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is missing: `make install` installs it (Debian: shellcheck)"
    scripts = [ROOT / "deploy.sh", ROOT / "scripts" / "system-deps.sh", ROOT / ".ci" / "run"]
    result = subprocess.run(
        [shellcheck, *map(str, scripts)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout


def test_dry_run_runs_nothing(deploy) -> None:  # type: ignore[no-untyped-def]
    done = deploy("--dry-run")
    assert done.result.returncode == 0, done.result.stderr
    assert done.ran == []
    assert done.result.stdout.rstrip().endswith("dry run: nothing was run or changed")


def test_dry_run_prints_the_four_gen2_functions(dry_run: list[list[str]]) -> None:
    deploys = function_deploys(dry_run)
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
    env = env_of(deploys["upload"])
    assert env["TASK_BACKEND"] == "cloudtasks"
    assert env["PROCESS_IMAGE_URL"].startswith("https://process-image-")
    assert env["FINALIZE_URL"].startswith("https://finalize-")
    assert flag(deploys["finalize"], "--set-secrets") == (
        "WEBHOOK_SECRET=imgsvc-webhook-secret:latest"
    )
    assert flag(deploys["upload"], "--set-secrets") == "API_KEYS=imgsvc-api-keys:latest"


def test_the_finaliser_is_a_firestore_trigger_on_image_documents(
    dry_run: list[list[str]],
) -> None:
    finalize = function_deploys(dry_run)["finalize"]
    filters = [a.split("=", 1)[1] for a in finalize if a.startswith("--trigger-event-filters=")]
    assert "type=google.cloud.firestore.document.v1.written" in filters
    assert "database=(default)" in filters
    assert (
        flag(finalize, "--trigger-event-filters-path-pattern")
        == "document=requests/{requestId}/tally/{shard}"
    )
    assert "--retry" in finalize
    assert flag(finalize, "--trigger-service-account") == TRIGGER


def test_queues_are_created_with_rate_limits_and_retries(dry_run: list[list[str]]) -> None:
    queues = {c[4]: c for c in dry_run if c[:4] == ["gcloud", "tasks", "queues", "create"]}
    assert set(queues) == {"fan-out", "images", "webhooks"}
    for command in queues.values():
        for name in ("--max-dispatches-per-second", "--max-concurrent-dispatches",
                     "--max-attempts", "--min-backoff", "--max-backoff"):  # fmt: skip
            assert flag(command, name), (name, command)


def test_only_the_task_trigger_and_sweep_identities_may_invoke_internal_functions(
    dry_run: list[list[str]],
) -> None:
    invokers = {
        (c[3], flag(c, "--member"))
        for c in dry_run
        if c[:3] == ["gcloud", "functions", "add-invoker-policy-binding"]
    }
    tasks = f"serviceAccount:{TASKS}"
    trigger = f"serviceAccount:{TRIGGER}"
    scheduler = f"serviceAccount:{SCHEDULER}"
    assert invokers == {
        ("process_image", tasks),
        ("finalize", tasks),
        ("finalize", trigger),
        ("process_image", scheduler),
    }
    roles = {
        (flag(c, "--member"), flag(c, "--role"))
        for c in dry_run
        if "add-iam-policy-binding" in c and c[1] != "functions"
    }
    # No one gets an owner, editor or admin role over the project.
    assert not any(re.search(r"owner|editor|\.admin$", role or "") for _, role in roles)
    assert ("allUsers", "roles/storage.objectViewer") in roles  # public output URLs
    status = "serviceAccount:imgsvc-status@demo-proj.iam.gserviceaccount.com"
    assert (status, "roles/datastore.viewer") in roles  # status only reads


def test_rate_limit_windows_and_idempotency_keys_expire_by_a_ttl_policy(
    dry_run: list[list[str]],
) -> None:
    ttls = [c for c in dry_run if c[:4] == ["gcloud", "firestore", "fields", "ttls"]]
    assert {flag(c, "--collection-group") for c in ttls} == {"rate_limits", "upload_keys"}
    assert all(c[5] == "expires_at" and "--enable-ttl" in c for c in ttls)


def test_the_sweeper_runs_every_minute_as_its_own_identity_on_process_image(
    dry_run: list[list[str]],
) -> None:
    (job,) = [c for c in dry_run if c[:4] == ["gcloud", "scheduler", "jobs", "create"]]
    assert job[4:6] == ["http", "imgsvc-sweep"]
    assert flag(job, "--schedule") == "* * * * *"
    uri = flag(job, "--uri") or ""
    assert uri == flag(job, "--oidc-token-audience")
    assert uri.startswith("https://process-image-") and uri.endswith(".europe-west1.run.app/")
    assert flag(job, "--http-method") == "POST"
    # A job runs at most once a minute: the sweep asks for another half a minute later.
    assert json.loads(flag(job, "--message-body") or "") == {"kind": "sweep", "again_in": 30}
    assert flag(job, "--headers") == "Content-Type=application/json"
    assert flag(job, "--oidc-service-account-email") == SCHEDULER
    created = [c for c in dry_run if c[:4] == ["gcloud", "iam", "service-accounts", "create"]]
    assert ["imgsvc-scheduler"] in [c[4:5] for c in created]
    enabled = next(c for c in dry_run if c[:3] == ["gcloud", "services", "enable"])
    assert "cloudscheduler.googleapis.com" in enabled
    # It re-queues lost slices: the worker may add to the fan-out queue.
    fan_out = [
        c for c in dry_run if c[:4] == ["gcloud", "tasks", "queues", "add-iam-policy-binding"]
    ]
    worker = "serviceAccount:imgsvc-worker@demo-proj.iam.gserviceaccount.com"
    assert any(c[4] == "fan-out" and flag(c, "--member") == worker for c in fan_out)


def test_a_second_run_updates_the_sweep_job(deploy) -> None:  # type: ignore[no-untyped-def]
    done = deploy(fake=Fake(exists=True, firebase_projects=["demo-proj"]))
    assert done.result.returncode == 0, done.result.stderr
    (job,) = [
        c
        for c in recorded(done.ran)
        if c[:3] == ["gcloud", "scheduler", "jobs"] and c[3] != "describe"
    ]
    assert job[3:6] == ["update", "http", "imgsvc-sweep"]
    assert flag(job, "--update-headers") == "Content-Type=application/json"


def test_secrets_are_stored_but_never_printed(deploy) -> None:  # type: ignore[no-untyped-def]
    done = deploy("--dry-run")
    for secret in SECRETS.values():
        assert secret not in done.result.stdout + done.result.stderr
    assert "gcloud secrets versions add imgsvc-webhook-secret --data-file=-" in done.result.stdout


def test_a_second_run_updates_instead_of_creating(deploy) -> None:  # type: ignore[no-untyped-def]
    done = deploy(fake=Fake(exists=True, firebase_projects=["demo-proj"]))
    assert done.result.returncode == 0, done.result.stderr
    assert not [line for line in done.ran if re.search(r" (create|databases create) ", line)]
    assert sum(" tasks queues update " in f" {line} " for line in done.ran) == 3
    assert sum(line.startswith("gcloud functions deploy") for line in done.ran) == 4
    assert any(line.startswith("npx --yes firebase-tools@") for line in done.ran)
    staged = json.dumps(sorted(p.name for p in (ROOT / ".build" / "functions").iterdir()))
    assert staged == json.dumps(["finalize", "process_image", "status", "upload"])


# Hosting's rewrites, generated for the region the functions are deployed to.


def test_hosting_rewrites_name_the_deployed_region_in_the_cloud_run_form(
    deploy,  # type: ignore[no-untyped-def]
    dry_run: list[list[str]],
) -> None:
    (stage,) = [c for c in dry_run if c[:1] == ["make"]]
    assert stage[-2:] == ["stage", "REGION=europe-west1"]
    (firebase,) = [c for c in dry_run if c[:1] == ["npx"] and "deploy" in c]
    assert flag(firebase, "--config") is None  # given as two words
    assert firebase[firebase.index("--config") + 1] == ".build/firebase/firebase.json"
    assert dry_run.index(stage) < min(dry_run.index(c) for c in function_deploys(dry_run).values())

    done = deploy(fake=Fake(exists=True, firebase_projects=["demo-proj"]), REGION="asia-east1")
    assert done.result.returncode == 0, done.result.stderr
    staged = json.loads((ROOT / ".build" / "firebase" / "firebase.json").read_text())
    targets = {rule["source"]: rule for rule in staged["hosting"]["rewrites"]}
    assert targets["/upload"] == {
        "source": "/upload",
        "run": {"serviceId": "upload", "region": "asia-east1"},
    }
    assert targets["/status/**"]["run"] == {"serviceId": "status", "region": "asia-east1"}
    assert not [rule for rule in staged["hosting"]["rewrites"] if "function" in rule]
    assert all(rule["run"]["region"] == "asia-east1" for rule in targets.values() if "run" in rule)
    # firebase-tools reads the Hosting folder and the rules beside the config it is given.
    assert (ROOT / ".build" / "firebase" / staged["hosting"]["public"]).is_dir()
    assert (ROOT / ".build" / "firebase" / staged["firestore"]["rules"]).is_file()
    finalize = function_deploys(recorded(done.ran))["finalize"]
    assert flag(finalize, "--region") == "asia-east1"


def test_the_local_hosting_stand_in_reads_the_committed_and_the_staged_rewrites() -> None:
    def routes(path: Path) -> list[tuple[str, str | None]]:
        return [(p.pattern, rewrite_target(rule)) for p, rule in rewrites(path)]

    committed = routes(ROOT / "firebase.json")
    assert ("^/upload$", "upload") in committed
    assert ("^/status/.*$", "status") in committed
    staged = ROOT / ".build" / "firebase" / "firebase.json"
    subprocess.run(
        [sys.executable, "scripts/stage_firebase.py", "--region", "europe-west1",
         "--out", str(staged.parent)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )  # fmt: skip
    assert routes(staged) == committed


# Where the Firestore database is, and in which mode.


def test_the_trigger_follows_an_existing_database_to_its_location(deploy) -> None:  # type: ignore[no-untyped-def]
    done = deploy(
        fake=Fake(exists=True, database="nam5 FIRESTORE_NATIVE", firebase_projects=["demo-proj"])
    )
    assert done.result.returncode == 0, done.result.stderr
    assert any("firestore databases describe" in line and "value(locationId,type)" in line
               for line in done.ran)  # fmt: skip
    assert not [line for line in done.ran if "databases create" in line]
    finalize = function_deploys(recorded(done.ran))["finalize"]
    assert flag(finalize, "--trigger-location") == "nam5"
    assert flag(finalize, "--region") == "europe-west1"


def test_a_new_database_is_created_in_the_region_and_the_trigger_with_it(
    dry_run: list[list[str]],
) -> None:
    (create,) = [c for c in dry_run if c[:4] == ["gcloud", "firestore", "databases", "create"]]
    assert flag(create, "--location") == "europe-west1"
    assert flag(create, "--type") == "firestore-native"
    assert flag(function_deploys(dry_run)["finalize"], "--trigger-location") == "europe-west1"


def test_a_database_in_datastore_mode_stops_the_deploy(deploy) -> None:  # type: ignore[no-untyped-def]
    done = deploy(fake=Fake(exists=True, database="europe-west1 DATASTORE_MODE"))
    assert done.result.returncode != 0
    assert "Native mode" in done.result.stderr
    assert not [line for line in done.ran if "functions deploy" in line or " create " in line]


# Firebase added to the project, once; the APIs a first deploy needs.


def test_firebase_is_added_to_a_project_that_lacks_it_and_only_then(deploy) -> None:  # type: ignore[no-untyped-def]
    new = deploy(fake=Fake(exists=True, firebase_projects=["someone-else"]))
    assert new.result.returncode == 0, new.result.stderr
    added = [i for i, line in enumerate(new.ran) if "projects:addfirebase demo-proj" in line]
    rules = [i for i, line in enumerate(new.ran) if "firebase-tools" in line and " deploy " in line]
    assert len(added) == 1 and len(rules) == 1 and added[0] < rules[0]

    again = deploy(fake=Fake(exists=True, firebase_projects=["demo-proj"]))
    assert again.result.returncode == 0, again.result.stderr
    assert not [line for line in again.ran if "projects:addfirebase" in line]


def test_the_firebase_logging_and_iam_credentials_apis_are_enabled(
    dry_run: list[list[str]],
) -> None:
    (enable,) = [c for c in dry_run if c[:3] == ["gcloud", "services", "enable"]]
    for api in ("firebase.googleapis.com", "logging.googleapis.com",
                "iamcredentials.googleapis.com", "firebasehosting.googleapis.com"):  # fmt: skip
        assert api in enable
    (add,) = [c for c in dry_run if "projects:addfirebase" in c]
    assert dry_run.index(enable) < dry_run.index(add)


# Secrets.


@pytest.mark.parametrize("missing", ["WEBHOOK_SECRET", "API_KEYS"])
def test_a_secret_with_no_version_stops_the_deploy_before_anything_is_created(
    deploy,  # type: ignore[no-untyped-def]
    missing: str,
) -> None:
    # A first deploy (dry or real) with nothing to put in the new secret.
    for done in (deploy("--dry-run", **{missing: ""}), deploy(**{missing: ""})):
        assert done.result.returncode != 0
        assert missing in done.result.stderr and "no enabled version" in done.result.stderr
        assert not [c for c in done.printed() if "create" in c or c[:2] == ["gcloud", "functions"]]
        assert not [line for line in done.ran if " create " in line or "versions add" in line]
    # An existing secret with no enabled version, and nothing given for it.
    done = deploy(fake=Fake(exists=True, secret_versions=False), **{missing: ""})
    assert done.result.returncode != 0
    assert f"{missing} and run again" in done.result.stderr.replace("\n", " ")
    assert not [line for line in done.ran if "functions deploy" in line]


def test_an_existing_secret_with_a_version_needs_no_value(deploy) -> None:  # type: ignore[no-untyped-def]
    done = deploy(
        fake=Fake(exists=True, firebase_projects=["demo-proj"]), WEBHOOK_SECRET="", API_KEYS=""
    )
    assert done.result.returncode == 0, done.result.stderr
    assert not [line for line in done.ran if "versions add" in line]


def test_an_unchanged_secret_gets_no_new_version(deploy) -> None:  # type: ignore[no-untyped-def]
    same = Fake(
        exists=True,
        firebase_projects=["demo-proj"],
        secret_values={"imgsvc-webhook-secret": SECRETS["WEBHOOK_SECRET"],
                       "imgsvc-api-keys": "acme:" + "cd" * 32},
    )  # fmt: skip
    done = deploy(fake=same)
    assert done.result.returncode == 0, done.result.stderr
    added = [line for line in done.ran if "secrets versions add" in line]
    assert added == [
        "gcloud secrets versions add imgsvc-api-keys --data-file=- --project demo-proj"
    ]
    assert "imgsvc-webhook-secret: $WEBHOOK_SECRET is its latest version already" in (
        done.result.stdout
    )
    for secret in SECRETS.values():
        assert secret not in done.result.stdout + done.result.stderr


# How the functions are built and served.


def test_functions_are_built_by_a_build_service_account_of_their_own(
    dry_run: list[list[str]],
) -> None:
    for command in function_deploys(dry_run).values():
        assert flag(command, "--build-service-account") == (
            f"projects/demo-proj/serviceAccounts/{BUILD}"
        )
    assert ["gcloud", "iam", "service-accounts", "create", "imgsvc-build"] in [
        c[:5] for c in dry_run
    ]
    roles = {
        (flag(c, "--member"), flag(c, "--role")) for c in dry_run if "add-iam-policy-binding" in c
    }
    assert (f"serviceAccount:{BUILD}", "roles/run.builder") in roles


def test_each_function_serves_as_many_threads_as_its_concurrency(
    dry_run: list[list[str]],
) -> None:
    for name, command in function_deploys(dry_run).items():
        assert env_of(command)["THREADS"] == flag(command, "--concurrency"), name


def test_uploads_end_within_hostings_60_seconds(dry_run: list[list[str]]) -> None:
    timeout = flag(function_deploys(dry_run)["upload"], "--timeout") or ""
    assert timeout.endswith("s") and int(timeout[:-1]) <= 60


# Eventual consistency, and what counts as missing.


def test_bindings_on_new_accounts_and_the_first_trigger_are_retried(deploy) -> None:  # type: ignore[no-untyped-def]
    unknown = "ERROR: INVALID_ARGUMENT: Service account imgsvc-api@demo-proj does not exist."
    fake = Fake(
        firebase_projects=["demo-proj"],
        rules=[
            {"when": ["projects add-iam-policy-binding", "imgsvc-api@"], "fail_first": 2,
             "failure": unknown},
            {"when": ["functions deploy finalize"], "fail_first": 1,
             "failure": "ERROR: Permission denied while using the Eventarc Service Agent."},
        ],
    )  # fmt: skip
    done = deploy(fake=fake)
    assert done.result.returncode == 0, done.result.stderr
    api = [
        line
        for line in done.ran
        if "projects add-iam-policy-binding" in line and "imgsvc-api@" in line
    ]
    assert len(api) == 3  # two refusals, then the binding
    assert sum(line.startswith("gcloud functions deploy finalize") for line in done.ran) == 2
    assert "trying again" in done.result.stderr


def test_a_binding_that_keeps_failing_stops_the_deploy(deploy) -> None:  # type: ignore[no-untyped-def]
    fake = Fake(
        firebase_projects=["demo-proj"],
        rules=[{"when": ["projects add-iam-policy-binding", "imgsvc-api@"], "fail_first": 99}],
    )
    done = deploy(fake=fake)
    assert done.result.returncode != 0
    assert "still failing after 6 attempts" in done.result.stderr
    assert not [line for line in done.ran if "functions deploy" in line]


def test_only_not_found_counts_as_missing(deploy) -> None:  # type: ignore[no-untyped-def]
    denied = "ERROR: (gcloud.iam.service-accounts.describe) PERMISSION_DENIED: Permission denied."
    fake = Fake(
        exists=True,
        firebase_projects=["demo-proj"],
        rules=[{"when": ["iam service-accounts describe"], "stderr": denied, "exit": 1}],
    )
    done = deploy(fake=fake)
    assert done.result.returncode != 0
    assert "could not tell whether this exists" in done.result.stderr
    assert "PERMISSION_DENIED" in done.result.stderr
    assert not [line for line in done.ran if " create " in line or "functions deploy" in line]
