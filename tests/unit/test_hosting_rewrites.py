"""Hosting's rewrites, as deploy.sh stages them for the region the functions run in, and as
the local Hosting stand-in reads them: every form firebase.json allows names the same target."""

from __future__ import annotations

import pytest

from scripts.stage_firebase import for_region, rewrite_target, service_id


@pytest.mark.parametrize(
    "rule",
    [
        {"source": "/x", "function": "process_image"},
        {"source": "/x", "function": {"functionId": "process_image", "region": "us-central1"}},
        {"source": "/x", "run": {"serviceId": "process-image"}},
        {"source": "/x", "run": {"serviceId": "process-image", "region": "us-central1"}},
    ],
    ids=["function name", "function object", "run", "run with a region"],
)
def test_every_rewrite_form_becomes_the_cloud_run_form_for_the_region(
    rule: dict[str, object],
) -> None:
    config = {
        "hosting": {
            "public": "hosting",
            "rewrites": [rule, {"source": "**", "destination": "/index.html"}],
        }
    }

    staged = for_region(config, "europe-west1")

    first, other = staged["hosting"]["rewrites"]
    assert first == {
        "source": "/x",
        "run": {"serviceId": "process-image", "region": "europe-west1"},
    }
    assert other == {"source": "**", "destination": "/index.html"}  # not a function: untouched
    assert service_id(rewrite_target(rule) or "") == "process-image"
    assert config["hosting"]["rewrites"][0] == rule  # the committed config is not changed
