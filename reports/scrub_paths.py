"""Replace this machine's folders in committed records by names a reader elsewhere can use.

Usage: python reports/scrub_paths.py RUNS_DIR OLD=NEW ...  (rewrites every run.json under RUNS_DIR)
"""
from __future__ import annotations

import sys
from pathlib import Path


def scrub(runs: Path, pairs: list[tuple[str, str]]) -> None:
    pairs = sorted(pairs, key=lambda p: -len(p[0]))  # the longest folder first (one may contain another)
    for path in runs.rglob("run.json"):
        text = path.read_text()
        for old, new in pairs:
            text = text.replace(str(Path(old).resolve()), new).replace(old.rstrip("/"), new)
        path.write_text(text)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: scrub_paths.py RUNS_DIR OLD=NEW ...")
    scrub(Path(sys.argv[1]), [tuple(a.split("=", 1)) for a in sys.argv[2:]])
