"""Classroom tooling (tools/): launch links and the Colab cell, student copies, the static site.

Every tool runs on copies in a temporary folder; nothing here writes into notebooks/.
The site's browser check needs Debian's chromium and playwright; without them it skips, unless
CNNVIS_REQUIRE_BROWSER=1, where it fails.
"""

from __future__ import annotations

import base64
import copy
import html
import os
import re
import shutil
import sys
import types
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import nbformat
import pytest
from conftest import CHROMIUM, browser_missing
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `tools` is run as `python -m tools.x` from the repository root

from tools import colab, course, links, site, student, times  # noqa: E402

REQUIRED = os.environ.get("CNNVIS_REQUIRE_BROWSER") == "1"
ARTIFACTS = ROOT / "tests" / "artifacts"
PLACEHOLDER = re.compile(r"\bOWNER\b|\bREPO\b|(?i:<owner>|<repo>|your[-_]?(org|username)\b)")
URL = re.compile(r"https?://[^\s)\"'<>\]]+")
PYTHON_KERNEL = {"name": "python3", "display_name": "Python 3", "language": "python"}


@pytest.fixture(scope="module")
def course_copy(tmp_path_factory) -> Path:
    """pyproject.toml, README.md, requirements.txt and the lessons, copied, with links written;
    the lessons as they were before, in ``teacher/``."""
    root = tmp_path_factory.mktemp("course")
    for name in ("pyproject.toml", "README.md", "requirements.txt"):
        shutil.copy(ROOT / name, root / name)
    (root / "notebooks").mkdir()
    for path in course.lessons():
        shutil.copy(path, root / "notebooks" / path.name)
    shutil.copytree(root / "notebooks", root / "teacher")
    links.write_links(root)
    return root


# --- launch links --------------------------------------------------------------------------------

def test_the_setting_is_a_github_repository():
    repo = course.repository()
    assert repo.url.startswith("https://github.com/") and repo.owner and repo.name
    text = (ROOT / "pyproject.toml").read_text()
    assert f'Repository = "{repo.url}"' in text


def test_lessons_are_discovered_by_glob():
    found = [p.name for p in course.lessons()]
    assert found and found == sorted(found)
    assert all(re.fullmatch(r"\d\d_\w+\.ipynb", name) for name in found)
    assert found[0].startswith("00_")


def check_launch_link(url: str, repo: course.Repository, root: Path, lesson: str | None) -> str:
    """Assert a Binder / Colab / nbgitpuller link agrees with the setting and names an existing
    lesson (the page's own lesson when ``lesson`` is given). -> the lesson it opens."""
    parsed = urlparse(url)
    query = parse_qs(parsed.query)
    if parsed.netloc == "mybinder.org":
        assert parsed.path == f"/v2/gh/{repo.owner}/{repo.name}/{course.BRANCH}", url
        target = query["urlpath"][0].removeprefix("lab/tree/")
    elif parsed.netloc == "colab.research.google.com":
        prefix = f"/github/{repo.owner}/{repo.name}/blob/{course.BRANCH}/"
        assert parsed.path.startswith(prefix), url
        target = parsed.path.removeprefix(prefix)
    else:  # nbgitpuller: the link generator or a hub's git-pull endpoint
        assert parsed.path.endswith(("/hub/user-redirect/git-pull", "/link.html")), url
        assert query["repo"] == [repo.url] and query["branch"] == [course.BRANCH], url
        target = query["urlpath"][0].removeprefix(f"lab/tree/{repo.name}/")
    assert target.startswith("notebooks/") and (root / target).is_file(), (url, target)
    if lesson:
        assert target == f"notebooks/{lesson}", (url, lesson)
    return target


def launch_urls(text: str) -> list[str]:
    return [u for u in URL.findall(text)
            if urlparse(u).netloc in ("mybinder.org", "colab.research.google.com")
            or "git-pull?" in u or "nbgitpuller" in urlparse(u).netloc]


def test_links_written_to_readme_and_every_lesson(course_copy):
    repo = course.repository(course_copy)
    readme = (course_copy / "README.md").read_text()
    opened = [check_launch_link(u, repo, course_copy, None) for u in launch_urls(readme)]
    expected = [f"notebooks/{p.name}" for p in course.lessons(course_copy)]
    assert sorted(set(opened)) == expected and len(opened) == 3 * len(expected)
    for path in course.lessons(course_copy):
        nb = nbformat.read(path, as_version=4)
        first_md = next(c for c in nb.cells if c.cell_type == "markdown")
        assert first_md.source.count(links.START) == 1 and first_md.source.startswith("# ")
        urls = launch_urls(first_md.source)
        assert len(urls) == 3
        for url in urls:
            check_launch_link(url, repo, course_copy, path.name)
        nbformat.validate(nb)


