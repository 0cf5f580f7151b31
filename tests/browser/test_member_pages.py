"""The member pages in a real browser (Debian's Chromium through Playwright) against the live
server with the demo population: levels and requirements, a claim, the downgrade reasons, the
language switch, and the layout on a 375 px wide phone."""

from __future__ import annotations

import re

import pytest

from .conftest import login

PHONE = {"width": 375, "height": 812}


def member_pages(program: str) -> list[str]:
    return ["/", f"/programs/{program}", "/history", "/benefits", "/notifications", "/account/password"]


def test_creator_c001_sees_lv3_and_the_requirements_to_keep_it(live, page):
    login(page, live, "c001")
    card = page.locator("[data-program=creator]")
    assert card.locator("[data-level]").inner_text() == "LV3"
    assert "LV4" in card.inner_text()
    card.locator("a.button").click()
    page.wait_for_url(live + "/programs/creator")
    keep = page.locator("[data-level-section=LV3]")
    assert keep.locator("h2").inner_text() == "保持LV3需达成"
    rows = keep.locator("li.req")
    assert rows.count() >= 5
    assert keep.locator("li.req.unmet").count() == 0
    for i in range(rows.count()):
        row = rows.nth(i)
        assert row.locator("[data-actual]").inner_text() and row.locator("[data-required]").inner_text()
        assert row.get_attribute("data-req").startswith("LV3/")
    reach = page.locator("[data-level-section=LV4]")
    assert reach.locator("h2").inner_text() == "升至LV4需达成"
    unmet = reach.locator("li.req.unmet")
    assert unmet.count() >= 2
    assert unmet.first.locator(".hint").is_visible()
    assert reach.locator("svg.trend line.threshold").count() >= 1
    assert page.locator("svg.trend").first.is_visible()
    assert "已达成：奖励权益已解锁。" in page.locator("[data-reward]").inner_text()


def test_member_m005_sees_the_partner_tier(live, page):
    login(page, live, "m005")
    card = page.locator("[data-program=member]")
    assert card.locator("[data-level]").inner_text() == "partner"
    assert "已达最高等级" in card.inner_text()
    page.goto(live + "/programs/member")
    assert page.locator("[data-level]").inner_text() == "partner"
    assert page.locator("[data-level-section=partner] li.req").count() >= 1


def test_claiming_a_benefit_shows_its_new_state(live, page):
    login(page, live, "c001")
    page.locator("nav a[href='/benefits']").click()
    page.wait_for_url(live + "/benefits")
    claimable = page.locator("li[data-state=available]:has(button[data-claim])")
    assert claimable.count() >= 2
    item = claimable.first
    item_id = item.get_attribute("data-item")
    assert not item.locator("button[data-claim]").is_visible()  # a claim asks to be confirmed first
    item.locator("summary[data-claim-open]").click()
    with page.expect_navigation():
        item.locator("button[data-claim]").click()
    assert page.url.endswith(f"/benefits#item-{item_id}")
    claimed = page.locator(f"#item-{item_id}")
    assert claimed.get_attribute("data-state") == "claimed"
    assert claimed.locator("button[data-claim]").count() == 0
    assert claimed.locator(".badge").inner_text() == "已领取"
    assert page.locator("[data-state-group=claimed]").locator(f"#item-{item_id}").count() == 1
    flash = page.locator(".flash.success")
    assert flash.is_visible() and flash.inner_text().startswith("已领取")
    # one fewer to claim, and a reload keeps the new state
    assert page.locator("li[data-state=available]:has(button[data-claim])").count() == claimable.count()
    page.reload()
    assert page.locator(f"#item-{item_id}").get_attribute("data-state") == "claimed"
    assert page.locator(".flash").count() == 0


def test_c004_sees_the_downgrade_reasons_in_the_history(live, page):
    login(page, live, "c004")
    page.locator("nav a[href='/history']").click()
    page.wait_for_url(live + "/history")
    down = page.locator("li.change.down")
    assert down.count() == 1
    assert "LV2 → LV1" in down.inner_text()
    assert down.locator("[data-reason=posts_30d]").is_visible()
    assert down.locator("[data-reason=avg_plays_30d]").is_visible()
    assert "6 (要求 >= 8)" in down.locator("[data-reason=posts_30d]").inner_text()
    assert "(要求 > 1万)" in down.locator("[data-reason=avg_plays_30d]").inner_text()
    assert "如何恢复" in down.locator(".hint").inner_text()


def test_the_header_button_switches_to_english(live, page):
    login(page, live, "c001")
    assert page.locator("h1").inner_text() == "我的等级"
    button = page.locator("[data-lang-switch]")
    assert button.inner_text() == "English"
    with page.expect_navigation():
        button.click()
    assert page.locator("h1").inner_text() == "My levels"
    assert page.locator("html").get_attribute("lang") == "en"
    nav = page.locator("nav a")
    assert [nav.nth(i).inner_text().split("\n")[0].strip() for i in range(4)][:3] == ["Overview", "My benefits", "History"]
    assert nav.nth(3).inner_text().startswith("Notifications")
    assert page.locator("[data-lang-switch]").inner_text() == "中文"
    assert re.fullmatch(r"\d+ tasks left", page.locator("[data-tasks-left]").inner_text())
    page.goto(live + "/programs/creator")
    assert page.locator("[data-level-section=LV3] h2").inner_text() == "To keep LV3"
    assert page.locator("[data-level-section=LV4] h2").inner_text() == "To reach LV4"
    # the switch stays on the page it was pressed on, and switches back
    with page.expect_navigation():
        page.locator("[data-lang-switch]").click()
    assert page.url == live + "/programs/creator"
    assert page.locator("[data-level-section=LV3] h2").inner_text() == "保持LV3需达成"


# user, program, language: the demo members whose pages carry the most (warnings, scores, long
# lists of benefits, reasons), in both languages.
LAYOUTS = [("c001", "creator", "zh"), ("c001", "creator", "en"), ("c004", "creator", "en"),
           ("u003", "music", "zh"), ("s001", "scorecard", "en"), ("m005", "member", "en")]


@pytest.mark.parametrize(("user", "program", "lang"), LAYOUTS, ids=["-".join(x) for x in LAYOUTS])
def test_no_horizontal_scroll_at_375px(live, page, user, program, lang):
    page.set_viewport_size(PHONE)
    login(page, live, user)
    if lang == "en":
        with page.expect_navigation():
            page.locator("[data-lang-switch]").click()
        assert page.locator("html").get_attribute("lang") == "en"
    too_wide = {}
    for path in member_pages(program):
        response = page.goto(live + path)
        assert response.status == 200, path
        width = page.evaluate("document.documentElement.scrollWidth")
        if width > PHONE["width"]:
            too_wide[path] = width
    assert not too_wide, f"horizontal scroll at 375 px: {too_wide}"
