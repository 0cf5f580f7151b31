"""Numbers on the pages: ``num`` writes them with Python's formatting instead of Babel's
(a fraction of the cost per number); both catalogues must read exactly as Babel would."""

from __future__ import annotations

import random

import pytest
from flask_babel import format_decimal

from portal.web.i18n import locale, num

VALUES = [0, 1, -1, 7, 12, 999, 1000, 1234, 9999, 10_000, -10_000, 12_345, 99_999_999, 123_456_789, 1e15,
          0.5, 0.1, 0.01, 0.005, 0.015, 1.005, 2.675, 0.125, 1234.5, -1234.56, 9999.99, 9999.995, 10_000.5,
          33.333333, 66.666666, 1e-9, -0.004, 1.999, 2e7 + 0.25]


def _babel(value: float) -> str:
    """What num() returned when it formatted with Babel (before the wan/yi units)."""
    v = float(value)
    return format_decimal(int(v)) if v.is_integer() else format_decimal(round(v, 2))


@pytest.mark.parametrize("code", ["en", "zh_CN"])
def test_num_writes_numbers_as_babel_does_in_both_languages(app, code):
    rng = random.Random(7)
    values = VALUES + [rng.uniform(-20_000, 20_000) for _ in range(2000)] + [rng.randint(-10**6, 10**6) for _ in range(500)]
    with app.test_request_context(), app.app_context():
        from flask import session

        session["locale"] = code
        assert locale() == code
        for v in values:
            expected = _babel(v)
            if code == "zh_CN" and round(abs(float(v)) / 1e4, 2) >= 1:
                continue  # written with 万 / 亿 units, the same code as before
            assert num(v) == expected, (code, v)
        assert num(None) == "-"
        assert num(float("nan")) == format_decimal(float("nan"))


def test_num_uses_wan_and_yi_in_chinese(app):
    with app.test_request_context():
        from flask import session

        session["locale"] = "zh_CN"
        assert [num(v) for v in (9949, 10_000, 15_000, 123_456_789, 99_999_999)] == ["9,949", "1万", "1.5万", "1.23亿", "1亿"]
