"""What every course tool shares: the repository root, the lessons, and the one public setting.

The repository's public address lives in exactly one place, the ``Repository`` entry of
``[project.urls]`` in pyproject.toml; every launch link, the Colab cell and the site derive from it.
Lessons are discovered, never listed: ``notebooks/[0-9][0-9]_*.ipynb``.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.9/3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
LESSON_GLOB = "[0-9][0-9]_*.ipynb"
BRANCH = "main"


@dataclass(frozen=True)
class Repository:
    """A public GitHub repository: ``url`` = https://github.com/<owner>/<name>."""

    owner: str
    name: str

    @property
    def url(self) -> str:
        return f"https://github.com/{self.owner}/{self.name}"


# The first line of each lesson's Colab install cell (tools.links writes it; the site drops it).
COLAB_MARK = "# Colab only:"


def repository(root: Path = ROOT) -> Repository:
    """``[project.urls] Repository`` from ``root/pyproject.toml``; it must be a GitHub address."""
    settings = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    url = settings.get("project", {}).get("urls", {}).get("Repository")
    if not url:
        raise ValueError("pyproject.toml has no [project.urls] Repository = \"https://github.com/...\"")
    match = re.fullmatch(r"https://github\.com/([\w.-]+)/([\w.-]+?)(?:\.git)?/?", url.strip())
    if not match:
        raise ValueError(f"[project.urls] Repository must be https://github.com/<owner>/<name>, "
                         f"not {url!r} (Binder and Colab links need a GitHub repository)")
    return Repository(*match.groups())


def lessons(root: Path = ROOT) -> list[Path]:
    """The lesson notebooks, sorted by number: ``root/notebooks/NN_*.ipynb``."""
    return sorted((root / "notebooks").glob(LESSON_GLOB))


def lesson_title(notebook) -> str:
    """The first markdown heading without its ``NN ·`` prefix (for tables and page titles)."""
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return re.sub(r"^\d\d\s*[·:.\-–]\s*", "", line[2:].strip())
    return ""
