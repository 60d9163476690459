"""Services for the integration and end-to-end tests, started once per session on free ports.

The real Firestore emulator, the real Storage emulator and a Redis of our own (never the
machine's shared one) are started here and stopped at the end, by process group id.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from local_profile.recipes import (
    LOOPBACK_NETWORKS,
    PROJECT,
    Stack,
    create_buckets,
    new_webhook_secret,
)
from shared.config import Settings
from shared.domain.access import new_api_key

WEBHOOK_SECRET = new_webhook_secret()


def base_env() -> dict[str, str]:
    return {
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "TASK_BACKEND": "celery",
        "FETCH_ALLOWED_NETWORKS": LOOPBACK_NETWORKS,
        "WEBHOOK_SECRET": WEBHOOK_SECRET,
        "UPLOADS_BUCKET": "test-uploads",
        "OUTPUTS_BUCKET": "test-outputs",
        # Short enough that the crash test sees unacknowledged tasks come back quickly.
        "CELERY_VISIBILITY_TIMEOUT": "8",
        "CELERY_RESTORE_INTERVAL": "1",
        # Requests idle this long are re-driven by the sweeper, which looks every second.
        "STALL_AFTER": "6",
        "SWEEP_INTERVAL": "1",
        "SWEEP_GRACE": "3",
        "WEBHOOK_RETRY_SCHEDULE": "1s,2s,3s",
        "FETCH_TOTAL_TIMEOUT": "5s",
        "FETCH_RETRIES": "2",
        "FETCH_RETRY_BACKOFF": "100ms",
        # Every test URL is an IP literal; with lookups off no test (the fuzzer's uploads
        # included) can make the stack send a DNS query.
        "FETCH_DNS": "off",
        "LOG_LEVEL": "INFO",
    }


@pytest.fixture(scope="session")
def backing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("stack"), base_env())
    try:
        stack.start_firestore()
        stack.start_storage()
        stack.start_redis()
        create_buckets(stack.env)
        yield stack
    finally:
        stack.stop_all()


@pytest.fixture(scope="session")
def settings(backing: Stack) -> Settings:
    # The Google client libraries read the emulator hosts from the environment.
    os.environ["FIRESTORE_EMULATOR_HOST"] = backing.env["FIRESTORE_EMULATOR_HOST"]
    os.environ["STORAGE_EMULATOR_HOST"] = backing.env["STORAGE_EMULATOR_HOST"]
    return Settings.from_env(backing.env)


@pytest.fixture(scope="session")
def live(backing: Stack) -> Iterator[Stack]:
    """The whole local profile: worker and gateway on top of the backing services."""
    backing.start_worker(concurrency=4)
    backing.start_ticker()
    backing.start_gateway()
    try:
        yield backing
    finally:
        backing.stop("gateway")
        backing.stop("ticker")
        backing.stop("worker")


@pytest.fixture(scope="session")
def gateway_url(live: Stack) -> str:
    url = live.services["gateway"].url
    assert url
    return url


@dataclass(frozen=True)
class KeyedGateway:
    """A second gateway of the live stack with API_KEYS set, for three clients: alice and bob,
    and carol, whose uploads run into the rate limit."""

    url: str
    keys: dict[str, str]  # key id -> the raw key, as the client holds it
    upload_limit: int


@pytest.fixture(scope="session")
def keyed_gateway(live: Stack) -> Iterator[KeyedGateway]:
    made = {name: new_api_key(name) for name in ("alice", "bob", "carol")}
    limit = 3
    url = live.start_gateway(
        name="gateway-keys",
        extra_env={
            "API_KEYS": ",".join(key.entry for key in made.values()),
            # A window of ~114 years: no test can straddle two windows and see its count reset.
            "UPLOAD_RATE_LIMIT": f"{limit}/1000000h",
        },
    )
    try:
        yield KeyedGateway(url, {name: key.key for name, key in made.items()}, limit)
    finally:
        live.stop("gateway-keys")


CLOUD_PROJECT = "demo-imgsvc-cloud"


@pytest.fixture(scope="session")
def cloud(backing: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The emulated cloud profile: the four staged functions, the Cloud Tasks emulator, the
    Eventarc and Hosting stand-ins. It shares the emulators with the local profile but has a
    project and buckets of its own, so neither profile ever sees the other's requests."""
    env = {
        **backing.env,
        "GOOGLE_CLOUD_PROJECT": CLOUD_PROJECT,
        "UPLOADS_BUCKET": "cloud-uploads",
        "OUTPUTS_BUCKET": "cloud-outputs",
    }
    stack = Stack(tmp_path_factory.mktemp("cloud"), env)
    create_buckets(stack.env)
    try:
        stack.start_cloud_profile()
        yield stack
    finally:
        stack.stop_all()


@pytest.fixture(scope="session", params=["local", "cloud"])
def profile(request: pytest.FixtureRequest) -> Stack:
    """Either profile, for the tests that must hold for both: same API, same answers."""
    stack: Stack = request.getfixturevalue("live" if request.param == "local" else "cloud")
    return stack


@pytest.fixture(scope="session")
def base_url(profile: Stack) -> str:
    return profile.base_url


def log_of(stack: Stack, name: str) -> str:
    return Path(stack.run_dir / f"{name}.log").read_text(errors="replace")
