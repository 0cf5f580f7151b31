"""Import benchmark: `portal import metrics` of N rows next to the database's own bulk load of
the same file into a bare table, timed in the same run.

    python bench/import_.py --db DATABASE_URL [--rows 1000000] [--seed 1] [--repeats 2]

``--db`` names a database to create (SQLite: a file path; PostgreSQL: a database on the
server, dropped and re-created). The script generates members and metric rows with
``bench/generate.py`` (enough members for ``--rows`` rows), loads the members through
portal's import service into a template database, and writes the first ``--rows`` metric rows
to one CSV file. Then, ``--repeats`` times, each on a fresh copy of the template:

- floor: the database's own bulk load of that file into a bare table of six text columns
  (no index, no constraint): the ``sqlite3`` command-line shell's ``.import --csv`` (with
  ``PRAGMA synchronous=NORMAL`` as portal uses; Python's ``sqlite3.executemany`` if the shell is
  missing - the report says which), or ``psql``'s ``\\copy ... CSV`` (psycopg's COPY if psql is
  missing);
- ``portal import metrics FILE``: the command as an operator runs it, as a child process -
  wall time (start-up, reading, checking every row, storing) and peak RSS;
- reference (not a goal): the same rows moved from the bare table into ``metric_rows`` by one
  SQL statement (join to members for the ids, ON CONFLICT DO NOTHING), i.e. the database-side
  cost of the real table's indexes and foreign key, without any checking.

The best of the repeats is reported for each; the goal is portal <= 3x floor.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import generate
from common import (
    PORTAL,
    backend,
    copy_database,
    create_database,
    drop_database,
    log,
    machine,
    pg_dsn,
    portal_env,
    raw_connect,
    redact,
    run_measured,
    server_version,
    settle,
    sqlite_path,
    table,
    write_json,
)

GOAL = 3.0
ROWS_PER_MEMBER = 20  # below the generator's average at 30 days (~27), so there are enough rows
BARE = "bench_bare_import"


def prepare(url: str, rows: int, seed: int, days: int, data: Path) -> tuple[Path, int]:
    """Generate, load the members into ``url`` (the template), write the import file."""
    members = max(50, math.ceil(rows / ROWS_PER_MEMBER))
    generate.main(["--members", str(members), "--days", str(days), "--seed", str(seed), "--out", str(data),
                   "--update-fraction", "0"])
    manifest = json.loads((data / "manifest.json").read_text())
    create_database(url)
    loader = generate.Loader(url)
    loader.members(generate.staff_csv())
    for f in manifest["files"]:
        loader.members((data / f["members"]).read_text(encoding="utf-8"))
    loader.analyze()
    path = data / f"import-{rows}.csv"
    written = 0
    with open(path, "w", encoding="utf-8") as out:
        out.write(generate.METRICS_HEADER)
        for f in manifest["files"]:
            with open(data / f["metrics"], encoding="utf-8") as src:
                next(src)
                for line in src:
                    if written == rows:
                        break
                    out.write(line)
                    written += 1
            if written == rows:
                break
    return path, written


def floor(url: str, path: Path) -> tuple[float, str]:
    """(seconds, tool) of the database's own bulk load of the file into a bare table."""
    create = f"CREATE TABLE {BARE} (member text, metric text, date text, value text, kind text, id text)"
    if backend(url) == "sqlite":
        db = sqlite_path(url)
        with sqlite3.connect(db) as conn:
            conn.execute(create)
        settle()
        if shutil.which("sqlite3"):
            started = time.perf_counter()
            subprocess.run(["sqlite3", db, "-cmd", "PRAGMA synchronous=NORMAL", f".import --csv --skip 1 {path} {BARE}"],
                           check=True)
            return time.perf_counter() - started, "sqlite3 shell .import --csv"
        import csv

        started = time.perf_counter()
        with sqlite3.connect(db) as conn, open(path, newline="", encoding="utf-8") as f:
            conn.execute("PRAGMA synchronous=NORMAL")
            reader = csv.reader(f)
            next(reader)
            conn.executemany(f"INSERT INTO {BARE} VALUES (?, ?, ?, ?, ?, ?)", reader)
        return time.perf_counter() - started, "Python sqlite3 executemany (no sqlite3 shell)"
    with raw_connect(url) as conn:
        conn.execute(create)
        conn.commit()
    settle()
    if shutil.which("psql"):
        started = time.perf_counter()
        subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", pg_dsn(url), "-c",
                        f"\\copy {BARE} FROM '{path}' WITH (FORMAT csv, HEADER true)"], check=True)
        return time.perf_counter() - started, "psql \\copy ... CSV"
    started = time.perf_counter()
    with raw_connect(url) as conn, conn.cursor() as cur, open(path, "rb") as f:
        with cur.copy(f"COPY {BARE} FROM STDIN WITH (FORMAT csv, HEADER true)") as copy:
            while data := f.read(1 << 20):
                copy.write(data)
        conn.commit()
    return time.perf_counter() - started, "psycopg COPY ... CSV (no psql)"


