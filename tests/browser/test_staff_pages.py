"""The staff console in a real browser (Debian's Chromium through Playwright) against the live
server with the demo population: two members submit review requests from /benefits, staff
approve one and reject the other from the review queue; an admin runs a what-if simulation
(-20 %) and sees the per-level moves, with nothing written to the database."""

from __future__ import annotations

from sqlalchemy import func, select

from portal.db import make_engine, session_factory
from portal.models import AuditEntry, BenefitItem, LevelChange, Member, Standing

from .conftest import login

STAFF_PASSWORD = "staff1234"


def _submit_showcase(browser, live: str, member: str) -> int:
    """The member submits the case-showcase request on /benefits; returns the item's id."""
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    try:
        pg = context.new_page()
        login(pg, live, member)
        pg.goto(live + "/benefits")
        item = pg.locator("li[data-key=case_showcase][data-state=available]")
        assert item.count() == 1
        item_id = int(item.get_attribute("data-item"))
        item.locator("textarea[name=text]").fill(f"{member}: our spring campaign case study")
        with pg.expect_navigation():
            item.locator("button[data-submit-review]").click()
        pg.goto(live + "/benefits")
        assert pg.locator(f"#item-{item_id}").get_attribute("data-state") == "pending_review"
        return item_id
    finally:
        context.close()


def _counts(db_url: str) -> dict[str, int]:
    engine = make_engine(db_url)
    try:
        with session_factory(engine)() as s:
            return {m.__tablename__: s.scalar(select(func.count()).select_from(m))
                    for m in (Standing, LevelChange, BenefitItem, AuditEntry)}
    finally:
        engine.dispose()


def _items(db_url: str, ids: list[int]) -> dict[int, tuple[str, str | None, str | None]]:
    engine = make_engine(db_url)
    try:
        with session_factory(engine)() as s:
            return {i.id: (i.state, i.reviewed_by, i.review_note)
                    for i in s.scalars(select(BenefitItem).where(BenefitItem.id.in_(ids)))}
    finally:
        engine.dispose()


def test_staff_approves_one_request_and_rejects_another_from_the_queue(live, db_url, browser, page):
    first = _submit_showcase(browser, live, "c001")
    second = _submit_showcase(browser, live, "c002")

    login(page, live, "staff", STAFF_PASSWORD)
    page.goto(live + "/staff/")
    page.locator("nav.staff-nav a[href='/staff/reviews']").click()
    page.wait_for_url(live + "/staff/reviews")
    assert page.locator("nav.staff-nav [data-admin-nav]").count() == 0  # no admin pages for staff
    queue = page.locator("li[data-review]")
    assert queue.count() == 2
    one, two = page.locator(f"li[data-review='{first}']"), page.locator(f"li[data-review='{second}']")
    assert one.get_attribute("data-member") == "c001" and two.get_attribute("data-member") == "c002"
    assert "c001: our spring campaign case study" in one.locator("blockquote.request").inner_text()

    one.locator("textarea[name=note]").fill("Great case, scheduled for the May showcase.")
    with page.expect_navigation():
        one.locator("button[data-approve]").click()
    assert page.url.endswith("/staff/reviews")
    assert page.locator(".flash.success").is_visible()
    assert page.locator(f"li[data-review='{first}']").count() == 0
    assert page.locator("li[data-review]").count() == 1

    two = page.locator(f"li[data-review='{second}']")
    two.locator("button[data-reject]").click()  # an empty reason: the browser refuses to send the form
    assert page.url.endswith("/staff/reviews") and page.locator(f"li[data-review='{second}']").count() == 1
    two.locator("textarea[name=note]").fill("The campaign is not public yet; please resubmit after launch.")
    with page.expect_navigation():
        two.locator("button[data-reject]").click()
    assert page.locator(".flash.success").is_visible()
    assert page.locator("li[data-review]").count() == 0
    assert page.locator("[data-queue-empty]").is_visible()

    assert _items(db_url, [first, second]) == {
        first: ("issued", "staff", "Great case, scheduled for the May showcase."),
        second: ("rejected", "staff", "The campaign is not public yet; please resubmit after launch."),
    }
    page.goto(live + "/staff/audit?action=benefit.")
    assert page.locator("tr[data-action='benefit.approve']").count() == 1
    assert page.locator("tr[data-action='benefit.reject']").count() == 1


def test_admin_runs_a_what_if_simulation_and_nothing_is_written(live, db_url, page):
    before = _counts(db_url)
    engine = make_engine(db_url)
    try:
        with session_factory(engine)() as s:
            s001_before = s.scalar(select(Standing.level).join(Member, Member.id == Standing.member_id)
                                   .where(Member.key == "s001", Standing.program_key == "scorecard"))
    finally:
        engine.dispose()

    login(page, live, "admin", STAFF_PASSWORD)
    page.goto(live + "/staff/programs")
    page.locator("tr[data-program=scorecard] a").click()
    page.wait_for_url(live + "/staff/programs/scorecard")
    assert page.locator("nav.staff-nav [data-admin-nav]").count() == 2
    form = page.locator("form[data-form=simulate]")
    form.locator("input[name=mode][value=scale]").check()
    form.locator("input[name=percent]").fill("-20")
    with page.expect_navigation():
        form.locator("button[type=submit]").click()

    result = page.locator("[data-simulation]")
    assert result.is_visible()
    assert result.locator("[data-upgraded]").get_attribute("data-upgraded") == "3"
    assert result.locator("[data-downgraded]").get_attribute("data-downgraded") == "0"
    levels = result.locator("tr[data-sim-level]")
    assert levels.count() >= 4
    assert result.locator("tr[data-sim-level=B] [data-up]").get_attribute("data-up") == "1"
    moves = result.locator("tr[data-move]")
    assert {moves.nth(i).get_attribute("data-move"): moves.nth(i).get_attribute("data-direction")
            for i in range(moves.count())} == {"m004": "up", "s001": "up", "s002": "up"}
    assert page.locator("form[data-form=publish]").is_visible()  # an admin may publish it (not done here)

    assert _counts(db_url) == before
    engine = make_engine(db_url)
    try:
        with session_factory(engine)() as s:
            assert s.scalar(select(Standing.level).join(Member, Member.id == Standing.member_id)
                            .where(Member.key == "s001", Standing.program_key == "scorecard")) == s001_before
    finally:
        engine.dispose()
