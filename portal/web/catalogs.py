"""Message catalogs: the .po files are the source; they are compiled to .mo at start-up
into the instance folder (atomically, so several workers may start at once)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from babel import Locale
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

SOURCE = Path(__file__).resolve().parent.parent / "translations"


def compile_catalogs(target: Path) -> Path:
    for po in SOURCE.glob("*/LC_MESSAGES/messages.po"):
        # Babel names zh_CN "zh_Hans_CN" when it looks a catalog up: store it under that name.
        name = str(Locale.parse(po.parts[-3]))
        mo = target / name / "LC_MESSAGES" / "messages.mo"
        if mo.exists() and mo.stat().st_mtime >= po.stat().st_mtime:
            continue
        mo.parent.mkdir(parents=True, exist_ok=True)
        with po.open("rb") as f:
            catalog = read_po(f, locale=po.parts[-3])
        fd, tmp = tempfile.mkstemp(dir=mo.parent, suffix=".mo.tmp")
        with os.fdopen(fd, "wb") as out:
            write_mo(out, catalog, use_fuzzy=False)
        os.replace(tmp, mo)
    return target