def reference(url: str) -> float:
    """Bare table -> metric_rows in one SQL statement (after floor() loaded the bare table)."""
    from portal.models.metrics import EVENT_CONFLICT
    cols = "member_id, metric, date, value, kind, event_id"
    if backend(url) == "sqlite":
        sql = (f"INSERT INTO metric_rows ({cols}) SELECT m.id, b.metric, b.date, CAST(b.value AS REAL), "
               f"NULLIF(b.kind, ''), NULLIF(b.id, '') FROM {BARE} b JOIN members m ON m.key = b.member "
               f"WHERE true ORDER BY b.rowid ON CONFLICT {EVENT_CONFLICT} DO NOTHING")
        conn = sqlite3.connect(sqlite_path(url), isolation_level=None)
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA synchronous=NORMAL")
        settle()
        started = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(sql)
        conn.execute("COMMIT")
        seconds = time.perf_counter() - started
        conn.close()
        return seconds
    sql = (f"INSERT INTO metric_rows ({cols}) SELECT m.id, b.metric, b.date::date, b.value::float8, "
           f"NULLIF(b.kind, ''), NULLIF(b.id, '') FROM {BARE} b JOIN members m ON m.key = b.member "
           f"ON CONFLICT {EVENT_CONFLICT} DO NOTHING")
    with raw_connect(url) as conn:
        settle()
        started = time.perf_counter()
        conn.execute(sql)
        conn.commit()
        return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", required=True, help="database to create (sqlite:///FILE or postgresql://.../NAME)")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--data", help="directory for the generated files (default bench/out/import-<rows>)")
    ap.add_argument("--no-reference", action="store_true", help="skip the SQL-only reference insert")
    ap.add_argument("--json-out")
    a = ap.parse_args(argv)
    data = Path(a.data or f"bench/out/import-{a.rows}")
    started = time.perf_counter()
    log(f"preparing {a.rows} rows and their members in {redact(a.db)} ...")
    path, rows = prepare(a.db, a.rows, a.seed, a.days, data)
    size = path.stat().st_size
    results: dict = {"machine": machine(), "database": server_version(a.db), "db": redact(a.db), "rows": rows,
                     "file_bytes": size, "command": "python bench/import_.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                     "repeats": []}
    tool = ""
    try:
        for r in range(a.repeats):
            base = Path(sqlite_path(a.db)).stem if backend(a.db) == "sqlite" else a.db.rsplit("/", 1)[1].split("?")[0]
            suffix = ".db" if backend(a.db) == "sqlite" else ""
            floor_url = copy_database(a.db, f"{base}_floor{suffix}")
            portal_url = copy_database(a.db, f"{base}_portal{suffix}")
            try:
                floor_s, tool = floor(floor_url, path)
                log(f"repeat {r + 1}: floor ({tool}) {floor_s:.2f}s")
                settle()
                m = run_measured([PORTAL, "import", "metrics", str(path)], env=portal_env(portal_url))
                log(f"repeat {r + 1}: portal import metrics {m.seconds:.2f}s, peak RSS {m.max_rss_mib:.0f} MiB: {m.stdout.strip()}")
                ref = None if a.no_reference else reference(floor_url)
                if ref is not None:
                    log(f"repeat {r + 1}: reference SQL insert into metric_rows {ref:.2f}s")
                results["repeats"].append({"floor_seconds": round(floor_s, 3), "portal_seconds": round(m.seconds, 3),
                                           "portal_max_rss_mib": round(m.max_rss_mib, 1), "portal_output": m.stdout.strip(),
                                           "reference_seconds": round(ref, 3) if ref is not None else None})
            finally:
                drop_database(floor_url)
                drop_database(portal_url)
    finally:
        drop_database(a.db)
    reps = results["repeats"]
    best_floor = min(x["floor_seconds"] for x in reps)
    best_portal = min(x["portal_seconds"] for x in reps)
    refs = [x["reference_seconds"] for x in reps if x["reference_seconds"] is not None]
    ratio = best_portal / best_floor if best_floor > 0 else float("nan")
    results.update({"floor_tool": tool, "floor_seconds": best_floor, "portal_seconds": best_portal,
                    "ratio": round(ratio, 2) if ratio == ratio else None, "goal": GOAL, "met": ratio <= GOAL,
                    "reference_seconds": min(refs) if refs else None,
                    "portal_max_rss_mib": max(x["portal_max_rss_mib"] for x in reps),
                    "seconds": round(time.perf_counter() - started, 1)})
    print(f"\n{backend(a.db)}: {rows:,} rows ({size / 1e6:.0f} MB CSV), {results['database']}, best of {len(reps)}\n")
    print(table([[backend(a.db), f"{rows:,}", f"{best_floor:.2f}", tool, f"{best_portal:.2f}", f"{ratio:.2f}x",
                  "met" if ratio <= GOAL else "MISSED", f"{results['portal_max_rss_mib']:.0f}",
                  f"{results['reference_seconds']:.2f} ({results['reference_seconds'] / best_floor:.1f}x)" if refs and best_floor > 0 else "-"]],
                ["database", "rows", "floor s", "floor tool", "portal import s", "ratio", "<= 3x",
                 "portal peak RSS MiB", "reference: SQL insert into metric_rows s (x floor)"]))
    write_json(a.json_out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
