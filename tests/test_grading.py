"""The grader (tools.grade) on made-up submissions of a small lesson with known grades: the
teacher's copy, the student copy, one wrong answer, a crash, an endless loop, a memory hog, a
submission that patches the checks, and one that forges the gradebook and other students' files.
Each gets exactly its expected grade; nothing it does reaches another student's row."""

from __future__ import annotations

import csv
import shutil
import sys
from pathlib import Path

import nbformat
import pytest

from helpers.checks import check, compare, grade

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `tools`, as `python -m tools.x`
from tools import grade as grader  # noqa: E402
from tools.student import student_copy  # noqa: E402

LESSON = "90_fixture"


def _cell(source: str, **nbgrader):
    meta = {"nbgrader": {"schema_version": 3, "locked": False, "grade": False, "solution": False,
                         **nbgrader}} if nbgrader else {}
    return nbformat.v4.new_code_cell(source, metadata=meta)


def fixture_lesson() -> nbformat.NotebookNode:
    """Two graded exercises (2 and 1 points) in the lessons' format."""
    cells = [
        nbformat.v4.new_markdown_cell("# 90 · A fixture lesson"),
        nbformat.v4.new_code_cell("MODEL = 'none'", metadata={"tags": ["parameters"]}),
        _cell("import torch\nfrom helpers.checks import check, grade\n"
              "x = torch.arange(6.0).reshape(2, 3) - 2"),
        _cell("# Exercise 90.1: return twice x.\ndef double(x):\n    ### BEGIN SOLUTION\n"
              "    return 2 * x\n    ### END SOLUTION", solution=True, grade_id="90.1"),
        _cell('check("90.1", lambda: double(x), 2 * x)', locked=True, grade_id="90.1-check"),
        _cell('### BEGIN HIDDEN TESTS\ngrade("90.1", lambda: double(x + 10), 2 * (x + 10))\n'
              "### END HIDDEN TESTS", grade=True, locked=True, grade_id="90.1-tests", points=2),
        _cell("# Exercise 90.2: the ReLU of x.\ndef relu(x):\n    ### BEGIN SOLUTION\n"
              "    return x.clamp(min=0)\n    ### END SOLUTION", solution=True, grade_id="90.2"),
        _cell('check("90.2", lambda: relu(x), x.clamp(min=0))', locked=True,
              grade_id="90.2-check"),
        _cell('### BEGIN HIDDEN TESTS\ngrade("90.2", lambda: relu(-x), (-x).clamp(min=0))\n'
              "### END HIDDEN TESTS", grade=True, locked=True, grade_id="90.2-tests", points=1),
        _cell('print("the end")'),
    ]
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    return nb


FORGE = """import pathlib
here = pathlib.Path({folder!r})
(here / "gradebook.csv").write_text("student,lesson,exercise,points,max_points,feedback\\n"
                                    "forger,90_fixture,90.1,100,2,forged\\n")
(here / "full" / "feedback").mkdir(exist_ok=True)
(here / "full" / "feedback" / "90_fixture.html").write_text("forged")
for result in (here / ".grades").rglob("*.json"):
    result.write_text("{{}}")
def double(x):
    return 2 * x"""

