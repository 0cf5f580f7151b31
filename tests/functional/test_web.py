"""The minimal site of this stage: health, login (CSRF, generic errors), the overview."""

from __future__ import annotations

import re

from .conftest import write
from .test_cli import MEMBERS, METRICS


def csrf_token(html: str) -> str:
    match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html) or re.search(
        r'name="csrf_token" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


def login(client, username: str, password: str):
    token = csrf_token(client.get("/login").get_data(as_text=True))
    return client.post("/login", data={"username": username, "password": password, "csrf_token": token})


def test_healthz_answers_when_the_database_does(ready, app):
    response = app.test_client().get("/healthz")
    assert response.status_code == 200 and response.get_json() == {"status": "ok"}


def test_anonymous_overview_redirects_to_login(ready, app):
    response = app.test_client().get("/")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_wrong_password_and_unknown_user_get_the_same_answer(ready, app, tmp_path):
    ready("import", "members", write(tmp_path, "m.csv", MEMBERS))
    client = app.test_client()
    wrong = login(client, "c1", "not-the-password")
    unknown = login(client, "nobody", "not-the-password")
    assert wrong.status_code == unknown.status_code == 401
    message = "Wrong username or password."
    assert message in wrong.get_data(as_text=True) or "用户名或密码错误" in wrong.get_data(as_text=True)
    assert wrong.get_data(as_text=True).count("csrf_token") == unknown.get_data(as_text=True).count("csrf_token")


def test_login_without_csrf_token_is_refused(ready, app, tmp_path):
    ready("import", "members", write(tmp_path, "m.csv", MEMBERS))
    response = app.test_client().post("/login", data={"username": "c1", "password": "secret-1"})
    assert response.status_code == 400
    assert "Traceback" not in response.get_data(as_text=True)


def test_member_logs_in_by_key_or_email_and_sees_their_level(ready, app, tmp_path):
    ready("import", "members", write(tmp_path, "m.csv", MEMBERS))
    ready("import", "metrics", write(tmp_path, "x.csv", METRICS))
    ready("evaluate", "--as-of", "2026-10-31")
    client = app.test_client()
    response = login(client, "c1@example.com", "secret-1")
    assert response.status_code == 302
    page = client.get("/").get_data(as_text=True)
    assert 'data-program="creator"' in page and "<strong data-level>LV1</strong>" in page
    other = app.test_client()
    assert login(other, "c1", "secret-1").status_code == 302


def test_serving_without_a_secret_key_is_refused(db_url, tmp_path, monkeypatch):
    import pytest

    from portal import create_app
    from portal.config import ConfigError

    monkeypatch.delenv("PORTAL_SECRET_KEY", raising=False)
    with pytest.raises(ConfigError, match="PORTAL_SECRET_KEY is not set"):
        create_app({"DATABASE_URL": db_url})
    app = create_app({"DATABASE_URL": db_url, "PORTAL_CLI": True})
    app.instance_path = str(tmp_path)
    result = app.test_cli_runner().invoke(args=["run", "--port", "1"])
    assert result.exit_code == 1 and "PORTAL_SECRET_KEY is not set" in result.output


def test_failed_logins_against_one_account_are_limited_before_hashing(ready, app, tmp_path, monkeypatch):
    ready("import", "members", write(tmp_path, "m.csv", MEMBERS))
    from portal.web import auth

    hashes = []
    real = auth.verify
    monkeypatch.setattr(auth, "verify", lambda stored, pw: hashes.append(1) or real(stored, pw))
    statuses = []
    for i in range(30):  # from several addresses: the per-account limit still holds
        client = app.test_client()
        token = csrf_token(client.get("/login").get_data(as_text=True))
        r = client.post("/login", data={"username": "c1", "password": f"wrong-{i}", "csrf_token": token},
                        environ_base={"REMOTE_ADDR": f"10.0.0.{i}"})
        statuses.append(r.status_code)
    assert statuses[:10] == [401] * 10 and set(statuses[10:]) == {429}
    assert len(hashes) == 10
    assert "Traceback" not in r.get_data(as_text=True)


def test_security_headers_on_pages(ready, app):
    r = app.test_client().get("/login")
    csp = r.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "object-src 'none'" in csp and "base-uri 'none'" in csp
    assert "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp.split("style-src-attr")[0]
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Referrer-Policy"] == "same-origin"
    assert "<script" not in r.get_data(as_text=True)
