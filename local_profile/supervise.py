"""Keep one process of the local stack running: restart it when it dies, or when it is stuck.

    python -m local_profile.supervise --name worker [--probe MODULE:FUNCTION] -- ARGV...

The stack starts every long-running service through this (`recipes.py`): a worker killed by
the kernel for memory, a ticker that crashed, a gateway that died are started again, and each
restart is logged, with its cause, in the service's log. A probe names a function that takes
the Settings and returns why the process is unhealthy (or None): two answers in a row make the
supervisor restart it. That catches what "the process is alive" does not, such as a Celery
worker that no longer consumes after its broker restarted.

The supervisor and its child share the process group the stack started it in, so stopping
the service (`make down`, `Stack.stop`) stops both; SIGTERM to the supervisor ends the child
too and is not followed by a restart. If the supervisor itself is killed, the child runs on,
unsupervised, and is still stopped with its group.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from shared.config import Settings

log = logging.getLogger("supervise")

PROBE_EVERY = 10.0
# A process gets this long after each start before its probe may count against it.
PROBE_GRACE = 30.0
UNHEALTHY_IN_A_ROW = 2
STOP_TIMEOUT = 15.0
# Restarts wait 1 s, doubling to 30 s while the process keeps dying young; a process that
# ran for a minute starts again after 1 s.
FIRST_BACKOFF = 1.0
MAX_BACKOFF = 30.0
RAN_LONG_ENOUGH = 60.0

Probe = Callable[[Settings], str | None]


def load_probe(spec: str) -> Probe:
    module, _, name = spec.partition(":")
    probe: Probe = getattr(importlib.import_module(module), name)
    return probe


class Supervisor:
    def __init__(
        self,
        name: str,
        argv: list[str],
        probe: Probe | None,
        pid_file: Path | None,
        env: dict[str, str] | None = None,
    ):
        self.name = name
        self.argv = argv
        self.probe = probe
        self.pid_file = pid_file
        self.env = env
        self.stopping = False
        self.child: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    def stop(self, signum: int, _frame: FrameType | None) -> None:
        self.stopping = True
        self._end_child(signal.SIGTERM)

    def _start(self) -> float:
        self.child = subprocess.Popen(self.argv, env=self.env)  # noqa: S603 (our own argv)
        if self.pid_file is not None:
            self.pid_file.write_text(str(self.child.pid))
        return time.monotonic()

    def _end_child(self, sig: int) -> None:
        child = self.child
        if child is None or child.poll() is not None:
            return
        child.send_signal(sig)
        try:
            child.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()

    def run(self) -> int:
        backoff = FIRST_BACKOFF
        started = self._start()
        unhealthy = 0
        next_probe = started + PROBE_GRACE
        while True:
            assert self.child is not None
            try:
                code = self.child.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                code = None
            if self.stopping:
                return 0
            if code is None:
                if self.probe is not None and time.monotonic() >= next_probe:
                    next_probe = time.monotonic() + PROBE_EVERY
                    reason = self._ask_probe()
                    unhealthy = unhealthy + 1 if reason else 0
                    if reason and unhealthy >= UNHEALTHY_IN_A_ROW:
                        log.error(
                            "%s is alive but unhealthy (%s): restarting it", self.name, reason
                        )
                        self._end_child(signal.SIGTERM)
                continue
            ran = time.monotonic() - started
            cause = f"signal {-code}" if code < 0 else f"exit code {code}"
            backoff = FIRST_BACKOFF if ran >= RAN_LONG_ENOUGH else min(MAX_BACKOFF, backoff * 2)
            self.restarts += 1
            log.error(
                "%s (pid %d) ended with %s after %.0fs; restart %d in %.0fs",
                self.name, self.child.pid, cause, ran, self.restarts, backoff,
            )  # fmt: skip
            time.sleep(backoff)
            if self.stopping:
                return 0
            started = self._start()
            unhealthy = 0
            next_probe = started + PROBE_GRACE
            log.warning("%s restarted as pid %d", self.name, self.child.pid)

    def _ask_probe(self) -> str | None:
        assert self.probe is not None
        try:
            return self.probe(Settings.from_env())
        except Exception as exc:  # a probe that cannot tell is not a reason to restart
            log.warning("%s: the health probe failed: %s", self.name, exc)
            return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True)
    parser.add_argument("--probe", help="MODULE:FUNCTION returning why it is unhealthy")
    parser.add_argument("--pid-file", type=Path, help="where the child's pid is written")
    parser.add_argument(
        "--isolated", action="store_true", help="start the child without our PYTHONPATH"
    )
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("nothing to supervise")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s supervise: %(message)s"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} if args.isolated else None
    supervisor = Supervisor(
        args.name, command, load_probe(args.probe) if args.probe else None, args.pid_file, env
    )
    signal.signal(signal.SIGTERM, supervisor.stop)
    signal.signal(signal.SIGINT, supervisor.stop)
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
