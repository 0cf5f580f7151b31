"""The benchmark scripts (bench/) keep working: each runs end to end at a tiny size on SQLite.
No timing is asserted - only that they finish, and produce the results they promise."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"


def run(script: str, *args: str, timeout: int = 60) -> str:
    result = subprocess.run([sys.executable, str(BENCH / script), *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"{script} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def loaded(tmp_path_factory) -> tuple[str, Path]:
    """200 members x 5 days generated and loaded through portal's import service."""
    tmp = tmp_path_factory.mktemp("bench")
    url = f"sqlite:///{tmp / 'bench.db'}"
    run("generate.py", "--members", "200", "--days", "5", "--seed", "3", "--out", str(tmp / "data"), "--load", url,
        "--jobs", "1")
    return url, tmp / "data"


def test_generate_is_deterministic_and_complete(loaded, tmp_path):
    _, data = loaded
    run("generate.py", "--members", "200", "--days", "5", "--seed", "3", "--out", str(tmp_path), "--jobs", "2")
    manifest = json.loads((data / "manifest.json").read_text())
    for f in manifest["files"]:
        for name in (f["members"], f["metrics"]):
            assert (data / name).read_bytes() == (tmp_path / name).read_bytes()  # same seed, same bytes
    assert manifest["members"] == 200 and manifest["metric_rows"] > 0
    programs = {p for line in (data / "members-0001.csv").read_text().splitlines()[1:] for p in line.split(",")[5].split()}
    assert programs == {"creator", "member", "music", "scorecard"}
    assert {a["what"] for a in manifest["accounts"]} >= {"staff"}
    assert manifest["load_rate_rows_per_s"] > 0


def test_evaluate_benchmark(loaded, tmp_path):
    url, data = loaded
    out = tmp_path / "eval.json"
    stdout = run("evaluate.py", "--db", url, "--data", str(data), "--floor-repeats", "1", "--json-out", str(out))
    results = json.loads(out.read_text())
    assert set(results["programs"]) == {"creator", "member", "scorecard", "music"}
    for r in results["programs"].values():
        assert r["full"]["evaluated"] is not None and r["rerun"]["max_rss_mib"] > 0
        # SQLite's floor is the fastest of four access paths, whatever portal's indexes are.
        assert set(r["floor_all"]) == {"as planned", "table scan", "member index", "(metric, date) index"}
        assert r["floor_seconds"] == min(min(v) for v in r["floor_all"].values())
    assert "| creator |" in stdout


def test_import_benchmark(tmp_path):
    out = tmp_path / "import.json"
    run("import_.py", "--db", f"sqlite:///{tmp_path / 'imp.db'}", "--rows", "2000", "--repeats", "1",
        "--data", str(tmp_path / "data"), "--json-out", str(out))
    results = json.loads(out.read_text())
    assert results["rows"] == 2000 and results["portal_seconds"] > 0 and results["floor_seconds"] >= 0
    assert "2000 new rows" in results["repeats"][0]["portal_output"]


def test_web_benchmark(loaded, tmp_path):
    url, data = loaded
    out = tmp_path / "web.json"
    run("web.py", "--db", url, "--data", str(data), "--duration", "1", "--warmup", "0.2", "--connections", "4",
        "--workers", "2", "--json-out", str(out))
    results = json.loads(out.read_text())["scenarios"]
    assert set(results) == {"healthz", "overview", "program", "staff_search_key", "staff_search_name", "staff_filter"}
    for name, r in results.items():
        assert r["requests"] > 0, name
        assert not r["errors"], (name, r["errors"])  # every page answered 200 (logins worked)


def test_profile_summary(tmp_path):
    raw = tmp_path / "stacks.txt"
    raw.write_text("process 1:\"python\";main (x.py:1);work (x.py:5) 3\nprocess 1:\"python\";main (x.py:1) 1\n")
    stdout = run("profile.py", "--load", str(raw))
    assert "75.0%  work (x.py:5)" in stdout and "100.0%  main (x.py:1)" in stdout
