"""Login limits hold across several gunicorn workers when they share Redis
(PORTAL_RATELIMIT_STORAGE=redis://...): 10 failed logins per account, whichever worker
answers. Real gunicorn, real Redis, real HTTP."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests

from ..helpers import free_port, wait_until_serving

REDIS_URL = os.environ.get("PORTAL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")



def _redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False



@pytest.fixture
def gunicorn(tmp_path: Path):
    if not _redis_up():
        if os.environ.get("CI"):
            pytest.fail("Redis is not answering at 127.0.0.1:6379 (CI must run this test)")
        pytest.skip("Redis is not running")
    env = dict(os.environ, PORTAL_DATABASE_URL=f"sqlite:///{tmp_path / 'portal.db'}", PORTAL_SECRET_KEY="x" * 32,
               PORTAL_RATELIMIT_STORAGE=REDIS_URL, PORTAL_RATELIMIT_KEY_PREFIX=f"test-{uuid.uuid4().hex}")
    bindir = Path(sys.executable).parent
    subprocess.run([str(bindir / "portal"), "init"], env=env, check=True, capture_output=True)
    port = free_port()
    proc = subprocess.Popen([str(bindir / "gunicorn"), "-w", "2", "-b", f"127.0.0.1:{port}", "portal:create_app()"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(base, proc)
        yield base
    finally:  # never leave the server behind, whatever failed
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(tmp_path / "instance", ignore_errors=True)


def _failed_login(base: str, account: str) -> int:
    # A new connection each time: gunicorn hands it to either worker. The cookie is sent by hand
    # because it is marked Secure (production settings) and this is plain HTTP on loopback.
    page = requests.get(base + "/login", timeout=5)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page.text).group(1)
    cookie = re.search(r"(session=[^;]+)", page.headers["Set-Cookie"]).group(1)
    return requests.post(base + "/login", data={"username": account, "password": "not-the-password",
                                                "csrf_token": token},
                         headers={"Cookie": cookie}, timeout=10, allow_redirects=False).status_code


def test_ten_failed_logins_per_account_across_two_workers(gunicorn):
    statuses = [_failed_login(gunicorn, "c001") for _ in range(12)]
    assert statuses == [401] * 10 + [429, 429]
    # another account is not affected
    assert _failed_login(gunicorn, "c002") == 401
