"""Install the course on Colab without touching Colab's own torch, torchvision and Jupyter.

The Colab cell of every lesson (``tools.links.colab_cell_source``) clones the repository to
``/content/course`` and runs ``python /content/course/tools/colab.py``; anywhere else the cell does
nothing. This script installs ``requirements.txt`` less the packages Colab already has (pinned to
Colab's installed versions by a constraints file), then the course itself, editable.

Only the standard library: it runs before anything of the course is installed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

KEEP = ("torch", "torchvision", "jupyterlab", "ipykernel")  # Colab's own, never reinstalled
ROOT = Path(__file__).resolve().parents[1]


def colab_requirements(requirements: Path) -> list[str]:
    """The lines of ``requirements`` without comments and without the packages in ``KEEP``."""
    kept = []
    for line in requirements.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        name = re.split(r"[<>=!~ ;\[]", line)[0].lower()
        if line and name not in KEEP:
            kept.append(line)
    return kept


def commands(root: Path, constraints: Path, requirements: Path) -> list[list[str]]:
    """The two pip commands: the filtered requirements under ``constraints``, then the course."""
    pip = [sys.executable, "-m", "pip", "install", "--quiet"]
    return [[*pip, "-r", str(requirements), "-c", str(constraints)],
            [*pip, "--no-deps", "-e", str(root)]]


def main(root: Path = ROOT) -> int:
    freeze = subprocess.run([sys.executable, "-m", "pip", "list", "--format=freeze"],
                            check=True, capture_output=True, text=True).stdout
    constraints = root.parent / "colab-keep.txt"
    constraints.write_text("\n".join(line for line in freeze.splitlines()
                                     if line.split("==")[0].lower() in KEEP) + "\n")
    requirements = root.parent / "colab-requirements.txt"
    requirements.write_text("\n".join(colab_requirements(root / "requirements.txt")) + "\n")
    for command in commands(root, constraints, requirements):
        subprocess.run(command, check=True)
    print("the course is installed; its lessons import helpers from", root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
