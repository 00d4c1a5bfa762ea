"""The set-up files agree with each other, and Binder's configuration is valid."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from packaging.specifiers import SpecifierSet

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
CONDA_TO_PIP = {"pytorch-cpu": "torch"}


def pip_requirements(name: str) -> dict[str, str]:
    found = {}
    for line in (ROOT / name).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("-r "):
            found.update(pip_requirements(line[3:].strip()))
        elif line:
            package, spec = re.match(r"([A-Za-z0-9_.\-]+)(.*)", line).groups()
            found[package.lower()] = spec.strip()
    return found


def conda_requirements(name: str) -> dict[str, str]:
    found = {}
    for line in (ROOT / name).read_text().splitlines():
        match = re.match(r"\s*-\s+([A-Za-z0-9_.\-]+)((?:[<>=!]=?)[^\s#]*)?\s*(#.*)?$", line)
        if match and match.group(1) not in ("python", "pip", "conda-forge"):
            package = match.group(1).lower()
            found[CONDA_TO_PIP.get(package, package)] = (match.group(2) or "").strip()
    return found


def test_environment_yml_lists_runtime_and_dev_requirements():
    assert conda_requirements("environment.yml") == pip_requirements("requirements-dev.txt")


def test_the_package_declares_what_helpers_imports():
    """A wheel (pip install . or git+...) pulls in torch, timm, ...: the package's dependencies
    are requirements.txt's, at the same ranges, less the notebook front end."""
    declared = {}
    for item in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        package, spec = re.match(r"([A-Za-z0-9_.\-]+)(.*)", item).groups()
        declared[package.lower()] = spec.strip()
    runtime = pip_requirements("requirements.txt")
    assert declared == {k: v for k, v in runtime.items() if k not in ("jupyterlab", "ipykernel")}


def test_binder_environment_pins_the_runtime_requirements():
    """Binder builds what was tested: the same packages as requirements.txt, each PyPI package at
    one exact version inside requirements.txt's range, PyTorch bounded above."""
    binder, ranges = conda_requirements("binder/environment.yml"), pip_requirements(
        "requirements.txt")
    assert binder.keys() == ranges.keys()
    for package, spec in binder.items():
        wanted = SpecifierSet(ranges[package])
        if spec.startswith("=="):
            assert spec[2:] in wanted, f"{package}{spec} is outside {wanted}"
        else:
            bounds = SpecifierSet(spec)
            assert any(s.operator == "<" for s in bounds), f"{package}{spec} has no upper bound"
            assert set(wanted) <= set(bounds), f"{package}{spec} drops {wanted}"


def test_repo2docker_accepts_the_binder_config():
    beside_python = Path(sys.executable).parent / "jupyter-repo2docker"
    command = str(beside_python) if beside_python.exists() else shutil.which("jupyter-repo2docker")
    assert command, "jupyter-repo2docker is not installed (requirements-dev.txt lists it)"
    result = subprocess.run(
        [command, "--no-build", "--no-run", "--debug", "."],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    dockerfile = result.stdout + result.stderr
    assert "environment.yml" in dockerfile and "postBuild" in dockerfile
