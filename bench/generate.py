"""Deterministic benchmark data: members of all four programs and their metric rows.

    python bench/generate.py --members N --days D --seed S [--out DIR] [--load DATABASE_URL]

Writes CSV files in the formats of ``portal import members|metrics`` (CONTRACT.md):

    DIR/members-0001.csv ...   member,name,email,role,password,programs,business_type,industry,scale
    DIR/metrics-0001.csv ...   member,metric,date,value,kind,id   (the rows of that chunk's members)
    DIR/update.csv             new rows for ~1% of the members, dated the last day (re-evaluation)
    DIR/manifest.json          parameters, files, row counts, the login accounts, timings

The same (members, days, seed, end) always gives byte-identical files, whatever ``--jobs``:
members are generated in blocks of ``BLOCK``, each from its own ``random.Random(f"{seed}:{block}")``.

Distributions are skewed (Pareto / log-normal): a few huge creators with many posts and
millions of followers, a long tail of small ones; a few whale spenders; music clients across all
five bands. Populations: 45% creators, 35% card-platform members (plus 10% of the creators, who
are members too), 12% scorecard customers, 8% music clients. Member 0 (``m0000000``) is enrolled
in every program with a heavy history - the worst case for the member pages. Passwords (argon2,
deliberately slow) are set only for the accounts listed in the manifest: the web benchmark logs
in with them; every other member has none.

``--load URL`` creates the schema (as ``portal init``), then loads each chunk through the
project's own import service (``portal.services.imports.import_members_csv`` and
``import_metrics_csv`` - exactly what ``portal import members|metrics`` runs), one transaction
per file, while the next chunk is generated in worker processes. It finishes with ANALYZE.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

BLOCK = 5_000  # members per random stream (fixed: the output must not depend on --jobs)
DEFAULT_END = dt.date(2026, 10, 31)
PASSWORD = "bench-pass-1"
STAFF_KEY = "bench_staff"
MEMBERS_HEADER = "member,name,email,role,password,programs,business_type,industry,scale\n"
METRICS_HEADER = "member,metric,date,value,kind,id\n"

SURNAMES = ["Wang", "Li", "Zhang", "Liu", "Chen", "Yang", "Huang", "Zhao", "Wu", "Zhou", "Xu", "Sun",
            "Ma", "Zhu", "Hu", "Guo", "He", "Lin", "Luo", "Gao"]
GIVEN = ["Wei", "Fang", "Na", "Min", "Jing", "Li", "Qiang", "Lei", "Jun", "Yang", "Yong", "Yan", "Jie",
         "Tao", "Ming", "Chao", "Xiu", "Hui", "Ping", "Gang", "Xin", "Yu", "Hao", "Lan"]
BUSINESS = (["advertising", "content", "brand"], [3, 5, 2])
INDUSTRY = (["finance", "tech", "consumer", "education", "gaming", "health", "travel", "auto"],
            [2, 4, 6, 2, 3, 2, 1, 1])
SCALE = (["large", "medium", "small"], [1, 5, 14])


def member_key(i: int) -> str:
    return f"m{i:07d}"


class Days:
    """The D dates of the data window, ending with ``end``, as ISO strings."""

    def __init__(self, end: dt.date, days: int):
        self.end = end
        self.n = days
        self.iso = [(end - dt.timedelta(days=days - 1 - k)).isoformat() for k in range(days)]


def poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, int(rng.gauss(lam, math.sqrt(lam)) + 0.5))
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


# -- one member's rows per program ------------------------------------------------------------


def creator_rows(rng: random.Random, key: str, days: Days, out: list[str], star: bool = False) -> None:
    r = rng.random
    iso, n = days.iso, days.n
    first, last = iso[0], iso[-1]
    pop = 1e6 if star else rng.paretovariate(0.8)  # popularity: most ~1-3, a few in the thousands
    followers = min(100_000_000, int(800 * pop))
    big = followers >= 100_000
    out.append(f"{key},profile_complete,{first},{1 if star or r() < 0.88 else 0},,\n")
    out.append(f"{key},task_hall_visited,{first},{1 if star or r() < 0.82 else 0},,\n")
    out.append(f"{key},tasks_enabled,{first},{1 if star or r() < 0.78 else 0},,\n")
    if big or r() < 0.3:
        out.append(f"{key},quote_set,{first},{1 if star or r() < (0.9 if big else 0.5) else 0},,\n")
        out.append(f"{key},assistant_viewed,{first},{1 if star or r() < (0.9 if big else 0.5) else 0},,\n")
    courses = min(12, int(rng.expovariate(0.25) + (3 if big else 0)))
    out.append(f"{key},courses_completed,{first},{12 if star else courses},,\n")
    credit = 95 if star else max(0, min(100, int(rng.gauss(72 if big else 62, 14))))
    out.append(f"{key},credit_score,{first},{credit},,\n")
    growth = 1 + rng.gauss(0.002, 0.004)
    f = float(followers)
    for k in range(0, n, 7):  # a followers reading a week
        out.append(f"{key},followers,{iso[k]},{int(f)},,\n")
        f *= growth ** 7
    for name in ("propagation_index", "cooperation_index", "growth_index", "value_index", "seeding_index"):
        out.append(f"{key},{name},{last},{int(r() * 100)},,\n")
    # events: posts are skewed by popularity; plays follow followers
    rate = 8.0 if star else min(12.0, rng.lognormvariate(-1.3, 0.9) * (1 + 0.35 * math.log10(pop)))
    plays_scale = max(200.0, followers * rng.lognormvariate(-1.6, 0.9))
    posts = poisson(rng, rate * n)
    lives = poisson(rng, rate * n * 0.15) if (star or r() < 0.2) else 0
    likes_by_day: dict[int, float] = {}
    for j in range(posts):
        d = int(r() * n)
        plays = int(plays_scale * rng.lognormvariate(0, 0.7))
        likes_by_day[d] = likes_by_day.get(d, 0.0) + plays * 0.03
        out.append(f"{key},video,{iso[d]},{plays},,v{j}\n")
    for j in range(lives):
        d = int(r() * n)
        plays = int(plays_scale * 1.5 * rng.lognormvariate(0, 0.8))
        likes_by_day[d] = likes_by_day.get(d, 0.0) + plays * 0.05
        out.append(f"{key},live,{iso[d]},{plays},,l{j}\n")
    for d in sorted(likes_by_day):  # one likes row per day with posts (the day's sum)
        out.append(f"{key},likes,{iso[d]},{int(likes_by_day[d] * rng.lognormvariate(0, 0.4))},,\n")
    for j in range(poisson(rng, (0.6 if star else 0.015 * (1 + math.log10(pop))) * n)):
        kind = ("universal" if r() < 0.5 else "mini_game") if r() < 0.35 else ""
        out.append(f"{key},order,{iso[int(r() * n)]},1,{kind},o{j}\n")
    for j in range(poisson(rng, 0.02 * n)):
        out.append(f"{key},submission_task,{iso[int(r() * n)]},1,,s{j}\n")
    for j in range(poisson(rng, 0.04 * n)):
        out.append(f"{key},dispatch,{iso[int(r() * n)]},1,,d{j}\n")


def member_rows(rng: random.Random, key: str, days: Days, out: list[str], star: bool = False) -> None:
    r = rng.random
    iso, n = days.iso, days.n
    out.append(f"{key},verified,{iso[0]},{1 if star or r() < 0.9 else 0},,\n")
    if star or r() < 0.25:
        out.append(f"{key},enterprise,{iso[0]},{1 if star or r() < 0.2 else 0},,\n")
    rate = 0.5 if star else rng.lognormvariate(-2.8, 1.1)  # purchases a day: median ~0.06
    spend = 20.0 if star else rng.lognormvariate(0, 0.9)  # a whale multiplies every order
    for j in range(poisson(rng, rate * n)):
        amount = rng.lognormvariate(4.4, 0.9) * spend
        out.append(f"{key},purchase,{iso[int(r() * n)]},{amount:.2f},,p{j}\n")
    for j in range(poisson(rng, (0.2 if star else 0.004) * n)):
        out.append(f"{key},referral,{iso[int(r() * n)]},1,,r{j}\n")


def scorecard_rows(rng: random.Random, key: str, days: Days, out: list[str], star: bool = False) -> None:
    r = rng.random
    iso, n = days.iso, days.n
    for j in range(poisson(rng, (0.5 if star else rng.lognormvariate(-2.6, 0.9)) * n)):
        out.append(f"{key},consultation,{iso[int(r() * n)]},1,,c{j}\n")
    size = 30.0 if star else rng.lognormvariate(0, 1.0)
    for j in range(poisson(rng, (0.4 if star else rng.lognormvariate(-3.2, 1.0)) * n)):
        out.append(f"{key},transaction,{iso[int(r() * n)]},{rng.lognormvariate(7.8, 1.0) * size:.2f},,t{j}\n")


def music_rows(rng: random.Random, key: str, days: Days, out: list[str], star: bool = False) -> None:
    r = rng.random
    iso = days.iso
    monthly = 2e10 if star else min(1e11, 1e6 * rng.paretovariate(0.45))  # C..S bands, S rare
    per_day = monthly / 30
    like_ratio = 0.7 if r() < 0.01 else rng.uniform(0.005, 0.05)  # 1% inflate their likes
    for d in iso:
        plays = int(per_day * rng.uniform(0.6, 1.4))
        out.append(f"{key},monthly_plays,{d},{plays},,\n")
        out.append(f"{key},monthly_likes,{d},{int(plays * like_ratio)},,\n")
    share = rng.uniform(0.3, 0.6) if r() < 0.02 else r() * 0.25
    out.append(f"{key},zombie_fan_share,{iso[-1]},{share:.3f},,\n")
    for j in range(poisson(rng, 0.001 * days.n)):
        out.append(f"{key},violation,{iso[int(r() * days.n)]},1,,x{j}\n")


ROWS = {"creator": creator_rows, "member": member_rows, "scorecard": scorecard_rows, "music": music_rows}


def programs_of(rng: random.Random, i: int) -> list[str]:
    if i == 0:
        return ["creator", "member", "music", "scorecard"]
    x = rng.random()
    if x < 0.45:
        return ["creator", "member"] if rng.random() < 0.10 else ["creator"]
    if x < 0.80:
        return ["member"]
    if x < 0.92:
        return ["scorecard"]
    return ["music"]


def accounts_in(block_start: int, block_programs: list[list[str]]) -> dict[int, tuple[str, str]]:
    """Members that get a password: m0000000 and the first member of each program (block 0),
    with what they are and the program their page benchmark opens."""
    if block_start != 0:
        return {}
    chosen = {0: ("all programs, heavy history", "creator")}
    seen: set[str] = set()
    for i, progs in enumerate(block_programs):
        if i == 0 or len(progs) != 1 or progs[0] in seen:
            continue
        seen.add(progs[0])
        chosen[i] = (f"a typical member of {progs[0]} only", progs[0])
    return chosen


def generate_block(args: tuple[int, int, int, str, int, dt.date]) -> tuple[str, str, int, list[tuple[str, str, str]]]:
    """(members csv text, metrics csv text, metric rows, accounts) for members start..stop-1."""
    start, stop, seed, _, ndays, end = args
    rng = random.Random(f"{seed}:{start // BLOCK}")
    days = Days(end, ndays)
    choices = rng.choices
    members: list[str] = []
    rows: list[str] = []
    progs_all = [programs_of(rng, i) for i in range(start, stop)]
    logins = accounts_in(start, progs_all)
    accounts: list[tuple[str, str, str]] = []
    for i, progs in zip(range(start, stop), progs_all, strict=True):
        key = member_key(i)
        name = f"{SURNAMES[int(rng.random() * len(SURNAMES))]} {GIVEN[int(rng.random() * len(GIVEN))]}"
        seg = (choices(*BUSINESS)[0], choices(*INDUSTRY)[0], choices(*SCALE)[0])
        password = ""
        if i - start in logins:
            password = PASSWORD
            accounts.append((key, *logins[i - start]))
        members.append(f"{key},{name},{key}@example.com,member,{password},{' '.join(progs)},{seg[0]},{seg[1]},{seg[2]}\n")
        for p in progs:
            ROWS[p](rng, key, days, rows, star=(i == 0))
    return "".join(members), "".join(rows), len(rows), accounts


def update_block(args: tuple[int, int, int, float, int, dt.date, list[str]]) -> tuple[str, int]:
    """New rows dated the last day for ~fraction of the members of start..stop-1 (their programs)."""
    start, stop, seed, fraction, _, end, programs = args
    rng = random.Random(f"{seed}:update:{start // BLOCK}")
    day = end.isoformat()
    out: list[str] = []
    for i, progs in zip(range(start, stop), programs, strict=True):
        if rng.random() >= fraction:
            continue
        key = member_key(i)
        for p in progs.split():
            if p == "creator":
                for j in range(1 + int(rng.random() * 3)):
                    plays = int(rng.lognormvariate(9, 1.5))
                    out.append(f"{key},video,{day},{plays},,u{j}\n")
                out.append(f"{key},likes,{day},{int(rng.lognormvariate(6, 1.5))},,\n")
            elif p == "member":
                out.append(f"{key},purchase,{day},{rng.lognormvariate(4.4, 1.0):.2f},,u0\n")
            elif p == "scorecard":
                out.append(f"{key},transaction,{day},{rng.lognormvariate(7.8, 1.0):.2f},,u0\n")
            else:
                out.append(f"{key},monthly_plays,{day},{int(1e6 * rng.paretovariate(0.6))},,u0\n")
    return "".join(out), len(out)


# -- loading through the import service -------------------------------------------------------


class Loader:
    """``portal init`` + the import service, one transaction per file (as the CLI does)."""

    def __init__(self, url: str):
        from portal import create_app
        from portal.cli import init_database

        self.app = create_app({"DATABASE_URL": url, "PORTAL_CLI": True})
        with self.app.app_context():
            init_database(self.app)
        self.seconds = {"members": 0.0, "metrics": 0.0}
        self.counts = {"members": 0, "metrics": 0}

    def _run(self, what: str, text: str) -> str:
        from portal.cli import session
        from portal.services.imports import ImportRejected, import_members_csv, import_metrics_csv

        started = time.perf_counter()
        with self.app.app_context(), session(bulk=what == "metrics") as s:  # the session `portal import` uses
            try:
                if what == "members":
                    result = import_members_csv(s, text, dt.date.today())
                    self.counts["members"] += result.created + result.updated
                else:
                    result = import_metrics_csv(s, text)
                    self.counts["metrics"] += result.new
            except ImportRejected as exc:
                s.rollback()
                lines = "\n".join(str(e) for e in exc.errors[:20])
                raise SystemExit(f"import rejected: {exc.message}\n{lines}") from exc
            s.commit()
        self.seconds[what] += time.perf_counter() - started
        return result.line()

    def members(self, text: str) -> str:
        return self._run("members", text)

    def metrics(self, text: str) -> str:
        return self._run("metrics", text)

    def analyze(self) -> float:
        from sqlalchemy import text

        from portal.extensions import db

        started = time.perf_counter()
        with self.app.app_context():
            engine = db.engine
            if engine.dialect.name == "postgresql":
                with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                    conn.execute(text("VACUUM ANALYZE"))
            else:
                with engine.connect() as conn:
                    conn.exec_driver_sql("ANALYZE")
                    conn.commit()
            engine.dispose()
        return time.perf_counter() - started


def ordered_map(pool: ProcessPoolExecutor, fn, items: list, ahead: int):
    """pool.map with at most ``ahead`` results pending (bounded memory when loading is slower)."""
    pending = deque()
    it = iter(items)
    for item in it:
        pending.append(pool.submit(fn, item))
        if len(pending) >= ahead:
            break
    while pending:
        result = pending.popleft().result()
        for item in it:
            pending.append(pool.submit(fn, item))
            break
        yield result


def staff_csv() -> str:
    return MEMBERS_HEADER + f"{STAFF_KEY},Bench Staff,{STAFF_KEY}@example.com,staff,{PASSWORD},,,,\n"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--members", type=int, required=True)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--end", type=dt.date.fromisoformat, default=DEFAULT_END, help="last data day (YYYY-MM-DD)")
    ap.add_argument("--out", help="directory for the CSV files (default: bench/out/data-N-D-S, "
                    "or a temporary one removed after --load)")
    ap.add_argument("--load", metavar="DATABASE_URL", help="create the schema and load the files through portal's import service")
    ap.add_argument("--chunk", type=int, default=50_000, help=f"members per file (a multiple of {BLOCK})")
    ap.add_argument("--update-fraction", type=float, default=0.01, help="share of members in update.csv")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="generator processes")
    a = ap.parse_args(argv)
    if a.members < 1 or a.days < 1:
        ap.error("--members and --days must be positive")
    chunk = max(BLOCK, a.chunk // BLOCK * BLOCK)
    temporary = a.out is None and a.load is not None
    out = Path(tempfile.mkdtemp(prefix="portal-bench-")) if temporary else Path(
        a.out or f"bench/out/data-{a.members}-{a.days}-{a.seed}")
    out.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    loader = Loader(a.load) if a.load else None
    if loader:
        loader.members(staff_csv())
    (out / "staff.csv").write_text(staff_csv(), encoding="utf-8")
    blocks = [(s, min(s + BLOCK, a.members), a.seed, "", a.days, a.end) for s in range(0, a.members, BLOCK)]
    per_file = chunk // BLOCK
    files: list[dict] = []
    accounts: list[dict] = [{"member": STAFF_KEY, "password": PASSWORD, "what": "staff"}]
    programs_by_block: list[list[str]] = []
    gen_seconds = 0.0
    total_rows = 0
    with ProcessPoolExecutor(max_workers=max(1, a.jobs)) as pool:
        results = ordered_map(pool, generate_block, blocks, ahead=2 * max(1, a.jobs) + per_file)
        members_buf: list[str] = []
        rows_buf: list[str] = []
        nrows = 0
        t0 = time.perf_counter()
        for b, (mtext, rtext, n, accs) in enumerate(results, start=1):
            members_buf.append(mtext)
            rows_buf.append(rtext)
            nrows += n
            accounts += [{"member": k, "password": PASSWORD, "what": w, "program": p} for k, w, p in accs]
            programs_by_block.append([line.split(",")[5] for line in mtext.splitlines()])
            if b % per_file and b != len(blocks):
                continue
            index = len(files) + 1
            mpath, rpath = out / f"members-{index:04d}.csv", out / f"metrics-{index:04d}.csv"
            mcsv, rcsv = MEMBERS_HEADER + "".join(members_buf), METRICS_HEADER + "".join(rows_buf)
            mpath.write_text(mcsv, encoding="utf-8")
            rpath.write_text(rcsv, encoding="utf-8")
            gen_seconds += time.perf_counter() - t0
            nmembers = sum(t.count("\n") for t in members_buf)
            files.append({"members": mpath.name, "metrics": rpath.name, "member_count": nmembers, "rows": nrows})
            total_rows += nrows
            msg = f"chunk {index}: {nmembers} members, {nrows} metric rows"
            if loader:
                t1 = time.perf_counter()
                loader.members(mcsv)
                t2 = time.perf_counter()
                loader.metrics(rcsv)
                t3 = time.perf_counter()
                msg += f"; loaded members {t2 - t1:.1f}s, metrics {t3 - t2:.1f}s ({nrows / max(t3 - t2, 1e-9):,.0f} rows/s)"
            log(msg)
            members_buf, rows_buf, nrows = [], [], 0
            t0 = time.perf_counter()
        updates = pool.map(update_block, [(*blk[:3], a.update_fraction, blk[4], blk[5], progs)
                                          for blk, progs in zip(blocks, programs_by_block, strict=True)])
        utext, urows = "", 0
        parts = []
        for text, n in updates:
            parts.append(text)
            urows += n
        utext = METRICS_HEADER + "".join(parts)
    (out / "update.csv").write_text(utext, encoding="utf-8")
    analyze_s = loader.analyze() if loader else 0.0
    elapsed = time.perf_counter() - started
    manifest = {
        "members": a.members, "days": a.days, "seed": a.seed, "end": a.end.isoformat(),
        "first_day": (a.end - dt.timedelta(days=a.days - 1)).isoformat(),
        "metric_rows": total_rows, "update_rows": urows, "update_fraction": a.update_fraction,
        "files": files, "update": "update.csv", "staff": "staff.csv", "accounts": accounts,
        "seconds": {"total": round(elapsed, 1), "generate": round(gen_seconds, 1),
                    **({"load_members": round(loader.seconds["members"], 1),
                        "load_metrics": round(loader.seconds["metrics"], 1),
                        "analyze": round(analyze_s, 1)} if loader else {})},
    }
    if loader:
        manifest["load_rate_rows_per_s"] = round(total_rows / max(loader.seconds["metrics"], 1e-9))
        manifest["loaded_into"] = _redact(a.load)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in manifest.items() if k != "files"}, indent=2))
    if temporary:
        shutil.rmtree(out)
    return 0


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - only for the manifest
        return url


if __name__ == "__main__":
    sys.exit(main())
