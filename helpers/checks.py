"""Exercise checks: what a student sees right after writing a step, and what the grader reads.

A graded exercise in a lesson is three cells (nbgrader's format; TEACHING.md, "Collect and
grade"):

1. the student's function, its body between ``### BEGIN SOLUTION`` / ``### END SOLUTION`` (a
   student copy gets a stub that raises ``NotImplementedError``, so *Run All* still reaches the
   end);
2. a visible check, ``check("05.1", lambda: my_weights(layer_pass), expected)``, which prints
   what differs (shape, sign, scale, a known mistake, how far off) and never raises;
3. hidden tests, ``grade("05.1", lambda: my_weights(other_pass), other_expected)``, on another
   image, class or layer, absent from student copies. Under nbgrader ``grade`` raises on a wrong
   answer. Under ``tools.grade`` it also hands the answer to the grader, which compares it with
   the answer of the teacher's solution computed in a kernel the student's code never touched:
   replacing ``helpers`` functions or ``check`` from a submission changes nothing.

Answers are tensors, arrays or numbers; they are compared in float64 with a tolerance relative
to the expected answer's largest value.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable, Mapping

import numpy as np
import torch

__all__ = ["check", "grade", "compare", "ANSWER_MIME", "GRADING_ENV"]

ANSWER_MIME = "application/vnd.cnnvis.answer+json"  # what a hidden test hands to tools.grade
GRADING_ENV = "CNNVIS_GRADING"  # set by tools.grade in the kernels it starts
RTOL = 1e-4  # of the expected answer's largest |value|: float rounding passes, a bug does not


class _NotDone(Exception):
    """The student's function still raises the stub's ``NotImplementedError``."""


def _as_array(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        value = value.double() if value.is_floating_point() or value.dtype == torch.bool \
            else value.long()
        return value.numpy().astype(np.float64)
    return np.asarray(value, dtype=np.float64)


def _run(answer: Callable[[], object]):
    try:
        return answer()
    except NotImplementedError as error:
        raise _NotDone from error


def compare(got, expected, *, hints: Mapping[str, object] | None = None,
            rtol: float = RTOL) -> tuple[bool, str]:
    """``(right, feedback)`` for an answer against the expected one, both array-like.

    ``hints``: known mistakes, ``{message: what that mistake gives}``; an answer close to one of
    them gets its message. Otherwise the feedback names what differs: shape, NaN, sign, a
    constant factor, or how far off (largest difference, correlation)."""
    try:
        g, e = _as_array(got), _as_array(expected)
    except (TypeError, ValueError) as error:
        return False, f"the answer is a {type(got).__name__}, not an array of numbers ({error})"
    if g.shape != e.shape:
        return False, f"shape {tuple(g.shape)}, expected {tuple(e.shape)}"
    if not np.isfinite(g).all():
        return False, f"{int((~np.isfinite(g)).sum())} values are NaN or infinite"
    scale = float(np.abs(e).max()) if e.size else 0.0
    tolerance = rtol * scale + 1e-9
    error = float(np.abs(g - e).max()) if e.size else 0.0
    if error <= tolerance:
        return True, f"right (largest difference {error:.1e}, tolerance {tolerance:.1e})"
    for message, wrong in (hints or {}).items():
        w = _as_array(wrong)
        if w.shape == g.shape and float(np.abs(g - w).max()) <= tolerance:
            return False, message
    if scale > 0 and float(np.abs(g + e).max()) <= tolerance:
        return False, "the sign is flipped: every value is minus the expected one"
    flat_g, flat_e = g.ravel(), e.ravel()
    if scale > 0 and np.abs(flat_g).max() > 0:
        factor = float(flat_g @ flat_e / (flat_e @ flat_e))
        if abs(factor - 1) > 1e-3 and abs(factor) > 1e-12 and \
                float(np.abs(g - factor * e).max()) <= tolerance * abs(factor):
            return False, (f"right up to a constant factor: yours is {factor:.4g} times the "
                           "expected answer (a sum instead of a mean? a missing normalisation?)")
    correlation = float(np.corrcoef(flat_g, flat_e)[0, 1]) if e.size > 1 and \
        flat_g.std() > 0 and flat_e.std() > 0 else float("nan")
    return False, (f"off by up to {error:.3g} (the expected values reach {scale:.3g}; "
                   f"correlation with the expected answer {correlation:.2f})")


def check(exercise: str, answer: Callable[[], object], expected, *,
          hints: Mapping[str, object] | None = None, rtol: float = RTOL) -> bool:
    """The visible check: run ``answer()`` (the student's code), compare it with ``expected``
    and print specific feedback. Returns whether it is right; never raises."""
    try:
        got = _run(answer)
    except _NotDone:
        print(f"Exercise {exercise}: not done yet. Write the function above, then run this "
              "cell again.")
        return False
    except Exception as error:  # noqa: BLE001 - the student's code: report, never a traceback
        print(f"Exercise {exercise}: your code raised {type(error).__name__}: {error}")
        return False
    right, feedback = compare(got, expected, hints=hints, rtol=rtol)
    print(f"Exercise {exercise}: {feedback}." if right else
          f"Exercise {exercise}: not yet: {feedback}.")
    return right


def _hand_to_grader(exercise: str, got) -> None:
    """Under ``tools.grade``: display the answer under ``ANSWER_MIME`` (the grader compares it
    with the teacher's); elsewhere nothing, so stored notebooks keep no answers."""
    if not os.environ.get(GRADING_ENV):
        return
    from IPython.display import display

    array = np.ascontiguousarray(_as_array(got))
    payload = {"exercise": exercise, "shape": list(array.shape),
               "values": base64.b64encode(array.tobytes()).decode("ascii")}
    display({ANSWER_MIME: json.dumps(payload), "text/plain": f"answer for {exercise}"},
            raw=True)


def grade(exercise: str, answer: Callable[[], object], expected, *,
          hints: Mapping[str, object] | None = None, rtol: float = RTOL) -> None:
    """A hidden test: run ``answer()``, hand it to the grader, and raise ``AssertionError`` with
    the feedback unless it equals ``expected`` (what nbgrader counts)."""
    try:
        got = _run(answer)
    except _NotDone:
        raise AssertionError(f"exercise {exercise} is not done") from None
    _hand_to_grader(exercise, got)
    right, feedback = compare(got, expected, hints=hints, rtol=rtol)
    assert right, f"exercise {exercise}: {feedback}"


def decode_answer(payload: str) -> tuple[str, np.ndarray]:
    """``(exercise, array)`` from what ``grade`` displayed (for ``tools.grade``)."""
    data = json.loads(payload)
    values = np.frombuffer(base64.b64decode(data["values"]), dtype=np.float64)
    return data["exercise"], values.reshape(data["shape"])
