"""The `portal` command: a Flask CLI group over the app factory (CONTRACT.md)."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import NoReturn

import click
from flask import Flask, current_app
from flask.cli import ScriptInfo, routes_command, shell_command, with_appcontext

from .engine.definition import text_of
from .engine.lint import lint, lint_text
from .services import ServiceError
from .services.imports import ImportRejected

_apps: list[Flask] = []  # the app the command ran in, for explaining a database error


# The commands that serve or inspect the site; every other command runs in an app without it
# (create_app(web=False)), whose imports are a fifth of a command's start-up (performance.md).
WEB_COMMANDS = frozenset({"demo", "run", "routes", "shell"})


def _cli_app() -> Flask:
    from . import create_app
    from .db import UnsupportedDatabase

    ctx = click.get_current_context(silent=True)
    while ctx is not None and ctx.parent is not None and ctx.parent.parent is not None:
        ctx = ctx.parent  # `portal import metrics` -> `import`: judge the top-level command
    try:
        app = create_app({"PORTAL_CLI": True}, web=ctx is None or ctx.info_name in WEB_COMMANDS)
    except UnsupportedDatabase as exc:
        fail(str(exc))
    _apps.append(app)
    return app


def main() -> None:
    from sqlalchemy.exc import DBAPIError

    # A plain click group holding the commands itself: resolving a command or printing the help
    # builds no app (Flask's FlaskGroup builds one to look up app.cli), and no third-party plugin
    # commands are imported. with_appcontext builds the app when a command runs.
    cli = click.Group("portal", help="Portal: creator and member level portal.")
    for command in COMMANDS:
        cli.add_command(command)
    cli.add_command(shell_command)
    cli.add_command(routes_command)
    try:
        cli.main(prog_name="portal", obj=ScriptInfo(create_app=_cli_app, load_dotenv_defaults=False))
    except DBAPIError as exc:  # the driver's message, not a traceback (bad input, CONTRACT.md)
        fail(database_problem(exc, _apps[-1] if _apps else None))


def database_problem(exc: Exception, app: Flask | None) -> str:
    """What to tell the operator when a command failed in the database: an uninitialised one
    (the commonest case: `portal import` before `portal init`) gets the command that fixes it."""
    from sqlalchemy.exc import DBAPIError, OperationalError

    from .migrate import current_revision

    if app is not None:
        try:
            if current_revision(app.extensions["portal.db"].engine) is None:
                return "the database has no Portal schema yet: run `portal init` first"
        except DBAPIError:
            pass  # not reachable at all: the driver's own message below says why
    orig = getattr(exc, "orig", None) or exc
    detail = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
    kind = "cannot use the database" if isinstance(exc, OperationalError) else "database error"
    return f"{kind}: {detail}"


def fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def session(bulk: bool = False):
    """A command's session; ``bulk``: the metric import's (db.bulk_inserts), also the bench loader's."""
    from .database import db

    return (db.bulk_factory if bulk else db.factory)()


def parse_date(value: str | None) -> dt.date:
    if value is None:
        return dt.date.today()
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        fail(f"bad date '{value}' (expected YYYY-MM-DD)")
        raise  # unreachable


