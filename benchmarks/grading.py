"""Grading throughput: seconds per submitted lesson with ``tools.grade``, one kernel at a time and
with ``--jobs 2``, against the plain run of the same lesson (nbclient, one kernel, one thread), so
that the grader's own overhead (merging, limits, comparing, signing, feedback pages) shows.

    python benchmarks/grading.py [--lesson 05_grad_cam] [--copies 4]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from _report import table, write_section
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tools import grade as grader  # noqa: E402
from tools.student import student_copy  # noqa: E402


def plain_run(path: Path) -> float:
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        NotebookClient(nb, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": scratch}}).execute(
            env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    return time.perf_counter() - start


def class_of(path: Path, copies: int, folder: Path) -> None:
    """Half teacher's copies (full marks), half student copies (stubs)."""
    for k in range(copies):
        (folder / f"s{k:02d}").mkdir(parents=True)
        nb = nbformat.read(path, as_version=4)
        nbformat.write(nb if k % 2 == 0 else student_copy(nb), folder / f"s{k:02d}" / path.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lesson", default="05_grad_cam")
    parser.add_argument("--copies", type=int, default=4)
    args = parser.parse_args()
    path = ROOT / "notebooks" / f"{args.lesson}.ipynb"
    plain = plain_run(path)
    rows = [{"run": "plain nbclient run of the lesson", "jobs": 1, "submissions": 1,
             "wall (s)": f"{plain:.1f}", "s per submission": f"{plain:.1f}",
             "vs plain run": "1.00"}]
    for jobs in (1, 2):
        folder = Path(tempfile.mkdtemp(prefix="grading-"))
        class_of(path, args.copies, folder)
        grader.grade(folder, jobs=1, log=lambda _: None, shard=(1, args.copies))  # reference
        for result in (folder / ".grades" / "results").glob("s*"):
            shutil.rmtree(result)
        start = time.perf_counter()
        book = grader.grade(folder, jobs=jobs, log=lambda _: None)
        wall = time.perf_counter() - start
        full = {r["student"] for r in book if r["points"] == r["max_points"]}
        assert len(full) == (args.copies + 1) // 2, book  # the teacher's copies, and only those
        per = wall / args.copies
        rows.append({"run": "tools.grade (reference cached)", "jobs": jobs,
                     "submissions": args.copies, "wall (s)": f"{wall:.1f}",
                     "s per submission": f"{per:.1f}", "vs plain run": f"{per / plain:.2f}"})
        shutil.rmtree(folder)
    write_section("grading.py", f"Grading throughput ({args.lesson})", table(rows) + (
        "\n\nHalf the copies are the teacher's (full marks, checked), half student copies. "
        "The reference (the teacher's solution run once per lesson) is cached before timing. "
        "`vs plain run` above 1 is the grader's own overhead per submission; with 2 jobs it "
        "falls below 1 when the two kernels share the 2 cores well."))


if __name__ == "__main__":
    main()
