"""The stored lessons are what a reader sees on GitHub, nbviewer or Binder before running anything:
they must keep the lesson shape and carry no jargon, no stale widgets, no repr junk and nothing
loaded from the network. (nbval runs them; this file reads them as stored.)"""

from __future__ import annotations

import base64
import io
import re
import sys
from pathlib import Path

import nbformat
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `tools`, as `python -m tools.x` from the repository root
from tools import grade as grader  # noqa: E402
from tools.student import student_copy  # noqa: E402

NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
# Words of the documents the course was made from; students see papers and methods instead.
JARGON = re.compile(r"\bseeds? ?\d{3}\b|\(seed steps?\)|\bthe seeds?'|\bseed documents?\b",
                    re.IGNORECASE)
REPR_JUNK = re.compile(r"^(<(Axes|Figure|matplotlib)[^>]*>|Text\(.*\)|\[<matplotlib.*\]|"
                       r"<Figure size .*>)", re.MULTILINE)
REMOTE_LOAD = re.compile(r"""<(script|link|img|iframe)[^>]+(src|href)=["']?(https?:)?//""",
                         re.IGNORECASE)
MAX_BYTES = 1_500_000
# Figures a lecture hall can read: text >= 9 pt at >= 100 dpi, no jet, explorer snapshots >= 640
# px wide (caption as text beside them), no picture (animations included) narrower than 480 px.
SMALL_TEXT = re.compile(r"\b(fontsize|labelsize|size)\s*=\s*[1-8](\.\d*)?\b|"
                        r"rcParams\[[\"']font\.size[\"']\]\s*=\s*[1-8]\b")
LOW_DPI = re.compile(r"\bdpi\"?\]?\s*[=:]\s*\d{1,2}\b|figure\.dpi[\"']\]\s*=\s*\d{1,2}\b")
JET = re.compile(r"""["']jet["']|cm\.jet\b""")
MIN_SNAPSHOT_WIDTH, MIN_PICTURE_WIDTH = 640, 480
PICTURE_MIMES = ("image/png", "image/jpeg", "image/gif")
EMBEDDED = re.compile(r'<img[^>]+src="data:image/(?:png|jpeg|gif);base64,([^"]+)"')


def test_there_are_lessons():
    assert len(NOTEBOOKS) >= 9


@pytest.fixture(params=NOTEBOOKS, ids=lambda p: p.name)
def lesson(request):
    return request.param, nbformat.read(request.param, as_version=4)


def _outputs(nb):
    for index, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            yield index, output


def _texts(output) -> list[str]:
    """The text a reader sees of an output (a picture's text/plain fallback is never shown)."""
    texts = [output.get("text", "")]
    data = output.get("data", {})
    pictures = any(mime.startswith("image/") for mime in data)
    for mime in ("text/html", "application/javascript") if pictures else \
            ("text/plain", "text/html", "application/javascript"):
        value = data.get(mime, "")
        texts.append("".join(value) if isinstance(value, list) else value)
    return texts


def _output_matches(nb, pattern: re.Pattern) -> list[str]:
    """``"cell N: match"`` for every stored output text that ``pattern`` finds."""
    return [f"cell {index}: {found.group(0)!r}" for index, output in _outputs(nb)
            for text in _texts(output) if (found := pattern.search(text))]


def test_no_source_document_jargon(lesson):
    path, nb = lesson
    in_sources = [f"cell {index}: {found.group(0)!r}" for index, cell in enumerate(nb.cells)
                  if (found := JARGON.search(cell.source))]
    assert not in_sources + _output_matches(nb, JARGON), path.name


def test_no_stale_widgets_or_repr_junk(lesson):
    path, nb = lesson
    for index, output in _outputs(nb):
        data = output.get("data", {})
        if WIDGET_VIEW in data:  # only explorers, which store their first picture beside the view
            html_picture = "<img " in "".join(data.get("text/html", ""))
            assert "image/png" in data or "image/jpeg" in data or html_picture, (
                f"{path.name} cell {index}: a widget (progress bar?) without a stored picture")
        assert output.get("output_type") != "error", f"{path.name} cell {index} stored an error"
    assert not _output_matches(nb, REPR_JUNK), f"{path.name}: repr lines"


def test_nothing_loaded_from_the_network(lesson):
    path, nb = lesson
    assert not _output_matches(nb, REMOTE_LOAD), f"{path.name} loads from the network"


