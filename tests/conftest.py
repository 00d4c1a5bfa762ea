"""Shared fixtures: the bundled model (loaded once), sample batches, a model-state snapshot."""

from __future__ import annotations

import functools
import http.server
import os
import threading
from pathlib import Path

import pytest
import torch

import helpers

# Debian's chromium, driven by playwright in the browser tests (README, "Tests").
CHROMIUM = os.environ.get("CNNVIS_CHROMIUM", "/usr/bin/chromium")

CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


@pytest.fixture(scope="session")
def lite0():
    return helpers.load_model("efficientnet_lite0")


@pytest.fixture(scope="session")
def cat_coffee(lite0):
    return lite0.preprocess("cat", "coffee")


def snapshot(model: torch.nn.Module) -> dict:
    """Everything a helper call must leave unchanged."""
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [p.grad for p in model.parameters()],
        "modules": [(n, type(m)) for n, m in model.named_modules()],
        "hooks": sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
                     + len(getattr(m, "_backward_pre_hooks", {})) for m in model.modules()),
    }


def assert_unchanged(before: dict, model: torch.nn.Module) -> None:
    after = snapshot(model)
    assert after["hooks"] == before["hooks"], "hooks left behind"
    assert after["modules"] == before["modules"], "modules swapped and not restored"
    assert after["training"] == before["training"], "train/eval flags changed"
    assert after["requires_grad"] == before["requires_grad"], "requires_grad changed"
    assert all(g is None for g in after["grads"]), "parameter .grad left behind"
    for key, value in before["state"].items():
        assert torch.equal(after["state"][key], value), f"{key} changed"


@pytest.fixture
def serve_dir():
    """Serve a folder on 127.0.0.1 for the duration of a test; yields a function dir -> base URL."""
    servers = []

    def start(folder: Path) -> str:
        handler = functools.partial(QuietHandler, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def browser_missing() -> str | None:
    """Why a browser test cannot run here (no chromium, no playwright), or None."""
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} not found (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed"
    return None


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium, headless, through Playwright (the browser and JupyterHub tests)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"])
        yield chromium
        chromium.close()


@pytest.fixture
def threads(request):
    """Torch's thread count for one test (parametrise it indirectly), restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)