def without_launch_parts(nb) -> list:
    """The cells with the Colab cell removed and the launch block cut out of the first cell."""
    cells = [copy.deepcopy(c) for c in nb.cells if not c.source.startswith(course.COLAB_MARK)]
    cells[0].source = re.sub(links.BLOCK.pattern + r"\n\n", "", cells[0].source, flags=re.S)
    return cells


def test_links_are_idempotent_and_touch_only_their_cells(course_copy):
    assert links.write_links(course_copy) == []
    assert links.write_links(course_copy, check=True) == []
    for path in course.lessons(course_copy):
        teacher = nbformat.read(course_copy / "teacher" / path.name, as_version=4)
        written = nbformat.read(path, as_version=4)
        assert without_launch_parts(written) == without_launch_parts(teacher), path.name


def test_a_hub_address_is_used_and_remembered(tmp_path, course_copy):
    root = tmp_path / "c"
    shutil.copytree(course_copy, root)
    hub = "https://jupyterhub.example.org"
    changed = links.write_links(root, hub=hub)
    assert set(changed) == {root / "README.md", *course.lessons(root)}
    readme = (root / "README.md").read_text()
    hub_links = [u for u in launch_urls(readme) if u.startswith(hub)]
    assert len(hub_links) == len(course.lessons(root))
    for url in hub_links:
        check_launch_link(url, course.repository(root), root, None)
    assert links.write_links(root) == []  # remembered
    links.write_links(root, hub="none")
    for path in [root / "README.md", *course.lessons(root)]:
        assert path.read_text() == (course_copy / path.relative_to(root)).read_text()


def test_a_link_that_disagrees_with_the_setting_is_caught(course_copy):
    repo = course.repository(course_copy)
    good = links.binder_url(repo, "00_start_here.ipynb")
    check_launch_link(good, repo, course_copy, "00_start_here.ipynb")
    for bad in (good.replace(repo.owner, "someone-else"),
                good.replace("00_start_here", "00_no_such_lesson"),
                links.colab_url(course.Repository("x", "y"), "00_start_here.ipynb")):
        with pytest.raises(AssertionError):
            check_launch_link(bad, repo, course_copy, None)


def test_repository_files_have_no_placeholders_and_only_agreeing_links():
    """README, TEACHING, pyproject and every lesson as they are in the repository now."""
    repo = course.repository()
    files = [ROOT / "README.md", ROOT / "TEACHING.md", ROOT / "pyproject.toml",
             *course.lessons()]
    for path in files:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".ipynb":
            text = "\n".join(c.source for c in nbformat.reads(text, as_version=4).cells)
        assert not PLACEHOLDER.search(text), (path.name, PLACEHOLDER.search(text).group(0))
        for url in launch_urls(text):
            check_launch_link(url, repo, ROOT, None)


def test_repository_launch_links_are_current():
    """Fails until `make links` has been run after a lesson was added or the setting changed."""
    stale = links.write_links(ROOT, check=True)
    assert not stale, f"run `make links`: stale launch links or Colab cell in {stale}"


def test_quoted_times_and_memory_are_the_measured_ones():
    """README, TEACHING.md and every lesson header quote benchmarks/RESULTS.md (`make times`)."""
    stale = times.write_times(ROOT, check=True)
    assert not stale, f"run `make times`: {[str(p.relative_to(ROOT)) for p in stale]}"
    results = times.read_results(ROOT)
    for path in course.lessons(ROOT):
        first = nbformat.read(path, as_version=4).cells[0].source
        assert times.run_time(path.name[:2], results) in first, path.name


# --- the Colab cell ------------------------------------------------------------------------------

class RecordingShell:
    """Stands in for IPython: records ``!`` commands and ``%`` magics instead of running them."""

    def __init__(self):
        self.calls: list[tuple[str, str]] = []

    def system(self, command):
        self.calls.append(("!", command))

    def run_line_magic(self, name, line):
        self.calls.append((name, line))


