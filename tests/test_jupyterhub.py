"""A student's path through a real JupyterHub: log in, follow a lesson's nbgitpuller link, run the
lesson's first cells, edit and save, then follow the link again after the teacher pushed a commit.

Real parts, all on 127.0.0.1: JupyterHub with its DummyAuthenticator and SimpleLocalProcessSpawner
(each student's home in a temporary folder, the hub's database and cookie secret too), its
configurable-http-proxy from npm (`make hub-proxy` installs it into .venv/node), nbgitpuller on the
single-user server, which is this environment's jupyterhub-singleuser and JupyterLab, and Debian's
Chromium driven by Playwright. Requests from the page to any other host are refused and reported.

The course repository is a git repository made in a temporary folder from the working tree as it is
on disk (tracked files and the untracked ones git does not ignore), so uncommitted work is what is
tested; it is served as a ``file://`` URL, and the link is built by ``tools.links.hub_url``.

Every wait is bounded. The hub, the proxy, the single-user server and its kernel are stopped at
the end, also on failure: the hub is asked to stop (it stops the servers and the proxy), then every
process carrying this run's marker in its environment is killed. On failure the screenshot, the
page's text and the hub's log are kept in tests/artifacts/.

Without the parts (chromium, playwright, jupyterhub, nbgitpuller, configurable-http-proxy, git) the
test skips with the reason, unless CNNVIS_REQUIRE_BROWSER=1 (set by .ci/run), where it fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import nbformat
import pytest
from conftest import browser_missing

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `tools` is run as `python -m tools.x` from the repository root

from tools import course, links  # noqa: E402

ARTIFACTS = ROOT / "tests" / "artifacts"
REQUIRED = os.environ.get("CNNVIS_REQUIRE_BROWSER") == "1"
BIN = Path(sys.executable).parent
SINGLEUSER = BIN / "jupyterhub-singleuser"


def _proxy() -> Path:
    """configurable-http-proxy: $CNNVIS_CHP, else where `make hub-proxy` puts it (npm install
    --prefix $(VENV)/node), else on PATH (conda-forge's jupyterhub brings one)."""
    if os.environ.get("CNNVIS_CHP"):
        return Path(os.environ["CNNVIS_CHP"])
    beside = Path(sys.prefix) / "node" / "node_modules" / ".bin" / "configurable-http-proxy"
    on_path = shutil.which("configurable-http-proxy")
    return Path(on_path) if on_path and not beside.exists() else beside


PROXY = _proxy()

LESSON = "00_start_here.ipynb"
EDITED_CELL = "c05"  # the fourth code cell: loads the model and prints its size
KNOWN_OUTPUT = "efficientnet_lite0: 4.7 M parameters, input 224x224, 1000 classes"
UPSTREAM_LESSON = "01_feature_maps.ipynb"  # the teacher's commit between the two pulls
STUDENT, PASSWORD = "student", "any password"  # DummyAuthenticator accepts any password
MARKER = "CNNVIS_HUB_TEST"  # in the environment of every process this test starts

pytestmark = [pytest.mark.browser, pytest.mark.slow]

START_S = 60  # the hub answering; a single-user server started and ready
PAGE_S = 120  # one page step: the pull and JupyterLab loading, a cell's output, a save


@dataclass(frozen=True)
class LocalRepository:
    """What ``tools.links.hub_url`` reads from a ``tools.course.Repository``, for a local URL."""

    url: str
    name: str


def parts_missing() -> str | None:
    """Why the hub test cannot run here, or None."""
    reason = browser_missing()
    if reason:
        return reason
    for module in ("jupyterhub", "nbgitpuller", "psutil"):
        try:
            __import__(module)
        except ImportError:
            return f"the {module} package is not installed (requirements-dev.txt)"
    if not SINGLEUSER.exists():
        return f"{SINGLEUSER} not found (pip install jupyterhub)"
    if not PROXY.exists():
        return f"{PROXY} not found (make hub-proxy: configurable-http-proxy from npm)"
    if not shutil.which("node"):
        return "node not found (configurable-http-proxy runs on Node.js)"
    if not shutil.which("git"):
        return "git not found (nbgitpuller runs git)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def git(*args: str, cwd: Path) -> str:
    identity = ["-c", "user.name=Teacher", "-c", "user.email=teacher@127.0.0.1",
                "-c", "commit.gpgsign=false", "-c", "init.defaultBranch=main"]
    return subprocess.run(["git", *identity, *args], cwd=cwd, check=True, capture_output=True,
                          text=True, timeout=60).stdout.strip()


@pytest.fixture(scope="module")
def upstream(tmp_path_factory) -> Path:
    """The course as a git repository on branch ``main`` in a temporary folder: the working tree's
    tracked and untracked-but-not-ignored files, committed. Named like the real repository, so
    nbgitpuller clones it into a folder of the same name as it would from GitHub."""
    reason = parts_missing()
    if reason:
        if REQUIRED:
            pytest.fail(f"JupyterHub test required (CNNVIS_REQUIRE_BROWSER=1) but {reason}")
        pytest.skip(reason)
    repo = tmp_path_factory.mktemp("upstream") / course.repository().name
    repo.mkdir()
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, check=True, capture_output=True, timeout=60).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = ROOT / name
        if source.is_file():  # a tracked file deleted in the working tree stays out
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, repo / name)
    git("init", "-q", "-b", "main", cwd=repo)
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "the course as it is in the working tree", cwd=repo)
    return repo


