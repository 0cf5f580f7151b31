from .conftest import login


def test_creator_sees_level_in_chinese_by_default(live, page):
    login(page, live, "c001")
    assert page.locator("h1").first.inner_text() == "我的等级"
    assert page.locator("[data-program=creator] [data-level]").inner_text() == "LV3"