def run_colab_cell(source: str, on_colab: bool) -> list[tuple[str, str]]:
    from IPython.core.inputtransformer2 import TransformerManager

    code = TransformerManager().transform_cell(source)
    shell = RecordingShell()
    saved_path, saved_module = list(sys.path), sys.modules.get("google.colab")
    if on_colab:
        sys.modules["google.colab"] = types.ModuleType("google.colab")
    try:
        exec(compile(code, "<colab cell>", "exec"), {"get_ipython": lambda: shell})
    finally:
        sys.path[:] = saved_path
        if saved_module is None:
            sys.modules.pop("google.colab", None)
    return shell.calls


def test_colab_cell_does_nothing_here():
    assert "google.colab" not in sys.modules
    source = links.colab_cell_source(course.repository())
    assert "'google.colab' in sys.modules" in source.replace('"', "'")
    assert run_colab_cell(source, on_colab=False) == []
    assert not Path("/content/course").exists()


def test_colab_cell_on_colab_clones_and_keeps_torch(tmp_path):
    repo = course.repository()
    calls = run_colab_cell(links.colab_cell_source(repo), on_colab=True)
    commands = [line for kind, line in calls if kind == "!"]
    assert any(f"git clone -q --depth 1 {repo.url} /content/course" in c for c in commands)
    assert "python /content/course/tools/colab.py" in commands
    # What tools/colab.py installs, computed on this repository's requirements.txt:
    kept = {re.split(r"[<>=!~ ;\[]", line)[0]
            for line in colab.colab_requirements(ROOT / "requirements.txt")}
    assert kept.isdisjoint(colab.KEEP) and {"timm", "numpy", "matplotlib", "ipywidgets"} <= kept
    requirements, constraints = tmp_path / "req.txt", tmp_path / "keep.txt"
    pips = colab.commands(Path("/content/course"), constraints, requirements)
    assert pips[0][-4:] == ["-r", str(requirements), "-c", str(constraints)]
    assert pips[1][-3:] == ["--no-deps", "-e", "/content/course"]
    assert not any(re.search(r"\btorch(vision)?\b", " ".join(p)) for p in pips)
    assert len(links.colab_cell_source(repo).splitlines()) <= 8  # was 12: opens on its title


def test_colab_cell_is_the_first_code_cell_once(course_copy):
    for path in course.lessons(course_copy):
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code[0].source == links.colab_cell_source(course.repository(course_copy))
        assert sum(c.source.startswith(course.COLAB_MARK) for c in code) == 1


# --- student copies ------------------------------------------------------------------------------

def exercise_notebook():
    return new_notebook(metadata={"kernelspec": PYTHON_KERNEL, "widgets": {"state": {}}}, cells=[
        new_markdown_cell("# 99 · An exercise"),
        new_code_cell("x = 2", execution_count=1,
                      outputs=[new_output("stream", name="stdout", text="2\n")]),
        new_markdown_cell("**Predict** first.\n\n### BEGIN SOLUTION\nIt doubles.\n"
                          "### END SOLUTION\n\nThen run the cell."),
        new_code_cell("def double(v):\n    ### BEGIN SOLUTION\n    return 2 * v\n"
                      "    ### END SOLUTION\n\n\nprint(double(x))",
                      metadata={"jupyter": {"source_hidden": True}, "tags": ["exercise"]}),
    ])


def test_student_copy_stubs_solutions_and_clears_outputs():
    nb = student.student_copy(exercise_notebook())
    nbformat.validate(nb)
    assert nb.cells[2].source == "**Predict** first.\n\nYOUR ANSWER HERE\n\nThen run the cell."
    assert nb.cells[3].source == ("def double(v):\n    # YOUR CODE HERE\n"
                                  "    raise NotImplementedError()\n\n\nprint(double(x))")
    assert nb.cells[3].metadata == {"tags": ["exercise"]}  # the stub is visible
    assert nb.cells[1].outputs == [] and nb.cells[1].execution_count is None
    assert "widgets" not in nb.metadata


def test_student_copy_drops_the_hidden_tests_and_keeps_the_grading_metadata():
    meta = {"nbgrader": {"grade": True, "grade_id": "1.1-tests", "points": 2, "locked": True,
                         "solution": False, "schema_version": 3}}
    nb = new_notebook(metadata={"kernelspec": PYTHON_KERNEL}, cells=[new_code_cell(
        "visible = 1\n### BEGIN HIDDEN TESTS\nsecret = 2\n### END HIDDEN TESTS\nshown = 3",
        metadata=meta)])
    copy = student.student_copy(nb)
    assert copy.cells[0].source == "visible = 1\nshown = 3"
    assert copy.cells[0].metadata["nbgrader"] == meta["nbgrader"]  # the grader matches by it