def _marked_processes(token: str) -> list:
    import psutil

    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get(MARKER) == token:
                found.append(process)
        except (psutil.Error, OSError):
            pass
    return found


def _stop(hub: subprocess.Popen, token: str) -> list[str]:
    """Stop the hub (it stops the single-user servers and the proxy), then kill whatever still
    carries the marker. -> what had to be killed."""
    import psutil

    if hub.poll() is None:
        hub.send_signal(signal.SIGTERM)
        try:
            hub.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(hub.pid, signal.SIGKILL)
            hub.wait(timeout=10)
    left, killed = _marked_processes(token), []
    for process in left:
        try:
            killed.append(" ".join(process.cmdline()))
            process.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(left, timeout=10)
    return killed


@pytest.fixture(scope="module")
def hub(tmp_path_factory, upstream):
    """A JupyterHub on 127.0.0.1 with its proxy; yields (public URL, homes folder, log path)."""
    work = tmp_path_factory.mktemp("hub")
    homes, lab_settings = work / "homes", work / "lab-settings"
    homes.mkdir()
    # Render every cell (JupyterLab 4 windowing detaches off-screen cells) and skip news pop-ups.
    for extension, plugin, text in [("notebook-extension", "tracker", '{"windowingMode": "none"}'),
                                    ("apputils-extension", "notification",
                                     '{"fetchNews": "false"}')]:
        path = lab_settings / "@jupyterlab" / extension / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    port, hub_port, api_port = free_port(), free_port(), free_port()
    token = uuid.uuid4().hex
    settings = {
        "JupyterHub.ip": "127.0.0.1", "JupyterHub.port": port,
        "JupyterHub.hub_ip": "127.0.0.1", "JupyterHub.hub_port": hub_port,
        "JupyterHub.db_url": f"sqlite:///{work / 'jupyterhub.sqlite'}",
        "JupyterHub.cookie_secret_file": str(work / "jupyterhub_cookie_secret"),
        "JupyterHub.pid_file": str(work / "jupyterhub.pid"),
        "JupyterHub.cleanup_servers": True,
        "JupyterHub.authenticator_class": "dummy",
        "JupyterHub.spawner_class": "simple",
        "ConfigurableHTTPProxy.command": [str(PROXY)],
        "ConfigurableHTTPProxy.api_url": f"http://127.0.0.1:{api_port}",
        "ConfigurableHTTPProxy.pid_file": str(work / "proxy.pid"),
        "SimpleLocalProcessSpawner.home_dir_template": str(homes / "{username}"),
        "Spawner.cmd": [str(SINGLEUSER)],
        "Spawner.args": ["--ServerApp.allow_root=True",
                         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        "Spawner.default_url": "/lab",
        "Spawner.environment": {MARKER: token, "JUPYTERLAB_SETTINGS_DIR": str(lab_settings),
                                "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")},
        "Spawner.start_timeout": START_S,
        "Spawner.http_timeout": START_S,
    }
    config = work / "jupyterhub_config.py"
    config.write_text("c = get_config()  # noqa\n"
                      + "".join(f"c.{key} = {value!r}\n" for key, value in settings.items()))
    log = work / "jupyterhub.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "jupyterhub", "-f", str(config)], cwd=work,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(log, "w"),
        env={**os.environ, MARKER: token}, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + START_S
        while True:
            try:
                with urllib.request.urlopen(f"{base}/hub/api/", timeout=2) as response:
                    assert "version" in json.loads(response.read())
                break
            except OSError:
                if process.poll() is not None or time.time() > deadline:
                    pytest.fail("JupyterHub did not start: " + log.read_text()[-3000:])
                time.sleep(0.5)
        yield base, homes, log
    finally:
        killed = _stop(process, token)
        assert not _marked_processes(token), "processes of the hub test are still running"
        if killed:
            print("killed after the hub stopped:", *killed, sep="\n  ")


def _cell(page, source: str):
    """The code cell whose first line is ``source``'s (cell ids are not in JupyterLab's DOM)."""
    first_line = source.split("\n")[0]
    return page.locator(".jp-Notebook .jp-CodeCell").filter(
        has=page.locator(".jp-InputArea .cm-line", has_text=first_line)).first


def _open_by_link(page, link: str, lesson_title: str) -> None:
    """Follow the nbgitpuller link (logging in when asked; the hub then starts the server) until
    the lesson is open in JupyterLab with an idle kernel."""
    page.goto(link)
    if "/hub/login" in page.url:
        page.fill("#username_input", STUDENT)
        page.fill("#password_input", PASSWORD)
        with page.expect_navigation(timeout=PAGE_S * 1000):
            page.click("#login_submit")
    page.locator(".jp-Notebook").first.wait_for(timeout=PAGE_S * 1000)
    page.get_by_text(re.compile(r"\| Idle$")).first.wait_for(timeout=PAGE_S * 1000)
    page.locator(".jp-Notebook h1", has_text=lesson_title).first.wait_for()


