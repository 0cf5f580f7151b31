"""schemathesis against /api/v1/openapi.json over real HTTP: no 5xx, responses match the
schema, no endpoint answers without its token (ignored_auth), with every check on except
positive_data_acceptance (schema-valid rows naming members or metrics that do not exist are
rightly refused with 422: the schema cannot know the data)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .test_api_http import server  # noqa: F401 - the live-server fixture

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


def run(base: str, token: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SCHEMATHESIS), "run", f"{base}/api/v1/openapi.json", "-H", f"Authorization: Bearer {token}",
         "--checks", "all", "--exclude-checks", "positive_data_acceptance", "--max-examples", "30", "--seed", "7",
         "--no-color"],
        capture_output=True, text=True, timeout=600,
    )


def test_schemathesis_finds_nothing_with_a_staff_token(server):  # noqa: F811
    base, keys, _ = server
    result = run(base, keys["staff"])
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_schemathesis_finds_nothing_with_a_member_token(server):  # noqa: F811
    base, keys, _ = server
    result = run(base, keys["c001"])
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
