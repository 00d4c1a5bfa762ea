"""What the first code cell of every lesson does: repeatable random numbers, light figures."""

from __future__ import annotations

import torch

from .plotting import use_inline_format

__all__ = ["setup_notebook"]


def setup_notebook(*, seed: int = 0, jpeg_quality: int = 88) -> None:
    """Seed torch's global generator with ``seed`` (repeatable pictures) and store inline figures
    as JPEG of ``jpeg_quality`` (see :func:`helpers.plotting.use_inline_format`)."""
    torch.manual_seed(seed)
    use_inline_format(jpeg_quality=jpeg_quality)
