"""Write every lesson's launch links and its Colab install cell from one setting.

    python -m tools.links                      # or: make links
    python -m tools.links --hub https://jupyterhub.your-university.example   # direct hub links
    python -m tools.links --hub none           # back to the link generator (below)
    python -m tools.links --check              # exit 1 if anything would change

From ``[project.urls] Repository`` in pyproject.toml (see ``tools/course.py``) this writes:

* into the first markdown cell of each ``notebooks/NN_*.ipynb``, between the markers
  ``<!-- launch-links:start -->`` and ``<!-- launch-links:end -->`` (inserted under the title on the
  first run): a Binder link to that lesson, a Colab link, and a JupyterHub link built with
  nbgitpuller;
* into README.md, between the same markers, a table with those three links for every lesson;
* as the first code cell of each lesson, the Colab install cell: it runs only when
  ``'google.colab' in sys.modules``, clones the repository, installs the course's requirements
  except torch, torchvision, jupyterlab and ipykernel (Colab's own stay, pinned by a constraints
  file), installs ``helpers`` with ``--no-deps``, and does nothing anywhere else.

The JupyterHub link: with ``--hub URL`` it is the direct nbgitpuller link
``URL/hub/user-redirect/git-pull?repo=...&branch=...&urlpath=...``; without it, nbgitpuller's
link generator pre-filled with this repository, branch and lesson, where a teacher types the hub.
The hub given once is remembered (read back from the README's table) until ``--hub none``.

Nothing else in a notebook is touched, and running it twice changes nothing.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from urllib.parse import urlencode

import nbformat

from tools.course import (
    BRANCH,
    COLAB_MARK,
    ROOT,
    Repository,
    lesson_title,
    lessons,
    repository,
)

START, END = "<!-- launch-links:start -->", "<!-- launch-links:end -->"
BLOCK = re.compile(re.escape(START) + r".*?" + re.escape(END), re.DOTALL)
NBGITPULLER_GENERATOR = "https://nbgitpuller.readthedocs.io/en/latest/link.html"
COLAB_CELL_ID = "colab-install"


def binder_url(repo: Repository, notebook: str, branch: str = BRANCH) -> str:
    """mybinder.org link that opens ``notebooks/<notebook>`` in JupyterLab."""
    return (f"https://mybinder.org/v2/gh/{repo.owner}/{repo.name}/{branch}"
            f"?urlpath=lab/tree/notebooks/{notebook}")


def colab_url(repo: Repository, notebook: str, branch: str = BRANCH) -> str:
    """Colab link that opens ``notebooks/<notebook>`` straight from GitHub."""
    return (f"https://colab.research.google.com/github/{repo.owner}/{repo.name}"
            f"/blob/{branch}/notebooks/{notebook}")


def hub_url(repo: Repository, notebook: str, hub: str | None = None, branch: str = BRANCH) -> str:
    """nbgitpuller link: clones the repository into the user's home on ``hub`` and opens the lesson.

    nbgitpuller clones into a folder named after the repository, hence ``<name>/notebooks/...``.
    Without ``hub``: nbgitpuller's link generator, pre-filled, where the teacher enters the hub.
    """
    query = urlencode({"repo": repo.url, "branch": branch,
                       "urlpath": f"lab/tree/{repo.name}/notebooks/{notebook}"})
    if hub:
        return f"{hub.rstrip('/')}/hub/user-redirect/git-pull?{query}"
    return f"{NBGITPULLER_GENERATOR}?{query}"


def notebook_block(repo: Repository, notebook: str, hub: str | None = None) -> str:
    """The launch-link block for a lesson's first cell (plain links: no badge images to fetch)."""
    hub_label = "JupyterHub (nbgitpuller)" if hub else "JupyterHub (make an nbgitpuller link)"
    return (f"{START}\n**Open this lesson:** [Binder]({binder_url(repo, notebook)}) · "
            f"[Colab]({colab_url(repo, notebook)}) · "
            f"[{hub_label}]({hub_url(repo, notebook, hub)})\n{END}")


def readme_block(repo: Repository, root: Path, hub: str | None = None) -> str:
    """The README's launch table: one row per lesson found in ``root/notebooks``."""
    rows = [START, "| # | lesson | Binder | Colab | JupyterHub |", "|---|---|---|---|---|"]
    for path in lessons(root):
        title = lesson_title(nbformat.read(path, as_version=4)).replace("|", "\\|")
        rows.append(f"| {path.name[:2]} | [{title}](notebooks/{path.name}) "
                    f"| [launch]({binder_url(repo, path.name)}) "
                    f"| [open]({colab_url(repo, path.name)}) "
                    f"| [pull]({hub_url(repo, path.name, hub)}) |")
    return "\n".join([*rows, END])