def read_text(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        fail(f"no such file: {path}")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {path}: {exc}")
    raise AssertionError  # unreachable


def register(app: Flask) -> None:
    """The commands on app.cli too, for Flask's test runner (app.test_cli_runner())."""
    for command in COMMANDS:
        app.cli.add_command(command)


def init_database(app: Flask) -> list:
    from .database import db
    from .migrate import upgrade
    from .services.programs import load_builtins

    upgrade(db.engine)
    with db.factory() as s:
        published = load_builtins(s)
        s.commit()
    return published


@click.command("init")
@with_appcontext
def init_command() -> None:
    """Create or upgrade the schema and load the built-in programs (idempotent)."""
    published = init_database(current_app)
    for p in published:
        state = "published" if p.created else "unchanged"
        click.echo(f"program {p.key}: version {p.version} ({state})")
    click.echo("database ready")


@click.command("demo")
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--no-serve", is_flag=True, help="Load the demo data and exit.")
@with_appcontext
def demo_command(port: int, host: str, no_serve: bool) -> None:
    """Create the embedded database, load demo data, print logins and serve the site."""
    from .database import db
    from .demo import load_demo

    app = current_app._get_current_object()
    init_database(app)
    with db.factory() as s:
        logins = load_demo(s, dt.date.today())
        s.commit()
    click.echo("Portal demo - log in with any of these (password shown):")
    for key, password, what in logins:
        click.echo(f"  {key:<10} {password:<12} {what}")
    if no_serve:
        return
    app.config["DEMO"] = True
    app.config["SESSION_COOKIE_SECURE"] = app.config["REMEMBER_COOKIE_SECURE"] = False
    _start_scheduler(app, default="on")
    click.echo(f"Serving on http://{host}:{port}/  (Ctrl+C to stop)")
    serve(app, host, port)


def serve(app: Flask, host: str, port: int) -> None:
    """Werkzeug's server (app.run() refuses to run under the flask CLI)."""
    from werkzeug.serving import run_simple

    run_simple(host, port, app, threaded=True, use_reloader=False, use_debugger=False)


def _start_scheduler(app: Flask, default: str) -> None:
    """The demo runs the scheduler in-process unless PORTAL_SCHEDULER=off says otherwise."""
    import os

    if os.environ.get("PORTAL_SCHEDULER", default).lower() in ("on", "1", "true"):
        from .jobs.runner import start_background

        start_background(app)


@click.group("import")
def import_group() -> None:
    """Import members or metric rows from CSV (all-or-nothing)."""


@import_group.command("members")
@click.argument("file")
@with_appcontext
def import_members(file: str) -> None:
    from .services.imports import import_members_csv

    text = read_text(file)
    with session() as s:
        try:
            result = import_members_csv(s, text, dt.date.today())
        except ImportRejected as exc:
            s.rollback()
            _report_rejected(exc)
        s.commit()
    click.echo(result.line())


@import_group.command("metrics")
@click.argument("file")
@with_appcontext
def import_metrics(file: str) -> None:
    from .services.imports import import_metrics_csv

    text = read_text(file)
    with session(bulk=True) as s:  # the import checks every member itself (db.bulk_inserts)
        try:
            result = import_metrics_csv(s, text)
        except ImportRejected as exc:
            s.rollback()
            _report_rejected(exc)
        s.commit()
    click.echo(result.line())


def _report_rejected(exc: ImportRejected) -> None:
    for e in exc.errors:
        click.echo(f"{e.where}: {e.reason}", err=True)
    fail(exc.message)


@click.group("programs")
def programs_group() -> None:
    """Inspect, check and publish program definitions."""


@programs_group.command("list")
@with_appcontext
def programs_list() -> None:
    from .services import programs as ps

    with session() as s:
        for key, (program, version) in ps.all_current(s).items():
            click.echo(f"{key:<10} v{version:<3} {program.cadence:<8} {program.selection:<12} "
                       f"{' '.join(program.level_keys):<28} {text_of(program.name, 'en')}")


@programs_group.command("show")
@click.argument("key")
@click.option("--version", type=int, default=None)
@click.option("--source", is_flag=True, help="Print the definition file itself.")
@with_appcontext
def programs_show(key: str, version: int | None, source: bool) -> None:
    from .models import ProgramVersion
    from .services import programs as ps

    with session() as s:
        try:
            program, version = ps.definition(s, key, version)
        except ServiceError as exc:
            fail(exc.message)
        if source:
            pv = s.query(ProgramVersion).filter_by(program_key=key, version=version).one()
            click.echo(pv.source)
            return
    click.echo(f"{program.key} v{version}: {text_of(program.name, 'en')} ({program.cadence}, {program.selection})")
    for level in program.levels:
        click.echo(f"\n{level.key}  {text_of(level.name, 'en')}")
        if level.band is not None:
            b = level.band
            lo = f"{program.band_of} {b.min_op} {b.min:,.0f}" if b.min is not None else ""
            hi = f"{program.band_of} {b.max_op} {b.max:,.0f}" if b.max is not None else ""
            click.echo("  band: " + " and ".join(x for x in (lo, hi) if x))
        for line in _req_lines(level.requires, "  "):
            click.echo(line)
        if level.reward_tasks:
            click.echo("  reward tasks:")
            for line in _req_lines(level.reward_tasks, "    "):
                click.echo(line)
        benefits = program.benefits_of(level.key)
        if benefits:
            click.echo("  benefits: " + ", ".join(f"{b.key}({b.mode}{', x' + str(b.quantity) if b.quantity > 1 else ''}"
                                                   f"{', reward' if b.tier == 'reward' else ''})" for b in benefits))


def _req_lines(reqs, indent: str) -> list[str]:
    out = []
    for r in reqs:
        when = f"  (only while {r.when.value} {r.when.op} {r.when.required:,.0f})" if r.when else ""
        if r.children:
            out.append(f"{indent}{r.key}: {'any of' if r.any is not None else 'all of'}{when}")
            out += _req_lines(r.children, indent + "  ")
        else:
            out.append(f"{indent}{r.key} {r.op} {r.required:,.10g}{when}")
    return out


@programs_group.command("lint")
@click.argument("file_or_key")
@with_appcontext
def programs_lint(file_or_key: str) -> None:
    """Check a definition file, or a published program by key. Exit 1 on errors."""
    from .services import programs as ps

    if Path(file_or_key).exists():
        findings = lint_text(read_text(file_or_key), file_or_key)
    else:
        with session() as s:
            try:
                program, _ = ps.definition(s, file_or_key)
            except ServiceError as exc:
                fail(f"{exc.message} (and no file of that name)")
        findings = lint(program)
    for f in findings:
        click.echo(str(f))
    errors = sum(f.severity == "error" for f in findings)
    warnings = len(findings) - errors
    click.echo(f"{errors} error{'s' if errors != 1 else ''}, {warnings} warning{'s' if warnings != 1 else ''}")
    if errors:
        sys.exit(1)


@programs_group.command("load")
@click.argument("file")
@click.option("--by", default="cli", help="Who publishes it (recorded with the version).")
@click.option("--note", default=None)
@with_appcontext
def programs_load(file: str, by: str, note: str | None) -> None:
    """Validate and publish a definition as the program's new version (the old one is kept)."""
    from .services.programs import publish

    text = read_text(file)
    findings = lint_text(text, file)
    for f in findings:
        click.echo(str(f))
    if any(f.severity == "error" for f in findings):
        fail("not published: the definition has errors")
    with session() as s:
        result = publish(s, text, file, by=by, note=note)
        s.commit()
    state = "published" if result.created else "unchanged (same as the current version)"
    click.echo(f"program {result.key}: version {result.version} {state}")


@click.command("evaluate")
@click.option("--program", "program_key", default=None, help="One program (default: all).")
@click.option("--as-of", "as_of", default=None, help="YYYY-MM-DD (default: today).")
@click.option("--dry-run", is_flag=True, help="Report what would change; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the summaries as JSON.")
@click.option("--full", is_flag=True, help="Re-read every member even on a date already evaluated (default: "
                                           "only members with new data since that run).")
@with_appcontext
def evaluate_command(program_key: str | None, as_of: str | None, dry_run: bool, as_json: bool, full: bool) -> None:
    """Evaluate levels as of a date and record changes with reasons."""
    from .engine.run import HistoryError, evaluate
    from .jobs.runner import queue_webhooks
    from .services import programs as ps

    day = parse_date(as_of)
    out = []
    with session() as s:
        keys = ps.keys(s)
        if program_key is not None:
            if program_key not in keys:
                fail(f"unknown program '{program_key}'")
            keys = [program_key]
        for key in keys:
            program, version = ps.definition(s, key)
            try:
                summary = evaluate(s, program, version, day, dry_run=dry_run, on_batch=None if dry_run else s.commit,
                                   full=full)
            except HistoryError as exc:
                s.rollback()
                fail(str(exc))
            if not dry_run:
                s.commit()
                queue_webhooks(s, summary)
                s.commit()
            out.append(summary)
    if as_json:
        click.echo(json.dumps([_summary_json(x) for x in out], ensure_ascii=False, indent=2))
        return
    for x in out:
        click.echo(("[dry run] " if dry_run else "") + x.line())
        if dry_run:
            for c in x.changes:
                sub = f" ({c['from_sub_class']} -> {c['to_sub_class']})" if c["from_sub_class"] != c["to_sub_class"] else ""
                click.echo(f"  {c['member']}: {c['from'] or '-'} -> {c['to'] or '-'}{sub} {c['direction']}"
                           + (" [blacklisted]" if c["status"] == "blacklisted" else ""))
    total = {k: sum(getattr(x, k) for x in out)
             for k in ("evaluated", "upgraded", "downgraded", "unchanged", "blacklisted", "benefits_issued")}
    click.echo(
        ("[dry run] nothing written; " if dry_run else "")
        + f"evaluated {total['evaluated']}, upgraded {total['upgraded']}, downgraded {total['downgraded']}, "
        f"unchanged {total['unchanged']}, blacklisted {total['blacklisted']}, "
        + ("benefits due " if dry_run else "benefits issued ") + str(total["benefits_issued"])
    )


def _summary_json(x) -> dict:
    return {
        "program": x.program, "as_of": x.as_of.isoformat(), "version": x.version, "dry_run": x.dry_run,
        "evaluated": x.evaluated, "upgraded": x.upgraded, "downgraded": x.downgraded, "unchanged": x.unchanged,
        "blacklisted": x.blacklisted, "benefits_issued": x.benefits_issued, "reexamined": x.reexamined,
        "decided": x.decided,
        "changes": x.changes,
    }


@click.command("standing")
@click.argument("member")
@click.option("--program", "program_key", default=None)
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def standing_command(member: str, program_key: str | None, as_json: bool) -> None:
    """A member's standing (level, requirements, last change, benefits)."""
    from .services.standings import member_standings

    with session() as s:
        try:
            result = member_standings(s, member, program_key)
        except ServiceError as exc:
            fail(exc.message)
    if as_json:
        payload = result[0] if program_key is not None else result
        click.echo(json.dumps(payload, ensure_ascii=False, indent=2))
        return
    for st in result:
        level = st["level"] or "not yet rated"
        extra = "".join(f", {k} {st[k]}" for k in ("sub_class", "category", "score") if st[k] is not None)
        click.echo(f"{st['program']}: {level}{extra} [{st['status']}] as of {st['as_of'] or '-'}")
        for r in st["requirements"]:
            mark = "ok " if r["met"] else "-- "
            click.echo(f"  {mark}{r['level']} {r['key']}: {r['actual']} {r['op']} {r['required']} ({r['window']})")
        if st["last_change"]:
            c = st["last_change"]
            click.echo(f"  last change {c['on']}: {c['from'] or '-'} -> {c['to'] or '-'}")
            for reason in c["reasons"]:
                click.echo(f"    {reason['key']}: {reason['actual']} (needs {reason['op']} {reason['required']})")


@click.command("run")
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--host", default="127.0.0.1", show_default=True)
@with_appcontext
def run_command(port: int, host: str) -> None:
    """Serve the site with Flask's development server (production: gunicorn)."""
    from .config import ConfigError, check_secret

    app = current_app._get_current_object()
    try:
        check_secret(app.config)
    except ConfigError as exc:
        fail(str(exc))
    if str(app.config.get("SCHEDULER", "off")).lower() in ("on", "1", "true"):
        from .jobs.runner import start_background

        start_background(app)
    serve(app, host, port)


@click.command("scheduler")
@with_appcontext
def scheduler_command() -> None:
    """Run the scheduler alone (for deployments with several web workers)."""
    import logging

    from .jobs.runner import run_blocking

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_blocking(current_app._get_current_object())


@click.command("grant")
@click.argument("member")
@click.argument("benefit")
@click.option("--program", "program_key", default=None, help="Required.")
@click.option("--reason", default=None, help="Required.")
@click.option("--quantity", default=1, type=int, show_default=True)
@click.option("--amount", default=None, type=float)
@click.option("--by", "by", default=None, help="Required: the staff member granting it (member key).")
@with_appcontext
def grant_command(member: str, benefit: str, program_key: str | None, reason: str | None, quantity: int,
                  amount: float | None, by: str | None) -> None:
    """A manual reward: an issued ledger item with who and why, audited."""
    from .services.benefits import grant

    missing = [name for name, value in (("--program", program_key), ("--reason", reason), ("--by", by)) if not value]
    if missing:
        fail("missing " + ", ".join(missing) + " (a grant needs the program, a reason and the staff member)")

    with session() as s:
        try:
            item = grant(s, member, benefit, program_key, reason, by, dt.date.today(), quantity, amount)
        except ServiceError as exc:
            s.rollback()
            fail(exc.message)
        s.commit()
        click.echo(f"granted {benefit} x{item.quantity} to {member} in {program_key} (item {item.id}), by {by}")


@click.group("tokens")
def tokens_group() -> None:
    """API bearer tokens (only their hash is stored)."""


@tokens_group.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice(["staff", "member"]), required=True)
@click.option("--member", "member_key", default=None, help="The member a member token is for.")
@with_appcontext
def tokens_create(name: str, role: str, member_key: str | None) -> None:
    """Print a new token (shown once)."""
    from .services import tokens

    with session() as s:
        try:
            token = tokens.create(s, name, role, member_key)
        except ServiceError as exc:
            s.rollback()
            fail(exc.message)
        s.commit()
    click.echo(token)


