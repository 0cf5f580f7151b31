"""Demo data: members of all four programs at different levels, a downgrade with reasons,
a blacklisted client, and staff accounts. Dates are relative to ``today``; idempotent."""

from __future__ import annotations

import datetime as dt
import random

from sqlalchemy import select
from sqlalchemy.orm import Session

from .engine.run import evaluate
from .engine.windows import month_end
from .models import Enrolment, Member, MetricRow
from .services import programs as programs_service
from .services.passwords import hash_password

# bandit B105: demo logins, printed by `portal demo` on purpose
PASSWORD = "demo1234"  # nosec B105
# bandit B105: demo logins, as above
STAFF_PASSWORD = "staff1234"  # nosec B105

# key, name, role, programs, what the login shows
PEOPLE = [
    ("admin", "演示管理员 Admin", "admin", "", "admin (staff + program publishing)"),
    ("staff", "运营小王 Staff", "staff", "", "staff console"),
    ("c001", "星河创作者 Star", "member", "creator", "creator LV3, reward tasks met"),
    ("c002", "晨光 Dawn", "member", "creator", "creator LV2"),
    ("c003", "小鹿 Fawn", "member", "creator", "creator LV1, 100k+ followers"),
    ("c004", "阿木 Mu", "member", "creator", "creator downgraded LV2 -> LV1 (see reasons)"),
    ("c005", "新人 Newbie", "member", "creator", "creator not yet rated"),
    ("m001", "李会员 Li", "member", "member", "member regular"),
    ("m002", "王会员 Wang", "member", "member scorecard", "member silver + scorecard"),
    ("m003", "赵会员 Zhao", "member", "member", "member gold (by referrals)"),
    ("m004", "钱企业 Qian Corp", "member", "member scorecard", "member diamond (enterprise) + scorecard"),
    ("m005", "孙伙伴 Sun", "member", "member", "member partner"),
    ("s001", "云帆科技 Yunfan Tech", "member", "scorecard", "scorecard customer, top spender"),
    ("s002", "蓉城软件 Rongcheng Soft", "member", "scorecard", "scorecard customer"),
    ("s003", "锦官数据 Jinguan Data", "member", "scorecard", "scorecard customer, occasional"),
    ("u001", "天籁音乐 Tianlai Music", "member", "music", "music A+ high quality"),
    ("u002", "青春旋律 Youth Melody", "member", "music", "music B standard"),
    ("u003", "风之歌 Wind Song", "member", "music", "music A low (one month below its band: grade held)"),
    ("u004", "刷量工作室 Boost Studio", "member", "music", "music client blacklisted (likes/plays)"),
]
SEGMENTS = {
    "s001": ("advertising", "tech", "large"),
    "s002": ("content", "tech", "medium"),
    "s003": ("brand", "consumer", "small"),
    "m004": ("brand", "consumer", "large"),
    "u001": ("content", "entertainment", "large"),
}


