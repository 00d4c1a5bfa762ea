"""Build the course as an offline static site: one HTML page per lesson plus an index.

    python -m tools.site                    # or: make site   -> site/index.html, site/NN_*.html
    python -m tools.site --teacher          # or: make site-teacher -> site-teacher/ (answers)
    python -m tools.site --out DIR notebooks/00_start_here.ipynb notebooks/01_feature_maps.ipynb

Pages are rendered from the outputs stored in the notebooks; nothing is executed.

Tool: nbconvert's HTML exporter (already installed with JupyterLab), lab template, with every
network reference switched off. Jupyter Book 2 was not used because it downloads its theme at
build time; Sphinx + myst-nb would add a stack of dependencies for what one exporter does. The
lab template by default loads require.js, MathJax and mermaid from cdnjs and the widget manager
from unpkg; here those blocks are empty, and instead:

* formulas (``$...$``, ``$$...$$`` in markdown) are converted to MathML at build time with
  ``latex2mathml`` (a small pure-Python package); browsers render MathML natively;
* explorer outputs are shown by the picture each stores beside its widget view (an HTML figure
  with its caption, or ``image/png`` in older notebooks);
  the live widget needs a kernel, so the widget view and the notebook's widget state are dropped;
* the Colab install cell is left out (a reader of the site runs nothing);
* by default it is the students' site: every solution becomes the exercise's stub, its outputs
  and the hidden tests are left out; ``--teacher`` (``make site-teacher``) writes the answer key
  to ``site-teacher/``, solutions shown, the nbgrader markers never;
* GIF animations (``image/gif``, which nbconvert does not render) become ``<img>`` tags;
* CSS and images are inlined (the lab theme CSS from the installed template, pictures as data
  URIs), and links to other lessons point to their pages.

So a page opens from disk (``file://``) or any static host with no request leaving the page.
"""

from __future__ import annotations

import argparse
import html
import re
import sys
import warnings
from pathlib import Path

import jinja2
import nbformat
from nbconvert import HTMLExporter

from tools import student
from tools.course import COLAB_MARK, ROOT, lesson_title, lessons, repository

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
EXPLORER_NOTE = ("<p class='explorer-note'><em>Interactive explorer: run the lesson in Jupyter to "
                 "move its sliders.</em></p>")