@pytest.mark.parametrize("source", ["### BEGIN SOLUTION\nx = 1",
                                    "### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION"])
def test_a_broken_solution_region_is_an_error(source):
    nb = new_notebook(metadata={"kernelspec": PYTHON_KERNEL}, cells=[new_code_cell(source)])
    with pytest.raises(RuntimeError, match="(?i)solution"):
        student.student_copy(nb)


def test_same_result_as_nbgrader_clear_solutions():
    """Peer oracle: nbgrader's own ClearSolutions, where nbgrader can be imported."""
    preprocessors = pytest.importorskip("nbgrader.preprocessors")
    ours, _ = student.ClearSolutionsLite().preprocess(exercise_notebook(), {})
    theirs, _ = preprocessors.ClearSolutions(enforce_metadata=False).preprocess(
        exercise_notebook(), {})
    assert [c.source for c in ours.cells] == [c.source for c in theirs.cells]


def test_same_result_as_nbgrader_clear_hidden_tests():
    """Peer oracle: nbgrader's ClearHiddenTests on the lessons' own hidden-test cells."""
    preprocessors = pytest.importorskip("nbgrader.preprocessors")
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        ours, _ = student.ClearHiddenTestsLite().preprocess(nbformat.read(path, as_version=4), {})
        theirs, _ = preprocessors.ClearHiddenTests(enforce_metadata=False).preprocess(
            nbformat.read(path, as_version=4), {})
        assert [c.source for c in ours.cells] == [c.source for c in theirs.cells], path.name


# --- the static site -----------------------------------------------------------------------------

class ResourceTags(HTMLParser):
    """Collects what a page would load: src/href of script, link, img, iframe, media tags, and
    the text of inline scripts."""

    LOADING = {"script", "link", "img", "iframe", "source", "video", "audio", "embed", "object"}

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        if tag in self.LOADING:
            self.urls += [v for k, v in attrs if k in ("src", "href", "data", "srcset") and v]
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts.append(data)


def external_loads(page: str) -> list[str]:
    parser = ResourceTags()
    parser.feed(page)
    bad = [u for u in parser.urls if re.match(r"(https?:)?//", u.strip(), re.IGNORECASE)]
    bad += [m.group(0) for s in parser.scripts
            for m in re.finditer(r"(import|src|href|url|fetch)\W{0,4}(https?:)?//[^\s'\"]+", s)]
    return bad


def explorer_notebook():
    nb = exercise_notebook()
    png = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQ"
           "AAAABJRU5ErkJggg==")
    nb.cells[1].outputs = [new_output("display_data", data={
        "application/vnd.jupyter.widget-view+json": {"model_id": "abc", "version_major": 2,
                                                     "version_minor": 0},
        "image/png": png, "text/plain": "FeatureMapExplorer(...)"})]
    nb.cells.append(new_code_cell("animation", outputs=[new_output(
        "execute_result", execution_count=3, data={"text/html": (
            '<link href="https://maxcdn.bootstrapcdn.com/font-awesome/4.4.0/css/'
            'font-awesome.min.css" rel="stylesheet"/><button><i class="fa fa-play"></i>'
            "</button>")})]))
    nb.cells.append(new_markdown_cell(
        "The score $S_c(I)$ and $$I^* = \\arg\\max_I S_c(I)$$ but `$HOME` stays code. "
        "Next: [lesson 01](01_feature_maps.ipynb)."))
    return nb


def test_site_page_shows_explorer_picture_math_and_nothing_external(tmp_path):
    path = tmp_path / "99_explorer.ipynb"
    nbformat.write(explorer_notebook(), path)
    (tmp_path / "01_feature_maps.ipynb").write_bytes(path.read_bytes())
    with pytest.warns(UserWarning, match="network reference"):
        site.build_site([path, tmp_path / "01_feature_maps.ipynb"], tmp_path / "site")
    page = (tmp_path / "site" / "99_explorer.html").read_text()
    assert re.search(r'<img [^>]*src="data:image/png;base64,iVBOR', page)
    assert "FeatureMapExplorer(...)" not in page and "widget-view" not in page
    assert page.count("<math") == 2 and "$S_c" not in page and "<code>$HOME</code>" in page
    assert 'href="01_feature_maps.html"' in page
    assert external_loads(page) == []


