"""Extra members for the load test: CSV files for `portal import members` / `portal import
metrics`, and the logins the virtual users take (users.csv).

    python load/make_population.py OUT_DIR [--members 3000] [--logins 300] [--seed 6]

Members are spread over the four programs with metric rows dated relative to today, so an
evaluation gives them every level; the first ``--logins`` of them (creators and members) get
the password ``load1234``. users.csv also lists the demo's members and staff (portal/demo.py).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import random
from pathlib import Path

GAUGES = ("profile_complete", "task_hall_visited", "tasks_enabled", "quote_set", "assistant_viewed")
PASSWORD = "load1234"
DEMO_MEMBERS = ("c001", "c002", "c003", "c004", "m001", "m002", "m003", "m004", "m005", "s001", "s002",
                "u001", "u002", "u003")
DEMO_STAFF = (("staff", "staff1234"), ("admin", "staff1234"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--members", type=int, default=3000)
    parser.add_argument("--logins", type=int, default=300)
    parser.add_argument("--seed", type=int, default=6)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    today = dt.date.today()
    programs = ["creator"] * 8 + ["member"] * 7 + ["music"] * 2 + ["scorecard"] * 3

    members, metrics, users = [], [], []
    for i in range(args.members):
        key = f"lt{i:05d}"
        program = ("creator", "member")[i % 2] if i < args.logins else rng.choice(programs)
        login = i < args.logins
        members.append([key, f"Load {program} {i}", f"{key}@load.portal", "member", PASSWORD if login else "",
                        program])
        if login:
            users.append([key, PASSWORD, "member"])
        back = today - dt.timedelta(days=rng.randint(2, 20))

        def add(metric: str, day: dt.date, value: float, kind: str = "", times: int = 1, key: str = key) -> None:
            metrics.extend([key, metric, day.isoformat(), f"{value:g}", kind] for _ in range(times))

        if program == "creator":
            level = rng.randint(0, 3)
            for g in GAUGES:
                add(g, back, 1)
            add("courses_completed", back, (1, 3, 5, 8)[level])
            add("live", back, (2_000, 6_000, 15_000, 60_000)[level], times=(2, 5, 8, 20)[level])
            add("submission_task", back, 1)
            add("order", back, 1, "brand", times=rng.randint(0, 6))
            add("followers", back, rng.choice([5_000, 150_000, 300_001]))
            add("likes", back, rng.choice([100, 10_001]))
            add("credit_score", back, 60)
        elif program == "member":
            add("verified", today - dt.timedelta(days=300), 1)
            add("purchase", back, rng.choice([120, 600, 2_500, 6_500]), times=rng.randint(1, 3))
            if rng.random() < 0.1:
                add("referral", back, 1, times=5)
        elif program == "music":
            last_month = today.replace(day=1) - dt.timedelta(days=1)
            for month_end in (last_month.replace(day=1) - dt.timedelta(days=1), last_month):
                plays = rng.choice([4e6, 2e7, 9e7, 3e8, 6e9])
                add("monthly_plays", month_end, plays)
                add("monthly_likes", month_end, plays * 0.02)
        else:
            for _ in range(rng.randint(0, 5)):
                add("consultation", today - dt.timedelta(days=rng.randint(1, 300)), 1)
            for _ in range(rng.randint(1, 10)):
                add("transaction", today - dt.timedelta(days=rng.randint(1, 300)), rng.choice([800, 2_000, 9_000]))

    users += [[k, "demo1234", "member"] for k in DEMO_MEMBERS]
    users += [[k, p, "staff"] for k, p in DEMO_STAFF]
    write(args.out / "members.csv", ["member", "name", "email", "role", "password", "programs"], members)
    write(args.out / "metrics.csv", ["member", "metric", "date", "value", "kind"], metrics)
    write(args.out / "users.csv", ["key", "password", "role"], users)
    print(f"{len(members)} members ({args.logins} with a login), {len(metrics)} metric rows -> {args.out}")


def write(path: Path, header: list[str], rows: list[list]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


if __name__ == "__main__":
    main()
