"""helpers: what every lesson of the course imports.

Models and images: ``load_model``, ``load_image``. Looking inside: ``record``, ``layer_roles``.
Figures: ``show_images``, ``plot_predictions``, ``channel_grid``, ``overlay``.

Every method is called the same way, ``method(model, x, target=None, *, knobs)``: a batch
``(N, 3, H, W)`` in, a batch out, the class as ``target`` (None: each image's top class), every
knob keyword-only, a chunk size called ``batch_size`` (``tests/test_conventions.py`` checks it).

The modules, one job each, in layers; a module imports only from its own layer or lower ones:

1. plumbing: ``common`` (batch and argument checks, targets, eval mode, the chunked perturbation
   engine), ``images``, ``hooks`` (recording layers, layer roles, token grids), ``maps`` (any
   output as a per-pixel map), ``pictures`` (arrays to PNG / GIF bytes, colour maps),
   ``progress`` (progress bars that leave nothing stale in a stored notebook), ``checks`` (an
   exercise's visible check and its hidden tests' hand-over to the grader),
   ``course_models`` (the shapes task's two networks), ``weights`` (where weights come from);
2. models and data: ``models`` (loading), ``shapes`` (the synthetic task), ``evaluation``
   (cases with known answers from collages of photos, pointing game, energy, bootstrap
   intervals), ``baselines`` (maps without a model), ``similarity`` (rank correlation, SSIM),
   ``imputation`` (RISE's blur, ROAD's fill);
3. methods: ``attribution`` (gradients, integrated gradients), ``cam`` (CAM family),
   ``occlusion``, ``rollout`` (attention rollout), ``synthesis`` (feature visualisation, deep
   dream, feature inversion), ``adversarial`` (fooling images), ``concepts`` (NMF concepts of
   a layer, their maps and importance);
4. tests of methods: ``causal`` (deletion / insertion), ``sanity`` (randomisation checks),
   ``scoreboard`` (every method on every case, every measure, with intervals and baselines);
5. figures: ``plotting``, ``notebook`` (what a lesson's first cell sets up);
6. ``widgets``: the explorers.
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
