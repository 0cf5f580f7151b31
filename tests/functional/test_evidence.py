"""Evidence uploads for music grades: size and type checked before anything is kept, stored
outside static/ under a random name, served only to the owner and to staff, as a download."""

from __future__ import annotations

import re
from io import BytesIO
from pathlib import Path

from sqlalchemy import func, select

from portal.models import EvidenceFile

from .test_member_site import Site, page, site  # noqa: F401
from .test_web import csrf_token

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64
PDF = b"%PDF-1.7\n" + b"x" * 100


def upload(client, name: str, data: bytes, program: str = "music"):
    token = csrf_token(page(client, f"/programs/{program}"))
    return client.post(f"/programs/{program}/evidence", data={"csrf_token": token, "file": (BytesIO(data), name)},
                       content_type="multipart/form-data")


def stored(site: Site) -> list[EvidenceFile]:
    with site.db() as s:
        return list(s.scalars(select(EvidenceFile).order_by(EvidenceFile.id)))


def evidence_dir(site: Site) -> Path:
    return Path(site.app.instance_path) / "evidence"


def test_a_member_uploads_a_file_sees_it_and_downloads_it(site):
    client = site.client("u001")
    html = page(client, "/programs/music")
    assert "data-evidence-files" in html and 'enctype="multipart/form-data"' in html
    response = upload(client, "plays 十月.png", PNG)
    assert response.status_code == 303
    [row] = stored(site)
    assert (row.filename, row.size, row.content_type) == ("plays 十月.png", len(PNG), "image/png")
    on_disk = evidence_dir(site) / row.stored_name
    assert on_disk.read_bytes() == PNG and "static" not in str(on_disk.resolve())
    assert re.fullmatch(r"[0-9a-f]{32}\.png", row.stored_name)
    assert f'data-evidence-file="{row.id}"' in page(client, "/programs/music")
    got = client.get(f"/programs/music/evidence/{row.id}")
    assert got.status_code == 200 and got.data == PNG
    assert got.headers["Content-Disposition"].startswith("attachment")
    assert got.headers["X-Content-Type-Options"] == "nosniff" and "sandbox" in got.headers["Content-Security-Policy"]
    assert "no-store" in got.headers["Cache-Control"]


def test_only_the_owner_and_staff_get_the_file(site):
    assert upload(site.client("u001"), "proof.pdf", PDF).status_code == 303
    [row] = stored(site)
    url = f"/programs/music/evidence/{row.id}"
    assert site.client("u002").get(url).status_code == 404
    assert site.client("c001").get(url).status_code == 404
    anonymous = site.app.test_client().get(url)
    assert anonymous.status_code == 302 and "/login" in anonymous.headers["Location"]
    staff = site.client("staff", "staff1234")
    assert f"/staff/members/u001/evidence/{row.id}" in page(staff, "/staff/members/u001")
    assert staff.get(f"/staff/members/u001/evidence/{row.id}").data == PDF
    assert staff.get(f"/staff/members/u002/evidence/{row.id}").status_code == 404  # the key must match
    assert site.client("u002").get(f"/staff/members/u001/evidence/{row.id}").status_code == 403


def test_wrong_types_oversized_and_empty_files_are_refused_and_nothing_is_kept(site):
    client = site.client("u001")
    cases = [
        ("tool.exe", b"MZ\x90\0" * 10, 415, "PDF, PNG, JPEG, CSV or XLSX"),
        ("fake.png", b"MZ\x90\0" * 10, 415, "not a PNG file"),
        ("fake.pdf", PNG, 415, "not a PDF file"),
        ("data.csv", b"a,b\n\0\0\0", 415, "not a CSV file"),
        ("big.pdf", b"%PDF-" + b"x" * (5 * 1024 * 1024), 413, "larger than 5 MiB"),
        ("empty.pdf", b"", 400, "empty"),
    ]
    for name, data, status, message in cases:
        response = upload(client, name, data)
        assert response.status_code == status, (name, response.status_code)
        assert message in response.get_data(as_text=True), name
        assert "Traceback" not in response.get_data(as_text=True)
    assert stored(site) == []
    assert not evidence_dir(site).exists() or list(evidence_dir(site).iterdir()) == []


def test_a_program_without_evidence_or_not_enrolled_is_refused(site):
    client = site.client("c001")
    response = upload(client, "proof.pdf", PDF, program="creator")
    assert response.status_code == 400 and "takes no evidence" in response.get_data(as_text=True)
    token = csrf_token(page(client, "/"))
    response = client.post("/programs/music/evidence", data={"csrf_token": token, "file": (BytesIO(PDF), "p.pdf")},
                           content_type="multipart/form-data")
    assert response.status_code == 404
    assert stored(site) == []


def test_an_upload_without_a_csrf_token_is_refused(site):
    client = site.client("u001")
    response = client.post("/programs/music/evidence", data={"file": (BytesIO(PDF), "p.pdf")},
                           content_type="multipart/form-data")
    assert response.status_code == 400 and stored(site) == []


def test_the_owner_deletes_a_file_and_others_cannot(site):
    owner = site.client("u001")
    assert upload(owner, "proof.pdf", PDF).status_code == 303
    [row] = stored(site)
    other = site.client("u002")
    token = csrf_token(page(other, "/programs/music"))
    assert other.post(f"/programs/music/evidence/{row.id}/delete", data={"csrf_token": token}).status_code == 404
    assert len(stored(site)) == 1
    token = csrf_token(page(owner, "/programs/music"))
    assert owner.post(f"/programs/music/evidence/{row.id}/delete", data={"csrf_token": token}).status_code == 303
    assert stored(site) == [] and not (evidence_dir(site) / row.stored_name).exists()


def test_at_most_twenty_files_per_program(site):
    client = site.client("u001")
    for i in range(20):
        assert upload(client, f"p{i}.pdf", PDF).status_code == 303
    response = upload(client, "one-more.pdf", PDF)
    assert response.status_code == 409 and "at most 20 files" in response.get_data(as_text=True)
    with site.db() as s:
        assert s.scalar(select(func.count()).select_from(EvidenceFile)) == 20
