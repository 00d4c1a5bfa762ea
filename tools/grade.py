"""Grade collected lessons: ``python -m tools.grade DIR`` (or ``make grade SUBMISSIONS=DIR``).

``DIR/<student>/<lesson>.ipynb`` holds one student's copy of a lesson (the lesson's file name,
e.g. ``05_grad_cam.ipynb``). The grader writes

- ``DIR/gradebook.csv``: ``student,lesson,exercise,points,max_points,feedback``, one row per
  student, lesson and graded exercise (``05.2``);
- ``DIR/<student>/feedback/<lesson>.html``: the executed notebook, each check's result on top.

How a submission is graded (TEACHING.md, "Collect and grade"):

1. The notebook that runs is the teacher's lesson (``notebooks/``) with the student's answer
   cells put in (matched by nbgrader ``grade_id``, else by cell id): the hidden tests come back,
   and the checks and the lesson's own cells are the teacher's, whatever the copy holds.
2. It runs in a fresh kernel, in a scratch folder that is deleted afterwards, with one thread,
   a time limit per cell (the cell is interrupted and counts as an error), a time limit for the
   notebook and a memory limit (``RLIMIT_DATA``). An error breaks only its own exercise; a kernel
   that dies (memory, a crash) or a notebook over its time is run again with the answer that
   broke it replaced by the stub, so the other exercises keep their marks.
3. Each hidden test hands its answer to the grader (``helpers.checks.grade``). The grader
   compares it with the answer of the teacher's solution to the same test, computed once per
   lesson in a kernel no submission touched. What a submission replaces inside its own kernel
   (``helpers`` functions, the check) cannot change the reference.
4. Results are one signed file per submission under ``DIR/.grades/`` (HMAC with a key kept
   there): a run resumes where it stopped, ``--shard i/n`` grades one n-th of the submissions
   (merge the ``.grades`` folders, run again: nothing left to grade, the full gradebook is
   written), and a file a submission forged or changed is graded again. The gradebook and the
   feedback pages are written only after every kernel has ended.

Not protected: code of a submission runs as the user who runs the grader, so it can read any file
that user can (the key included) and use the network. For untrusted work run the grader in a
container without network (TEACHING.md shows the command).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import copy
import csv
import hashlib
import hmac
import json
import multiprocessing
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
import numpy as np
from nbclient import NotebookClient

from helpers.checks import ANSWER_MIME, GRADING_ENV, RTOL, compare, decode_answer
from tools import site
from tools.course import ROOT, lessons

STUDENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]*$")
COLUMNS = ["student", "lesson", "exercise", "points", "max_points", "feedback"]


@dataclass(frozen=True)
class Exercise:
    """A graded exercise: its id (``05.1``), its points, the answer cell, the hidden-test cell."""

    id: str
    points: float
    answer: int
    tests: int


def _grader(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


def exercises(nb) -> list[Exercise]:
    """The graded exercises of a teacher's lesson, from the nbgrader metadata: an answer cell
    (``solution``) ``grade_id = "05.1"`` and a test cell (``grade``, ``points``)
    ``grade_id = "05.1-tests"``."""
    answers = {_grader(c)["grade_id"]: i for i, c in enumerate(nb.cells)
               if _grader(c).get("solution") and c.cell_type == "code"}
    found = []
    for i, cell in enumerate(nb.cells):
        meta = _grader(cell)
        if meta.get("grade") and meta.get("grade_id", "").endswith("-tests"):
            exercise = meta["grade_id"][: -len("-tests")]
            if exercise not in answers:
                raise ValueError(f"test cell {meta['grade_id']} has no answer cell {exercise}")
            found.append(Exercise(exercise, float(meta.get("points", 1)), answers[exercise], i))
    return found


def _copy(nb):
    """A deep copy of a notebook (execution writes into the one it runs)."""
    return nbformat.from_dict(copy.deepcopy(nb))


def merge(teacher, submitted):
    """The teacher's notebook with the student's answer cells (code and written) put in."""
    by_grade_id = {_grader(c).get("grade_id"): c for c in submitted.cells if _grader(c)}
    by_id = {c.get("id"): c for c in submitted.cells if c.get("id")}
    merged = _copy(teacher)
    for cell in merged.cells:
        meta = _grader(cell)
        if not meta.get("solution"):
            continue
        theirs = by_grade_id.get(meta.get("grade_id")) or by_id.get(cell.get("id"))
        if theirs is not None and theirs.cell_type == cell.cell_type:
            cell.source = theirs.source
    for cell in merged.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return merged


def stubbed(nb, teacher, exercise: Exercise):
    """``nb`` with the answer of ``exercise`` replaced by the stub of the teacher's solution
    (after that answer broke the kernel)."""
    from tools.student import BEGIN, CODE_STUB, END, replace_regions

    result = _copy(nb)
    result.cells[exercise.answer].source = replace_regions(
        teacher.cells[exercise.answer].source, BEGIN, END, CODE_STUB.split("\n"),
        exercise.answer)
    return result


def _limits(memory_mb: int):
    def apply() -> None:  # runs in the kernel process before it starts
        import resource

        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    return apply


def execute(nb, *, cell_timeout: int, timeout: int, memory_mb: int) -> tuple[object, str, int]:
    """Run ``nb`` in a fresh limited kernel in a scratch folder. -> ``(executed notebook,
    status, index of the cell running when it stopped)``; status is ``"ok"``, ``"dead"`` (the
    kernel died) or ``"timeout"`` (the notebook ran past ``timeout`` seconds)."""
    scratch = Path(tempfile.mkdtemp(prefix="grade-"))
    env = {key: os.environ[key] for key in ("PATH", "LANG", "LC_ALL", "PYTHONPATH", "TMPDIR")
           if key in os.environ}
    env.update({GRADING_ENV: "1", "HOME": str(scratch), "OMP_NUM_THREADS": "1",
                "MKL_NUM_THREADS": "1", "PYDEVD_DISABLE_FILE_VALIDATION": "1"})
    client = NotebookClient(
        nb, timeout=cell_timeout, kernel_name="python3", allow_errors=True,
        interrupt_on_timeout=True, record_timing=False,
        error_on_timeout={"ename": "CellTimeout", "evalue": f"over {cell_timeout} s",
                          "traceback": [f"the cell ran over its {cell_timeout} s and was "
                                        "interrupted"]})
    current, status = 0, "ok"
    finished, deadline_hit = threading.Event(), threading.Event()
    try:
        with client.setup_kernel(cwd=str(scratch), env=env, preexec_fn=_limits(memory_mb)):
            process = client.km.provisioner.process

            def watchdog() -> None:  # kills the kernel when the notebook runs out of time
                if not finished.wait(timeout):
                    deadline_hit.set()
                    process.kill()

            threading.Thread(target=watchdog, daemon=True).start()
            try:
                for current, cell in enumerate(nb.cells):
                    client.execute_cell(cell, current)
            finally:
                finished.set()
    except Exception as error:  # noqa: BLE001 - a dead or killed kernel, whatever nbclient says
        status = "timeout" if deadline_hit.is_set() else "dead"
        nb.cells[current].setdefault("outputs", []).append(nbformat.v4.new_output(
            "error", ename=type(error).__name__, evalue=str(error)[:300], traceback=[]))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return nb, status, current


def answers(executed, graded: list[Exercise]) -> dict[str, dict]:
    """What each hidden-test cell handed over: ``{exercise: {"values": [arrays], "error": str}}``
    (answers displayed by any other cell are ignored)."""
    found = {}
    for exercise in graded:
        values, error = [], ""
        for output in executed.cells[exercise.tests].get("outputs", []):
            data = output.get("data", {})
            if ANSWER_MIME in data:
                name, array = decode_answer(data[ANSWER_MIME])
                if name == exercise.id:
                    values.append(array)
            if output.get("output_type") == "error" and not error:
                error = f"{output.get('ename')}: {str(output.get('evalue'))[:200]}"
        for output in executed.cells[exercise.answer].get("outputs", []):
            if output.get("output_type") == "error":  # the cause, more useful than its effect
                error = (f"your answer cell raised {output.get('ename')}: "
                         f"{str(output.get('evalue'))[:200]}")
        found[exercise.id] = {"values": values, "error": error}
    return found


def score(got: dict, reference: dict, graded: list[Exercise]) -> list[dict]:
    """One row per exercise: full points if every answer equals the reference's, else 0."""
    rows = []
    for exercise in graded:
        mine, ref = got.get(exercise.id, {}), reference[exercise.id]
        values, expected = mine.get("values", []), ref["values"]
        if not expected:
            raise RuntimeError(f"the teacher's solution gave no answer for {exercise.id} "
                               f"({ref.get('error') or 'no output'})")
        if mine.get("broke"):
            feedback = mine["broke"]
        elif len(values) != len(expected):
            feedback = (f"the hidden tests stopped: {mine['error']}" if mine.get("error")
                        else "the hidden tests got no answer")
        else:
            wrong = [why for got_array, want in zip(values, expected)
                     for right, why in [compare(got_array, want, rtol=RTOL)] if not right]
            feedback = ("right" if not wrong else
                        f"a different answer on the hidden tests' cases ({wrong[0]})")
        points = exercise.points if feedback == "right" else 0.0
        rows.append({"exercise": exercise.id, "points": points, "max_points": exercise.points,
                     "feedback": feedback})
    return rows


