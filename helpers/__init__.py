"""helpers: what every lesson of the course imports.

Models and images: ``load_model``, ``load_image``. Looking inside: ``record``, ``layer_roles``.
Figures: ``show_images``, ``plot_predictions``, ``channel_grid``, ``overlay``.

The methods live in their own modules, one concern each, all called the same way
(``method(model, x, target=None, *, knobs)``, a batch in and a batch out):
``helpers.attribution`` (gradients), ``helpers.cam`` (CAM family), ``helpers.faithfulness``
(occlusion, sanity checks, deletion / insertion), ``helpers.rollout`` (attention rollout),
``helpers.synthesis`` (feature visualisation, deep dream); ``helpers.widgets`` holds the explorers
and ``helpers.common`` the plumbing they share.
"""

from .hooks import evaluating, get_layer, layer_names, layer_roles, record
from .images import ImageLoadError, load_image, sample_names
from .models import LessonModel, Prediction, WeightsUnavailableError, load_model, model_names
from .notebook import setup_notebook
from .plotting import (
    channel_grid,
    overlay,
    plot_predictions,
    show_heatmaps,
    show_images,
)

__all__ = [
    "ImageLoadError",
    "LessonModel",
    "Prediction",
    "WeightsUnavailableError",
    "channel_grid",
    "evaluating",
    "get_layer",
    "layer_names",
    "layer_roles",
    "load_image",
    "load_model",
    "model_names",
    "overlay",
    "plot_predictions",
    "record",
    "sample_names",
    "setup_notebook",
    "show_heatmaps",
    "show_images",
]
