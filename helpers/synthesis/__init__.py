"""Optimise the input image: class and channel visualisation, deep dream.

Split the way the field thinks about it (Olah et al., *Feature Visualization*, 2017; lucid and
lucent split their code the same way), each piece small and swappable:

- ``param``: how the image is parameterised (pixels; an FFT spectrum scaled by 1/frequency with
  decorrelated colours);
- ``transforms``: random transforms redrawn every step (pad, jitter, scale, rotate);
- ``held_out``: fixed views the optimiser never sees, and the probability a picture keeps on them;
- ``objectives``: what is maximised, composable as sums (``class_logit(c) - 0.01 * l2()``);
- ``render``: one loop, and the recipes on it (``class_visualization``,
  ``channel_visualization``, ``deep_dream``);
- ``showcase``: class pictures made once with more steps and views, stored with the course;
- ``inversion``: feature inversion on the same loop (``feature_inversion``: an image whose
  activations at a layer match a photo's, Mahendran & Vedaldi 2015).

Randomness comes from seeded ``torch.Generator`` objects: the same call gives the same picture
on one machine, and torch's global generator is not touched.
"""

from .held_out import JUDGES, held_out_probability, held_out_views, other_networks_probability
from .inversion import INVERSION, activation_match, feature_inversion, inversion_loss
from .objectives import (
    ForwardRecord,
    Objective,
    channel_mean,
    class_logit,
    l1,
    l2,
    layer_norm,
    total_variation,
)
from .param import (
    COLOR_CORRELATION_SQRT,
    FFTImage,
    ImageParameterization,
    PixelImage,
    decorrelate_colors,
    fft_frequencies,
    from_rgb,
    to_rgb,
)
from .render import (
    RECIPES,
    channel_visualization,
    class_visualization,
    deep_dream,
    image_parameterization,
    octave_sizes,
    render,
    transformed_views,
)
from .showcase import (
    PICTURES_DIR,
    SHOWCASE,
    SHOWCASE_CLASSES,
    store_class_pictures,
    stored_class_pictures,
)
from .transforms import (
    ROBUST,
    STANDARD,
    Transform,
    blur,
    compose,
    jitter,
    pad,
    random_rotate,
    random_scale,
    roll,
)

__all__ = [
    "COLOR_CORRELATION_SQRT",
    "RECIPES",
    "ROBUST",
    "STANDARD",
    "FFTImage",
    "INVERSION",
    "ForwardRecord",
    "ImageParameterization",
    "Objective",
    "PICTURES_DIR",
    "PixelImage",
    "SHOWCASE",
    "SHOWCASE_CLASSES",
    "Transform",
    "activation_match",
    "blur",
    "channel_mean",
    "channel_visualization",
    "class_logit",
    "class_visualization",
    "compose",
    "decorrelate_colors",
    "deep_dream",
    "feature_inversion",
    "fft_frequencies",
    "from_rgb",
    "held_out_probability",
    "held_out_views",
    "JUDGES",
    "other_networks_probability",
    "image_parameterization",
    "inversion_loss",
    "jitter",
    "l1",
    "l2",
    "layer_norm",
    "octave_sizes",
    "pad",
    "random_rotate",
    "random_scale",
    "render",
    "roll",
    "store_class_pictures",
    "stored_class_pictures",
    "to_rgb",
    "total_variation",
    "transformed_views",
]
