"""Shared helpers of the benchmark scripts: measured subprocesses, database copies and raw
connections, and a description of the machine and the code being measured."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
PORTAL = str(VENV_BIN / "portal") if (VENV_BIN / "portal").exists() else "portal"


@dataclass
class Measured:
    seconds: float
    max_rss_kb: int  # peak resident set size of the child process (getrusage via wait4)
    returncode: int
    stdout: str
    stderr: str

    @property
    def max_rss_mib(self) -> float:
        return self.max_rss_kb / 1024


def run_measured(cmd: list[str], env: dict[str, str] | None = None, check: bool = True) -> Measured:
    """Run a command; wall time and the peak RSS of exactly that process (os.wait4)."""
    full_env = {**os.environ, **(env or {})}
    out_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-{os.getpid()}-{time.monotonic_ns()}"
    with open(f"{out_path}.out", "w+b") as out, open(f"{out_path}.err", "w+b") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, env=full_env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    os.unlink(f"{out_path}.out")
    os.unlink(f"{out_path}.err")
    result = Measured(seconds, usage.ru_maxrss, proc.returncode, stdout, stderr)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{stdout[-2000:]}\n{stderr[-4000:]}")
    return result


def portal_env(url: str) -> dict[str, str]:
    """The timed `portal` runs as an installed one does: with its bytecode cached. A checkout's
    editable install has no .pyc files of its own, and where PYTHONDONTWRITEBYTECODE is set
    (this machine) every run would compile the package again: 0.2 s of each start-up. The cache
    lives under bench/out, so the source tree stays clean; the first run (`portal init`) fills it."""
    return {"PORTAL_DATABASE_URL": url, "PYTHONDONTWRITEBYTECODE": "",
            "PYTHONPYCACHEPREFIX": str(ROOT / "bench" / "out" / "pycache")}


# -- databases ----------------------------------------------------------------------------------


def backend(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgresql"


def sqlite_path(url: str) -> str:
    return make_url(url).database or ""


def pg_dsn(url: str, database: str | None = None) -> str:
    """A libpq connection string for psycopg / psql from a SQLAlchemy-style URL."""
    u = make_url(url.replace("postgresql+psycopg://", "postgresql://"))
    if database is not None:
        u = u.set(database=database)
    return u.set(drivername="postgresql").render_as_string(hide_password=False)


def pg_database(url: str) -> str:
    return make_url(url).database or ""


def redact(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - only for reports
        return url


def with_database(url: str, database: str) -> str:
    """The same server, another database (PostgreSQL) or file (SQLite)."""
    if backend(url) == "sqlite":
        return f"sqlite:///{database}"
    return make_url(url).set(database=database).render_as_string(hide_password=False)


def copy_database(url: str, name: str) -> str:
    """A fresh copy of a loaded database (evaluations write, so each run starts from the same
    data): a file copy for SQLite (after a checkpoint), CREATE DATABASE ... TEMPLATE for
    PostgreSQL. Returns the copy's URL."""
    if backend(url) == "sqlite":
        src = sqlite_path(url)
        dst = str(Path(src).with_name(name))
        with sqlite3.connect(src) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        for suffix in ("", "-wal", "-shm"):
            Path(dst + suffix).unlink(missing_ok=True)
        shutil.copyfile(src, dst)
        return f"sqlite:///{dst}"
    import psycopg

    drop_database(with_database(url, name))
    with psycopg.connect(pg_dsn(url, "postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg_database(url)}"')
    return with_database(url, name)


def drop_database(url: str) -> None:
    if backend(url) == "sqlite":
        for suffix in ("", "-wal", "-shm"):
            Path(sqlite_path(url) + suffix).unlink(missing_ok=True)
        return
    import psycopg

    with psycopg.connect(pg_dsn(url, "postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{pg_database(url)}" WITH (FORCE)')


def create_database(url: str) -> None:
    """An empty database (PostgreSQL) or no file (SQLite), replacing any existing one."""
    drop_database(url)
    if backend(url) == "postgresql":
        import psycopg

        with psycopg.connect(pg_dsn(url, "postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{pg_database(url)}"')


def raw_connect(url: str):
    """A plain DB-API connection (no SQLAlchemy, no portal) for the reference queries."""
    if backend(url) == "sqlite":
        conn = sqlite3.connect(sqlite_path(url))
        conn.execute("PRAGMA journal_mode=WAL")
        return conn
    import psycopg

    return psycopg.connect(pg_dsn(url))


def database_size(url: str) -> int:
    if backend(url) == "sqlite":
        return sum(Path(sqlite_path(url) + s).stat().st_size for s in ("", "-wal") if Path(sqlite_path(url) + s).exists())
    with raw_connect(url) as conn:
        return conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]


def server_version(url: str) -> str:
    if backend(url) == "sqlite":
        return f"SQLite {sqlite3.sqlite_version}"
    with raw_connect(url) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
        settings = {k: conn.execute(f"SHOW {k}").fetchone()[0] for k in ("shared_buffers", "work_mem", "max_wal_size")}
    return f"PostgreSQL {version} ({', '.join(f'{k}={v}' for k, v in settings.items())})"


# -- the machine and the code ---------------------------------------------------------------------


def machine() -> dict[str, object]:
    """Cores and memory from /proc, the load when measured, the code's git state."""
    info: dict[str, object] = {"date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        models = [line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")]
        info["cpus"] = len([line for line in cpuinfo.splitlines() if line.startswith("processor")])
        info["cpu_model"] = models[0] if models else "?"
        mem = next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
        info["memory_gib"] = round(int(mem.split()[1]) / 1024 / 1024, 1)
        info["loadavg"] = Path("/proc/loadavg").read_text().split()[:3]
    except OSError:  # not Linux
        info["cpus"] = os.cpu_count()
    info["python"] = sys.version.split()[0]
    info["code"] = git_state()
    return info


def git_state() -> str:
    """The code being measured: the checkout the ``portal`` package is imported from (a
    PYTHONPATH snapshot says what it is in its SNAPSHOT file), its commit and whether it differs."""
    try:
        import portal

        root = Path(portal.__file__).resolve().parent.parent
    except ImportError:
        root = ROOT
    if (root / "SNAPSHOT").exists():
        return f"{root}: " + (root / "SNAPSHOT").read_text().strip()
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        diff = subprocess.run(["git", "diff", "HEAD", "--", "portal"], cwd=root, capture_output=True,
                              check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    if not diff:
        return head
    return f"{head}+dirty(portal diff sha1 {hashlib.sha1(diff).hexdigest()[:10]})"


def loadavg() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except OSError:
        return 0.0


def settle() -> None:
    """Write back every dirty page before a timed step, so it does not pay for the previous
    step's writes (a bulk load leaves ~100 MB for the kernel to flush in the background)."""
    os.sync()


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def write_json(path: str | None, results: dict) -> None:
    """Write a script's results where --json-out says (nothing when it is not given)."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(results, indent=2) + "\n")


def table(rows: list[list[object]], header: list[str]) -> str:
    """A GitHub markdown table."""
    cells = [[str(c) for c in r] for r in rows]
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in cells]
    return "\n".join(out)
