"""Staff actions on one member - each with a required reason, each audited (who, when,
what, before/after) - and the member search of the console."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Select, and_, bindparam, func, null, or_, select, union
from sqlalchemy.orm import Session

from ..db import is_sqlite
from ..models import SEGMENTS, Enrolment, LevelChange, Member, MetricRow, Standing
from . import NotFound, ServiceError
from . import programs as programs_service
from .audit import record
from .standings import member_by_key


def require_staff(session: Session, by: str) -> Member | SimpleNamespace:
    """The acting staff member. ``token:NAME`` is an API token the caller already checked
    (member keys cannot contain ':')."""
    if by.startswith("token:"):
        return SimpleNamespace(key=by, role="staff")
    staff = session.scalar(select(Member).where(Member.key == by))
    if staff is None or staff.role not in ("staff", "admin"):
        raise ServiceError(f"'{by}' is not a staff member", status=403)
    return staff


def _reason(reason: str | None) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise ServiceError("a reason is required")
    if len(reason) > 2000:
        raise ServiceError("the reason is longer than 2,000 characters")
    return reason


def _standing(session: Session, member: Member, program_key: str) -> Standing:
    programs_service.definition(session, program_key)
    if session.get(Enrolment, (member.id, program_key)) is None:
        raise NotFound(f"member '{member.key}' is not enrolled in program '{program_key}'")
    st = session.get(Standing, (member.id, program_key), with_for_update=True)
    if st is None:
        raise ServiceError(f"member '{member.key}' has not been evaluated in '{program_key}' yet", status=409)
    return st


def _snapshot(st: Standing) -> dict[str, Any]:
    return {"level": st.level, "sub_class": st.sub_class, "status": st.status, "locked_level": st.locked_level,
            "lock_until": st.lock_until.isoformat() if st.lock_until else None}


def _change(session: Session, st: Standing, cause: str, before: dict[str, Any], today: dt.date, by: str,
            reason: str) -> None:
    program, version = programs_service.definition(session, st.program_key)
    rank_from, rank_to = program.rank(before["level"]), program.rank(st.level)
    direction = "up" if rank_to > rank_from else "down" if rank_to < rank_from else "same"
    existing = session.scalar(select(LevelChange).where(
        LevelChange.member_id == st.member_id, LevelChange.program_key == st.program_key,
        LevelChange.on == today, LevelChange.cause == cause))
    reasons = [{"key": "staff", "by": by, "reason": reason}]
    if existing is not None:  # one net change per member, program, date and cause
        existing.to_level, existing.to_sub_class, existing.to_status = st.level, st.sub_class, st.status
        existing.reasons, existing.direction = reasons, direction
        return
    session.add(LevelChange(member_id=st.member_id, program_key=st.program_key, on=today,
                            from_level=before["level"], to_level=st.level, from_sub_class=before["sub_class"],
                            to_sub_class=st.sub_class, from_status=before["status"], to_status=st.status,
                            direction=direction, cause=cause, reasons=reasons, program_version=version,
                            created_at=dt.datetime.now(dt.UTC)))


def override_level(session: Session, by: str, member_key: str, program_key: str, level: str | None,
                   reason: str, today: dt.date, until: dt.date | None = None) -> Standing:
    """Set and lock a level (Discourse-style): evaluation leaves it until ``until`` or a lift."""
    staff = require_staff(session, by)
    reason = _reason(reason)
    member = member_by_key(session, member_key)
    st = _standing(session, member, program_key)
    program, _ = programs_service.definition(session, program_key)
    if level is not None and program.level(level) is None:
        raise ServiceError(f"program '{program_key}' has no level '{level}' (levels: {', '.join(program.level_keys)})")
    if until is not None and until < today:
        raise ServiceError("the lock's end date is in the past")
    before = _snapshot(st)
    if st.level != level:
        st.level_since = today
        if program.rank(level) > program.rank(st.level):
            st.promoted_on = today
    st.level, st.locked_level, st.lock_until = level, level, until
    st.locked_by, st.lock_reason = staff.key, reason
    session.flush()
    _change(session, st, "override", before, today, staff.key, reason)
    record(session, staff.key, "level.override", member_id=member.id, program_key=program_key, reason=reason,
           before=before, after=_snapshot(st))
    return st


def lift_lock(session: Session, by: str, member_key: str, program_key: str, reason: str) -> Standing:
    staff = require_staff(session, by)
    reason = _reason(reason)
    member = member_by_key(session, member_key)
    st = _standing(session, member, program_key)
    if st.locked_level is None:
        raise ServiceError("the level is not locked", status=409)
    before = _snapshot(st)
    st.locked_level = st.lock_until = st.locked_by = st.lock_reason = None
    record(session, staff.key, "level.unlock", member_id=member.id, program_key=program_key, reason=reason,
           before=before, after=_snapshot(st))
    return st


def set_blacklist(session: Session, by: str, member_key: str, program_key: str, on: bool, reason: str,
                  today: dt.date, exempt_days: int = 62) -> Standing:
    """Blacklist at once, or lift (the same signals are then ignored for ``exempt_days``)."""
    from .benefits import revoke_open_items

    staff = require_staff(session, by)
    reason = _reason(reason)
    member = member_by_key(session, member_key)
    st = _standing(session, member, program_key)
    want = "blacklisted" if on else "active"
    if st.status == want:
        raise ServiceError(f"member '{member_key}' is already {want} in '{program_key}'", status=409)
    before = _snapshot(st)
    st.status = want
    st.blacklist_exempt_until = None if on else today + dt.timedelta(days=exempt_days)
    session.flush()
    _change(session, st, "blacklist" if on else "lift", before, today, staff.key, reason)
    if on:
        revoke_open_items(session, member.id, program_key, today)
    record(session, staff.key, "member.blacklist" if on else "member.lift", member_id=member.id,
           program_key=program_key, reason=reason, before=before, after=_snapshot(st))
    return st


def record_dispatch(session: Session, by: str, member_key: str, day: dt.date, reason: str,
                    count: int = 1) -> int:
    """Staff record submission tasks dispatched to a creator (they count against the quota)."""
    staff = require_staff(session, by)
    reason = _reason(reason)
    if not 1 <= count <= 100:
        raise ServiceError("count must be between 1 and 100")
    member = member_by_key(session, member_key)
    for _ in range(count):
        session.add(MetricRow(member_id=member.id, metric="dispatch", date=day, value=1, kind="staff"))
    record(session, staff.key, "creator.dispatch", member_id=member.id, program_key="creator", reason=reason,
           after={"date": day.isoformat(), "count": count})
    return count


def edit_segments(session: Session, by: str, member_key: str, values: dict[str, str | None], reason: str) -> Member:
    staff = require_staff(session, by)
    reason = _reason(reason)
    member = member_by_key(session, member_key)
    before = {k: getattr(member, k) for k in SEGMENTS}
    for key, value in values.items():
        if key not in SEGMENTS:
            raise ServiceError(f"unknown segment '{key}' (business_type, industry, scale)")
        value = (value or "").strip() or None
        if value and len(value) > (32 if key == "scale" else 64):
            raise ServiceError(f"{key} is too long")
        setattr(member, key, value)
    record(session, staff.key, "member.segments", member_id=member.id, reason=reason, before=before,
           after={k: getattr(member, k) for k in SEGMENTS})
    return member


# -- search -----------------------------------------------------------------------------------


@dataclass
class SearchFilter:
    program: str | None = None
    level: str | None = None
    sub_class: str | None = None
    status: str | None = None
    business_type: str | None = None
    industry: str | None = None
    scale: str | None = None
    text: str | None = None  # key, name or email prefix


# On SQLite a text search finds its members through the key / e-mail / name indexes when the
# prefix is selective (at most this many members per index), and otherwise walks the members
# in id order, which finds a page quickly because matches are then dense. SQLite's planner
# cannot tell the two apart (no histograms), and its choice flips with how the LIMIT is bound
# (docs/performance.md, W3), so search() measures and says which.
SELECTIVE = 2000
SQLITE_MIN_INTEGER = -(2**63)
_TEXT_COLUMNS = (("key", Member.key), ("email", Member.email), ("name", Member.name))


def _text_params(text: str, binary: bool) -> dict[str, str]:
    """The bound values of a prefix search: where text compares byte by byte (SQLite) the
    bounds of a range each column's index can serve; elsewhere a LIKE pattern with the
    wildcards escaped (PostgreSQL's collations do not order prefixes as one range). E-mails
    are stored in lower case."""
    params = {}
    for name, _column in _TEXT_COLUMNS:
        t = text.lower() if name == "email" else text
        if binary:
            params[f"{name}_lo"], params[f"{name}_hi"] = t, t + "\U0010ffff"
        else:
            params[f"{name}_like"] = t.replace("/", "//").replace("%", "/%").replace("_", "/_") + "%"
    return params


def _text_matches(walk: bool) -> list[Any]:
    """The three prefix conditions (see _text_params). ``walk``: on SQLite, compare a copy of
    each column (|| ''), so the planner walks members in id order instead of sorting every
    match it finds through the indexes (a broad prefix)."""
    if walk:
        return [and_(column + "" >= bindparam(f"{name}_lo"), column + "" < bindparam(f"{name}_hi"))
                for name, column in _TEXT_COLUMNS]
    return [column.like(bindparam(f"{name}_like"), escape="/") for name, column in _TEXT_COLUMNS]


def _text_ranges() -> list[Any]:
    return [and_(column >= bindparam(f"{name}_lo"), column < bindparam(f"{name}_hi"))
            for name, column in _TEXT_COLUMNS]


# Built once (a search runs them on every page): the capped count of each index range, and
# the ids in the three ranges.
_RANGE_COUNTS = select(*(select(func.count()).select_from(select(Member.id).where(r).limit(SELECTIVE + 1).subquery())
                         .scalar_subquery() for r in _text_ranges()))
_RANGE_IDS = union(*(select(Member.id).where(r) for r in _text_ranges()))

_FILTERS = ("program", "level", "sub_class", "status", *SEGMENTS)


def _params(f: SearchFilter) -> dict[str, Any]:
    return {k: getattr(f, k) for k in _FILTERS if getattr(f, k) and not (k == "level" and f.level == "-")}


@dataclass(frozen=True)
class _Shape:
    """What a search's statement depends on besides its bound values: which filters are set,
    how the text is matched (None, "ids": through the index ranges, "walk": SQLite's id-order
    walk, "like": PostgreSQL), the dialect and whether a page starts after a member."""

    filters: frozenset[str]
    unrated: bool  # level "-": members of the program without a level yet
    text: str | None
    binary: bool
    after: bool


_STANDING_COLUMNS = ("level", "sub_class", "status", "score")
# What every row of search() holds, in this order (the standing's columns are NULL without a
# program filter): a page unpacks the rows instead of looking each cell up by name.
RESULT_COLUMNS = ("id", "key", "name", "email", "role", *SEGMENTS, *_STANDING_COLUMNS)


def _query(shape: _Shape) -> Select:
    """The search's statement for ``shape``, bound later with the filter's values: members in
    the order of the member id taken from the table whose index the filter walks in member
    order (standings for a level, enrolments for a program), so a page stops after its rows
    instead of sorting every match."""
    stmt = select(Member.id, Member.key, Member.name, Member.email, Member.role, *(getattr(Member, s) for s in SEGMENTS))
    order = Member.id
    has = shape.filters
    if "program" not in has:
        stmt = stmt.add_columns(*(null().label(c) for c in _STANDING_COLUMNS))
    else:
        program = bindparam("program")
        stmt = stmt.add_columns(*(getattr(Standing, c) for c in _STANDING_COLUMNS)).join(
            Enrolment, and_(Enrolment.member_id == Member.id, Enrolment.program_key == program)
        ).outerjoin(Standing, and_(Standing.member_id == Member.id, Standing.program_key == program))
        order = Enrolment.member_id  # ix_enrolments_program_member
        if "level" in has:
            stmt = stmt.where(Standing.level == bindparam("level"))
            order = Standing.member_id  # ix_standings_program_level_member
        elif shape.unrated:
            stmt = stmt.where(Standing.level.is_(None))
        for column in ("sub_class", "status"):
            if column in has:
                stmt = stmt.where(getattr(Standing, column) == bindparam(column))
    for seg in SEGMENTS:
        if seg in has:
            stmt = stmt.where(getattr(Member, seg) == bindparam(seg))
    if shape.text == "ids":
        stmt = stmt.where(Member.id.in_(_RANGE_IDS))
        order = Member.id  # the few ids found drive the query
    elif shape.text:
        stmt = stmt.where(or_(*_text_matches(walk=shape.text == "walk")))
    if shape.after:
        stmt = stmt.where(order > bindparam("after"))
    elif shape.binary:  # a range on the order column from the first page on, or SQLite may sort instead
        stmt = stmt.where(order >= SQLITE_MIN_INTEGER)
    return stmt.order_by(order)


# The statements by shape (at most a few hundred): built once per process, as building one
# cost a tenth of a search page.
_QUERIES: dict[_Shape, Select] = {}


def search(session: Session, f: SearchFilter, after: int | None = None, limit: int = 50) -> list[Any]:
    """A page of members matching the filter, in id order, after member id ``after``."""
    binary = is_sqlite(session)
    params = _params(f)
    text = (f.text or "").strip()
    mode = None
    if text:
        params.update(_text_params(text, binary))
        if not binary:
            mode = "like"
        else:
            counts = session.connection().execute(_RANGE_COUNTS, params).one()
            mode = "walk" if max(counts) > SELECTIVE else "ids"
    shape = _Shape(frozenset(params.keys() & set(_FILTERS)), f.program is not None and f.level == "-", mode,
                   binary, after is not None)
    stmt = _QUERIES.get(shape)
    if stmt is None:
        stmt = _QUERIES[shape] = _query(shape)
    if after is not None:
        params["after"] = after
    # Plain rows of columns: through the session's connection, without the ORM's execution layer.
    return list(session.connection().execute(stmt.limit(limit), params).all())


# -- roles ------------------------------------------------------------------------------------

ROLES = ("member", "staff", "admin")


def set_role(session: Session, by: str, member_key: str, role: str, reason: str) -> Member:
    """Set a member's role (admin only), audited as ``member.role``; the last admin cannot be
    demoted (the admins' rows are locked while counting, so two demotions cannot race)."""
    actor = _require_admin(session, by)
    reason = _reason(reason)
    if role not in ROLES:
        raise ServiceError(f"unknown role '{role}' (member, staff, admin)")
    member = member_by_key(session, member_key)
    before = member.role
    if before == role:
        raise ServiceError(f"'{member_key}' is already {role}", status=409)
    if before == "admin":
        admins = session.scalars(select(Member.id).where(Member.role == "admin").with_for_update()).all()
        if len(admins) <= 1:
            raise ServiceError("refused: this is the last admin (make another member admin first)", status=409)
    member.role = role
    record(session, actor.key, "member.role", member_id=member.id, reason=reason, before={"role": before},
           after={"role": role})
    return member


# -- API tokens -------------------------------------------------------------------------------


def _require_admin(session: Session, by: str) -> Member | SimpleNamespace:
    actor = require_staff(session, by)
    if getattr(actor, "role", None) != "admin":
        raise ServiceError("this needs an admin", status=403)
    return actor


def create_token(session: Session, by: str, name: str, role: str, member_key: str | None,
                 reason: str | None = None) -> str:
    """Create an API token (admin only) and return the plain token, which is never stored nor
    audited (the audit entry names the token, its role and member)."""
    from . import tokens

    actor = _require_admin(session, by)
    reason = (reason or "").strip() or None
    if reason and len(reason) > 2000:
        raise ServiceError("the reason is longer than 2,000 characters")
    plain = tokens.create(session, name, role, member_key)
    member = member_by_key(session, member_key) if member_key else None
    record(session, actor.key, "token.create", member_id=member.id if member else None, reason=reason,
           after={"name": name, "role": role, "member": member_key})
    return plain


def revoke_token(session: Session, by: str, name: str, reason: str) -> None:
    """Revoke an API token (admin only), a reason required, audited as ``token.revoke``."""
    from ..models import ApiToken
    from . import tokens

    actor = _require_admin(session, by)
    reason = _reason(reason)
    row = session.scalar(select(ApiToken).where(ApiToken.name == (name or "")))
    if row is None:
        raise NotFound(f"no token named '{name}'")
    if row.revoked_at is not None:
        raise ServiceError(f"token '{name}' is already revoked", status=409)
    tokens.revoke(session, row.name)
    record(session, actor.key, "token.revoke", member_id=row.member_id, reason=reason,
           before={"name": row.name, "role": row.role, "revoked": False}, after={"name": row.name, "revoked": True})
