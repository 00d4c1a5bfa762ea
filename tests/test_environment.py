"""The set-up files agree with each other, and Binder's configuration is valid."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

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


def test_binder_environment_lists_the_runtime_requirements():
    assert conda_requirements("binder/environment.yml") == pip_requirements("requirements.txt")


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
