"""The site keeps serving while a full evaluation runs (issue 6): the app behind a real threaded
server (werkzeug, as tests/browser/conftest.py), the demo population plus a few thousand
members, and `portal evaluate` - the real command, in its own process - evaluating every
program as of today. Meanwhile members browse their overview, program, history, benefits
and notifications pages, claim a benefit and mark notifications read, and staff search
members and open the dashboard: every response is the expected 200/302/303 (none 500), and
neither the server's log nor the evaluation's output says "database is locked".
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import random
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest
import requests
from sqlalchemy import insert
from werkzeug.serving import make_server

from portal import create_app
from portal.models import Enrolment, Member, MetricRow

from .test_web import csrf_token

TODAY = dt.date.today()
EXTRA = {"creator": 1800, "member": 1200, "music": 200, "scorecard": 200}  # 3,400 members besides the demo's
GAUGES = ("profile_complete", "task_hall_visited", "tasks_enabled", "quote_set", "assistant_viewed")
MEMBER_PAGES = ["/", "/programs/{program}", "/history", "/benefits", "/notifications"]
STAFF_PAGES = ["/staff/", "/staff/members?text=c0", "/staff/members?program=creator&level=LV2",
               "/staff/members/c001", "/staff/reviews"]
LOCKED = "database is locked"
THINK = 0.05  # seconds between a user's requests


def extra_population(seed: int = 6) -> dict[str, list[dict]]:
    """Members of every program with metric rows dated relative to today (plain dicts)."""
    rng = random.Random(seed)
    members, enrolments, rows = [], [], []
    created = dt.datetime.now(dt.UTC)
    first_id = 10_000

    def add(mid: int, metric: str, day: dt.date, value: float, kind: str | None = None, times: int = 1) -> None:
        rows.extend({"member_id": mid, "metric": metric, "date": day, "value": value, "kind": kind, "event_id": None}
                    for _ in range(times))

    for program, n in EXTRA.items():
        for i in range(n):
            mid = first_id + len(members)
            members.append({"id": mid, "key": f"x{program[:2]}{i:05d}", "name": f"{program} {i}", "role": "member",
                            "created_at": created})
            enrolments.append({"member_id": mid, "program_key": program, "enrolled_on": TODAY - dt.timedelta(days=400)})
            back = TODAY - dt.timedelta(days=rng.randint(2, 20))
            if program == "creator":
                level = rng.randint(0, 3)
                for g in GAUGES:
                    add(mid, g, back, 1)
                add(mid, "courses_completed", back, (1, 3, 5, 8)[level])
                add(mid, "live", back, (2_000, 6_000, 15_000, 60_000)[level], times=(2, 5, 8, 20)[level])
                add(mid, "submission_task", back, 1)
                add(mid, "order", back, 1, "brand", times=rng.randint(0, 4))
                add(mid, "followers", back, rng.choice([5_000, 150_000, 300_001]))
                add(mid, "likes", back, rng.choice([100, 10_001]))
                add(mid, "credit_score", back, 60)
            elif program == "member":
                add(mid, "verified", TODAY - dt.timedelta(days=300), 1)
                add(mid, "purchase", back, rng.choice([120, 600, 2_500, 6_500]), times=rng.randint(1, 3))
            elif program == "music":
                for months in (1, 2):
                    month_end = TODAY.replace(day=1) - dt.timedelta(days=1 + 31 * (months - 1))
                    add(mid, "monthly_plays", month_end, rng.choice([4e6, 2e7, 9e7, 3e8]))
            else:
                for _ in range(rng.randint(1, 8)):
                    add(mid, "transaction", TODAY - dt.timedelta(days=rng.randint(1, 300)), rng.choice([800, 9_000]))
    return {"members": members, "enrolments": enrolments, "rows": rows}


class Captured(logging.Handler):
    """Every log record of the server process (werkzeug's access log, Flask's errors)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.errors: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        self.lines.append(text)
        if record.levelno >= logging.ERROR:
            self.errors.append(text)


