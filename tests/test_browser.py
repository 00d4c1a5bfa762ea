"""Drive a real JupyterLab in headless Chromium: open each lesson with an explorer, run all cells,
move a slider with the keyboard, and check that the picture changed and no cell shows an error.

Each wait is derived from the lesson's own run time, as stored in its cells' execution metadata,
with a margin for a slower or busier machine. After each lesson its kernel and session are shut
down (each kernel holds about 1 GB). On failure the screenshot and the lab log are kept in
tests/artifacts/.

Needs Debian's chromium (/usr/bin/chromium) and the playwright package. Without them the test
skips, unless CNNVIS_REQUIRE_BROWSER=1 (set by .ci/run), where it fails instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import datetime
from pathlib import Path

import nbformat
import pytest
from conftest import browser_missing

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"
REQUIRED = os.environ.get("CNNVIS_REQUIRE_BROWSER") == "1"

# lesson -> (kind of control, its label) that the test moves with the keyboard
EXPLORERS = {
    "01_feature_maps.ipynb": ("slider", "channel"),
    "02_filters.ipynb": ("slider", "filter"),
    "03_saliency.ipynb": ("dropdown", "class"),
    "04_guided_backprop.ipynb": ("dropdown", "class"),
    "05_grad_cam.ipynb": ("dropdown", "class"),
    "06_score_cam.ipynb": ("dropdown", "class"),
    "07_gradient_ascent.ipynb": ("button", "Run"),
    "08_deep_dream.ipynb": ("button", "Run"),
    "09_faithfulness.ipynb": ("dropdown", "method"),
    "10_vision_transformers.ipynb": ("dropdown", "image"),
}

pytestmark = pytest.mark.browser

# A browser run of a lesson may take this many times its stored run time, plus a fixed start-up
# allowance (kernel start, imports, rendering): CI machines can be slower and busier than the one
# that stored the outputs.
TIME_FACTOR, TIME_ALLOWANCE_S = 4.0, 90.0


def stored_run_seconds(path: Path) -> float:
    """How long the stored lesson took top to bottom: the first cell's start to the last cell's
    reply, from the execution timestamps that nbclient and JupyterLab record."""
    stamps = []
    for cell in nbformat.read(path, as_version=4).cells:
        timing = cell.get("metadata", {}).get("execution", {})
        for key in ("iopub.execute_input", "shell.execute_reply"):
            if key in timing:
                stamps.append(datetime.fromisoformat(timing[key].replace("Z", "+00:00")))
    return (max(stamps) - min(stamps)).total_seconds() if stamps else 120.0


def budget_ms(notebook: str) -> int:
    seconds = TIME_FACTOR * stored_run_seconds(ROOT / "notebooks" / notebook) + TIME_ALLOWANCE_S
    return int(seconds * 1000)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    reason = browser_missing()
    if reason:
        if REQUIRED:
            pytest.fail(f"browser test required (CNNVIS_REQUIRE_BROWSER=1) but {reason}")
        pytest.skip(reason)
    workdir = tmp_path_factory.mktemp("lab")
    for name in EXPLORERS:
        shutil.copy(ROOT / "notebooks" / name, workdir / name)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = "cnnvis-test-token"
    settings = workdir / "settings"
    # Render every cell (JupyterLab 4 windowing detaches off-screen cells) and skip news pop-ups.
    _write_setting(settings, "notebook-extension", "tracker", '{"windowingMode": "none"}')
    _write_setting(settings, "apputils-extension", "notification", '{"fetchNews": "false"}')
    process = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
         f"--ServerApp.token={token}", f"--ServerApp.root_dir={workdir}",
         "--allow-root", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        stdout=subprocess.DEVNULL, stderr=open(workdir / "lab.log", "w"),
        env={**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(settings)},
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline and process.poll() is None:
        try:
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        process.terminate()
        pytest.fail("jupyter lab did not start: " + (workdir / "lab.log").read_text()[-2000:])
    yield base, token, workdir
    process.terminate()
    process.wait(timeout=20)


def _api(base: str, token: str, path: str, method: str = "GET"):
    request = urllib.request.Request(f"{base}/api/{path}?token={token}", method=method)
    with urllib.request.urlopen(request, timeout=30) as response:
        body = response.read()
    return json.loads(body) if body else None


def _shut_down_kernels(base: str, token: str) -> None:
    """Delete every session and kernel, so the next lesson starts on a machine with free memory."""
    for session in _api(base, token, "sessions"):
        _api(base, token, f"sessions/{session['id']}", "DELETE")
    for kernel in _api(base, token, "kernels"):
        _api(base, token, f"kernels/{kernel['id']}", "DELETE")


def _write_setting(folder: Path, extension: str, plugin: str, json_text: str) -> None:
    path = folder / "@jupyterlab" / extension / f"{plugin}.jupyterlab-settings"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json_text)


def _run_all(page) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()


def _pictures(page, explorer) -> list[bytes]:
    return [img.screenshot() for img in explorer.locator(".widget-image").all()]


@pytest.mark.parametrize("notebook", sorted(EXPLORERS))
def test_explorer_runs_and_slider_changes_picture(lab, browser, notebook):
    base, token, workdir = lab
    budget = budget_ms(notebook)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(budget)
    workspace = notebook.split(".")[0]  # a workspace of its own: no tab restored from another test
    passed = False
    try:
        page.goto(f"{base}/lab/workspaces/{workspace}/tree/{notebook}?reset&token={token}")
        page.locator(".jp-Notebook").first.wait_for()
        page.get_by_text(re.compile(r"\| Idle$")).first.wait_for()  # status bar: kernel ready
        page.locator(".jp-Notebook .jp-Cell").first.click()
        _run_all_and_move_slider(page, notebook, budget)
        passed = True
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"{notebook}.png"))
        if not passed:
            shutil.copy(workdir / "lab.log", ARTIFACTS / f"{notebook}.lab.log")
        page.close()
        _shut_down_kernels(base, token)


def _run_all_and_move_slider(page, notebook: str, budget: int) -> None:
    _run_all(page)
    kind, label = EXPLORERS[notebook]
    if kind == "button":
        control = page.locator("button.widget-button", has_text=label).first
    else:
        control = page.locator(f".widget-{kind}", has=page.locator(
            ".widget-label", has_text=re.compile(f"^{label}$"))).first
    control.wait_for(state="attached")
    # Wait until every cell has run (no "[*]" prompt left).
    page.wait_for_function(
        "() => ![...document.querySelectorAll('.jp-InputPrompt')]"
        ".some(p => p.textContent.includes('*'))", timeout=budget)
    # The explorer is the nearest VBox around the control (a lesson may show two side by side).
    explorer = control.locator("xpath=ancestor::div[contains(@class, 'widget-vbox')][1]")
    control.scroll_into_view_if_needed()
    before = _pictures(page, explorer)
    if kind == "slider":
        control.locator(".noUi-handle").first.focus()
        for _ in range(3):
            page.keyboard.press("ArrowRight")
        readout = control.locator(".widget-readout").first
        page.wait_for_function("(el) => el.textContent.trim() === '3'",
                               arg=readout.element_handle())
    elif kind == "button":
        # The explorer shows its first picture already: change a setting, then press Run.
        menus = explorer.locator("select")
        if menus.count():
            menus.first.select_option(index=1)
        else:
            explorer.locator(".noUi-handle").first.focus()
            page.keyboard.press("ArrowRight")
        control.click()
    else:
        select = control.locator("select").first
        select.select_option(index=1)  # a user's pick: the browser fires the change event
        page.wait_for_function("(el) => el.selectedIndex === 1", arg=select.element_handle())
    deadline = time.time() + budget / 1000  # sliders answer in milliseconds, a Run in seconds
    after = _pictures(page, explorer)
    while after == before and time.time() < deadline:
        page.wait_for_timeout(250)
        after = _pictures(page, explorer)
    ARTIFACTS.mkdir(exist_ok=True)
    explorer.screenshot(path=str(ARTIFACTS / f"{notebook}.explorer.png"))
    assert before and len(before) == len(after)
    assert before != after, "moving the slider did not change the picture"
    text = page.locator(".jp-Notebook").inner_text()
    assert "Traceback" not in text and "could not draw" not in text
