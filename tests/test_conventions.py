"""One calling convention everywhere, checked on the signatures themselves, so that a new
function that breaks it fails here (and not in a student's notebook).

- Every attribution method is ``method(model, x, target=None, *, knobs)``.
- Every CAM method takes ``grad_cam``'s ``layer``, ``reshape``, ``upsample`` keywords (and the
  CAM core's ``relu`` / ``normalize``).
- In every public function of ``helpers``: booleans are keyword-only, a class argument is called
  ``target``, a chunk size ``batch_size``.
- No import runs from a lower layer of the package up to a higher one (the layers are listed in
  ``helpers/__init__.py``'s docstring).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import helpers

MODULES = sorted(info.name for info in pkgutil.walk_packages(helpers.__path__, "helpers."))

METHODS = {
    "helpers.attribution": ["saliency", "smooth_grad", "gradient_x_input", "deconvnet",
                            "guided_backprop", "integrated_gradients"],
    "helpers.cam": ["cam", "grad_cam", "score_cam", "guided_grad_cam", "grad_cam_plus_plus",
                    "layer_cam", "hires_cam"],
    "helpers.occlusion": ["occlusion"],
    "helpers.causal": ["deletion", "insertion"],
    "helpers.sanity": ["cascading_randomization"],
    "helpers.rollout": ["attention_rollout", "chefer_relevance"],
}
CAM_KEYWORDS = {"layer", "reshape"}
CAM_MAP_KEYWORDS = {"upsample", "relu", "normalize"}
NOT_A_CLASS_ARGUMENT = {"index", "classes", "targets", "labels_index"}
NOT_A_CHUNK_SIZE = {"memory_mb", "chunk", "chunk_size", "perturbations_per_eval"}

# Layers, lowest first; a module may import from its own layer or lower ones only.
def _layers_of_the_docstring() -> list[set[str]]:
    """The layers as ``helpers/__init__.py`` describes them: item ``k.`` names its modules in
    double back-quotes (the test and the docstring cannot drift apart)."""
    text = helpers.__doc__.split("in layers;", 1)[1]
    items = re.split(r"\n(?=\d\. )", text.strip())
    return [set(re.findall(r"``(\w+)``", item)) for item in items if item[:1].isdigit()]


LAYERS = _layers_of_the_docstring()


def _public_functions():
    for name in MODULES:
        module = importlib.import_module(name)
        for attr, obj in vars(module).items():
            if attr.startswith("_") or not inspect.isfunction(obj):
                continue
            if obj.__module__ == name:  # defined here, not re-exported
                yield f"{name}.{attr}", obj


PUBLIC = dict(_public_functions())


@pytest.mark.parametrize("module, names", METHODS.items())
def test_methods_take_model_x_target_then_keywords(module, names):
    for name in names:
        params = list(inspect.signature(getattr(importlib.import_module(module), name))
                      .parameters.values())
        assert [p.name for p in params[:3]] == ["model", "x", "target"], (module, name)
        assert params[2].default is None, f"{module}.{name}: target defaults to None"
        assert all(p.kind is p.POSITIONAL_OR_KEYWORD for p in params[:3]), (module, name)
        later = [p.name for p in params[3:] if p.kind is not p.KEYWORD_ONLY]
        assert not later, f"{module}.{name}: knobs {later} must be keyword-only"


def test_cam_methods_share_grad_cams_keywords():
    cam = importlib.import_module("helpers.cam")
    for name in METHODS["helpers.cam"]:
        keywords = set(inspect.signature(getattr(cam, name)).parameters)
        assert CAM_KEYWORDS <= keywords, (name, CAM_KEYWORDS - keywords)
        if name != "guided_grad_cam":  # a gradient picture times the map: no map knobs
            assert CAM_MAP_KEYWORDS <= keywords, (name, CAM_MAP_KEYWORDS - keywords)


@pytest.mark.parametrize("qualname", sorted(PUBLIC))
def test_booleans_are_keyword_only_and_names_are_the_courses(qualname):
    for p in inspect.signature(PUBLIC[qualname]).parameters.values():
        if isinstance(p.default, bool):
            assert p.kind is p.KEYWORD_ONLY, f"{qualname}: boolean {p.name} must be keyword-only"
        assert p.name not in NOT_A_CLASS_ARGUMENT, f"{qualname}: call the class `target`"
        assert p.name not in NOT_A_CHUNK_SIZE, f"{qualname}: call the chunk size `batch_size`"


def test_the_check_sees_every_method_module():
    assert set(METHODS) <= set(MODULES) and len(PUBLIC) > 60


def _layer(module: str) -> int:
    top = module.split(".")[1]
    return next(i for i, names in enumerate(LAYERS) if top in names)


@pytest.mark.parametrize("path", sorted(Path(helpers.__file__).parent.rglob("*.py")),
                         ids=lambda p: p.stem)
def test_no_import_runs_up_the_layers(path):
    package = Path(helpers.__file__).parent
    module = ".".join(("helpers", *path.relative_to(package).with_suffix("").parts))
    module = module.removesuffix(".__init__")
    if module == "helpers":
        return  # the package's own list of what students may import
    own = _layer(module)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = module.split(".")[:len(module.split(".")) - node.level
                                        + (1 if path.name == "__init__.py" else 0)]
            target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            if target.split(".")[0] == "helpers" and target.count(".") >= 1:
                assert _layer(target) <= own, f"{module} imports {target} from a higher layer"
