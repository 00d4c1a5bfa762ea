"""Slider explorers for the lessons, on one base (``_base``): heavy work (forward passes) runs once
per image and is cached; a control change only slices a cached tensor or runs one backward pass.

Every explorer has ``.widget`` (what the notebook displays), ``.render()`` (the current picture as
PNG bytes, also used by tests and benchmarks) and displays itself when it is a cell's last value,
storing a snapshot at least 640 px wide with its caption as text for viewers without a kernel.
"""

from ._base import PANEL, SNAPSHOT_WIDTH, snapshot_bundle
from .classes import CLASS_METHODS, ClassExplorer
from .layers import FeatureMapExplorer, FilterExplorer
from .results import CascadeExplorer, RunExplorer, TokenExplorer

__all__ = [
    "PANEL",
    "SNAPSHOT_WIDTH",
    "snapshot_bundle",
    "CLASS_METHODS",
    "ClassExplorer",
    "FeatureMapExplorer",
    "FilterExplorer",
    "RunExplorer",
    "CascadeExplorer",
    "TokenExplorer",
]
