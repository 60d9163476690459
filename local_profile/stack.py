"""Start and stop the local stack: emulators, Redis, Celery worker, gateway.

Used by `make up` / `make down` (state kept in .run/stack.json) and by the tests (each test
session starts its own stack on free ports and stops it). Every process is started in a
session of its own and stopped by process group id, so `down` ends exactly what `up` started
and never anything else.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from shared.config import Settings

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RUN_DIR = ROOT / ".run"
TASKS_VENV = ROOT / ".venv-tasks"
STATE_FILE = "stack.json"
PROJECT = "demo-imgsvc"
LOOPBACK_NETWORKS = "127.0.0.0/8,::1/128"


class StackError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (loopback)
            return bool(200 <= response.status < 300)
    except (urllib.error.URLError, OSError):
        return False


def _tcp_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


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


@dataclass
class Service:
    name: str
    pid: int
    log: str
    url: str | None = None

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


@dataclass
class Stack:
    run_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    services: dict[str, Service] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Processes start in other working directories (a function in its staged folder):
        # every path handed to them must not depend on ours.
        self.run_dir = Path(self.run_dir).resolve()

    @property
    def base_url(self) -> str:
        """Where clients send requests: the gateway (local) or the Hosting stand-in (cloud)."""
        front = self.services.get("gateway") or self.services.get("hosting")
        if front is None or front.url is None:
            raise StackError("neither the gateway nor the hosting router is running")
        return front.url

    def setting(self, key: str) -> str | None:
        """What the stack's processes will see for `key` (ours first, then inherited)."""
        return self.env.get(key) or os.environ.get(key)

    # ---- processes -------------------------------------------------------------------

    def _spawn(
        self,
        name: str,
        argv: list[str],
        extra_env: Mapping[str, str] | None = None,
        *,
        cwd: Path = ROOT,
        pythonpath: str | None = str(ROOT),
    ) -> Service:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.run_dir / f"{name}.log"
        env = {**os.environ, **self.env, **(extra_env or {})}
        if pythonpath is None:
            env.pop("PYTHONPATH", None)
        else:
            env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
        with open(log_path, "ab") as log:
            process = subprocess.Popen(  # noqa: S603 (our own argv)
                argv,
                cwd=cwd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        service = Service(name, process.pid, str(log_path))
        self.services[name] = service
        return service

    def _wait(self, name: str, ready: Callable[[], bool], timeout: float) -> None:
        service = self.services[name]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            if not service.alive():
                break
            time.sleep(0.1)
        tail = (
            Path(service.log).read_text(errors="replace")[-3000:]
            if Path(service.log).exists()
            else ""
        )
        self.stop(name)
        raise StackError(
            f"{name} did not become ready in {timeout:.0f}s; its log ends with:\n{tail}"
        )

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        service = self.services.pop(name, None)
        if service is None:
            return
        _stop_group(service.pid, sig, timeout)

    def stop_all(self) -> None:
        # Reverse start order: the gateway and the worker go before what they depend on.
        for name in reversed(list(self.services)):
            self.stop(name)

    # ---- services --------------------------------------------------------------------

    def start_firestore(self) -> str:
        script = find_firestore_emulator()
        port = free_port()
        # The emulator is a JVM: its optimising JIT compiler and parallel GC threads cost
        # more CPU than the emulator's own work at our request rates (measured: a third of
        # the CPU with the quick C1 compiler alone), and it shares two cores with the worker.
        java_options = " ".join(
            [os.environ.get("JAVA_TOOL_OPTIONS", ""), "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"]
        ).strip()
        self._spawn(
            "firestore",
            [str(script), "--host=127.0.0.1", f"--port={port}"],
            {"JAVA_TOOL_OPTIONS": java_options},
        )
        host = f"127.0.0.1:{port}"
        self.services["firestore"].url = f"http://{host}"
        self._wait("firestore", lambda: _http_ok(f"http://{host}/"), 60)
        self.env["FIRESTORE_EMULATOR_HOST"] = host
        return host

    def start_storage(self) -> str:
        port = free_port()
        binary = Path(sys.executable).with_name("gcp-storage-emulator")
        self._spawn(
            "storage",
            [str(binary), "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory", "-q"],
        )
        url = f"http://127.0.0.1:{port}"
        self.services["storage"].url = url
        self._wait("storage", lambda: _http_ok(f"{url}/storage/v1/b?project={PROJECT}"), 30)
        self.env["STORAGE_EMULATOR_HOST"] = url
        return url

    def start_redis(self) -> str:
        binary = shutil.which("redis-server")
        if binary is None:
            raise StackError("redis-server is not installed (Debian package: redis-server)")
        port = free_port()
        self._spawn(
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
        self._wait("redis", lambda: redis_answers(url), 15)
        self.env["REDIS_URL"] = url
        return url

    def use_or_start_redis(self, url: str | None) -> str:
        if url and redis_answers(url):
            self.env["REDIS_URL"] = url
            return url
        return self.start_redis()

    def start_worker(
        self, concurrency: int | None = None, extra_env: Mapping[str, str] | None = None
    ) -> Service:
        ready_file = self.run_dir / "worker.ready"
        ready_file.unlink(missing_ok=True)
        concurrency = (
            concurrency or int(self.setting("WORKER_CONCURRENCY") or 0) or default_concurrency()
        )
        argv = [
            sys.executable, "-m", "celery", "-A", "local_profile.worker", "worker",
            "-Q", "control,images", "-c", str(concurrency), "-B",
            "-s", str(self.run_dir / "celerybeat-schedule"),
            "--loglevel", self.setting("LOG_LEVEL") or "INFO", "-n", f"imgsvc-{os.getpid()}@%h",
            "--without-gossip", "--without-mingle",
        ]  # fmt: skip
        service = self._spawn(
            "worker", argv, {"IMGSVC_READY_FILE": str(ready_file), **(extra_env or {})}
        )
        self._wait("worker", ready_file.exists, 60)
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
        self._spawn(name, [sys.executable, "-m", "local_profile.gateway"], env)
        url = f"http://127.0.0.1:{port}"
        self.services[name].url = url
        self._wait(name, lambda: _http_ok(f"{url}/healthz"), 30)
        return url

    # ---- the emulated cloud profile --------------------------------------------------

    def start_tasks_emulator(self) -> str:
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
        port = free_port()
        argv = [str(binary), "start", "-p", str(port)]
        for queue in queues:
            argv += ["-d", f"{location}/queues/{queue}"]
        self._spawn("tasks", argv, pythonpath=None)
        self._wait("tasks", lambda: _tcp_open(port), 30)
        self.env["CLOUD_TASKS_EMULATOR_HOST"] = f"127.0.0.1:{port}"
        return self.env["CLOUD_TASKS_EMULATOR_HOST"]

    def _settings(self) -> Settings:
        return Settings.from_env({**os.environ, **self.env})

    def start_function(self, name: str, port: int, staged: Path, env: Mapping[str, str]) -> str:
        """One function from its staged folder under functions-framework, the way Cloud Run
        serves it: only the folder's own copy of shared/ is importable."""
        binary = Path(sys.executable).with_name("functions-framework")
        argv = [
            str(binary), "--target", name, "--source", str(staged / name / "main.py"),
            "--host", "127.0.0.1", "--port", str(port),
        ]  # fmt: skip
        self._spawn(f"fn-{name}", argv, env, cwd=staged / name, pythonpath=None)
        url = f"http://127.0.0.1:{port}/"
        self.services[f"fn-{name}"].url = url
        self._wait(f"fn-{name}", lambda: _tcp_open(port), 60)
        return url

    def start_cloud_profile(self, gateway_port: int | None = None) -> str:
        """The four functions from their staged folders, Cloud Tasks emulated, an Eventarc
        stand-in for the Firestore trigger, and a Hosting stand-in on the gateway port."""
        from scripts.stage_functions import FUNCTIONS, stage

        staged = self.run_dir / "functions"
        for name in FUNCTIONS:
            stage(name, staged)
        if "CLOUD_TASKS_EMULATOR_HOST" not in self.env:
            self.start_tasks_emulator()
        ports = {name: free_port() for name in FUNCTIONS}
        urls = {name: f"http://127.0.0.1:{port}/" for name, port in ports.items()}
        env = {
            "TASK_BACKEND": "cloudtasks",
            "PROCESS_IMAGE_URL": urls["process_image"],
            "FINALIZE_URL": urls["finalize"],
        }
        for name in FUNCTIONS:
            self.start_function(name, ports[name], staged, env)
        ready_file = self.run_dir / "eventarc.ready"
        ready_file.unlink(missing_ok=True)
        self._spawn(
            "eventarc",
            [sys.executable, "-m", "local_profile.eventarc", "--target", urls["finalize"]],
            {"IMGSVC_READY_FILE": str(ready_file)},
        )
        self._wait("eventarc", ready_file.exists, 30)
        port = gateway_port or free_port()
        self._spawn(
            "hosting",
            [sys.executable, "-m", "local_profile.hosting_router"],
            {"GATEWAY_PORT": str(port), "FUNCTION_URLS": json.dumps(urls)},
        )
        url = f"http://127.0.0.1:{port}"
        self.services["hosting"].url = url
        self._wait("hosting", lambda: _http_ok(f"{url}/healthz"), 30)
        return url

    def start_backing_services(self, redis_url: str | None = None) -> None:
        self.start_firestore()
        self.start_storage()
        self.use_or_start_redis(redis_url)
        create_buckets(self.env)

    # ---- state file ------------------------------------------------------------------

    def save(self) -> None:
        state = {
            "env": self.env,
            "services": {name: vars(service) for name, service in self.services.items()},
        }
        (self.run_dir / STATE_FILE).write_text(json.dumps(state, indent=2))

    @classmethod
    def load(cls, run_dir: Path) -> Stack | None:
        path = run_dir / STATE_FILE
        if not path.exists():
            return None
        state = json.loads(path.read_text())
        services = {name: Service(**data) for name, data in state["services"].items()}
        return cls(run_dir, state["env"], services)


def _stop_group(pid: int, sig: int, timeout: float) -> None:
    """Signal the process group that `pid` leads (it was started with a session of its own),
    wait for the leader, then make sure no member of the group is left (Celery's pool
    processes, the emulator's JVM). A pid that no longer leads its own group was reused by
    someone else: it is left alone."""
    try:
        if os.getpgid(pid) != pid:
            return
    except ProcessLookupError:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _exists(pid):
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _exists(pid: int) -> bool:
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)
        return not finished
    except ChildProcessError:
        pass  # not our child (make down runs in a process of its own)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def default_concurrency() -> int:
    # Over-subscribe the cores: while one task waits on a download, another compresses.
    return max(2, (os.cpu_count() or 1) * 3)


def create_buckets(env: Mapping[str, str]) -> None:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    settings = Settings.from_env(env)
    os.environ["STORAGE_EMULATOR_HOST"] = env["STORAGE_EMULATOR_HOST"]
    client = storage.Client(project=settings.project, credentials=AnonymousCredentials())
    for name in (settings.uploads_bucket, settings.outputs_bucket):
        if client.lookup_bucket(name) is None:
            client.create_bucket(name)


def new_webhook_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


def local_env(environ: Mapping[str, str], dotenv: Path | None = ROOT / ".env") -> dict[str, str]:
    """What `make up` adds to the caller's environment (which every process inherits and
    which wins): the optional .env file, then the local profile's defaults."""
    from dotenv import dotenv_values

    from_file = dotenv_values(dotenv) if dotenv is not None and dotenv.exists() else {}
    env = {k: v for k, v in from_file.items() if v is not None and k not in environ}

    def default(key: str, value: str) -> None:
        if not environ.get(key) and not env.get(key):
            env[key] = value

    default("GOOGLE_CLOUD_PROJECT", PROJECT)
    default("TASK_BACKEND", "celery")
    # The local profile serves images from loopback; production leaves this empty.
    default("FETCH_ALLOWED_NETWORKS", LOOPBACK_NETWORKS)
    default("WEBHOOK_SECRET", new_webhook_secret())
    return env


def up(run_dir: Path, environ: Mapping[str, str], profile: str = "local") -> Stack:
    existing = Stack.load(run_dir)
    alive = existing is not None and all(s.alive() for s in existing.services.values())
    if existing is not None and alive and existing.env.get("PROFILE", "local") == profile:
        return existing
    if existing:
        down(run_dir)
    env = local_env(environ)
    env["PROFILE"] = profile
    settings = {**env, **environ}
    stack = Stack(run_dir, env)
    port = int(settings.get("GATEWAY_PORT") or 8000)
    try:
        stack.start_backing_services(settings.get("REDIS_URL") or "redis://127.0.0.1:6379/0")
        if profile == "cloud":
            stack.start_cloud_profile(port)
        else:
            stack.start_worker()
            stack.start_gateway(port)
    except BaseException:
        stack.stop_all()
        raise
    stack.save()
    return stack


def down(run_dir: Path) -> list[str]:
    stack = Stack.load(run_dir)
    if stack is None:
        return []
    names = list(stack.services)
    stack.stop_all()
    (run_dir / STATE_FILE).unlink(missing_ok=True)
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--profile", choices=["local", "cloud"], default="local")
    parser.add_argument("--run-dir", type=Path, default=DEFAULT_RUN_DIR)
    args = parser.parse_args(argv)
    if args.command == "up":
        try:
            stack = up(args.run_dir, os.environ, args.profile)
        except StackError as exc:
            print(f"make up failed: {exc}", file=sys.stderr)
            return 1
        print(f"The {args.profile} profile is up. Base URL: {stack.base_url}")
        for name, service in stack.services.items():
            print(f"  {name:<10} pid {service.pid:<8} {service.url or ''}  log {service.log}")
        return 0
    if args.command == "down":
        stopped = down(args.run_dir)
        print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
        return 0
    stack = Stack.load(args.run_dir)
    if stack is None:
        print("not running")
        return 1
    for name, service in stack.services.items():
        print(f"{name:<10} pid {service.pid:<8} {'up' if service.alive() else 'DOWN'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