def run_submission(teacher_path: str, submission_path: str | None, *, cell_timeout: int,
                   timeout: int, memory_mb: int) -> dict:
    """Execute one submission (``None``: the teacher's own notebook, the reference) until no
    answer breaks the kernel. -> ``{"answers": ..., "notebook": executed, "seconds": ...}``."""
    start = time.perf_counter()
    teacher = nbformat.read(teacher_path, as_version=4)
    graded = exercises(teacher)
    nb = teacher if submission_path is None else merge(
        teacher, nbformat.read(submission_path, as_version=4))
    broke: dict[str, str] = {}
    while True:
        executed, status, stopped = execute(_copy(nb),
                                            cell_timeout=cell_timeout, timeout=timeout,
                                            memory_mb=memory_mb)
        if status == "ok":
            break
        culprit = _culprit(graded, stopped, broke)
        if culprit is None:  # the lesson's own code broke: nothing can be graded
            broke.update({e.id: f"the notebook could not run ({status} at cell {stopped})"
                          for e in graded if e.id not in broke})
            break
        broke[culprit.id] = ("the kernel died while running it (memory limit?)"
                             if status == "dead" else "the notebook ran past its time limit")
        nb = stubbed(nb, teacher, culprit)
    found = answers(executed, graded)
    for exercise_id, why in broke.items():
        found[exercise_id]["broke"] = why
    serialisable = {k: {"values": [v.tolist() for v in d["values"]], "error": d["error"],
                        "broke": d.get("broke", "")} for k, d in found.items()}
    return {"answers": serialisable, "notebook": nbformat.writes(executed),
            "seconds": round(time.perf_counter() - start, 1)}


