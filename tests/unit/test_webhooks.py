"""Webhooks against a local receiver: signed, retried with back-off, logged."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from sqlalchemy import select

from portal.jobs.runner import queue_webhooks
from portal.models import WebhookDelivery
from portal.services import ServiceError
from portal.services.webhooks import BACKOFF, add_endpoint, deliver_due


def later() -> dt.datetime:
    """Just after "now": deliveries are queued with the wall clock, so they are due by then."""
    return dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)


@pytest.fixture
def receiver():
    got: list[tuple[dict, bytes, dict]] = []
    fail = {"left": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's API
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if fail["left"] > 0:
                fail["left"] -= 1
                self.send_response(503)
                self.end_headers()
                return
            got.append((json.loads(body), body, dict(self.headers)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hook", got, fail
    server.shutdown()


def creator_lv1(world, key: str) -> None:
    world.member(key, "creator")
    for m in ("profile_complete", "task_hall_visited", "tasks_enabled"):
        world.add(key, m, "2026-10-01", 1)
    world.add(key, "courses_completed", "2026-10-01", 3)
    world.rows(key, "video", ["2026-10-20", "2026-10-21", "2026-10-22", "2026-10-23", "2026-10-24"], 100)


def test_level_change_and_benefits_are_posted_signed(world, receiver):
    url, got, _ = receiver
    creator_lv1(world, "c1")
    add_endpoint(world.s, url, ["level_change", "benefit_issued"], secret="s3cret")
    world.s.commit()
    summary = world.evaluate("creator", "2026-10-31")
    assert queue_webhooks(world.s, summary) == 1 + summary.benefits_issued
    assert queue_webhooks(world.s, summary) == 0  # queueing the run again (a resumed run) adds nothing
    world.s.commit()
    assert queue_webhooks(world.s, world.evaluate("creator", "2026-10-31")) == 0  # nor does a same-day re-run
    world.s.commit()
    assert deliver_due(world.s, later()) == {"delivered": 4, "retry": 0, "failed": 0}
    world.s.commit()
    events = [g[0] for g in got]
    change = next(e for e in events if e["event"] == "level_change")
    assert (change["member"], change["program"], change["from"], change["to"]) == ("c1", "creator", None, "LV1")
    assert sorted(e["benefit"] for e in events if e["event"] == "benefit_issued") == [
        "extra_dispatch", "identity_tag", "square_booth"]
    for _payload, body, headers in got:
        expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
        assert headers["X-Portal-Signature"] == expected
    assert deliver_due(world.s, later())["delivered"] == 0  # nothing twice


def test_failures_are_retried_with_back_off_then_given_up(world, receiver):
    url, got, fail = receiver
    creator_lv1(world, "c1")
    add_endpoint(world.s, url, ["level_change"])
    world.s.commit()
    queue_webhooks(world.s, world.evaluate("creator", "2026-10-31"))
    world.s.commit()
    fail["left"] = 2
    NOW = later()  # noqa: N806 - the test's fixed clock
    assert deliver_due(world.s, NOW)["retry"] == 1
    assert deliver_due(world.s, NOW)["retry"] == 0  # not due again before its back-off
    assert deliver_due(world.s, NOW + dt.timedelta(seconds=BACKOFF[0]))["retry"] == 1
    out = deliver_due(world.s, NOW + dt.timedelta(seconds=BACKOFF[0] + BACKOFF[1]))
    assert out["delivered"] == 1
    d = world.s.scalar(select(WebhookDelivery))
    assert (d.status, d.attempts, d.last_status_code) == ("delivered", 3, 204)
    assert len(got) == 1


def test_an_unreachable_endpoint_fails_after_the_last_retry(world):
    creator_lv1(world, "c1")
    add_endpoint(world.s, "http://127.0.0.1:9/nothing", ["level_change"])
    world.s.commit()
    queue_webhooks(world.s, world.evaluate("creator", "2026-10-31"))
    t = later()
    for wait in (0, *BACKOFF):
        t += dt.timedelta(seconds=wait)
        deliver_due(world.s, t)
    d = world.s.scalar(select(WebhookDelivery))
    assert d.status == "failed" and d.attempts == len(BACKOFF) + 1 and "Error" in d.last_error


def test_bad_endpoint_configuration_is_refused(world):
    world.load_programs()
    with pytest.raises(ServiceError, match="http"):
        add_endpoint(world.s, "ftp://x", ["level_change"])
    with pytest.raises(ServiceError, match="events"):
        add_endpoint(world.s, "https://x.example/h", ["everything"])