def test_students_site_hides_the_answers_and_the_teachers_shows_them(tmp_path):
    nb = exercise_notebook()
    nb.cells[3].source += "\n### BEGIN HIDDEN TESTS\nassert double(3) == 6\n### END HIDDEN TESTS"
    nb.cells[3].outputs = [new_output("stream", name="stdout", text="the answer: 4\n")]
    gif = base64.b64encode(b"GIF89a").decode()
    nb.cells[1].outputs = [new_output("display_data", data={
        "image/gif": gif, "text/plain": "<IPython.core.display.Image object>"})]
    path = tmp_path / "99_exercise.ipynb"
    nbformat.write(nb, path)
    site.build_site([path], tmp_path / "students")
    site.build_site([path], tmp_path / "teacher", teacher=True)
    students, teacher = (html.unescape(re.sub(r"<(?!img)[^>]+>", "", (
        tmp_path / which / "99_exercise.html").read_text())) for which in ("students", "teacher"))
    for page in (students, teacher):
        assert "BEGIN SOLUTION" not in page and "END SOLUTION" not in page
        assert "HIDDEN TESTS" not in page and "IPython.core.display.Image" not in page
        assert f'src="data:image/gif;base64,{gif}"' in page
    assert "return 2 * v" not in students and "It doubles" not in students
    assert "the answer: 4" not in students and "double(3)" not in students
    assert "YOUR CODE HERE" in students
    assert "return 2 * v" in teacher and "It doubles" in teacher and "double(3)" in teacher
    index = (tmp_path / "students" / "index.html").read_text()
    assert "#readme" in index and 'href="99_exercise.html"' in index


def test_site_from_two_lessons_loads_nothing_from_the_network(course_copy, tmp_path):
    paths = sorted((course_copy / "notebooks").glob("0[01]_*.ipynb"))
    report = site.build_site(paths, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["index.html", *(f"{p.stem}.html" for p in paths)])
    for page in tmp_path.iterdir():
        assert external_loads(page.read_text()) == [], page.name
    index = (tmp_path / "index.html").read_text()
    assert all(f'href="{p.stem}.html"' in index for p in paths)
    lesson = (tmp_path / f"{paths[1].stem}.html").read_text()
    assert "<img" in lesson and "<title>01 · " in lesson
    assert report  # pages written; explorers without a stored picture are reported, not hidden


def test_every_explorer_in_the_lessons_stores_a_picture(course_copy, tmp_path):
    """The site can only show an explorer's stored picture if the lesson stored one."""
    missing = {}
    for path in course.lessons(course_copy):
        _, _, count = site.prepare(nbformat.read(path, as_version=4))
        if count:
            missing[path.name] = count
    assert not missing, f"explorer outputs without a stored picture (re-execute): {missing}"


@pytest.mark.browser
def test_site_in_chromium_makes_no_network_request(course_copy, tmp_path):
    reason = browser_missing()
    if reason:
        if REQUIRED:
            pytest.fail(f"browser test required (CNNVIS_REQUIRE_BROWSER=1) but {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    paths = sorted((course_copy / "notebooks").glob("0[01]_*.ipynb"))
    site.build_site(paths, tmp_path)
    requested, blocked = [], []

    def route(r):
        url = r.request.url
        requested.append(url)
        host = urlparse(url).hostname or ""
        if url.startswith(("file:", "data:")) or host in ("localhost", "127.0.0.1"):
            r.continue_()
        else:
            blocked.append(url)
            r.abort()

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.route("**/*", route)
            page.goto((tmp_path / "index.html").as_uri())
            page.screenshot(path=str(ARTIFACTS / "site-index.png"), full_page=True)
            page.click(f'a[href="{paths[1].stem}.html"]')
            page.wait_for_load_state("load")
            assert page.url.endswith(f"{paths[1].stem}.html")
            images = page.eval_on_selector_all(
                "img", "els => els.map(e => e.complete && e.naturalWidth > 0)")
            assert images and all(images), "a stored picture did not load"
            page.screenshot(path=str(ARTIFACTS / "site-lesson.png"))
        finally:
            browser.close()
    assert blocked == [], f"the site asked the network for {blocked}"
    assert requested  # the route saw the pages themselves