def _culprit(graded: list[Exercise], stopped: int, broke: dict) -> Exercise | None:
    """The exercise whose answer was running (or the last one answered before) at ``stopped``."""
    candidates = [e for e in graded if e.answer <= stopped and e.id not in broke]
    return max(candidates, key=lambda e: e.answer) if candidates else None


def _arrays(serialised: dict) -> dict:
    return {k: {**d, "values": [np.asarray(v, dtype=np.float64) for v in d["values"]]}
            for k, d in serialised.items()}


# ----- signed result files -----------------------------------------------------------------------

class Store:
    """``DIR/.grades``: one signed JSON file per graded submission and per lesson reference."""

    def __init__(self, root: Path):
        self.root = root / ".grades"
        self.root.mkdir(exist_ok=True)
        key_file = self.root / "key"
        if not key_file.exists():
            key_file.write_bytes(os.urandom(32))
            key_file.chmod(0o600)
        self.key = key_file.read_bytes()

    def path(self, student: str, lesson: str) -> Path:
        return self.root / "results" / student / f"{lesson}.json"

    def _sign(self, record: dict) -> str:
        body = json.dumps(record, sort_keys=True).encode()
        return hmac.new(self.key, body, hashlib.sha256).hexdigest()

    def write(self, path: Path, record: dict) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"record": record, "hmac": self._sign(record)}))
        temporary.replace(path)

    def read(self, path: Path, *, sources: dict[str, str]) -> dict | None:
        """The record if its signature holds and it was made from these sources (hashes)."""
        try:
            data = json.loads(path.read_text())
            record = data["record"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not hmac.compare_digest(self._sign(record), str(data.get("hmac"))):
            return None
        return record if record.get("sources") == sources else None


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def submissions(directory: Path, lesson_names: set[str]) -> list[tuple[str, str]]:
    """``(student, lesson stem)`` for every ``DIR/<student>/<lesson>.ipynb``, sorted."""
    found = []
    for folder in sorted(p for p in directory.iterdir() if p.is_dir()):
        if not STUDENT.match(folder.name):
            continue
        for path in sorted(folder.glob("*.ipynb")):
            if path.name in lesson_names:
                found.append((folder.name, path.stem))
    return found


def shard_of(items: list, shard: tuple[int, int]) -> list:
    """The ``i``-th of ``n`` interleaved parts of ``items`` (``shard = (i, n)``, 1-based)."""
    index, count = shard
    return [item for k, item in enumerate(items) if k % count == index - 1]


def feedback_page(executed_source: str, rows: list[dict], student: str, lesson: str) -> str:
    """The executed notebook as HTML with the grade and each exercise's result on top."""
    nb = nbformat.reads(executed_source, as_version=4)
    for cell in nb.cells:  # the results stay, the hidden tests' code does not
        cell.source = site.HIDDEN.sub("# (hidden tests)\n", cell.source)
    total = sum(r["points"] for r in rows)
    most = sum(r["max_points"] for r in rows)
    table = "\n".join(f"| {r['exercise']} | {r['points']:g} / {r['max_points']:g} | "
                      f"{r['feedback']} |" for r in rows)
    summary = (f"# Feedback: {lesson}, {student}\n\n**{total:g} of {most:g} points**\n\n"
               f"| exercise | points | result |\n|---|---|---|\n{table}\n")
    nb.cells.insert(0, nbformat.v4.new_markdown_cell(summary))
    nb.metadata.pop("widgets", None)
    page, _ = site.exporter().from_notebook_node(nb, resources={"course_nav": ""})
    return site.drop_external(page)[0]


def grade(directory: Path, *, jobs: int = 1, shard: tuple[int, int] = (1, 1),
          cell_timeout: int = 300, timeout: int = 1200, memory_mb: int = 3000,
          course: Path = ROOT, log=print) -> list[dict]:
    """Grade every submission under ``directory`` (resuming), then write the gradebook and the
    feedback pages from every valid result. -> the gradebook's rows."""
    directory = directory.resolve()
    teachers = {p.stem: p for p in lessons(course)}
    store = Store(directory)
    todo = shard_of(submissions(directory, {p.name for p in teachers.values()}), shard)
    limits = {"cell_timeout": cell_timeout, "timeout": timeout, "memory_mb": memory_mb}

    def sources(student: str | None, lesson: str) -> dict[str, str]:
        found = {"teacher": _digest(teachers[lesson])}
        if student is not None:
            found["submission"] = _digest(directory / student / f"{lesson}.ipynb")
        return found

    references: dict[str, dict] = {}
    written: dict[Path, dict] = {}  # this run's results, written again once every kernel ended
    for lesson in sorted({lesson for _, lesson in todo}):
        path = store.root / "reference" / f"{lesson}.json"
        record = store.read(path, sources=sources(None, lesson))
        if record is None:
            log(f"reference: running the teacher's {lesson}")
            record = {"sources": sources(None, lesson),
                      **run_submission(str(teachers[lesson]), None, **limits)}
            record.pop("notebook")
            store.write(path, record)
        written[path] = record
        references[lesson] = _arrays(record["answers"])

    pending = [(s, lesson) for s, lesson in todo
               if store.read(store.path(s, lesson), sources=sources(s, lesson)) is None]
    log(f"{len(todo) - len(pending)} of {len(todo)} submissions already graded; "
        f"{len(pending)} to run with {jobs} job(s)")
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = {pool.submit(run_submission, str(teachers[lesson]),
                               str(directory / student / f"{lesson}.ipynb"), **limits):
                   (student, lesson) for student, lesson in pending}
        for future in concurrent.futures.as_completed(futures):
            student, lesson = futures[future]
            result = future.result()
            graded = exercises(nbformat.read(teachers[lesson], as_version=4))
            rows = score(_arrays(result["answers"]), references[lesson], graded)
            record = {"sources": sources(student, lesson), "rows": rows,
                      "notebook": result["notebook"], "seconds": result["seconds"]}
            store.write(store.path(student, lesson), record)
            written[store.path(student, lesson)] = record
            got = sum(r["points"] for r in rows)
            log(f"{student} {lesson}: {got:g} / {sum(r['max_points'] for r in rows):g} "
                f"({result['seconds']} s)")
    for path, record in written.items():  # undo what a submission's kernel may have changed
        store.write(path, record)
    return write_gradebook(directory, store, teachers, sources)


def write_gradebook(directory: Path, store: Store, teachers: dict, sources) -> list[dict]:
    """``gradebook.csv`` and the feedback pages from every valid result file; a result whose
    signature or sources do not hold is left out (run the grader again to grade it)."""
    rows = []
    for student, lesson in submissions(directory, {p.name for p in teachers.values()}):
        record = store.read(store.path(student, lesson), sources=sources(student, lesson))
        if record is None:
            continue
        feedback = directory / student / "feedback"
        feedback.mkdir(exist_ok=True)
        (feedback / f"{lesson}.html").write_text(
            feedback_page(record["notebook"], record["rows"], student, lesson), encoding="utf-8")
        rows += [{"student": student, "lesson": lesson, **row} for row in record["rows"]]
    with open(directory / "gradebook.csv", "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({**row, "points": f"{row['points']:g}",
                          "max_points": f"{row['max_points']:g}"} for row in rows)
    return rows