def colab_cell_source(repo: Repository) -> str:
    """The Colab install cell: on Colab it clones the course and runs ``tools/colab.py`` (Colab's
    torch stays); anywhere else it does nothing."""
    return "\n".join([
        "# Colab only: install the course here (keeps Colab's torch); elsewhere this does nothing.",
        "import sys",
        "",
        'if "google.colab" in sys.modules:',
        "    !test -d /content/course || \\",
        f"        git clone -q --depth 1 {repo.url} /content/course",
        "    !python /content/course/tools/colab.py",
        '    sys.path.insert(0, "/content/course")  # importable without restarting the runtime',
    ])


def _with_block(text: str, block: str) -> str:
    """Replace the marked block in ``text``; without markers, insert it under the first heading."""
    if BLOCK.search(text):
        return BLOCK.sub(lambda _: block, text, count=1)
    lines = text.split("\n")
    at = next((i + 1 for i, line in enumerate(lines) if line.startswith("# ")), 0)
    after = [] if at < len(lines) and not lines[at].strip() else [""]
    before = [""] if at > 0 else []
    return "\n".join([*lines[:at], *before, block, *after, *lines[at:]])


def _is_colab_cell(cell) -> bool:
    return cell.cell_type == "code" and cell.source.lstrip().startswith(COLAB_MARK)


def update_notebook(nb, repo: Repository, name: str, hub: str | None = None) -> None:
    """Write the launch block into the first markdown cell and make the Colab cell the first code
    cell (one only, with the current source). Touches nothing else."""
    first_md = next(cell for cell in nb.cells if cell.cell_type == "markdown")
    first_md.source = _with_block(first_md.source, notebook_block(repo, name, hub))

    source = colab_cell_source(repo)
    existing = [i for i, cell in enumerate(nb.cells) if _is_colab_cell(cell)]
    first_code = next((i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"), None)
    if existing and existing[0] == first_code:
        nb.cells[first_code].source = source
        for i in reversed(existing[1:]):
            del nb.cells[i]
        return
    for i in reversed(existing):
        del nb.cells[i]
    first_code = next((i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"),
                      len(nb.cells))
    cell = nbformat.v4.new_code_cell(source)
    cell.id = COLAB_CELL_ID
    nb.cells.insert(first_code, cell)


def remembered_hub(readme: str) -> str | None:
    """The hub address of direct nbgitpuller links in the README's launch table, if any."""
    block = BLOCK.search(readme)
    found = re.search(r"\((https?://[^)\s]+?)/hub/user-redirect/git-pull\?", block.group(0)
                      ) if block else None
    return found.group(1) if found else None


def write_links(root: Path = ROOT, hub: str | None = None, check: bool = False) -> list[Path]:
    """Update README.md and every lesson under ``root``; return the files that changed (with
    ``check``, the files that would change, and write nothing). ``hub``: None keeps the hub the
    README's table already uses; "none" (or "") switches to nbgitpuller's link generator."""
    repo = repository(root)
    readme = root / "README.md"
    if hub is None:
        hub = remembered_hub(readme.read_text(encoding="utf-8"))
    hub = None if hub in ("", "none") else hub
    changed = []
    for path in lessons(root):
        original = path.read_text(encoding="utf-8")
        nb = nbformat.reads(original, as_version=4)
        update_notebook(nb, repo, path.name, hub)
        text = nbformat.writes(nb)
        text += "" if text.endswith("\n") else "\n"
        if text != original:
            changed.append(path)
            if not check:
                path.write_text(text, encoding="utf-8")
    original = readme.read_text(encoding="utf-8")
    if not BLOCK.search(original):
        raise ValueError(f"{readme} has no {START} ... {END} markers for the launch table")
    text = _with_block(original, readme_block(repo, root, hub))
    if text != original:
        changed.append(readme)
        if not check:
            readme.write_text(text, encoding="utf-8")
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hub", help="JupyterHub address for direct nbgitpuller links, e.g. "
                        "https://jupyterhub.your-university.example ('none': link generator; "
                        "default: the hub the README already uses)")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if stale")
    parser.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        changed = write_links(args.root, args.hub, args.check)
    except ValueError as error:
        print(f"make links: {error}", file=sys.stderr)
        return 2
    for path in changed:
        print(f"{'stale' if args.check else 'wrote'}: {path.relative_to(args.root)}")
    if not changed:
        print("launch links and Colab cells are up to date")
    return 1 if (args.check and changed) else 0


if __name__ == "__main__":
    sys.exit(main())
