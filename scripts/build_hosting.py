"""Complete `hosting/` (what Firebase Hosting serves, and the local gateway too) with the files
that are built rather than written: Swagger UI from the npm package `swagger-ui-dist` (installed
by `npm ci`, pinned in package-lock.json) and a copy of openapi.yaml for /docs to read.

    hosting/vendor/swagger-ui/   swagger-ui-bundle.js, swagger-ui.css and their licence
    hosting/openapi.yaml         the API description, as Hosting serves it

Run by `make install`; deploy.sh must have run it before `firebase deploy --only hosting`.
Both outputs are ignored by git: they are copies.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SWAGGER_UI = ROOT / "node_modules" / "swagger-ui-dist"
HOSTING = ROOT / "hosting"
VENDORED = ("swagger-ui-bundle.js", "swagger-ui.css", "LICENSE", "NOTICE")


def build(hosting: Path = HOSTING, swagger_ui: Path = SWAGGER_UI) -> list[Path]:
    missing = [name for name in VENDORED if not (swagger_ui / name).exists()]
    if missing:
        raise SystemExit(
            f"{swagger_ui} lacks {', '.join(missing)}: run `npm ci` in {ROOT} (make install does)"
        )
    target = hosting / "vendor" / "swagger-ui"
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name in VENDORED:
        shutil.copyfile(swagger_ui / name, target / name)
        written.append(target / name)
    shutil.copyfile(ROOT / "openapi.yaml", hosting / "openapi.yaml")
    written.append(hosting / "openapi.yaml")
    return written


if __name__ == "__main__":
    for path in build():
        print(path.relative_to(ROOT))
    sys.exit(0)
