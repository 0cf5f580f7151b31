"""Request size limits: a body larger than MAX_CONTENT_LENGTH (16 MiB by default; 64 KiB here to
keep the tests quick) is refused with 413 - a form POST (login, a staff action, an evidence
upload) and an API POST (JSON answer, never HTML or a stack trace) - and nothing is written:
no rows, no audit entry, no file on disk. Under the limit the same requests go through, so
each refusal is the limit's doing. Runs on SQLite, and PostgreSQL when configured."""

from __future__ import annotations

import datetime as dt
import io
import json

import pytest
from sqlalchemy import func, select

from portal import create_app
from portal.config import defaults
from portal.models import AuditEntry, Enrolment, EvidenceFile, LoginSession, Member, MetricRow

from .test_web import csrf_token, login

LIMIT = 64 * 1024
NOW = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


@pytest.fixture
def limited(db_url, tmp_path, monkeypatch):
    """An initialised site with a 64 KiB request limit: staff 'boss', member 'm1' (music,
    which takes evidence uploads) and a staff API token."""
    from argon2 import PasswordHasher

    from portal.cli import init_database
    from portal.services import tokens
    from portal.services.passwords import hash_password

    monkeypatch.setattr("portal.services.passwords._hasher",
                        PasswordHasher(time_cost=1, memory_cost=8, parallelism=1), raising=False)
    app = create_app({"DATABASE_URL": db_url, "TESTING": True, "SECRET_KEY": "limits", "MAX_CONTENT_LENGTH": LIMIT,
                      "EVIDENCE_DIR": str(tmp_path / "evidence")})
    app.instance_path = str(tmp_path / "instance")
    with app.app_context():
        init_database(app)
        with app.extensions["portal.db"].factory() as s:
            s.add(Member(key="boss", name="Boss", role="staff", password_hash=hash_password("staff-pass-1"),
                         created_at=NOW))
            m1 = Member(key="m1", name="M1", role="member", password_hash=hash_password("member-pass-1"),
                        created_at=NOW)
            s.add(m1)
            s.flush()
            s.add(Enrolment(member_id=m1.id, program_key="music", enrolled_on=NOW.date()))
            app.config["TEST_TOKEN"] = tokens.create(s, "crm", "staff")
            s.commit()
    yield app
    app.extensions["portal.db"].engine.dispose()


def count(app, model, *where) -> int:
    with app.extensions["portal.db"].factory() as s:
        return s.scalar(select(func.count()).select_from(model).where(*where))


def business_type(app, key: str) -> str | None:
    with app.extensions["portal.db"].factory() as s:
        return s.scalar(select(Member.business_type).where(Member.key == key))


def evidence_files(app) -> list[str]:
    root = app.config["EVIDENCE_DIR"]
    from pathlib import Path

    return sorted(str(p) for p in Path(root).rglob("*") if p.is_file()) if Path(root).exists() else []


def refused(response) -> None:
    assert response.status_code == 413, (response.status_code, response.get_data(as_text=True)[:300])
    assert "Traceback" not in response.get_data(as_text=True)


def api_refused(response) -> None:
    refused(response)
    assert response.is_json, response.content_type
    body = response.get_json()
    assert set(body) == {"error", "details"} and body["error"]
    assert "<html" not in response.get_data(as_text=True).lower()


def metrics_body(n: int) -> bytes:
    rows = [{"member": "m1", "metric": "monthly_plays", "date": "2026-02-01", "value": i, "kind": "k" * 20} for i in range(n)]
    return json.dumps({"rows": rows}).encode()


def bearer(app) -> dict[str, str]:
    return {"Authorization": f"Bearer {app.config['TEST_TOKEN']}"}


def test_the_default_limit_is_16_mib_and_the_test_app_uses_its_own(limited):
    assert defaults("/tmp")["MAX_CONTENT_LENGTH"] == 16 * 1024 * 1024
    assert limited.config["MAX_CONTENT_LENGTH"] == LIMIT


# -- forms ----------------------------------------------------------------------------------------


def test_login_form_over_the_limit_is_413_and_starts_no_session(limited):
    client = limited.test_client()
    token = csrf_token(client.get("/login").get_data(as_text=True))
    response = client.post("/login", data={"username": "boss", "password": "x" * (LIMIT + 1), "csrf_token": token})
    refused(response)
    assert count(limited, LoginSession) == 0
    assert login(client, "boss", "staff-pass-1").status_code == 302  # under the limit: logged in
    assert count(limited, LoginSession) == 1


