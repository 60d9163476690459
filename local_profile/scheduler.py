"""A stand-in for Cloud Scheduler, for the emulated cloud profile: the sweeper's job.

In production `deploy.sh` creates a Cloud Scheduler job that POSTs the `sweep` message to the
`process_image` function every minute with an OIDC token, asking for one more sweep half a
minute later (Cloud Scheduler runs a job at most once a minute); here this process POSTs the
same kind of body to the same function every two SWEEP_INTERVALs, asking for one more after
one SWEEP_INTERVAL, which the Cloud Tasks emulator delivers. A failed call is only logged: the
next one comes anyway, as Cloud Scheduler's does.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

import requests

from shared.config import Settings
from shared.domain.messages import Sweep, to_payload

log = logging.getLogger("scheduler")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", required=True, help="URL of the process_image function")
    args = parser.parse_args()
    settings = Settings.from_env()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    ready_file = os.environ.get("IMGSVC_READY_FILE")
    if ready_file:
        Path(ready_file).write_text(str(os.getpid()))
    session = requests.Session()
    while True:
        try:
            body = to_payload(Sweep(again_in=settings.sweep_interval))
            answer = session.post(args.target, json=body, timeout=300)
            if answer.status_code >= 300:
                log.warning("the sweep answered %s: %s", answer.status_code, answer.text[:200])
        except requests.RequestException as exc:
            log.warning("the sweep could not be called: %s", exc)
        time.sleep(2 * settings.sweep_interval)


if __name__ == "__main__":
    main()
