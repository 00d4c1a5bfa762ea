"""Copy the measured run times and memory peaks of the lessons from ``benchmarks/RESULTS.md`` into
the places that quote them: each lesson's **Run time**, the table of TEACHING.md and the summary
lines of the README and TEACHING.md. One source of truth: change the numbers by re-running
``benchmarks/notebooks.py`` (2 threads) and ``benchmarks/notebooks.py --threads 1``, then this.

    python -m tools.times            # or: make times
    python -m tools.times --check    # change nothing; exit 1 if a quoted number is stale
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat

from tools.course import ROOT, lessons

TWO, ONE = "notebooks.py", "notebooks.py --threads 1"
RUN_TIME = re.compile(r"\*\*Run time:\*\*.*?(?:on a laptop CPU|`benchmarks/RESULTS\.md`\))",
                      re.S)
SUMMARY = re.compile(r"<!-- times:summary -->.*?<!-- /times:summary -->", re.S)
PEAKS = re.compile(r"<!-- times:peaks -->.*?<!-- /times:peaks -->", re.S)
TEACHING_ROW = re.compile(r"^\| (\d\d) ([^|]+?) \| [^|]+ \| ([^|]+) \| [^|]+ \| ([^|]+) \|$",
                          re.M)
README_ROW = re.compile(r"^(\| (\d\d) \| \[[^|]+\]\([^)]+\) \| [^|]+ \| )[^|]+( \|)$", re.M)


@dataclass
class Measured:
    """One benchmark section: ``{lesson number: (seconds, peak GB)}`` and the machine line."""

    rows: dict[str, tuple[float, float]]
    machine: str


def read_results(root: Path = ROOT) -> dict[str, Measured]:
    """The notebook sections of RESULTS.md that exist, by script name (``TWO``, ``ONE``)."""
    text = (root / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8")
    found = {}
    for script in (TWO, ONE):
        match = re.search(rf"<!-- {re.escape(script)} start -->(.*?)<!-- {re.escape(script)} "
                          r"end -->", text, re.S)
        if not match:
            continue
        body = match.group(1)
        machine = re.search(r"`benchmarks/[^`]+` on (.+?)\.\n", body).group(1)
        rows = {m.group(1): (float(m.group(2)), float(m.group(3))) for m in re.finditer(
            r"^\| (\d\d)_\S+\.ipynb \| ([\d.]+) \| ([\d.]+) \|", body, re.M)}
        found[script] = Measured(rows, machine)
    if TWO not in found:
        raise ValueError("benchmarks/RESULTS.md has no notebooks.py section: run "
                         "benchmarks/notebooks.py first")
    return found


def _s(seconds: float) -> str:
    return f"{max(1, round(seconds))}"


def run_time(number: str, results: dict[str, Measured]) -> str:
    """A lesson's **Run time** sentence."""
    two = results[TWO].rows[number][0]
    one = results[ONE].rows.get(number) if ONE in results else None
    other = f", {_s(one[0])} s on one core" if one else ""
    return (f"**Run time:** about {_s(two)} s on 2 CPU cores{other} (measured: "
            f"`benchmarks/RESULTS.md`)")


def summary(results: dict[str, Measured]) -> str:
    two = results[TWO]
    seconds = sorted(s for s, _ in two.rows.values())
    peaks = [gb for _, gb in two.rows.values()]
    line = (f"<!-- times:summary -->Measured (`benchmarks/RESULTS.md`, {two.machine}): the "
            f"lessons take {_s(seconds[0])} to {_s(seconds[-1])} s on 2 cores")
    if ONE in results:
        ones = sorted(s for s, _ in results[ONE].rows.values())
        line += f", {_s(ones[0])} to {_s(ones[-1])} s on one"
    return (line + f"; peak memory {min(peaks):.2f} to {max(peaks):.2f} GB, with the CUDA build "
            "of torch, whose import alone takes 0.75 GB.<!-- /times:summary -->")


def peaks(results: dict[str, Measured]) -> str:
    values = [gb for _, gb in results[TWO].rows.values()]
    return (f"<!-- times:peaks -->the lessons peaked at {min(values):.2f}-{max(values):.2f} GB "
            "with the default model<!-- /times:peaks -->")


def _teaching_row(match: re.Match, results: dict[str, Measured]) -> str:
    number, name, kept_one, class_time = match.groups()
    if number not in results[TWO].rows:
        return match.group(0)
    two, gb = results[TWO].rows[number]
    one = results[ONE].rows.get(number) if ONE in results else None
    one_core = _s(one[0]) if one else kept_one  # no one-core section yet: the column stays
    return f"| {number} {name} | {_s(two)} | {one_core} | {gb:.2f} | {class_time} |"


def write_times(root: Path = ROOT, *, check: bool = False) -> list[Path]:
    """Write the numbers everywhere they are quoted; return the files that changed (or, with
    ``check``, would change)."""
    results = read_results(root)
    changed = []

    def update(path: Path, text: str, new: str) -> None:
        if new != text:
            changed.append(path)
            if not check:
                path.write_text(new, encoding="utf-8")

    for path in lessons(root):
        original = path.read_text(encoding="utf-8")
        nb = nbformat.reads(original, as_version=4)
        number = path.name[:2]
        if number in results[TWO].rows:
            first = nb.cells[0]
            first.source = RUN_TIME.sub(lambda _, n=number: run_time(n, results), first.source,
                                        count=1)
            text = nbformat.writes(nb)
            update(path, original, text + ("" if text.endswith("\n") else "\n"))
    for name in ("README.md", "TEACHING.md"):
        path = root / name
        text = path.read_text(encoding="utf-8")
        new = SUMMARY.sub(lambda _: summary(results), text)
        new = PEAKS.sub(lambda _: peaks(results), new)
        if name == "TEACHING.md":
            new = TEACHING_ROW.sub(lambda m: _teaching_row(m, results), new)
        else:
            new = README_ROW.sub(lambda m: m.group(1) + (
                f"{_s(results[TWO].rows[m.group(2)][0])} s" if m.group(2) in results[TWO].rows
                else "-") + m.group(3), new)
        update(path, text, new)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if stale")
    args = parser.parse_args(argv)
    try:
        changed = write_times(check=args.check)
    except ValueError as error:
        print(f"make times: {error}", file=sys.stderr)
        return 2
    for path in changed:
        print(f"{'stale' if args.check else 'wrote'}: {path.relative_to(ROOT)}")
    return 1 if (args.check and changed) else 0


if __name__ == "__main__":
    sys.exit(main())