@tokens_group.command("revoke")
@click.argument("name")
@with_appcontext
def tokens_revoke(name: str) -> None:
    from .services import tokens

    with session() as s:
        try:
            tokens.revoke(s, name)
        except ServiceError as exc:
            fail(exc.message)
        s.commit()
    click.echo(f"token {name} revoked")


@tokens_group.command("list")
@with_appcontext
def tokens_list() -> None:
    from .services import tokens

    with session() as s:
        for t in tokens.listing(s):
            state = "revoked" if t.revoked_at else "active"
            click.echo(f"{t.name:<20} {t.role:<7} {t.prefix}...  {state}")


@click.group("webhooks")
def webhooks_group() -> None:
    """Signed JSON POSTs to integrators on level changes and benefits issued."""


@webhooks_group.command("add")
@click.argument("url")
@click.option("--events", default="level_change benefit_issued", show_default=True)
@click.option("--secret", default=None, help="HMAC key (default: a new random one, printed once).")
@with_appcontext
def webhooks_add(url: str, events: str, secret: str | None) -> None:
    from .services.webhooks import add_endpoint

    with session() as s:
        try:
            ep, key = add_endpoint(s, url, events.replace(",", " ").split(), secret)
        except ServiceError as exc:
            fail(exc.message)
        s.commit()
        click.echo(f"endpoint {ep.id}: {url} ({ep.events}); signing secret: {key}")


