"""Scale-out in a small form (issue 7): two gunicorn workers and two `portal scheduler`
processes against one PostgreSQL database. The web tier serves from either worker; of the
schedulers one acts (advisory lock) and every (job, date) runs exactly once."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from sqlalchemy import func, select

from portal.db import make_engine, session_factory
from portal.models import EvaluationRun, JobRun

from ..helpers import free_port, wait_until_serving


def _login(base: str) -> requests.Session:
    s = requests.Session()
    page = s.get(base + "/login", timeout=10)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page.text).group(1)
    cookie = re.search(r"(session=[^;]+)", page.headers["Set-Cookie"]).group(1)
    answer = s.post(base + "/login", data={"username": "c001", "password": "demo1234", "csrf_token": token},
                    headers={"Cookie": cookie}, timeout=30, allow_redirects=False)
    assert answer.status_code == 302, answer.status_code
    # Secure cookies over plain HTTP on loopback: carry the session by hand.
    s.headers["Cookie"] = re.search(r"(session=[^;]+)", answer.headers["Set-Cookie"]).group(1)
    return s


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_two_web_workers_and_two_schedulers_on_one_postgresql(db_url, tmp_path: Path):
    bindir = Path(sys.executable).parent
    env = dict(os.environ, PORTAL_DATABASE_URL=db_url, PORTAL_SECRET_KEY="s" * 32, PORTAL_SCHEDULER="off",
               PORTAL_RATELIMIT_ENABLED="false")
    subprocess.run([str(bindir / "portal"), "demo", "--no-serve"], env=env, check=True, capture_output=True,
                   cwd=tmp_path, timeout=300)
    engine = make_engine(db_url)
    with session_factory(engine)() as s:
        runs_before = s.scalar(select(func.count()).select_from(EvaluationRun))
    port = free_port()
    procs = [subprocess.Popen([str(bindir / "gunicorn"), "-w", "2", "-b", f"127.0.0.1:{port}", "portal:create_app()"],
                              env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    procs += [subprocess.Popen([str(bindir / "portal"), "scheduler"], env=env, cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(2)]
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(base, procs[0])
        member = _login(base)
        for _ in range(20):  # new connections: both workers answer, each from the shared database
            r = requests.get(base + "/", headers=member.headers, timeout=30, allow_redirects=False)
            assert r.status_code == 200 and "data-program" in r.text, r.status_code
        # both schedulers tick at once on start; wait until the acting one has finished its jobs
        deadline = time.monotonic() + 120
        while True:
            with session_factory(engine)() as s:
                jobs = s.execute(select(JobRun.job, JobRun.as_of, JobRun.status)).all()
            if jobs and all(j.status in ("done", "failed") for j in jobs):
                break
            assert time.monotonic() < deadline, jobs
            time.sleep(1)
        keys = [(j.job, j.as_of) for j in jobs]
        assert len(keys) == len(set(keys)), "a (job, date) ran twice"
        assert all(j.status == "done" for j in jobs), jobs
        with session_factory(engine)() as s:
            per_program = s.execute(select(EvaluationRun.program_key, EvaluationRun.as_of, func.count())
                                    .where(EvaluationRun.id > runs_before)
                                    .group_by(EvaluationRun.program_key, EvaluationRun.as_of)).all()
        assert all(n == 1 for _, _, n in per_program), per_program
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        engine.dispose()