def _saved_lesson(page, path: Path, text: str, timeout_s: float = PAGE_S) -> nbformat.NotebookNode:
    """The lesson as saved on disk, once it holds ``text``. Waits through the page, so that
    Playwright keeps serving the page's requests (the route above) meanwhile."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if path.exists() and text in path.read_text(encoding="utf-8"):
            return nbformat.read(path, as_version=4)
        page.wait_for_timeout(500)
    raise AssertionError(f"{path} was not saved with {text!r} within {timeout_s} s")


def test_student_pulls_runs_edits_and_pulls_again(hub, browser, upstream):
    base, homes, log = hub
    repo = LocalRepository(url=upstream.as_uri(), name=upstream.name)
    link = links.hub_url(repo, LESSON, hub=base)
    assert link.startswith(f"{base}/hub/user-redirect/git-pull?")
    nb = nbformat.read(upstream / "notebooks" / LESSON, as_version=4)
    title = course.lesson_title(nb).split(":")[0]
    source = next(c.source for c in nb.cells if c.get("id") == EDITED_CELL)
    clone = homes / STUDENT / upstream.name
    lesson_path = clone / "notebooks" / LESSON
    mark = uuid.uuid4().hex[:8]
    edit = f'print("my note: {mark}")'

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(PAGE_S * 1000)
    foreign = []

    def local_only(route):  # the whole test talks to 127.0.0.1 and nothing else
        host = urlparse(route.request.url).hostname
        if route.request.url.startswith(("data:", "blob:")) or host == "127.0.0.1":
            route.continue_()
        else:
            foreign.append(route.request.url)
            route.abort()

    page.route("**/*", local_only)
    passed = False
    try:
        # First pull: log in, the server starts, nbgitpuller clones the course, the lesson opens.
        _open_by_link(page, link, title)
        assert git("rev-parse", "HEAD", cwd=clone) == git("rev-parse", "HEAD", cwd=upstream)

        # Edit a code cell: append a line at the end of its source.
        cell = _cell(page, source)
        cell.locator(".cm-content").click()
        page.keyboard.press("Control+End")
        page.keyboard.insert_text("\n" + edit)
        page.keyboard.press("Escape")  # command mode, this cell selected
        page.keyboard.press("j")  # the next cell: run everything above it
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-itemLabel",
                     has_text=re.compile(r"^Run All Above Selected Cell$")).click()
        # The edited cell ran after the cells above it (imports, parameters): its output has the
        # known text and the new line, and no cell shows an error.
        output = cell.locator(".jp-OutputArea-output", has_text=f"my note: {mark}")
        output.wait_for()
        errors = page.locator(".jp-OutputArea-output", has_text=re.compile("Traceback|Error:"))
        assert errors.count() == 0, errors.first.inner_text()
        assert KNOWN_OUTPUT in output.inner_text()
        page.keyboard.press("Control+s")
        saved = _saved_lesson(page, lesson_path, mark)
        saved_cell = next(c for c in saved.cells if c.get("id") == EDITED_CELL)
        assert saved_cell.source.endswith("\n" + edit)
        assert any(mark in o.get("text", "") for o in saved_cell.outputs)

        # The teacher commits a change to another lesson.
        other = upstream / "notebooks" / UPSTREAM_LESSON
        teacher_nb = nbformat.read(other, as_version=4)
        teacher_nb.cells.append(nbformat.v4.new_markdown_cell(f"A note from the teacher: {mark}"))
        nbformat.write(teacher_nb, other)
        git("commit", "-q", "-am", "a note for lesson 01", cwd=upstream)

        # Second pull: the teacher's commit arrives and the student's edit stays.
        _open_by_link(page, link, title)
        edited = _cell(page, source)
        edited.locator(".cm-line", has_text=edit).wait_for()
        history = git("rev-list", "HEAD", cwd=clone).split()
        assert git("rev-parse", "HEAD", cwd=upstream) in history
        assert f"A note from the teacher: {mark}" in (clone / "notebooks" / UPSTREAM_LESSON
                                                      ).read_text(encoding="utf-8")
        kept = next(c for c in nbformat.read(lesson_path, as_version=4).cells
                    if c.get("id") == EDITED_CELL)
        assert kept.source.endswith("\n" + edit)
        assert not foreign, f"requests to hosts other than 127.0.0.1: {foreign}"
        passed = True
    finally:
        if not passed:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "jupyterhub.png"))
            (ARTIFACTS / "jupyterhub.page.txt").write_text(
                page.url + "\n\n" + page.locator("body").inner_text(timeout=5000))
            shutil.copy(log, ARTIFACTS / "jupyterhub.log")
        page.close()