def test_staff_form_over_the_limit_is_413_and_writes_nothing(limited):
    client = limited.test_client()
    assert login(client, "boss", "staff-pass-1").status_code == 302
    token = csrf_token(client.get("/staff/members/m1").get_data(as_text=True))
    audits = count(limited, AuditEntry)

    big = client.post("/staff/members/m1/segments",
                      data={"business_type": "brand", "reason": "r" * (LIMIT + 1), "csrf_token": token})
    refused(big)
    assert count(limited, AuditEntry) == audits
    assert business_type(limited, "m1") is None

    small = client.post("/staff/members/m1/segments", data={"business_type": "brand", "reason": "ok", "csrf_token": token})
    assert small.status_code == 303
    assert business_type(limited, "m1") == "brand" and count(limited, AuditEntry) == audits + 1


def test_multipart_upload_over_the_limit_is_413_and_stores_no_file(limited):
    client = limited.test_client()
    assert login(client, "m1", "member-pass-1").status_code == 302
    token = csrf_token(client.get("/programs/music").get_data(as_text=True))
    pdf = b"%PDF-1.7\n" + b"0" * (LIMIT + 1)

    big = client.post("/programs/music/evidence", data={"csrf_token": token, "file": (io.BytesIO(pdf), "proof.pdf")},
                      content_type="multipart/form-data")
    refused(big)
    assert count(limited, EvidenceFile) == 0 and evidence_files(limited) == []

    small = client.post("/programs/music/evidence",
                        data={"csrf_token": token, "file": (io.BytesIO(b"%PDF-1.7\nproof"), "proof.pdf")},
                        content_type="multipart/form-data")
    assert small.status_code == 303, small.get_data(as_text=True)[:300]
    assert count(limited, EvidenceFile) == 1 and len(evidence_files(limited)) == 1


# -- the API --------------------------------------------------------------------------------------


def test_api_post_over_the_limit_is_413_json_and_writes_nothing(limited):
    client = limited.test_client()
    body = metrics_body(1000)
    assert len(body) > LIMIT
    api_refused(client.post("/api/v1/metrics", data=body, content_type="application/json", headers=bearer(limited)))
    assert count(limited, MetricRow) == 0

    small = client.post("/api/v1/metrics", data=metrics_body(10), content_type="application/json", headers=bearer(limited))
    assert small.status_code == 200 and small.get_json() == {"new": 10, "duplicates": 0}
    assert count(limited, MetricRow) == 10


def test_api_body_without_a_length_over_the_limit_is_413_json(limited):
    """A chunked body (no Content-Length; the server marks the input as terminated) is cut at
    the limit while it is read."""
    response = limited.test_client().post(
        "/api/v1/metrics", input_stream=io.BytesIO(metrics_body(1000)), content_type="application/json",
        headers=bearer(limited), environ_overrides={"wsgi.input_terminated": True})
    api_refused(response)
    assert count(limited, MetricRow) == 0


@pytest.mark.parametrize("path, payload", [
    ("/api/v1/members/m1/grants", {"benefit": "x", "program": "music", "reason": "r" * (LIMIT + 1)}),
    ("/api/v1/members/m1/override", {"program": "music", "level": "A", "reason": "r" * (LIMIT + 1)}),
])
def test_other_api_posts_over_the_limit_are_413_json(limited, path, payload):
    audits = count(limited, AuditEntry)
    api_refused(limited.test_client().post(path, data=json.dumps(payload), content_type="application/json",
                                           headers=bearer(limited)))
    assert count(limited, AuditEntry) == audits


def test_api_post_over_the_limit_with_another_content_type_is_refused_as_json(limited):
    """Not JSON: the body is never read. Refused all the same (the declared length is checked
    before any view), as JSON, and nothing is written."""
    response = limited.test_client().post("/api/v1/metrics", data=metrics_body(1000), content_type="text/plain",
                                          headers=bearer(limited))
    assert response.status_code in (400, 413, 415) and response.is_json
    assert count(limited, MetricRow) == 0


# -- reproducer of a product bug ------------------------------------------------------------------


@pytest.mark.parametrize("path, content_type", [
    ("/api/v1/members/m1/benefits/999/claim", "application/json"),
    ("/api/v1/metrics", "text/plain"),
], ids=["claim-body-never-read", "metrics-not-json"])
def test_an_oversized_body_a_view_never_reads_is_413(limited, path, content_type):
    response = limited.test_client().post(path, data=b"x" * (LIMIT + 1), content_type=content_type,
                                          headers=bearer(limited))
    assert response.status_code == 413, (response.status_code, response.get_data(as_text=True)[:200])
