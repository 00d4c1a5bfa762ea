"""Progress bars for long cells that leave nothing stale in a stored notebook.

In a Jupyter kernel, tqdm's text bar is drawn into one display output that is updated in place
(``display_id``) and emptied when the loop ends: a student sees the bar move while the cell runs,
and the saved notebook keeps an empty output, not a widget whose state is gone (tqdm's notebook
bar is an ipywidget, which a stored notebook shows as an error once the kernel is gone).
Elsewhere (a terminal, the tests), it is tqdm's own bar on stderr.
"""

from __future__ import annotations

from collections.abc import Iterable

from tqdm.std import tqdm

__all__ = ["progress_bar"]


class _DisplayLine:
    """A file-like object for tqdm: each write replaces the text of one display output."""

    def __init__(self) -> None:
        from IPython.display import display

        self._handle = display({"text/plain": ""}, raw=True, display_id=True)

    def write(self, text: str) -> None:
        line = text.strip("\r\n").rstrip()
        self._handle.update({"text/plain": line}, raw=True)

    def flush(self) -> None:
        pass


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


def progress_bar(iterable: Iterable, *, desc: str, enabled: bool = True, total: int | None = None):
    """``iterable`` wrapped in a progress bar labelled ``desc`` (or unchanged when not
    ``enabled``). The bar disappears when the loop ends."""
    if not enabled:
        return iterable
    file = _DisplayLine() if _in_kernel() else None
    return tqdm(iterable, desc=desc, total=total, leave=False, file=file, mininterval=0.5,
                ascii=file is not None, dynamic_ncols=file is None)
