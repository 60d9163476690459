"""`make up`, `make down`, `make status`: the local stack from the command line.

The processes are started by the recipes in `recipes.py`, each in a session of its own
(`processes.py`), and their state kept in `.run/stack.json`, so `down` ends exactly what `up`
started and never anything else.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from local_profile.processes import ROOT, STATE_FILE, StackError
from local_profile.recipes import LOOPBACK_NETWORKS, PROJECT, Stack, new_webhook_secret

DEFAULT_RUN_DIR = ROOT / ".run"


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
    emulators = environ.get("EMULATORS") or "gcloud"
    same = existing is not None and (
        existing.env.get("PROFILE", "local"),
        existing.env.get("EMULATORS", "gcloud"),
    ) == (profile, emulators)
    if existing is not None and alive and same:
        return existing
    if existing:
        down(run_dir)
    env = local_env(environ)
    env["PROFILE"] = profile
    env["EMULATORS"] = emulators
    settings = {**env, **environ}
    stack = Stack(run_dir, env)
    port = int(settings.get("GATEWAY_PORT") or 8000)
    try:
        stack.start_backing_services(settings.get("REDIS_URL") or "redis://127.0.0.1:6379/0")
        if profile == "cloud":
            stack.start_cloud_profile(port)
        else:
            stack.start_worker()
            stack.start_ticker()
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
