"""Before and after a change, in one run: the in-process rows of ``bench.py`` on two commits,
interleaved.

    python -m benchmarks.ab BEFORE AFTER --rows shield_hs256,shield_full --runs 3 --rounds 60

Each commit is checked out into a temporary worktree and benchmarked with its own
``benchmarks`` package and its own code (``PYTHONPATH`` set to the worktree), alternating
before, after, after, before ... so that both sides see the same machine. Printed: for each
row, the "x bare Flask" ratio of every run on each side (ratios to bare Flask measured in
the same process are what stays comparable on a busy machine), and the median µs per call
of the session rows (``refresh()``, ``issue_tokens()``).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_ROW = re.compile(r"^\| (?P<row>[^|]+?) \| (?P<us>[\d.]+) \| [^|]* \| [^|]* \| (?P<ratio>[\d.]+) \|")
_CALL = re.compile(r"^\| (?P<call>shield (?:issue_tokens|refresh)\(\)[^|]*?) \| (?P<us>[\d.]+) \|")


def _worktree(rev: str, into: Path) -> Path:
    path = into / rev[:12]
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(path), rev], check=True)
    return path


def _run(tree: Path, rows: str, rounds: int) -> tuple[dict[str, float], dict[str, float]]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench", "--inprocess", "--rows", rows, "--rounds", str(rounds)],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
        check=True,
    ).stdout
    ratios, calls = {}, {}
    section = ""
    for line in out.splitlines():
        if line.startswith("## "):
            section = line
        elif m := _CALL.match(line):
            calls[m["call"]] = float(m["us"])
        elif section.startswith("## In-process") and (m := _ROW.match(line)):
            ratios[m["row"]] = float(m["ratio"])
    return ratios, calls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--rows", default="shield_hs256,shield_hs256_fresh,shield_full,shield_sqlite,shield_redis")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=60)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="jws-ab-") as tmp:
        trees = {side: _worktree(rev, Path(tmp)) for side, rev in (("before", args.before), ("after", args.after))}
        try:
            results: dict[str, list[tuple[dict[str, float], dict[str, float]]]] = {"before": [], "after": []}
            for run in range(args.runs):
                order = ("before", "after") if run % 2 == 0 else ("after", "before")
                for side in order:
                    print(f"run {run + 1}/{args.runs}: {side}", file=sys.stderr, flush=True)
                    results[side].append(_run(trees[side], args.rows, args.rounds))
        finally:
            for tree in trees.values():
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    print(f"before {args.before}, after {args.after}; {args.runs} interleaved runs of {args.rounds} rounds\n")
    print("| row (x bare Flask) | before | after | median before -> after |\n|---|---|---|---|")
    for row in results["after"][0][0]:
        if row == "bare Flask":
            continue
        b = [r[0][row] for r in results["before"] if row in r[0]]
        a = [r[0][row] for r in results["after"] if row in r[0]]
        if b and a:
            print(
                f"| {row} | {' / '.join(f'{x:.2f}' for x in b)} | {' / '.join(f'{x:.2f}' for x in a)} |"
                f" {statistics.median(b):.2f} -> {statistics.median(a):.2f} |"
            )
    print("\n| call (µs, median of the run) | before | after | median before -> after |\n|---|---|---|---|")
    for call in results["after"][0][1]:
        b = [r[1][call] for r in results["before"] if call in r[1]]
        a = [r[1][call] for r in results["after"] if call in r[1]]
        if b and a:
            print(
                f"| {call} | {' / '.join(f'{x:.0f}' for x in b)} | {' / '.join(f'{x:.0f}' for x in a)} |"
                f" {statistics.median(b):.0f} -> {statistics.median(a):.0f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