def load_demo(session: Session, today: dt.date) -> list[tuple[str, str, str]]:
    """Create the demo population (once) and evaluate it; returns (login, password, what)."""
    logins = [(k, STAFF_PASSWORD if role != "member" else PASSWORD, what) for k, _, role, _, what in PEOPLE]
    if session.scalar(select(Member.id).where(Member.key == "c001")) is not None:
        return logins
    member_hash, staff_hash = hash_password(PASSWORD), hash_password(STAFF_PASSWORD)
    now = dt.datetime.now(dt.UTC)
    ids: dict[str, int] = {}
    for key, name, role, programs, _ in PEOPLE:
        business_type, industry, scale = SEGMENTS.get(key, (None, None, None))
        m = Member(key=key, name=name, role=role, email=f"{key}@demo.portal", created_at=now,
                   password_hash=member_hash if role == "member" else staff_hash,
                   business_type=business_type, industry=industry, scale=scale)
        session.add(m)
        session.flush()
        ids[key] = m.id
        for p in programs.split():
            session.add(Enrolment(member_id=m.id, program_key=p, enrolled_on=today - dt.timedelta(days=400)))
    rows: list[MetricRow] = []
    day = today - dt.timedelta(days=1)  # the daily programs are evaluated as of yesterday
    # bandit B311: reproducible demo data, not secrets
    rng = random.Random(7)  # nosec B311

    def add(key: str, metric: str, date: dt.date, value: float, kind: str | None = None) -> None:
        rows.append(MetricRow(member_id=ids[key], metric=metric, date=date, value=value, kind=kind))

    def days_back(n: int) -> dt.date:
        return day - dt.timedelta(days=n)

    # creators
    def creator(key: str, courses: int, posts: int, plays: int, followers: int, orders: int = 0,
                likes: int = 0, credit: int = 60, submissions: int = 0, offset: int = 0) -> None:
        for m in ("profile_complete", "task_hall_visited", "tasks_enabled", "quote_set", "assistant_viewed"):
            add(key, m, days_back(200), 1)
        add(key, "courses_completed", days_back(100), courses)
        add(key, "followers", days_back(2 + offset), followers)
        add(key, "credit_score", days_back(2 + offset), credit)
        for i in range(posts):
            add(key, "video" if i % 4 else "live", days_back(offset + i * 29 // max(posts, 1)), plays + rng.randint(-plays // 10, plays // 10))
        for i in range(orders):
            add(key, "order", days_back(offset + 5 + i * 10), 1, "brand")
        add(key, "order", days_back(offset + 3), 1, "universal")  # never counts
        if likes:
            add(key, "likes", days_back(offset + 1), likes)
        for i in range(submissions):
            add(key, "submission_task", days_back(300 + i), 1)
        for idx in ("propagation_index", "cooperation_index", "growth_index", "value_index", "seeding_index"):
            add(key, idx, days_back(1), rng.randint(40, 95))

    creator("c001", courses=9, posts=24, plays=90_000, followers=420_000, orders=7, likes=25_000, credit=80, submissions=3)
    creator("c002", courses=6, posts=10, plays=15_000, followers=60_000, orders=1, likes=3_000, submissions=1)
    creator("c003", courses=4, posts=6, plays=6_000, followers=150_000, likes=1_000)
    # c004 was LV2 a month ago (old posts); now only 6 posts in the last 30 days
    creator("c004", courses=5, posts=9, plays=12_000, followers=30_000, submissions=1, offset=31)
    for i in range(6):
        add("c004", "video", days_back(i * 4), 8_000)
    add("c005", "profile_complete", days_back(3), 1)
    add("c005", "courses_completed", days_back(3), 1)

    # member tiers
    for key in ("m001", "m002", "m003", "m004", "m005"):
        add(key, "verified", days_back(300), 1)
    add("m001", "purchase", days_back(40), 120)
    add("m002", "purchase", days_back(20), 300)
    add("m002", "purchase", days_back(60), 350)
    add("m003", "purchase", days_back(10), 200)
    for i in range(5):
        add("m003", "referral", days_back(50 + i * 7), 1)
    add("m004", "enterprise", days_back(300), 1)
    add("m004", "purchase", days_back(12), 3_600)
    for i in range(6):
        add("m005", "purchase", days_back(i * 25), 4_000)

    # scorecard customers (data up to the end of last month)
    last_month = month_end(today, 1)
    for key, consults, deals, amount in (("s001", 6, 12, 6_000), ("s002", 3, 5, 4_000), ("s003", 1, 1, 2_000),
                                         ("m002", 2, 2, 1_500), ("m004", 4, 6, 9_000)):
        for i in range(consults):
            add(key, "consultation", last_month - dt.timedelta(days=20 + i * 30), 1)
        for i in range(deals):
            add(key, "transaction", last_month - dt.timedelta(days=i * 28), amount)

    # music clients: plays per calendar month, the last two months
    for back, month_plays in ((2, {"u001": 6e9, "u002": 5e7, "u003": 4e8, "u004": 2e8}),
                              (1, {"u001": 7e9, "u002": 5.5e7, "u003": 8e7, "u004": 2.2e8})):
        end = month_end(today, back)
        for key, plays in month_plays.items():
            add(key, "monthly_plays", end, plays)
            add(key, "monthly_likes", end, plays * (0.6 if key == "u004" and back == 1 else 0.02))
    session.add_all(rows)
    session.commit()

    def run(program: str, as_of: dt.date) -> None:
        definition, version = programs_service.definition(session, program)
        evaluate(session, definition, version, as_of)
        session.commit()

    run("creator", day - dt.timedelta(days=31))
    run("creator", day)
    run("member", day)
    run("scorecard", last_month)
    run("music", month_end(today, 2))
    run("music", last_month)
    return logins