def _shard(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)/(\d+)", text)
    if not match or not 1 <= int(match.group(1)) <= int(match.group(2)):
        raise argparse.ArgumentTypeError("--shard must be i/n with 1 <= i <= n, e.g. 2/4")
    return int(match.group(1)), int(match.group(2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("submissions", type=Path, help="DIR/<student>/<lesson>.ipynb")
    parser.add_argument("--jobs", type=int, default=1, help="kernels run in parallel")
    parser.add_argument("--shard", type=_shard, default=(1, 1), help="grade part i of n")
    parser.add_argument("--cell-timeout", type=int, default=300, help="seconds per cell")
    parser.add_argument("--timeout", type=int, default=1200, help="seconds per notebook")
    parser.add_argument("--memory-mb", type=int, default=3000, help="per kernel (RLIMIT_DATA)")
    args = parser.parse_args(argv)
    if not args.submissions.is_dir():
        print(f"error: {args.submissions} is not a folder", file=sys.stderr)
        return 2
    rows = grade(args.submissions, jobs=max(1, args.jobs), shard=args.shard,
                 cell_timeout=args.cell_timeout, timeout=args.timeout,
                 memory_mb=args.memory_mb)
    print(f"wrote {args.submissions / 'gradebook.csv'} ({len(rows)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