# student -> (answer of 90.1 or None for the teacher's, answer of 90.2 or None) and the grade
SUBMISSIONS = {
    "full": (None, None, {"90.1": 2, "90.2": 1}),
    "wrong": ("def double(x):\n    return 3 * x", None, {"90.1": 0, "90.2": 1}),
    "crash": (None, "import os\nos._exit(1)", {"90.1": 2, "90.2": 0}),
    "loop": ("def double(x):\n    while True:\n        pass", None, {"90.1": 0, "90.2": 1}),
    "hog": (None, "import numpy\nhog = numpy.ones(40 * 2**30, dtype=numpy.uint8)\n"
                  "def relu(x):\n    return x.clamp(min=0)", {"90.1": 2, "90.2": 0}),
    # replaces the checks in its own kernel: its wrong 90.1 still gets 0, and the hidden test of
    # 90.2 (which it disabled) gets no answer: tampering can only lower a grade
    "tamper": ("import helpers.checks as hc\nhc.compare = lambda *a, **k: (True, 'right')\n"
               "check = grade = hc.grade = lambda *a, **k: None\n"
               "def double(x):\n    return 3 * x", None, {"90.1": 0, "90.2": 0}),
    "forger": (FORGE, None, {"90.1": 2, "90.2": 1}),
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    course = tmp_path_factory.mktemp("course")
    (course / "notebooks").mkdir()
    teacher = fixture_lesson()
    nbformat.write(teacher, course / "notebooks" / f"{LESSON}.ipynb")
    folder = tmp_path_factory.mktemp("submissions")
    for student, (first, second, _) in SUBMISSIONS.items():
        nb = fixture_lesson()
        for grade_id, source in (("90.1", first), ("90.2", second)):
            if source is not None:
                (cell,) = [c for c in nb.cells
                           if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id]
                cell.source = source.format(folder=str(folder))
        (folder / student).mkdir()
        nbformat.write(nb, folder / student / f"{LESSON}.ipynb")
    (folder / "zero").mkdir()
    nbformat.write(student_copy(fixture_lesson()), folder / "zero" / f"{LESSON}.ipynb")
    rows = grader.grade(folder, jobs=2, cell_timeout=30, timeout=300, memory_mb=3000,
                        course=course, log=lambda _: None)
    return folder, course, rows


def _book(folder: Path) -> dict[tuple[str, str], float]:
    with open(folder / "gradebook.csv", newline="") as file:
        return {(r["student"], r["exercise"]): float(r["points"]) for r in csv.DictReader(file)}


def test_every_submission_gets_exactly_its_grade(graded):
    folder, _, _ = graded
    book = _book(folder)
    expected = {(s, e): p for s, (_, _, grades) in SUBMISSIONS.items() for e, p in grades.items()}
    expected.update({("zero", "90.1"): 0, ("zero", "90.2"): 0})
    assert book == expected


def test_feedback_says_what_went_wrong_and_shows_no_hidden_test(graded):
    folder, _, rows = graded
    feedback = {(r["student"], r["exercise"]): r["feedback"] for r in rows}
    assert feedback["full", "90.1"] == "right"
    assert "not done" in feedback["zero", "90.1"]
    assert "different answer" in feedback["wrong", "90.1"]
    assert "kernel died" in feedback["crash", "90.2"]
    assert "KeyboardInterrupt" in feedback["loop", "90.1"]
    assert "MemoryError" in feedback["hog", "90.2"]
    page = (folder / "full" / "feedback" / f"{LESSON}.html").read_text()
    assert "3 of 3 points" in page and "double(x + 10)" not in page and "forged" not in page
    assert "cdnjs" not in page


def test_a_second_run_resumes_and_a_forged_result_is_graded_again(graded):
    folder, course, _ = graded
    before = _book(folder)
    result = grader.Store(folder).path("wrong", LESSON)
    forged = result.read_text().replace('"points": 0.0', '"points": 2.0')
    result.write_text(forged)
    log: list[str] = []
    grader.grade(folder, course=course, cell_timeout=30, log=log.append)
    assert "1 to run" in "\n".join(log)  # only the forged one, found by its signature
    assert _book(folder) == before


def test_shards_split_the_class_without_overlap():
    items = list(range(10))
    parts = [grader.shard_of(items, (i, 3)) for i in (1, 2, 3)]
    assert sorted(sum(parts, [])) == items and all(parts)


def test_check_names_what_differs(capsys):
    import torch

    expected = torch.tensor([[1.0, -2.0], [3.0, 0.5]])
    assert compare(expected + 1e-7, expected)[0]
    assert "shape (4,)" in compare(expected.flatten(), expected)[1]
    assert "sign is flipped" in compare(-expected, expected)[1]
    assert "constant factor" in compare(49 * expected, expected)[1]
    assert "NaN" in compare(expected * float("nan"), expected)[1]
    assert compare(expected.clamp(min=0), expected,
                   hints={"the ReLU is not Grad-CAM's weights": expected.clamp(min=0)})[1] == \
        "the ReLU is not Grad-CAM's weights"

    def stub():
        raise NotImplementedError()

    assert not check("1.1", stub, expected)
    assert not check("1.2", lambda: 1 / 0, expected)
    assert check("1.3", lambda: expected.clone(), expected)
    out = capsys.readouterr().out
    assert "1.1: not done yet" in out and "ZeroDivisionError" in out and "1.3: right" in out
    with pytest.raises(AssertionError, match="not done"):
        grade("1.1", stub, expected)
    with pytest.raises(AssertionError, match="sign is flipped"):
        grade("1.4", lambda: -expected, expected)


def test_the_grader_refuses_what_it_cannot_grade(tmp_path):
    assert grader.main([str(tmp_path / "missing")]) == 2
    with pytest.raises(SystemExit):
        grader.main([str(tmp_path), "--shard", "3/2"])
    shutil.rmtree(tmp_path)


def test_a_real_lesson_full_marks_for_the_key_zero_for_the_student_copy(tmp_path):
    """Lesson 05 (the fastest with a model): the teacher's copy gets every point; the student
    copy runs to the end (Run All), each visible check says "not done yet", and it gets 0."""
    root = Path(__file__).resolve().parent.parent
    teacher = root / "notebooks" / "05_grad_cam.ipynb"
    for student, nb in (("key", nbformat.read(teacher, as_version=4)),
                        ("copy", student_copy(nbformat.read(teacher, as_version=4)))):
        (tmp_path / student).mkdir()
        nbformat.write(nb, tmp_path / student / teacher.name)
    rows = grader.grade(tmp_path, cell_timeout=300, log=lambda _: None)
    graded = grader.exercises(nbformat.read(teacher, as_version=4))
    assert len(rows) == 2 * len(graded) >= 4
    assert all(r["points"] == r["max_points"] for r in rows if r["student"] == "key"), rows
    assert all(r["points"] == 0 and "not done" in r["feedback"]
               for r in rows if r["student"] == "copy"), rows
    record = grader.Store(tmp_path).read(grader.Store(tmp_path).path("copy", teacher.stem),
                                         sources={"teacher": grader._digest(teacher),
                                                  "submission": grader._digest(
                                                      tmp_path / "copy" / teacher.name)})
    executed = nbformat.reads(record["notebook"], as_version=4)
    tests = {e.tests for e in graded}
    errors = [i for i, c in enumerate(executed.cells) if i not in tests
              for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"the student copy stopped with an error in cells {errors}"
    checks = [c for c in executed.cells
              if c.metadata.get("nbgrader", {}).get("grade_id", "").endswith("-check")]
    assert checks and all("not done yet" in "".join(o.get("text", "") for o in c.outputs)
                          for c in checks)