def test_lesson_shape(lesson):
    path, nb = lesson
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.lstrip().startswith("# ")
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    parameters = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(parameters) == 1 and "MODEL" in parameters[0].source, "one parameters cell"
    assert any(re.search(r"^\s*assert ", c.source, re.MULTILINE) for c in code), "a self-check"
    solutions = [c for c in nb.cells if "### BEGIN SOLUTION" in c.source]
    assert len(solutions) >= 2, "at least two exercises with nbgrader-marked solutions"
    for cell in solutions:
        assert cell.source.count("### BEGIN SOLUTION") == cell.source.count("### END SOLUTION")
    assert path.stat().st_size < MAX_BYTES, f"{path.name} is {path.stat().st_size / 1e6:.1f} MB"


def test_every_cell_was_run_in_order(lesson):
    path, nb = lesson
    counts = [c.execution_count for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    assert None not in counts, f"{path.name} has cells that were never run"
    assert counts == sorted(counts), f"{path.name} was not run top to bottom"


def _pictures(nb):
    """``(cell index, is an explorer snapshot, PIL image)`` for every stored picture."""
    for index, output in _outputs(nb):
        data = output.get("data", {})
        snapshot = WIDGET_VIEW in data or "<figure" in "".join(data.get("text/html", ""))
        encoded = [data[mime] for mime in PICTURE_MIMES if mime in data]
        encoded += EMBEDDED.findall("".join(data.get("text/html", "")))
        for text in encoded:
            text = "".join(text) if isinstance(text, list) else text
            yield index, snapshot, Image.open(io.BytesIO(base64.b64decode(text)))


def test_figures_are_readable_on_a_projector(lesson):
    path, nb = lesson
    problems = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            problems += [f"cell {index}: {m.group(0)!r} (text under 9 pt, dpi under 100 or jet)"
                         for pattern in (SMALL_TEXT, LOW_DPI, JET)
                         for m in pattern.finditer(cell.source)]
    for index, snapshot, picture in _pictures(nb):
        least = MIN_SNAPSHOT_WIDTH if snapshot else MIN_PICTURE_WIDTH
        if picture.width < least:
            kind = "explorer snapshot" if snapshot else picture.format
            problems.append(f"cell {index}: {kind} {picture.width} px wide (< {least})")
    assert not problems, f"{path.name}:\n" + "\n".join(problems)


def test_the_figure_functions_write_readable_text():
    sources = [p for p in (ROOT / "helpers").rglob("*.py")]
    found = [f"{p.name}: {m.group(0)}" for p in sources
             for m in SMALL_TEXT.finditer(p.read_text()) if "ImageDraw" not in p.read_text()]
    assert not found


def test_graded_exercises_check_themselves_and_a_student_copy_runs_to_the_end(lesson):
    """Two or more implement-it exercises, each an answer cell, a visible check and hidden tests
    in nbgrader's format; in the student copy no stub raises at the top level of a cell (Run All
    reaches the end) and no hidden test is left."""
    path, nb = lesson
    graded = grader.exercises(nb)
    assert len(graded) >= 2, f"{path.name}: at least two graded implement-it exercises"
    ids = {cell.metadata.get("nbgrader", {}).get("grade_id"): i for i, cell in enumerate(nb.cells)}
    for exercise in graded:
        assert exercise.id.startswith(path.name[:2] + "."), exercise.id
        assert exercise.answer < ids.get(f"{exercise.id}-check", -1) < exercise.tests, exercise
        assert exercise.points > 0
        assert "### BEGIN HIDDEN TESTS" in nb.cells[exercise.tests].source
        assert "grade(" in nb.cells[exercise.tests].source
        assert "check(" in nb.cells[ids[f"{exercise.id}-check"]].source
    copy = student_copy(nbformat.from_dict(nb))
    for index, cell in enumerate(copy.cells):
        assert "HIDDEN TESTS" not in cell.source
        if cell.cell_type == "code":
            assert not re.search(r"^raise NotImplementedError", cell.source, re.MULTILINE), (
                f"{path.name} cell {index}: a top-level stub stops Run All")


def test_show_png_shows_a_small_sharp_png(monkeypatch):
    """A chart goes inline as a PNG of at most ``colours`` colours, and its figure is closed."""
    import IPython.display
    import matplotlib.pyplot as plt

    from helpers.plotting import show_png

    shown = []
    monkeypatch.setattr(IPython.display, "display", shown.append)
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(range(10), [v * v for v in range(10)], marker="o", label="a line")
    ax.legend()
    show_png(fig, colours=16)
    assert not plt.fignum_exists(fig.number)
    (image,) = shown
    picture = Image.open(io.BytesIO(image.data))
    assert picture.format == "PNG" and picture.width >= 500
    assert len(picture.convert("RGB").getcolors(maxcolors=256) or []) <= 16
    with pytest.raises(ValueError, match="colours"):
        show_png(plt.figure(), colours=1)