@webhooks_group.command("deliver")
@with_appcontext
def webhooks_deliver() -> None:
    """Send the deliveries that are due now (the scheduler does this every minute)."""
    from .services.webhooks import deliver_due

    with session() as s:
        out = deliver_due(s, dt.datetime.now(dt.UTC))
        s.commit()
    click.echo(f"delivered {out['delivered']}, to retry {out['retry']}, failed {out['failed']}")


@click.command("backup")
@click.argument("file")
@with_appcontext
def backup_command(file: str) -> None:
    """Copy the embedded SQLite database to FILE while it runs (PostgreSQL: pg_dump)."""
    from .database import db
    from .services.backup import backup

    try:
        path = backup(db.engine, file)
    except ServiceError as exc:
        fail(exc.message)
    click.echo(f"backed up to {path}")


@click.command("restore")
@click.argument("file")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@with_appcontext
def restore_command(file: str, yes: bool) -> None:
    """Replace the embedded SQLite database with a backup (stop the site and scheduler first)."""
    from .database import db
    from .services.backup import restore

    if not yes and not click.confirm("This replaces the whole database. Continue?"):
        fail("not restored")
    try:
        restore(db.engine, file)
    except ServiceError as exc:
        fail(exc.message)
    click.echo(f"restored from {file}")


COMMANDS = (init_command, demo_command, import_group, programs_group, evaluate_command, standing_command,
            run_command, scheduler_command, grant_command, tokens_group, webhooks_group, backup_command,
            restore_command)
