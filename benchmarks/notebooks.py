"""Run every lesson in a fresh kernel; report wall time and the kernel's peak resident memory.

Budget per notebook (a laptop CPU, Binder's 2 GB): <= 60 s and <= 1.5 GB.
Usage: python benchmarks/notebooks.py [--threads 1] [notebooks/01_feature_maps.ipynb ...]

``--threads 1`` is the Binder-like run: the kernel pinned to one core with one torch thread. Each
thread count has its own section of RESULTS.md; ``tools/times.py`` (``make times``) copies the
numbers from there into the README, TEACHING.md and the lesson headers.
"""

from __future__ import annotations

import argparse
import os
import re
import threading
import time
from pathlib import Path

import nbformat
import psutil
import torch
from _report import RESULTS, table, write_section
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
BUDGET_SECONDS, BUDGET_GB = 60, 1.5


def peak_rss_while(client: NotebookClient, run) -> tuple[float, float]:
    """Run ``run()``; sample the kernel process tree's RSS every 50 ms. -> (seconds, peak GB)."""
    peak = 0
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            try:
                kernel = psutil.Process(client.km.provisioner.process.pid)
                procs = [kernel, *kernel.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in procs))
            except (AttributeError, psutil.Error):
                pass
            time.sleep(0.05)

    thread = threading.Thread(target=sample, daemon=True)
    start = time.perf_counter()
    thread.start()
    try:
        run()
    finally:
        done.set()
        thread.join()
    return time.perf_counter() - start, peak / 1e9


def measure(path: Path) -> dict:
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    with client.setup_kernel():
        seconds, peak = peak_rss_while(client, lambda: [
            client.execute_cell(cell, i) for i, cell in enumerate(notebook.cells)])
    ok = seconds <= BUDGET_SECONDS and peak <= BUDGET_GB
    return {"notebook": path.name, "wall s": f"{seconds:.1f}", "peak RSS GB": f"{peak:.2f}",
            "within budget": "yes" if ok else "**no**"}


def previous_rows(script: str) -> dict[str, dict]:
    """The rows of ``script``'s section in RESULTS.md, by notebook name (none if absent)."""
    text = RESULTS.read_text() if RESULTS.exists() else ""
    section = re.search(rf"<!-- {re.escape(script)} start -->(.*?)<!-- {re.escape(script)} end -->",
                        text, re.S)
    found = re.findall(r"^\| (\d\d_\S+\.ipynb) \| ([\d.]+) \| ([\d.]+) \| ([^|]+) \|$",
                       section.group(1) if section else "", re.M)
    return {name: {"notebook": name, "wall s": wall, "peak RSS GB": peak, "within budget": ok}
            for name, wall, peak, ok in found}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--threads", type=int, default=2, choices=[1, 2])
    args = parser.parse_args()
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    torch.set_num_threads(args.threads)  # what the report's machine line says
    if args.threads == 1:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # the kernel inherits it
    rows = [measure(path) for path in paths]
    script = "notebooks.py" if args.threads == 2 else "notebooks.py --threads 1"
    if args.notebooks:  # some lessons re-measured: keep the other lessons' rows of the section
        rows = sorted({**previous_rows(script), **{r["notebook"]: r for r in rows}}.values(),
                      key=lambda r: r["notebook"])
    what = "" if args.threads == 2 else ", one core (Binder-like)"
    write_section(script, f"Notebooks: time and memory (fresh kernel, all cells{what})",
                  f"Budget: <= {BUDGET_SECONDS} s and <= {BUDGET_GB} GB each.\n\n" + table(rows))


if __name__ == "__main__":
    main()
