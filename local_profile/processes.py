"""Processes of the local stack: each started in a session of its own, stopped by group.

Every process is started with `start_new_session`, so it leads a process group of its own and
`stop` ends that whole group (Celery's pool processes, an emulator's JVM) and nothing else;
state is kept in `<run_dir>/stack.json` so that another command (`make down`) stops exactly
what `make up` started.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

ROOT = Path(__file__).resolve().parents[1]
STATE_FILE = "stack.json"


class StackError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (loopback)
            return bool(200 <= response.status < 300)
    except (urllib.error.URLError, OSError):
        return False


def tcp_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


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
class Processes:
    """The processes a stack started, by name, with the environment they all share."""

    run_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    services: dict[str, Service] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Processes start in other working directories (a function in its staged folder):
        # every path handed to them must not depend on ours.
        self.run_dir = Path(self.run_dir).resolve()

    def setting(self, key: str) -> str | None:
        """What the stack's processes will see for `key` (ours first, then inherited)."""
        return self.env.get(key) or os.environ.get(key)

    def spawn(
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

    def wait(self, name: str, ready: Callable[[], bool], timeout: float) -> None:
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
        stop_group(service.pid, sig, timeout)

    def stop_all(self) -> None:
        # Reverse start order: the gateway and the worker go before what they depend on.
        for name in reversed(list(self.services)):
            self.stop(name)

    def save(self) -> None:
        state = {
            "env": self.env,
            "services": {name: vars(service) for name, service in self.services.items()},
        }
        (self.run_dir / STATE_FILE).write_text(json.dumps(state, indent=2))

    @classmethod
    def load(cls, run_dir: Path) -> Self | None:
        path = run_dir / STATE_FILE
        if not path.exists():
            return None
        state = json.loads(path.read_text())
        services = {name: Service(**data) for name, data in state["services"].items()}
        return cls(run_dir, state["env"], services)


def stop_group(pid: int, sig: int, timeout: float) -> None:
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