@pytest.fixture
def server(db_url, tmp_path, monkeypatch):
    """The app over the test's database (demo data + the extra members), served by a real
    threaded server on loopback. Yields (base URL, captured log). Passwords are argon2id with
    the cheapest parameters: hashing is not what this test measures."""
    from argon2 import PasswordHasher

    from portal.cli import init_database
    from portal.demo import load_demo

    monkeypatch.setattr("portal.services.passwords._hasher", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    app = create_app({"DATABASE_URL": db_url, "SECRET_KEY": "serving-during-evaluation", "RATELIMIT_ENABLED": False})
    app.config["SESSION_COOKIE_SECURE"] = app.config["REMEMBER_COOKIE_SECURE"] = False  # plain http on loopback
    app.instance_path = str(tmp_path / "instance")
    with app.app_context():
        init_database(app)
        with app.extensions["portal.db"].factory() as s:
            load_demo(s, TODAY)
            data = extra_population()
            s.execute(insert(Member), data["members"])
            s.execute(insert(Enrolment), data["enrolments"])
            s.execute(insert(MetricRow), data["rows"])
            s.commit()

    captured = Captured()
    loggers = [logging.getLogger(), logging.getLogger("werkzeug"), app.logger]
    levels = [lg.level for lg in loggers]
    logging.getLogger().addHandler(captured)
    logging.getLogger("werkzeug").setLevel(logging.INFO)
    srv = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_port}", captured
    srv.shutdown()
    thread.join(10)
    logging.getLogger().removeHandler(captured)
    for lg, level in zip(loggers, levels, strict=True):
        lg.setLevel(level)
    app.extensions["portal.db"].engine.dispose()


@dataclass
class Log:
    """Every request made: (user, method, path, status, seconds, started at)."""

    rows: list[tuple] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, *row) -> None:
        with self.lock:
            self.rows.append(row)


def browse(base: str, user: str, password: str, pages: list[str], posts: bool, evaluating: threading.Event,
           stop: threading.Event, log: Log) -> None:
    """One user's session: log in, then pages round and round until ``stop``; a member also
    claims what can be claimed and marks notifications read, once the evaluation runs."""
    http = requests.Session()

    def call(method: str, path: str, **kw) -> requests.Response:
        started = time.monotonic()
        try:
            r = http.request(method, base + path, allow_redirects=False, timeout=120, **kw)
            status = r.status_code
        except requests.RequestException as exc:  # recorded, asserted on by the test
            r, status = None, f"{type(exc).__name__}: {exc}"
        log.add(user, method, path, status, time.monotonic() - started, started)
        return r

    login = call("GET", "/login")
    token = csrf_token(login.text)
    call("POST", "/login", data={"username": user, "password": password, "csrf_token": token})
    rounds = 0
    while not stop.is_set():
        for path in pages:
            r = call("GET", path)
            if not (posts and evaluating.is_set()):
                continue
            if path == "/benefits" and r is not None and r.status_code == 200:
                claimable = re.findall(r'action="/benefits/(\d+)/claim"', r.text)
                if claimable:  # one claim per round; a second claim of the same item: 303 too
                    call("POST", f"/benefits/{claimable[0]}/claim", data={"csrf_token": csrf_token(r.text)})
            if path == "/notifications" and r is not None and r.status_code == 200 and rounds % 2 == 0:
                call("POST", "/notifications/read", data={"csrf_token": csrf_token(r.text)})
            time.sleep(THINK)
        rounds += 1


EXPECTED = {("GET", "/login"): {200}, ("POST", "/login"): {302}}


def expected(method: str, path: str) -> set[int]:
    if (method, path) in EXPECTED:
        return EXPECTED[(method, path)]
    return {303} if method == "POST" else {200}


