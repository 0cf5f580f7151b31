"""Locust scenario for Portal (load/run.sh runs it headless against gunicorn).

Members log in and browse their overview, a program page, history, benefits and
notifications, and claim a claimable benefit when the benefits page offers one; staff log in,
search members, open a member page and the dashboard. Logins come from LOAD_USERS (a CSV
`key,password,role` written by load/make_population.py), handed out round robin.

A response is a failure when its status is not the expected one (pages 200, a login or a
claim ending on the page it redirects to), or when a login lands back on the login page.
"""

from __future__ import annotations

import csv
import itertools
import os
import random
import re
import threading
from http.cookiejar import DefaultCookiePolicy

from locust import HttpUser, between, task

CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')
CLAIM = re.compile(r'action="/benefits/(\d+)/claim"')
PROGRAM = re.compile(r'href="/programs/([a-z_]+)"')
MEMBER_LINK = re.compile(r'href="/staff/members/([A-Za-z0-9_.-]+)"')


def _logins() -> dict[str, list[tuple[str, str]]]:
    path = os.environ.get("LOAD_USERS", "users.csv")
    out: dict[str, list[tuple[str, str]]] = {"member": [], "staff": []}
    with open(path, encoding="utf-8") as f:
        for row in csv.DictReader(f):
            out[row["role"]].append((row["key"], row["password"]))
    return out


LOGINS = _logins()
_turns = {role: itertools.cycle(rows) for role, rows in LOGINS.items()}
_lock = threading.Lock()


def next_login(role: str) -> tuple[str, str]:
    with _lock:
        return next(_turns[role])


def _secure_cookies_over_http(self, cookie, request) -> bool:
    return True


# The session cookie is Secure outside debug and tests. In production a TLS proxy in front of
# gunicorn receives it over https and passes it on over plain http; here the virtual users
# talk to gunicorn directly, so they send Secure cookies over http (this process only).
DefaultCookiePolicy.return_ok_secure = _secure_cookies_over_http


class PortalUser(HttpUser):
    abstract = True
    wait_time = between(0.5, 2.0)
    role = "member"

    def on_start(self) -> None:
        self.key, password = next_login(self.role)
        page = self.client.get("/login", name="/login")
        token = CSRF.search(page.text)
        with self.client.post("/login", name="/login [POST]", catch_response=True,
                              data={"username": self.key, "password": password,
                                    "csrf_token": token.group(1) if token else ""}) as r:
            if r.status_code != 200 or "/login" in r.url:
                r.failure(f"login of {self.key} failed: {r.status_code} {r.url}")

    def page(self, path: str, name: str | None = None):
        with self.client.get(path, name=name or path, catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"{path}: {r.status_code}")
            elif "/login" in r.url:
                r.failure(f"{path}: sent to the login page")
            return r


class Member(PortalUser):
    weight = 5
    role = "member"

    def on_start(self) -> None:
        super().on_start()
        overview = self.page("/")
        self.programs = sorted(set(PROGRAM.findall(overview.text))) or ["creator"]

    @task(4)
    def overview(self) -> None:
        self.page("/")

    @task(3)
    def program(self) -> None:
        self.page(f"/programs/{random.choice(self.programs)}", name="/programs/[key]")

    @task(2)
    def history(self) -> None:
        self.page("/history")

    @task(3)
    def benefits(self) -> None:
        r = self.page("/benefits")
        claimable = CLAIM.findall(r.text or "")
        token = CSRF.search(r.text or "")
        if claimable and token and random.random() < 0.5:
            item = random.choice(claimable)
            with self.client.post(f"/benefits/{item}/claim", name="/benefits/[id]/claim", catch_response=True,
                                  data={"csrf_token": token.group(1)}) as c:
                # 303 to the benefits page, claimed - or, when another session of the same
                # member claimed it first, 303 with "can no longer be claimed": both fine
                if c.status_code != 200 or "/benefits" not in c.url:
                    c.failure(f"claim of {item}: {c.status_code} {c.url}")

    @task(1)
    def notifications(self) -> None:
        self.page("/notifications")


class Staff(PortalUser):
    weight = 1
    role = "staff"

    @task(3)
    def search(self) -> None:
        text = random.choice(["lt0", "lt01", "c00", "m00", "load", "lt002"])
        r = self.page(f"/staff/members?text={text}", name="/staff/members?text=[q]")
        keys = MEMBER_LINK.findall(r.text or "")
        if keys:
            self.page(f"/staff/members/{random.choice(keys)}", name="/staff/members/[key]")

    @task(1)
    def by_level(self) -> None:
        level = random.choice(["LV1", "LV2", "LV3"])
        self.page(f"/staff/members?program=creator&level={level}", name="/staff/members?program=&level=")

    @task(1)
    def dashboard(self) -> None:
        self.page("/staff/", name="/staff/")
