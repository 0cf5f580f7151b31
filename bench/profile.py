"""Where does the time go: run a command under py-spy and print the functions that take the
most wall time, inclusive (the function and what it calls) and self (the function's own code,
including time blocked in C calls it makes - a database driver's fetch shows up as the driver
function), as a share of all samples.

    python bench/profile.py [--top 25] [--raw FILE] -- portal evaluate --program creator --as-of 2026-10-31
    python bench/profile.py --load FILE          # summarise an earlier --raw file again

py-spy samples the process 100 times a second including idle time (``--idle``): a query the
database is still computing shows up as the driver call waiting for it.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*)\)$")


def parse(raw: str) -> tuple[collections.Counter, collections.Counter, int]:
    inclusive: collections.Counter = collections.Counter()
    own: collections.Counter = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [f for f in stack.split(";") if not f.startswith("process ") and not f.startswith("thread ")]
        names = []
        for f in frames:
            m = FRAME.match(f)
            names.append(f"{m['func']} ({m['file']})" if m else f)
        for name in set(names):
            inclusive[name] += n
        if names:
            own[names[-1]] += n
    return inclusive, own, total


def report(raw: str, top: int) -> str:
    inclusive, own, total = parse(raw)
    if not total:
        return "no samples"
    out = [f"{total} samples", "", "inclusive (function and its callees):"]
    out += [f"  {100 * n / total:5.1f}%  {name}" for name, n in inclusive.most_common(top)]
    out += ["", "self (the function's own line, incl. C calls it makes):"]
    out += [f"  {100 * n / total:5.1f}%  {name}" for name, n in own.most_common(top)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--raw", help="keep py-spy's collapsed stacks in this file")
    ap.add_argument("--load", help="summarise an existing collapsed-stacks file instead of running")
    ap.add_argument("--rate", type=int, default=100)
    ap.add_argument("command", nargs=argparse.REMAINDER)
    a = ap.parse_args(argv)
    if a.load:
        print(report(Path(a.load).read_text(), a.top))
        return 0
    command = a.command[1:] if a.command[:1] == ["--"] else a.command
    if not command:
        ap.error("give a command after --")
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    venv = Path(sys.executable).parent / command[0]
    command[0] = shutil.which(command[0]) or (str(venv) if venv.exists() else command[0])
    raw_path = a.raw or tempfile.mktemp(suffix=".txt")
    subprocess.run([spy, "record", "--format", "raw", "--function", "--idle", "--rate", str(a.rate), "-o", raw_path,
                    "--", *command], check=True, env=os.environ)
    print(report(Path(raw_path).read_text(), a.top))
    if not a.raw:
        os.unlink(raw_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
