"""Every user-visible string in the code and templates has a zh_CN translation with the same
placeholders, so the default language never shows English by accident."""

from __future__ import annotations

import re
from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parents[2]
PO = ROOT / "portal" / "translations" / "zh_CN" / "LC_MESSAGES" / "messages.po"
KEYWORDS = {"_": None, "gettext": None, "ngettext": (1, 2), "lazy_gettext": None, "_l": None}
PLACEHOLDER = re.compile(r"%\((\w+)\)[sd]")


def extracted() -> set[str]:
    found: set[str] = set()
    for sub, method in (("portal", "python"), ("templates", "jinja2")):
        options = {"**.html": {"extensions": "jinja2.ext.do"}} if method == "jinja2" else {}
        for _file, _line, message, _comments, _ctx in extract_from_dir(
            ROOT / sub, method_map=[("**.py" if method == "python" else "**.html", method)],
            options_map=options, keywords=KEYWORDS,
        ):
            found.add(message[0] if isinstance(message, tuple) else message)
    return found


def test_every_string_is_translated_to_chinese():
    catalog = read_po(PO.open("rb"))
    translated = {m.id[0] if isinstance(m.id, tuple) else m.id: m.string for m in catalog if m.id}
    missing = sorted(s for s in extracted() if not translated.get(s))
    assert missing == []


def test_translations_keep_their_placeholders():
    catalog = read_po(PO.open("rb"))
    wrong = []
    for m in catalog:
        if not m.id:
            continue
        source = m.id[0] if isinstance(m.id, tuple) else m.id
        target = m.string[0] if isinstance(m.string, tuple | list) else m.string
        if set(PLACEHOLDER.findall(source)) != set(PLACEHOLDER.findall(target or "")):
            wrong.append(source)
    assert wrong == []


def test_cached_template_strings_follow_the_locale_of_each_request(tmp_path):
    """Templates' fixed strings and window labels are kept per catalogue (web/i18n.py): a page
    in one language never gets the other's text, whichever was rendered first, and a literal
    percent sign (%%) comes out once."""
    from flask import render_template_string

    from portal import create_app
    from portal.web.i18n import window_label

    app = create_app({"TESTING": True, "SECRET_KEY": "t" * 32, "DATABASE_URL": f"sqlite:///{tmp_path}/t.db"})
    page = "{{ _('Overview') }}|{{ _('Score') }}|{{ _('100%% sure') }}|{{ window_label('30d') }}|{{ window_label('3m') }}"
    for _round in range(2):
        for code, expected in (("zh_CN", "概览|评分|100% sure|近30天|近3个月"),
                               ("en", "Overview|Score|100% sure|last 30 days|last 3 months")):
            with app.test_request_context(headers={"Cookie": ""}):
                from flask import session

                session["locale"] = code
                assert render_template_string(page) == expected, code
                assert window_label("30d") == expected.split("|")[3]