def test_the_site_serves_every_page_while_a_full_evaluation_runs(server, db_url):
    base, captured = server

    def pages(program: str) -> list[str]:
        return [p.format(program=program) for p in MEMBER_PAGES]

    users = [("c001", "demo1234", pages("creator"), True), ("m002", "demo1234", pages("member"), True),
             ("c002", "demo1234", pages("creator"), True), ("staff", "staff1234", STAFF_PAGES, False)]
    evaluating, stop, log = threading.Event(), threading.Event(), Log()
    threads = [threading.Thread(target=browse, args=(base, *u, evaluating, stop, log), daemon=True) for u in users]
    for t in threads:
        t.start()
    time.sleep(1.0)  # every user logged in and browsing before the evaluation starts

    env = {**os.environ, "PORTAL_DATABASE_URL": db_url}
    cmd = [sys.executable, "-c", "from portal.cli import main; main()", "evaluate"]
    started = time.monotonic()
    evaluating.set()
    # every program as of today: the day after the demo's evaluation, so every standing is written
    done = subprocess.run([*cmd, "--as-of", TODAY.isoformat()], env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    finished = time.monotonic()
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(150)
    assert not any(t.is_alive() for t in threads), "a browsing user hung"

    assert done.returncode == 0, done.stdout + done.stderr
    assert LOCKED not in done.stdout + done.stderr
    total = int(re.search(r"^evaluated (\d+),", done.stdout, re.M).group(1))
    assert total >= sum(EXTRA.values()), done.stdout  # the demo's and the extra members, every program

    during = [r for r in log.rows if started <= r[5] <= finished]
    wrong = [r for r in log.rows if r[3] not in expected(r[1], r[2])]
    assert not wrong, f"unexpected responses: {wrong[:10]}"
    kinds = Counter((r[1], r[2]) for r in during)
    assert len(during) >= 40, f"only {len(during)} requests while the evaluation ran ({finished - started:.1f}s)"
    assert kinds[("POST", "/notifications/read")] >= 1 and sum(
        n for (m, p), n in kinds.items() if m == "POST" and p.endswith("/claim")) >= 1, kinds
    assert sum(n for (m, p), n in kinds.items() if p.startswith("/staff/")) >= 5, kinds

    assert not captured.errors, captured.errors[:3]
    assert not [line for line in captured.lines if LOCKED in line]
    assert not [line for line in captured.lines if '" 500 ' in line]
    slowest = max(during, key=lambda r: r[4])
    print(f"\n  evaluation {finished - started:.1f}s; {len(during)} requests meanwhile, slowest {slowest[4]:.2f}s "
          f"({slowest[1]} {slowest[2]}); {len(log.rows)} in all; {kinds}")


# -- SQLite: page reads queue behind a writer ---------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_member_pages_do_not_wait_for_a_write_transaction(backend, db_url, tmp_path, monkeypatch, caplog):
    """Minimal reproducer, with the busy timeout scaled down from 30 s to 1 s: another
    connection holds a write transaction (as an evaluation's batch does) while a logged-in
    member asks for the overview page."""
    import sqlite3

    from argon2 import PasswordHasher

    import portal.db
    from portal.cli import init_database
    from portal.demo import load_demo

    monkeypatch.setattr(portal.db, "SQLITE_BUSY_TIMEOUT_MS", 1000)
    monkeypatch.setattr("portal.services.passwords._hasher", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    app = create_app({"DATABASE_URL": db_url, "SECRET_KEY": "reproducer", "RATELIMIT_ENABLED": False})
    app.config["SESSION_COOKIE_SECURE"] = app.config["REMEMBER_COOKIE_SECURE"] = False
    app.instance_path = str(tmp_path / "instance")
    with app.app_context():
        init_database(app)
        with app.extensions["portal.db"].factory() as s:
            load_demo(s, TODAY)
            s.commit()
    client = app.test_client()
    token = csrf_token(client.get("/login").get_data(as_text=True))
    assert client.post("/login", data={"username": "c001", "password": "demo1234", "csrf_token": token}).status_code == 302
    assert client.get("/").status_code == 200

    writer = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("UPDATE standings SET score = score WHERE program_key = 'creator'")
    try:
        started = time.monotonic()
        response = client.get("/")
        waited = time.monotonic() - started
    finally:
        writer.execute("ROLLBACK")
        writer.close()
        app.extensions["portal.db"].engine.dispose()
    assert LOCKED not in caplog.text
    assert (response.status_code, waited < 0.5) == (200, True), (response.status_code, round(waited, 2))
