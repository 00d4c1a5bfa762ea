"""Write the students' copies of the lessons: solutions replaced by stubs, hidden tests removed,
outputs cleared.

    python -m tools.student                 # or: make student   -> student/NN_*.ipynb
    python -m tools.student --out DIR notebooks/00_start_here.ipynb

The notebooks in notebooks/ are the teacher's versions (outputs, solutions): they are the answer
key. Solutions are marked the nbgrader way: in a code cell the lines from ``### BEGIN SOLUTION``
to ``### END SOLUTION`` become ``# YOUR CODE HERE`` / ``raise NotImplementedError()``; in a
markdown cell they become ``YOUR ANSWER HERE``. This is nbgrader's ``ClearSolutions``
preprocessor (with ``enforce_metadata=False``: no course server, no gradebook) run through
nbconvert, then its ``ClearHiddenTests`` (the regions from ``### BEGIN HIDDEN TESTS`` to
``### END HIDDEN TESTS`` are removed), then nbconvert's ``ClearOutputPreprocessor``.

nbgrader itself is used when it is importable. It is a test dependency (requirements-dev.txt:
the tests compare both) but not a runtime one: nbgrader 0.9 needs Python >= 3.11 (the course
supports 3.9) and adds a JupyterLab extension, a server extension, `notebook` 7 and SQLAlchemy to a
student's environment. Without it, ``ClearSolutionsLite`` and ``ClearHiddenTestsLite`` below do
the same (same stubs, same indentation rule, same errors for an unclosed or nested region).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat
from nbconvert.preprocessors import ClearMetadataPreprocessor, ClearOutputPreprocessor, Preprocessor
from traitlets import Unicode

from tools.course import ROOT, lessons

BEGIN, END = "BEGIN SOLUTION", "END SOLUTION"
HIDDEN_BEGIN, HIDDEN_END = "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"
CODE_STUB = "# YOUR CODE HERE\nraise NotImplementedError()"
TEXT_STUB = "YOUR ANSWER HERE"


def replace_regions(source: str, begin: str, end: str, stub: list[str], index: int) -> str:
    """``source`` with each region from a line containing ``begin`` to a line containing ``end``
    (both included) replaced by the lines ``stub``, indented like the ``begin`` line; an
    unclosed or nested region is a ``RuntimeError`` naming cell ``index``."""
    kept, inside = [], False
    for line in source.split("\n"):
        if begin in line:
            if inside:
                raise RuntimeError(f"nested {begin} in cell {index}:\n{source}")
            inside = True
            indent = re.match(r"\s*", line).group(0)
            kept.extend(indent + s for s in stub)
        elif end in line:
            inside = False
        elif not inside:
            kept.append(line)
    if inside:
        raise RuntimeError(f"no {end} after {begin} in cell {index}:\n{source}")
    return "\n".join(kept)


class ClearSolutionsLite(Preprocessor):
    """nbgrader's ``ClearSolutions`` for Python notebooks, without nbgrader's dependencies.

    Each region from a line containing ``BEGIN SOLUTION`` to a line containing ``END SOLUTION``
    (both included) becomes the stub, indented like the ``BEGIN`` line.
    """

    code_stub = Unicode(CODE_STUB).tag(config=True)
    text_stub = Unicode(TEXT_STUB).tag(config=True)

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type not in ("code", "markdown"):
            return cell, resources
        stub = (self.code_stub if cell.cell_type == "code" else self.text_stub).split("\n")
        cell.source = replace_regions(cell.source, BEGIN, END, stub, index)
        return cell, resources


class ClearHiddenTestsLite(Preprocessor):
    """nbgrader's ``ClearHiddenTests``: each region from ``BEGIN HIDDEN TESTS`` to
    ``END HIDDEN TESTS`` (both included) is removed from the cell."""

    def preprocess_cell(self, cell, resources, index):
        cell.source = replace_regions(cell.source, HIDDEN_BEGIN, HIDDEN_END, [], index)
        return cell, resources


def clear_hidden_tests() -> Preprocessor:
    """nbgrader's ``ClearHiddenTests`` if installed, else the Lite twin."""
    try:
        from nbgrader.preprocessors import ClearHiddenTests
    except ImportError:
        return ClearHiddenTestsLite()
    return ClearHiddenTests(enforce_metadata=False)


def clear_solutions() -> Preprocessor:
    """nbgrader's ``ClearSolutions`` (no metadata required) if installed, else the Lite twin."""
    try:
        from nbgrader.preprocessors import ClearSolutions
    except ImportError:
        return ClearSolutionsLite()
    return ClearSolutions(enforce_metadata=False)


def has_solution(cell) -> bool:
    """Whether the cell holds a marked solution region (what a student copy turns into a stub)."""
    return BEGIN in cell.source


class Unhide(Preprocessor):
    """Show every cell's source: a collapsed solution cell becomes a visible exercise stub."""

    def preprocess_cell(self, cell, resources, index):
        jupyter = cell.metadata.get("jupyter", {})
        for key in ("source_hidden", "outputs_hidden"):
            jupyter.pop(key, None)
        if "jupyter" in cell.metadata and not jupyter:
            del cell.metadata["jupyter"]
        return cell, resources


def student_copy(nb):
    """Return the student version of a teacher's notebook (the argument is changed in place)."""
    resources: dict = {}
    steps = [clear_solutions(), clear_hidden_tests(), ClearOutputPreprocessor(), Unhide(),
             ClearMetadataPreprocessor(preserve_cell_metadata_mask={"tags", "nbgrader"},
                                       preserve_nb_metadata_mask={"kernelspec", "language_info"})]
    for step in steps:
        nb, resources = step.preprocess(nb, resources)
    return nb


def write_student_copies(paths: list[Path], out: Path) -> list[Path]:
    """Write ``out/<name>`` for each lesson; return the written paths."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in paths:
        nb = student_copy(nbformat.read(path, as_version=4))
        nbformat.validate(nb)
        target = out / path.name
        nbformat.write(nb, target)
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every lesson")
    parser.add_argument("--out", type=Path, default=ROOT / "student")
    args = parser.parse_args(argv)
    for target in write_student_copies(args.notebooks or lessons(), args.out):
        print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
