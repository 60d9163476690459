"""Stage the Firebase deploy (firestore.rules and Hosting) into .build/firebase/ with the
Hosting rewrites pointing at the functions in the region they are really deployed to.

firebase.json in the repository names the functions without a region. firebase-tools stops a
deploy whose rewrites name a region other than the functions' ("Functions matching the rewrite
are present but in the wrong region"), and a 2nd-gen function is a Cloud Run service: so each
rewrite becomes the form firebase-tools uses for those, `"run": {"serviceId", "region"}`, for
the REGION deploy.sh deploys to. The files firebase.json refers to (the Hosting folder, the
rules) are copied beside it, since firebase-tools reads them relative to the config file.

    python3 scripts/stage_firebase.py --region europe-west1 --out .build/firebase
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def service_id(function: str) -> str:
    """A 2nd-gen function's Cloud Run service: its name in lower case, `_` as `-`."""
    return function.lower().replace("_", "-")


def rewrite_target(rule: dict[str, Any]) -> str | None:
    """The function a Hosting rewrite sends to, in any of the forms firebase.json allows:
    `"function": "name"`, `"function": {"functionId": ...}` or `"run": {"serviceId": ...}`."""
    if "run" in rule:
        return str(rule["run"]["serviceId"])
    target = rule.get("function")
    if isinstance(target, str):
        return target
    if isinstance(target, dict):
        return str(target["functionId"])
    return None


def for_region(config: dict[str, Any], region: str) -> dict[str, Any]:
    staged = json.loads(json.dumps(config))
    for rule in staged.get("hosting", {}).get("rewrites", []):
        target = rewrite_target(rule)
        if target is None:
            continue
        rule.pop("function", None)
        rule["run"] = {"serviceId": service_id(target), "region": region}
    return staged


def stage(region: str, out: Path, source: Path = ROOT / "firebase.json") -> Path:
    config = json.loads(source.read_text())
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    referenced = []
    if "hosting" in config:
        referenced.append(config["hosting"]["public"])
    if "firestore" in config:
        referenced += [config["firestore"][key] for key in ("rules", "indexes")
                       if key in config["firestore"]]  # fmt: skip
    for name in referenced:
        path = source.parent / name
        if path.is_dir():
            shutil.copytree(path, out / name)
        else:
            shutil.copy2(path, out / name)
    target = out / "firebase.json"
    target.write_text(json.dumps(for_region(config, region), indent=2) + "\n")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--region", required=True)
    parser.add_argument("--out", type=Path, default=ROOT / ".build" / "firebase")
    args = parser.parse_args()
    print(stage(args.region, args.out))


if __name__ == "__main__":
    main()
