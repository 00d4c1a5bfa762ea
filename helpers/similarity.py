"""How alike two maps are: Spearman's rank correlation and SSIM, per image.

Both take batches of maps ``(N, H, W)`` and return ``(N,)`` (float64, on the CPU).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["rank_correlation", "ssim"]


def _ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks 1..n of a 1-D tensor, ties getting their average rank (as scipy's rankdata)."""
    _, inverse, counts = torch.unique(values, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).to(torch.float64)
    return (ends - (counts - 1) / 2)[inverse]


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman's rank correlation of two batches of maps ``(N, ...)``, per image ``(N,)``:
    the Pearson correlation of their ranks (ties averaged). A flat map carries no ranking: its
    correlation with anything is defined as 0 (scipy would give NaN)."""
    out = torch.zeros(a.shape[0], dtype=torch.float64)
    for i, (u, v) in enumerate(zip(a.flatten(1), b.flatten(1))):
        ru, rv = _ranks(u.detach().cpu()), _ranks(v.detach().cpu())
        ru, rv = ru - ru.mean(), rv - rv.mean()
        norm = ru.norm() * rv.norm()
        out[i] = (ru @ rv) / norm if norm > 0 else 0.0
    return out


def ssim(a: torch.Tensor, b: torch.Tensor, *, window: int = 11, sigma: float = 1.5,
         data_range: float = 1.0) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) of maps ``(N, H, W)`` in [0, ``data_range``],
    per image ``(N,)``: Gaussian window 11 x 11, sigma 1.5, K1 = 0.01, K2 = 0.03, averaged over
    the positions where the window fits (scikit-image's ``gaussian_weights=True`` recipe)."""
    a, b = a[:, None].double(), b[:, None].double()
    axis = torch.arange(window, dtype=torch.float64) - (window - 1) / 2
    g = torch.exp(-axis**2 / (2 * sigma**2))
    g = (g / g.sum()).to(a.device)
    kernel = (g[:, None] * g[None, :]).view(1, 1, window, window)

    def mean(t):
        return F.conv2d(t, kernel)

    mu_a, mu_b = mean(a), mean(b)
    var_a = mean(a * a) - mu_a**2
    var_b = mean(b * b) - mu_b**2
    cov = mean(a * b) - mu_a * mu_b
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    index = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return index.mean(dim=(1, 2, 3)).cpu()
