"""Web benchmark: gunicorn serving a large database; throughput and latency of the member
overview, a program page and the staff member search next to /healthz, in the same run.

    python bench/web.py --db DATABASE_URL --data DIR [--duration 20] [--connections 32]
                        [--workers 4] [--worker-class sync] [--threads 2]

``--db`` is a database loaded by ``bench/generate.py --load`` and evaluated (bench/evaluate.py
--keep, or ``portal evaluate`` per program) so the pages have standings to show; ``--data`` is
the generator's directory (manifest.json lists the login accounts). The script

1. starts ``gunicorn 'portal:create_app()'`` on 127.0.0.1 (PORTAL_SECRET_KEY set, the login
   rate limiter off with PORTAL_RATELIMIT_ENABLED=false, the scheduler off);
2. logs in (GET /login for the CSRF token, POST the form) as each member account of the
   manifest and as the staff account;
3. for each scenario in turn, drives the server with ``--connections`` concurrent HTTP/1.1
   connections (asyncio, keep-alive when the server keeps the connection, reconnecting when
   it closes it) for ``--warmup`` + ``--duration`` seconds and records every response after
   the warm-up: throughput (responses/s), p50/p90/p99/max latency, non-200 responses;
4. stops gunicorn.

Scenarios: ``healthz`` (the trivial endpoint: one SELECT 1), ``overview`` (GET / as the member
accounts, round robin over the connections), ``program`` (GET /programs/<key> of each
account's program; the all-programs account opens creator), ``staff_search_key`` (GET
/staff/members?text=<a random member key>), ``staff_search_name`` (text=<a common surname>),
``staff_filter`` (program=creator&level=<a level>). The load driver runs on the same machine
and takes CPU from the server; the ratios to healthz are measured with the same driver.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from common import VENV_BIN, backend, log, machine, redact, server_version, table, write_json

CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"|value="([^"]+)"[^>]*name="csrf_token"')
OVERVIEW_GOAL = 0.33
P99_GOAL_MS = 100.0
SURNAMES = ["Wang", "Li", "Zhang", "Liu", "Chen", "Yang", "Huang", "Zhao"]


# -- a tiny HTTP/1.1 client ---------------------------------------------------------------------


class Conn:
    """One keep-alive connection; reopened when the server closes it (sync workers do)."""

    def __init__(self, port: int):
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None

    async def request(self, method: str, path: str, cookie: str = "", body: bytes = b"",
                      content_type: str = "") -> tuple[int, dict[str, list[str]], bytes]:
        for attempt in (1, 2):
            if self.writer is None:
                await self.open()
            head = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{self.port}", "Accept-Language: en"]
            if cookie:
                head.append(f"Cookie: {cookie}")
            if body or method == "POST":
                head += [f"Content-Length: {len(body)}", f"Content-Type: {content_type}"]
            try:
                self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)  # type: ignore[union-attr]
                return await self._response()
            except (ConnectionError, asyncio.IncompleteReadError, OSError):
                await self.close()
                if attempt == 2:
                    raise
        raise AssertionError

    async def _response(self) -> tuple[int, dict[str, list[str]], bytes]:
        assert self.reader is not None
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers: dict[str, list[str]] = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers.setdefault(k.strip().lower(), []).append(v.strip())
        if "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"][0]))
        elif headers.get("transfer-encoding", [""])[0].lower() == "chunked":
            body = await self._chunked()
        else:
            body = await self.reader.read()
            await self.close()
            return status, headers, body
        if headers.get("connection", [""])[0].lower() == "close":
            await self.close()
        return status, headers, body

    async def _chunked(self) -> bytes:
        assert self.reader is not None
        parts = []
        while True:
            size = int((await self.reader.readline()).split(b";")[0].strip(), 16)
            if size == 0:
                await self.reader.readline()
                return b"".join(parts)
            parts.append(await self.reader.readexactly(size))
            await self.reader.readline()


def cookies_of(headers: dict[str, list[str]], jar: dict[str, str]) -> None:
    for c in headers.get("set-cookie", []):
        name, _, rest = c.partition("=")
        value = rest.split(";", 1)[0]
        if value:
            jar[name.strip()] = value
        else:
            jar.pop(name.strip(), None)


def cookie_header(jar: dict[str, str]) -> str:
    return "; ".join(f"{k}={v}" for k, v in jar.items())


async def login(port: int, user: str, password: str) -> str:
    conn = Conn(port)
    jar: dict[str, str] = {}
    status, headers, body = await conn.request("GET", "/login")
    cookies_of(headers, jar)
    m = CSRF.search(body.decode("utf-8", "replace"))
    if status != 200 or not m:
        raise RuntimeError(f"GET /login: {status}, no CSRF token")
    form = urllib.parse.urlencode({"username": user, "password": password, "csrf_token": m.group(1) or m.group(2)})
    status, headers, _ = await conn.request("POST", "/login", cookie_header(jar), form.encode(),
                                            "application/x-www-form-urlencoded")
    cookies_of(headers, jar)
    await conn.close()
    if status != 302:
        raise RuntimeError(f"login as {user} failed: {status}")
    return cookie_header(jar)


# -- scenarios ----------------------------------------------------------------------------------


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)
    errors: dict[int, int] = field(default_factory=dict)
    bytes: int = 0

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        s = sorted(self.latencies)
        return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))] * 1000


async def drive(port: int, connections: int, warmup: float, duration: float,
                next_request) -> tuple[Stats, float]:
    """``next_request(i)`` -> (path, cookie) for connection i. Returns (stats, measured seconds)."""
    stats = Stats()
    start = time.perf_counter()
    measure_from, stop = start + warmup, start + warmup + duration

    async def worker(i: int) -> None:
        conn = Conn(port)
        rng = random.Random(i)
        try:
            while True:
                now = time.perf_counter()
                if now >= stop:
                    return
                path, cookie = next_request(i, rng)
                t0 = time.perf_counter()
                try:
                    status, _, body = await conn.request("GET", path, cookie)
                except (ConnectionError, asyncio.IncompleteReadError, OSError):
                    status, body = 599, b""
                t1 = time.perf_counter()
                if t0 >= measure_from and t1 <= stop:
                    stats.latencies.append(t1 - t0)
                    stats.bytes += len(body)
                    if status != 200:
                        stats.errors[status] = stats.errors.get(status, 0) + 1
        finally:
            await conn.close()

    await asyncio.gather(*(worker(i) for i in range(connections)))
    return stats, duration


def start_gunicorn(url: str, port: int, workers: int, worker_class: str, threads: int, log_path: Path) -> subprocess.Popen:
    env = {**os.environ, "PORTAL_DATABASE_URL": url, "PORTAL_SECRET_KEY": "bench-" + "x" * 40,
           "PORTAL_RATELIMIT_ENABLED": "false", "PORTAL_SCHEDULER": "off"}
    gunicorn = str(VENV_BIN / "gunicorn") if (VENV_BIN / "gunicorn").exists() else "gunicorn"
    cmd = [gunicorn, "-w", str(workers), "-k", worker_class, "-b", f"127.0.0.1:{port}", "--backlog", "2048",
           "--timeout", "120"]
    if worker_class == "gthread":
        cmd += ["--threads", str(threads)]
    cmd.append("portal:create_app()")
    out = open(log_path, "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited {proc.returncode}; see {log_path}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if b" 200 " in s.recv(100):
                    return proc
        except OSError:
            pass
        time.sleep(0.3)
    stop_gunicorn(proc)
    raise RuntimeError(f"gunicorn did not answer /healthz within 60 s; see {log_path}")


def stop_gunicorn(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # the arbiter and its workers (its own session)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def run(a, url: str, manifest: dict, port: int) -> dict:
    accounts = manifest["accounts"]
    staff = next(x for x in accounts if x["what"] == "staff")
    members = [x for x in accounts if x["what"] != "staff"]
    member_cookies = [await login(port, x["member"], x["password"]) for x in members]
    staff_cookie = await login(port, staff["member"], staff["password"])
    programs = [x["program"] for x in members]
    n_members = manifest["members"]
    levels = ["LV1", "LV2", "LV3", "LV4", "-"]

    def pick(i: int) -> int:
        return i % len(members)

    scenarios = {
        "healthz": lambda i, rng: ("/healthz", ""),
        "overview": lambda i, rng: ("/", member_cookies[pick(i)]),
        "program": lambda i, rng: (f"/programs/{programs[pick(i)]}", member_cookies[pick(i)]),
        "staff_search_key": lambda i, rng: (f"/staff/members?text=m{rng.randrange(n_members):07d}", staff_cookie),
        "staff_search_name": lambda i, rng: (f"/staff/members?text={rng.choice(SURNAMES)}", staff_cookie),
        "staff_filter": lambda i, rng: (f"/staff/members?program=creator&level={rng.choice(levels)}", staff_cookie),
    }
    wanted = [s for s in a.scenarios.split(",") if s]
    out = {}
    for name in wanted:
        stats, seconds = await drive(port, a.connections, a.warmup, a.duration, scenarios[name])
        n = len(stats.latencies)
        out[name] = {"requests": n, "rps": round(n / seconds, 1), "p50_ms": round(stats.percentile(50), 1),
                     "p90_ms": round(stats.percentile(90), 1), "p99_ms": round(stats.percentile(99), 1),
                     "max_ms": round(max(stats.latencies) * 1000, 1) if n else None,
                     "errors": stats.errors, "avg_bytes": round(stats.bytes / n) if n else 0}
        log(f"{name}: {out[name]}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--workers", type=int, default=4)
    # The README's deployment: sync workers (gthread gave more throughput but a long tail,
    # docs/performance.md W2).
    ap.add_argument("--worker-class", default="sync", choices=["sync", "gthread"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--scenarios", default="healthz,overview,program,staff_search_key,staff_search_name,staff_filter")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--json-out")
    a = ap.parse_args(argv)
    manifest = json.loads((Path(a.data) / "manifest.json").read_text())
    port = a.port or free_port()
    log_path = Path(a.json_out).with_suffix(".gunicorn.log") if a.json_out else Path(f"/tmp/bench-gunicorn-{port}.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log(f"starting gunicorn ({a.workers} {a.worker_class} workers) on port {port} ...")
    proc = start_gunicorn(a.db, port, a.workers, a.worker_class, a.threads, log_path)
    try:
        results = asyncio.run(run(a, a.db, manifest, port))
    finally:
        stop_gunicorn(proc)
    base = results.get("healthz", {}).get("rps")
    rows = []
    for name, r in results.items():
        share = r["rps"] / base if base else float("nan")
        r["share_of_healthz"] = round(share, 3)
        goal = ""
        if name == "overview":
            goal = f">= 33% of healthz: {'met' if share >= OVERVIEW_GOAL else 'MISSED'}"
        p99_ok = "" if name == "healthz" else ("met" if r["p99_ms"] <= P99_GOAL_MS else "MISSED")
        rows.append([name, r["requests"], f"{r['rps']:.0f}", f"{share:.0%}", goal or "-", f"{r['p50_ms']:.1f}",
                     f"{r['p90_ms']:.1f}", f"{r['p99_ms']:.1f}", p99_ok or "-", f"{r['max_ms']}",
                     sum(r["errors"].values()), r["avg_bytes"]])
    summary = {"machine": machine(), "database": server_version(a.db), "db": redact(a.db), "backend": backend(a.db),
               "members": manifest["members"], "connections": a.connections, "duration": a.duration,
               "gunicorn": f"{a.workers} {a.worker_class} workers" + (f" x {a.threads} threads" if a.worker_class == "gthread" else ""),
               "command": "python bench/web.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "scenarios": results}
    print(f"\n{backend(a.db)}: {manifest['members']:,} members; gunicorn {summary['gunicorn']}; "
          f"{a.connections} connections, {a.duration:g} s per scenario after {a.warmup:g} s warm-up\n")
    print(table(rows, ["scenario", "responses", "req/s", "of healthz", "throughput goal", "p50 ms", "p90 ms", "p99 ms",
                       "p99 <= 100 ms", "max ms", "non-200", "avg bytes"]))
    write_json(a.json_out, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
