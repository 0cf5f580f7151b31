"""schemathesis against /api/v1/openapi.json over real HTTP with every check on: no 5xx,
responses match the schema, no endpoint answers without its token (ignored_auth), and
schema-valid requests succeed or get the refusals schemathesis-<role>.toml (next to this file) lists
(the schema cannot know which members or metrics exist)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .test_api_http import server  # noqa: F401 - the live-server fixture

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
HERE = Path(__file__).parent


def run(base: str, token: str, role: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SCHEMATHESIS), "--config-file", str(HERE / f"schemathesis-{role}.toml"), "run", f"{base}/api/v1/openapi.json",
         "-H", f"Authorization: Bearer {token}", "--checks", "all", "--max-examples", "30", "--seed", "7",
         "--no-color"],
        capture_output=True, text=True, timeout=600,
    )


def test_schemathesis_finds_nothing_with_a_staff_token(server):  # noqa: F811
    base, keys, _ = server
    result = run(base, keys["staff"], "staff")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_schemathesis_finds_nothing_with_a_member_token(server):  # noqa: F811
    base, keys, _ = server
    result = run(base, keys["c001"], "member")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
