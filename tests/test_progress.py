"""Progress bars: seen while a cell runs, gone from the stored notebook (no stale widget)."""

from __future__ import annotations

import nbformat
from nbclient import NotebookClient

from helpers.progress import progress_bar


def test_outside_a_kernel_the_bar_is_tqdms_on_stderr(capsys):
    assert list(progress_bar(range(3), desc="counting")) == [0, 1, 2]
    assert "counting" in capsys.readouterr().err
    assert list(progress_bar(range(3), desc="quiet", enabled=False)) == [0, 1, 2]
    assert "quiet" not in capsys.readouterr().err


def test_in_a_kernel_the_bar_moves_then_leaves_an_empty_text_output():
    source = ("import time\nfrom helpers.progress import progress_bar\n"
              "seen = []\n"
              "for i in progress_bar(range(4), desc='working'):\n"
              "    time.sleep(0.3)\n    seen.append(i)\n"
              "print(seen)")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    updates = []

    class Client(NotebookClient):  # records every text the bar showed while the cell ran
        def process_message(self, msg, cell, cell_index):
            if msg["msg_type"] == "update_display_data":
                updates.append(msg["content"]["data"]["text/plain"])
            return super().process_message(msg, cell, cell_index)

    Client(nb, timeout=60, kernel_name="python3").execute()
    outputs = nb.cells[0].outputs
    assert any("working" in text and "%" in text for text in updates), updates
    bars = [o for o in outputs if o.output_type == "display_data"]
    assert len(bars) == 1 and bars[0].data == {"text/plain": ""}, outputs
    assert [o.text for o in outputs if o.output_type == "stream"] == ["[0, 1, 2, 3]\n"]
