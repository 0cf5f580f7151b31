"""The JSON API over real HTTP (a live server on loopback): tokens, scopes, errors."""

from __future__ import annotations

import datetime as dt
import json
import threading
import urllib.error
import urllib.request

import pytest
from sqlalchemy import func, select
from werkzeug.serving import make_server

from portal import create_app
from portal.models import AuditEntry, BenefitItem, MetricRow


@pytest.fixture
def server(db_url, tmp_path):
    from portal.cli import init_database
    from portal.demo import load_demo
    from portal.services import tokens

    app = create_app({"DATABASE_URL": db_url, "TESTING": True, "SECRET_KEY": "api-tests"})
    app.instance_path = str(tmp_path / "instance")
    with app.app_context():
        init_database(app)
        with app.extensions["portal.db"].factory() as s:
            load_demo(s, dt.date.today())
            keys = {"staff": tokens.create(s, "crm", "staff"), "c001": tokens.create(s, "c001-app", "member", "c001"),
                    "revoked": tokens.create(s, "old", "staff")}
            tokens.revoke(s, "old")
            s.commit()
    srv = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_port}", keys, app
    srv.shutdown()
    app.extensions["portal.db"].engine.dispose()


def call(base: str, method: str, path: str, token: str | None = None, body=None, raw: bytes | None = None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(base + path, data=data, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        payload = exc.read()
        assert b"Traceback" not in payload
        return exc.code, json.loads(payload)


def count(app, model, *where) -> int:
    with app.extensions["portal.db"].factory() as s:
        return s.scalar(select(func.count()).select_from(model).where(*where))


def test_standing_needs_a_valid_token(server):
    base, keys, _ = server
    for token in (None, "pt_not-a-real-token", keys["revoked"], "garbage"):
        status, body = call(base, "GET", "/api/v1/members/c001/standing", token)
        assert status == 401 and set(body) == {"error", "details"}


def test_member_token_sees_only_its_member(server):
    base, keys, _ = server
    status, body = call(base, "GET", "/api/v1/members/c001/standing?program=creator", keys["c001"])
    assert status == 200 and body["member"] == "c001" and body["level"] == "LV3"
    assert {"requirements", "benefits", "last_change", "next_level"} <= set(body)
    for path in ("/standing", "/history", "/benefits"):
        status, body = call(base, "GET", f"/api/v1/members/c002{path}", keys["c001"])
        assert status == 404, path
    status, _ = call(base, "GET", "/api/v1/members/nobody/standing", keys["staff"])
    assert status == 404


def test_staff_token_reads_any_member_and_all_programs(server):
    base, keys, _ = server
    status, body = call(base, "GET", "/api/v1/members/m002/standing", keys["staff"])
    assert status == 200 and [s["program"] for s in body] == ["member", "scorecard"]
    status, body = call(base, "GET", "/api/v1/members/c004/history", keys["staff"])
    assert status == 200 and body[0]["to"] == "LV1" and body[0]["reasons"]


def test_metrics_push_is_all_or_nothing_with_errors_by_index(server):
    base, keys, app = server
    before = count(app, MetricRow)
    rows = [{"member": "c001", "metric": "video", "date": "2026-11-01", "value": 5, "id": "api-1"},
            {"member": "ghost", "metric": "video", "date": "2026-11-01", "value": 5},
            {"member": "c001", "metric": "nosuch", "date": "2026-11-01", "value": 5}]
    status, body = call(base, "POST", "/api/v1/metrics", keys["staff"], {"rows": rows})
    assert status == 422
    assert [d["index"] for d in body["details"]] == [1, 2]
    assert "unknown member 'ghost'" in body["details"][0]["reason"]
    assert count(app, MetricRow) == before
    status, body = call(base, "POST", "/api/v1/metrics", keys["staff"], {"rows": rows[:1]})
    assert (status, body) == (200, {"new": 1, "duplicates": 0})
    status, body = call(base, "POST", "/api/v1/metrics", keys["staff"], {"rows": rows[:1]})
    assert (status, body) == (200, {"new": 0, "duplicates": 1})


def test_metrics_push_needs_staff_and_a_json_object(server):
    base, keys, _ = server
    assert call(base, "POST", "/api/v1/metrics", keys["c001"], {"rows": []})[0] == 403
    assert call(base, "POST", "/api/v1/metrics", keys["staff"], raw=b"not json")[0] == 400
    assert call(base, "POST", "/api/v1/metrics", keys["staff"], {"nope": 1})[0] == 422
    status, body = call(base, "POST", "/api/v1/metrics", keys["staff"], {"rows": "x"})
    assert status == 422


def test_claim_once_then_409_and_404_for_another_members_item(server):
    base, keys, app = server
    _, items = call(base, "GET", "/api/v1/members/c001/benefits", keys["c001"])
    item = next(i for i in items if i["state"] == "available" and i["mode"] == "claim")
    status, body = call(base, "POST", f"/api/v1/members/c001/benefits/{item['id']}/claim", keys["c001"])
    assert status == 200 and body["state"] == "claimed"
    status, body = call(base, "POST", f"/api/v1/members/c001/benefits/{item['id']}/claim", keys["c001"])
    assert status == 409 and body["details"] == {"state": "claimed"}
    _, m005 = call(base, "GET", "/api/v1/members/m005/benefits", keys["staff"])
    theirs = next(i for i in m005 if i["state"] == "available")
    status, _ = call(base, "POST", f"/api/v1/members/c001/benefits/{theirs['id']}/claim", keys["c001"])
    assert status == 404
    status, _ = call(base, "POST", f"/api/v1/members/m005/benefits/{theirs['id']}/claim", keys["c001"])
    assert status == 404
    assert count(app, BenefitItem, BenefitItem.id == theirs["id"], BenefitItem.state == "available") == 1


def test_grant_and_override_are_staff_only_and_audited(server):
    base, keys, app = server
    body = {"benefit": "bonus_cash", "program": "creator", "reason": "campaign", "amount": 300}
    assert call(base, "POST", "/api/v1/members/c001/grants", keys["c001"], body)[0] == 403
    status, item = call(base, "POST", "/api/v1/members/c001/grants", keys["staff"], body)
    assert status == 201 and item["state"] == "issued" and item["granted_by"] == "token:crm"
    assert call(base, "POST", "/api/v1/members/c001/grants", keys["staff"], {"benefit": "x"})[0] == 422
    status, st = call(base, "POST", "/api/v1/members/c004/override", keys["staff"],
                      {"program": "creator", "level": "LV2", "reason": "appeal upheld", "until": "2099-01-01"})
    assert status == 200 and st["level"] == "LV2"
    status, _ = call(base, "POST", "/api/v1/members/c004/override", keys["staff"],
                     {"program": "creator", "level": "LV9", "reason": "x"})
    assert status == 400
    assert count(app, AuditEntry, AuditEntry.actor == "token:crm") == 2


def test_openapi_document_lists_every_api_route(server):
    base, _, app = server
    status, doc = call(base, "GET", "/api/v1/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.")
    documented = {p.replace("{member}", "<member>").replace("{id}", "<int:item_id>") for p in doc["paths"]}
    routes = {r.rule for r in app.url_map.iter_rules() if r.rule.startswith("/api/v1/")}
    assert routes == documented