PAGE_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block html_head_css -%}<style>
nav.course { font: 14px/1.4 sans-serif; padding: 8px 16px; border-bottom: 1px solid #ddd; }
nav.course a { margin-right: 1.5em; }
math[display="block"] { margin: 0.8em 0; font-size: 1.15em; }
.explorer-note { color: #555; }
/* matplotlib's animation player names font-awesome icons; the site ships no icon font */
.fa { font-style: normal; font-family: sans-serif; }
.fa-play:before { content: "\\25B6"; } .fa-pause:before { content: "\\23F8"; }
.fa-step-forward:before { content: "\\23ED"; } .fa-step-backward:before { content: "\\23EE"; }
.fa-fast-forward:before { content: "\\23E9"; } .fa-fast-backward:before { content: "\\23EA"; }
.fa-plus:before { content: "+"; } .fa-minus:before { content: "\\2212"; }
.fa-repeat:before, .fa-retweet:before { content: "\\21BB"; }
</style>{%- endblock html_head_css -%}
{%- block body_header -%}{{ super() }}
<nav class="course">{{ resources.course_nav }}</nav>
{%- endblock body_header -%}
"""

INDEX_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<title>{title}</title>
<style>
body {{ font: 16px/1.5 system-ui, sans-serif; max-width: 60em; margin: 2em auto; padding: 0 1em;
       color: #222; }}
table {{ border-collapse: collapse; width: 100%; }}
td, th {{ text-align: left; padding: 0.4em 0.6em; border-bottom: 1px solid #ddd;
          vertical-align: top; }}
td.num {{ font-variant-numeric: tabular-nums; color: #666; }}
ul {{ margin: 0; padding-left: 1.2em; }}
nav a {{ margin-right: 1.2em; }}
</style></head>
<body>
<nav style="margin-bottom: 1em">{nav}</nav>
<h1>{title}</h1>
<p>Every lesson as it looks after running, with its stored pictures. To run the code, move the
sliders and do the exercises, open the notebooks in Jupyter (see the course README).</p>
<table>
<tr><th>#</th><th>lesson</th><th>what you will learn</th></tr>
{rows}
</table>
</body></html>
"""


def split_math(markdown: str, formulas: list[tuple[str, bool]]) -> str:
    """Replace each formula outside code by a token ``cnnvismath<k>x``; append ``(tex, display)``
    to ``formulas`` so that token k is ``formulas[k]``."""

    def token(tex: str, display: bool) -> str:
        formulas.append((tex.strip(), display))
        return f"cnnvismath{len(formulas) - 1}x"

    def replace(text: str) -> str:
        text = re.sub(r"\$\$(.+?)\$\$", lambda m: token(m.group(1), True), text, flags=re.DOTALL)
        return re.sub(r"(?<![\\$])\$(?=\S)([^$\n]+?)(?<=\S)\$(?!\d)",
                      lambda m: token(m.group(1), False), text)

    # Code blocks and code spans keep their dollars.
    parts = re.split(r"(```.*?```|~~~.*?~~~|`[^`\n]*`)", markdown, flags=re.DOTALL)
    return "".join(p if i % 2 else replace(p) for i, p in enumerate(parts))


def to_mathml(tex: str, display: bool) -> str:
    """MathML for ``tex``; if the converter cannot read it, the TeX itself in a code span."""
    from latex2mathml.converter import convert

    tex = re.sub(r"\\arg(?![a-zA-Z])", r"\\operatorname{arg}", tex)  # the converter lacks \arg
    try:
        return convert(tex, display="block" if display else "inline")
    except Exception as error:  # any parse failure: show the TeX instead
        warnings.warn(f"formula left as TeX ({error}): {tex}", stacklevel=2)
        return f"<code>{html.escape(tex)}</code>"


EXTERNAL = re.compile(r"<link\b[^>]*\bhref=[\"']?(?:https?:)?//[^>]*>"
                      r"|<script\b[^>]*\bsrc=[\"']?(?:https?:)?//[^>]*>\s*</script>", re.IGNORECASE)


def drop_external(page: str) -> tuple[str, int]:
    """Remove stylesheet links and scripts that a stored output would load from the network
    (e.g. matplotlib's animation player links font-awesome from a CDN). -> (page, how many)."""
    return EXTERNAL.subn("", page)


HIDDEN = re.compile(r"^[ \t]*### BEGIN HIDDEN TESTS.*?### END HIDDEN TESTS[^\n]*\n?", re.M | re.S)
MARKER = re.compile(r"^[ \t]*### (BEGIN|END) (SOLUTION|HIDDEN TESTS)[^\n]*\n?", re.M)
SOLUTION_NOTE = ("<p class='explorer-note'><em>Exercise: write your answer in the notebook.</em>"
                 "</p>")


def for_students(nb) -> object:
    """The students' page: each solution replaced by the students' stub and its outputs dropped
    (they would give the answer away), hidden tests removed, no nbgrader marker left."""
    for index, cell in enumerate(nb.cells):
        cell.source = HIDDEN.sub("", cell.source)
        if student.has_solution(cell):
            cell, _ = student.ClearSolutionsLite().preprocess_cell(cell, {}, index)
            if cell.cell_type == "code":
                cell.outputs = [nbformat.v4.new_output("display_data",
                                                       data={"text/html": SOLUTION_NOTE})]
    return nb


def for_teachers(nb) -> object:
    """The teacher's page: solutions and hidden tests shown, the marker lines left out."""
    for cell in nb.cells:
        cell.source = MARKER.sub("", cell.source)
    return nb


def prepare(nb, *, teacher: bool = False) -> tuple[object, list[tuple[str, bool]], int]:
    """Make a notebook renderable offline: solutions out (or, for ``teacher``, the markers out),
    formulas to tokens, widget views to their pictures, GIF animations to images.

    -> (notebook, formulas, number of explorers without a stored picture)."""
    formulas: list[tuple[str, bool]] = []
    missing = 0
    nb.cells = [c for c in nb.cells if not c.source.lstrip().startswith(COLAB_MARK)]  # Colab only
    nb = for_teachers(nb) if teacher else for_students(nb)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = split_math(cell.source, formulas)
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if WIDGET_VIEW in data:
                del data[WIDGET_VIEW]
                if not any(k.startswith("image/") for k in data) and \
                        "<img " not in "".join(data.get("text/html", "")):
                    missing += 1
                    data.clear()
                    data["text/html"] = EXPLORER_NOTE
            if "image/gif" in data:  # nbconvert has no GIF renderer: it would print the repr
                gif = "".join(data.pop("image/gif"))
                data.pop("text/plain", None)
                data["text/html"] = f'<img src="data:image/gif;base64,{gif}" alt="animation"/>'
    nb.metadata.pop("widgets", None)
    return nb, formulas, missing


def exporter() -> HTMLExporter:
    """nbconvert's lab HTML exporter with no network references (see the module docstring)."""
    loader = jinja2.DictLoader({"course_page.html.j2": PAGE_TEMPLATE})
    return HTMLExporter(template_name="lab", template_file="course_page.html.j2",
                        extra_loaders=[loader], embed_images=True, exclude_anchor_links=True)


def render_lesson(path: Path, names: list[str], nav: str, *, teacher: bool = False
                  ) -> tuple[str, int]:
    """One lesson page. -> (HTML, explorers without a stored picture)."""
    nb, formulas, missing = prepare(nbformat.read(path, as_version=4), teacher=teacher)
    page, _ = exporter().from_notebook_node(nb, resources={
        "metadata": {"name": f"{path.stem[:2]} · {lesson_title(nb)}", "path": str(path.parent)},
        "course_nav": nav})
    page = re.sub(r"cnnvismath(\d+)x", lambda m: to_mathml(*formulas[int(m.group(1))]), page)
    page, dropped = drop_external(page)
    if dropped:
        warnings.warn(f"{path.name}: dropped {dropped} network reference(s) in stored outputs",
                      stacklevel=2)
    for name in names:  # links between lessons go to their pages
        page = re.sub(rf'href="(?:\.\./notebooks/|\./)?{re.escape(name)}(#[^"]*)?"',
                      lambda m, n=name: f'href="{n[:-6]}.html{m.group(1) or ""}"', page)
    return page, missing


def first_bullets(nb) -> list[str]:
    """The "what you will learn" bullets of a lesson's first cell, as HTML (formulas as MathML)."""
    first = next((c.source for c in nb.cells if c.cell_type == "markdown"), "")
    bullets: list[str] = []
    for line in first.splitlines():
        if line.startswith("- "):
            bullets.append(line[2:].strip())
        elif bullets and line.startswith("  ") and line.strip():  # a bullet's continuation
            bullets[-1] += " " + line.strip()
        elif bullets and len(bullets) >= 3:
            break
    rendered = []
    for text in bullets[:3]:
        formulas: list[tuple[str, bool]] = []
        text = html.escape(re.sub(r"[*`]", "", split_math(text, formulas)))
        rendered.append(re.sub(r"cnnvismath(\d+)x",
                               lambda m, f=formulas: to_mathml(*f[int(m.group(1))]), text))
    return rendered


def build_site(paths: list[Path], out: Path, title: str = "Seeing inside convolutional networks",
               *, teacher: bool = False) -> dict[str, int]:
    """Write ``out/index.html`` and a page per lesson: the students' site (no solutions), or with
    ``teacher`` the answer key. -> {page: explorers without a picture}."""
    out.mkdir(parents=True, exist_ok=True)
    names = [p.name for p in paths]
    readme = f"{repository().url}#readme"
    nav = " ".join(['<a href="index.html">all lessons</a>'] +
                   [f'<a href="{n[:-6]}.html">{n[:2]}</a>' for n in names] +
                   [f'<a href="{readme}">course README (set-up, teachers)</a>'])
    rows, report = [], {}
    for path in paths:
        page, missing = render_lesson(path, names, nav, teacher=teacher)
        (out / f"{path.stem}.html").write_text(page, encoding="utf-8")
        report[f"{path.stem}.html"] = missing
        nb = nbformat.read(path, as_version=4)
        bullets = "".join(f"<li>{b}</li>" for b in first_bullets(nb))
        rows.append(f'<tr><td class="num">{path.name[:2]}</td><td><a href="{path.stem}.html">'
                    f"{html.escape(lesson_title(nb))}</a></td><td><ul>{bullets}</ul></td></tr>")
    if teacher:
        title += " (teacher's copy, with the answers)"
    index = INDEX_TEMPLATE.format(title=html.escape(title), rows="\n".join(rows), nav=nav)
    (out / "index.html").write_text(index, encoding="utf-8")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every lesson")
    parser.add_argument("--out", type=Path, default=None,
                        help="default: site/ (students), site-teacher/ (with --teacher)")
    parser.add_argument("--teacher", action="store_true",
                        help="the answer key: solutions and hidden tests shown")
    args = parser.parse_args(argv)
    out = args.out or ROOT / ("site-teacher" if args.teacher else "site")
    try:
        report = build_site(args.notebooks or lessons(), out, teacher=args.teacher)
    except ValueError as error:  # e.g. no usable [project.urls] Repository
        print(f"error: {error}", file=sys.stderr)
        return 2
    for page, missing in report.items():
        note = f" ({missing} explorer(s) without a stored picture)" if missing else ""
        print(f"wrote {out / page}{note}")
    print(f"open {out / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
