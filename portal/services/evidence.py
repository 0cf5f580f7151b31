"""Evidence files members upload for a grade (the music program asks clients for data proofs).

Checked before anything is stored: the size (at most ``MAX_BYTES``), the kind (by extension
*and* by the file's first bytes, so a renamed executable is refused) and a per-program count.
The bytes are written under a folder the caller gives (the instance folder, never static/),
under a random name; the row keeps the uploader's file name only for display."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import secrets
import unicodedata
from pathlib import Path

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from ..engine.definition import Program
from ..models import Enrolment, EvidenceFile
from . import NotFound, ServiceError

MAX_BYTES = 5 * 1024 * 1024
MAX_FILES = 20  # per member and program
# extension -> (content type, how the file must begin; None: UTF-8 text)
KINDS: dict[str, tuple[str, tuple[bytes, ...] | None]] = {
    "pdf": ("application/pdf", (b"%PDF-",)),
    "png": ("image/png", (b"\x89PNG\r\n\x1a\n",)),
    "jpg": ("image/jpeg", (b"\xff\xd8\xff",)),
    "jpeg": ("image/jpeg", (b"\xff\xd8\xff",)),
    "xlsx": ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", (b"PK\x03\x04",)),
    "csv": ("text/csv", None),
}


def accepts(program: Program) -> bool:
    """A program takes evidence when one of its levels says what to supply."""
    return any(level.evidence for level in program.levels)


def clean_name(filename: str | None) -> str:
    """The display name: the last path part, no control characters, at most 200 characters."""
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C" and ch not in "\"'<>")
    return name.strip()[:200] or "evidence"


def check(filename: str, data: bytes) -> tuple[str, str]:
    """(extension, content type) of an acceptable file; ServiceError naming the problem otherwise."""
    if not data:
        raise ServiceError("the file is empty", {"file": "empty"})
    if len(data) > MAX_BYTES:
        raise ServiceError(f"the file is larger than {MAX_BYTES // (1024 * 1024)} MiB",
                           {"file": "too large", "size": len(data)}, status=413)
    ext = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    if ext not in KINDS:
        raise ServiceError("only PDF, PNG, JPEG, CSV or XLSX files are accepted",
                           {"file": "type", "extension": ext}, status=415)
    content_type, magic = KINDS[ext]
    if magic is None:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = "\0"
        ok = "\0" not in text
    else:
        ok = data.startswith(magic)
    if not ok:
        raise ServiceError(f"the file's content is not a {ext.upper()} file", {"file": "content", "extension": ext},
                           status=415)
    return ext, content_type


def store(session: Session, root: Path, member_id: int, program: Program, filename: str | None, data: bytes,
          now: dt.datetime | None = None) -> EvidenceFile:
    """Check and keep one file. The bytes are on disk before the row is flushed; if the caller's
    transaction fails afterwards, an unreferenced file is left behind, never a row without one."""
    enrolled = session.get(Enrolment, (member_id, program.key))
    if enrolled is None:
        raise NotFound(f"you are not enrolled in program '{program.key}'")
    if not accepts(program):
        raise ServiceError(f"program '{program.key}' takes no evidence files", {"program": program.key})
    name = clean_name(filename)
    ext, content_type = check(name, data)
    count = session.scalar(select(func.count()).select_from(EvidenceFile)
                           .where(EvidenceFile.member_id == member_id, EvidenceFile.program_key == program.key))
    if count >= MAX_FILES:
        raise ServiceError(f"at most {MAX_FILES} files per program; delete one first", {"file": "too many"},
                           status=409)
    stored = f"{secrets.token_hex(16)}.{ext}"
    root.mkdir(parents=True, exist_ok=True)
    target = root / stored
    tmp = root / (stored + ".part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, target)
    row = EvidenceFile(member_id=member_id, program_key=program.key, filename=name, stored_name=stored,
                       content_type=content_type, size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                       uploaded_at=now or dt.datetime.now(dt.UTC))
    try:
        session.add(row)
        session.flush()
    except Exception:
        target.unlink(missing_ok=True)
        raise
    return row


def listing(session: Session, member_id: int, program_key: str | None = None) -> list[EvidenceFile]:
    q = select(EvidenceFile).where(EvidenceFile.member_id == member_id)
    if program_key:
        q = q.where(EvidenceFile.program_key == program_key)
    return list(session.scalars(q.order_by(EvidenceFile.uploaded_at.desc(), EvidenceFile.id.desc())))


def owned(session: Session, member_id: int | None, file_id: int, program_key: str | None = None) -> EvidenceFile:
    """The file if it exists and belongs to ``member_id`` (any member's when None: staff)."""
    row = session.get(EvidenceFile, file_id)
    if row is None or (member_id is not None and row.member_id != member_id) or (
            program_key is not None and row.program_key != program_key):
        raise NotFound("no such evidence file")
    return row


def path_of(root: Path, row: EvidenceFile) -> Path:
    path = (root / row.stored_name).resolve()
    if path.parent != root.resolve():  # stored names are ours, but never follow a path out of root
        raise NotFound("no such evidence file")
    return path


def remove(session: Session, root: Path, member_id: int, file_id: int, program_key: str | None = None) -> Path:
    """Delete the row; returns the file to unlink once the caller has committed."""
    row = owned(session, member_id, file_id, program_key)
    session.execute(delete(EvidenceFile).where(EvidenceFile.id == row.id))
    return path_of(root, row)
