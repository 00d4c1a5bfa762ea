"""Run every lesson in a fresh kernel; report wall time and the kernel's peak resident memory.

Budget per notebook (a laptop CPU, Binder's 2 GB): <= 60 s and <= 1.5 GB.
Usage: python benchmarks/notebooks.py [notebooks/01_feature_maps.ipynb ...]
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import nbformat
import psutil
from _report import table, write_section
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


def main() -> None:
    paths = [Path(p) for p in sys.argv[1:]] or sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
    rows = [measure(path) for path in paths]
    write_section("notebooks.py", "Notebooks: time and memory (fresh kernel, all cells)",
                  f"Budget: <= {BUDGET_SECONDS} s and <= {BUDGET_GB} GB each.\n\n" + table(rows))


if __name__ == "__main__":
    main()
