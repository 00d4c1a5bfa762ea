"""Concepts: the parts a layer uses, found by non-negative matrix factorisation of its activations
(Deep Feature Factorization, Collins, Achanta & Süsstrunk, ECCV 2018; CRAFT, Fel et al., CVPR
2023), and how much each concept adds to a class.

Stack a layer's activations over images, one row per position: ``A`` ``(positions, C)``, every
value >= 0 (a layer after a ReLU). NMF writes ``A ~ U W``: ``W`` ``(k, C)`` holds ``k`` concepts
(each a non-negative mix of channels), ``U`` ``(positions, k)`` says how much of each concept sits
at each position, so each concept has a heat map per image. The factorisation runs the
multiplicative updates of Lee & Seung (2001), the ones scikit-learn's ``NMF(solver="mu")`` runs,
in a few lines of torch (``nmf``)::

    U <- U * (A W^T) / (U W W^T)          W <- W * (U^T A) / (U^T U W)

A concept's **importance** for a class is its contribution to the class logit: the gradient of
the logit with respect to the activations, times the concept's part of them, summed
(gradient x input in concept space). For the last layer before global pooling and a linear
classifier (``layer_roles(model).cam_layer`` of EfficientNet, ResNet) the logit is affine in the
activations, so the contributions are exact: the logit equals the bias plus the contributions of
the ``k`` concepts plus that of what the factorisation leaves out, and deleting a concept lowers
the logit by exactly its contribution (Fel et al., *A Holistic Approach to Unifying Automatic
Concept Extraction and Concept Importance Estimation*, NeurIPS 2023). At an earlier layer it is
the first-order estimate; ``deletion`` measures the drop itself.

The model leaves every call as it came (eval mode during the call, gradients to the layer only).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .common import (
    Target,
    check_batch,
    check_finite,
    check_int,
    evaluating,
    resolve_targets,
    unwrap,
)
from .hooks import get_layer, layer_roles, record, split_forward

__all__ = ["Concepts", "factorize", "nmf", "nmf_update", "nmf_transform", "layer_activations",
           "nonnegative_layers", "random_start"]

EPSILON = float(torch.finfo(torch.float32).eps)  # scikit-learn's: replaces a zero denominator
STEPS = 400  # multiplicative updates: the error changes by < 0.1 % over the last 100 on Lite0


def nmf_update(matrix: torch.Tensor, u: torch.Tensor, w: torch.Tensor, *,
               update_w: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """One multiplicative update of ``matrix ~ u @ w`` (Lee & Seung 2001): first ``u``, then
    ``w`` (``update_w=False``: ``w`` stays, to fit new rows to known concepts).

    ``matrix`` ``(M, C)`` >= 0, ``u`` ``(M, k)`` >= 0, ``w`` ``(k, C)`` >= 0; returns the new
    ``(u, w)``. A zero denominator becomes float32's epsilon, as in scikit-learn.
    """
    def divide(numerator, denominator):
        return numerator / torch.where(denominator == 0, EPSILON, denominator)

    u = u * divide(matrix @ w.T, u @ (w @ w.T))
    if update_w:
        w = w * divide(u.T @ matrix, (u.T @ u) @ w)
    return u, w


def random_start(matrix: torch.Tensor, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's ``init="random"``: |N(0, 1)| scaled by ``sqrt(mean(matrix) / k)``, drawn
    from ``torch.Generator().manual_seed(seed)``."""
    generator = torch.Generator().manual_seed(seed)
    scale = (matrix.mean() / k).sqrt()
    u = torch.randn(matrix.shape[0], k, generator=generator, dtype=torch.float64).abs()
    w = torch.randn(k, matrix.shape[1], generator=generator, dtype=torch.float64).abs()
    return (u * scale).to(matrix), (w * scale).to(matrix)


def _check_matrix(matrix: torch.Tensor, k: int) -> torch.Tensor:
    if not isinstance(matrix, torch.Tensor) or matrix.ndim != 2:
        raise ValueError("nmf needs a 2-D tensor (rows, columns)")
    check_finite("the matrix", matrix)
    if (matrix < 0).any():
        raise ValueError(f"NMF needs non-negative values; the matrix goes down to "
                         f"{matrix.min().item():.3g}")
    if not matrix.any():
        raise ValueError("the matrix is all zeros: there is nothing to factorise")
    check_int(f"k (this matrix is {matrix.shape[0]} x {matrix.shape[1]})", k,
              high=min(matrix.shape))
    return matrix.double()


def nmf(matrix: torch.Tensor, k: int, *, steps: int = STEPS, seed: int = 0,
        start: tuple[torch.Tensor, torch.Tensor] | None = None
        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-negative matrix factorisation ``matrix ~ u @ w`` by ``steps`` multiplicative updates
    (``nmf_update``), in float64.

    ``matrix`` ``(M, C)`` >= 0; ``k`` in [1, min(M, C)]. The start is scikit-learn's
    ``init="random"`` drawn from ``seed``, or ``start=(u0, w0)``. Returns ``u`` ``(M, k)`` and
    ``w`` ``(k, C)``, as they come out of the updates (no rescaling), float64.
    Example: ``u, w = nmf(acts.flatten(2).transpose(1, 2).reshape(-1, acts.shape[1]), 5)``.
    """
    matrix = _check_matrix(matrix, k)
    check_int("steps", steps)
    if start is None:
        u, w = random_start(matrix, k, seed)
    else:
        u, w = (t.detach().to(matrix) for t in start)
        if u.shape != (matrix.shape[0], k) or w.shape != (k, matrix.shape[1]) or \
                (u < 0).any() or (w < 0).any():
            raise ValueError(f"start must be non-negative tensors of shapes "
                             f"({matrix.shape[0]}, {k}) and ({k}, {matrix.shape[1]})")
    for _ in range(steps):
        u, w = nmf_update(matrix, u, w)
    return u, w


def nmf_transform(matrix: torch.Tensor, w: torch.Tensor, *, steps: int = STEPS) -> torch.Tensor:
    """The non-negative ``u`` ``(M, k)`` that best fits ``matrix ~ u @ w`` with the concepts
    ``w`` ``(k, C)`` fixed (a non-negative least-squares problem, one per row), by ``steps``
    multiplicative updates of ``u`` from a constant start. ``matrix`` ``(M, C)`` >= 0."""
    matrix = matrix.double()
    w = w.double()
    u = torch.full((matrix.shape[0], w.shape[0]), float((matrix.mean() / w.shape[0]).sqrt()),
                   dtype=torch.float64, device=matrix.device)
    for _ in range(steps):
        u, _ = nmf_update(matrix, u, w, update_w=False)
    return u


def _check_images(images) -> None:
    check_batch(images)
    check_finite("images", images)
    if images.shape[1] != 3:
        raise ValueError(f"images must be a batch (N, 3, H, W), got shape {tuple(images.shape)}")


@torch.no_grad()
def layer_activations(model, images: torch.Tensor, layer: str, *,
                      batch_size: int = 4) -> torch.Tensor:
    """The activations of ``layer`` for ``images`` ``(N, 3, H, W)``: ``(N, C, h, w)``, checked
    non-negative (what NMF needs), float64, ``batch_size`` images per forward pass. Raises a
    ``ValueError`` that names a layer to use instead when the layer's output is signed or is
    not a grid of channels."""
    _check_images(images)
    check_int("batch_size", batch_size)
    net = unwrap(model)
    name = get_layer(net, layer)[0]
    parts = []
    with evaluating(net), record(net, name) as rec:
        for chunk in images.split(batch_size):
            net(chunk)
            parts.append(rec[name].double())
    acts = torch.cat(parts)
    suggestion = _suggestion(net)
    if acts.ndim != 4:
        raise ValueError(f"layer {name!r} gives {tuple(acts.shape)}, not (N, C, h, w) "
                         f"feature maps: choose a convolutional layer{suggestion}")
    if (acts < 0).any():
        raise ValueError(f"layer {name!r} has negative activations (down to "
                         f"{acts.min().item():.3g}); NMF needs non-negative ones: choose a layer "
                         f"after a ReLU{suggestion}")
    if not acts.any():
        raise ValueError(f"layer {name!r} gives only zeros on these images: nothing to "
                         "factorise")
    return acts


@torch.no_grad()
def nonnegative_layers(model, x: torch.Tensor) -> list[str]:
    """The layers ``factorize`` accepts, in the order they run: every module whose output on
    ``x`` ``(N, 3, H, W)`` is a grid ``(N, C, h, w)`` of more than one position with no
    negative value (the outputs of ReLUs and of blocks that end in one). A ReLU inside a module
    that returns the same values is named by that module (``bn2``, not ``bn2.act``); a module
    that runs more than once per forward pass is left out (its recording would keep only its
    last call)."""
    _check_images(x)
    net = unwrap(model)
    seen: dict[str, torch.Tensor | None] = {}
    handles = []

    def make_hook(name):
        def hook(module, inputs, output):
            ok = isinstance(output, torch.Tensor) and output.ndim == 4 and name not in seen \
                and output.shape[-2] * output.shape[-1] > 1 and bool((output >= 0).all()) \
                and bool(output.any())
            seen[name] = output.detach().clone() if ok else None
        return hook

    try:
        for name, module in net.named_modules():
            if name:
                handles.append(module.register_forward_hook(make_hook(name)))
        calls: dict[str, int] = {}
        for name, module in net.named_modules():
            if name:
                handles.append(module.register_forward_pre_hook(
                    lambda m, i, name=name: calls.__setitem__(name, calls.get(name, 0) + 1)))
        with evaluating(net):
            net(x)
    finally:
        for handle in handles:
            handle.remove()
    kept: list[str] = []
    for name, output in seen.items():  # in the order the outputs were made
        if output is None or calls.get(name, 0) != 1:
            continue
        if kept and name and kept[-1].startswith(name + ".") and \
                torch.equal(seen[kept[-1]], output):
            kept[-1] = name  # bn2.act then bn2: the same values, named by the block
        else:
            kept.append(name)
    return kept


def _suggestion(net: nn.Module) -> str:
    try:
        return f", e.g. layer_roles(model).cam_layer = {layer_roles(net).cam_layer!r}"
    except ValueError:
        return ""


def _rows(acts: torch.Tensor) -> torch.Tensor:
    """``(N, C, h, w)`` -> ``(N * h * w, C)``: one row per position, image by image."""
    return acts.permute(0, 2, 3, 1).reshape(-1, acts.shape[1])


def _grid(u: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """``(N * h * w, k)`` -> ``(N, k, h, w)``."""
    n, _, h, w = shape
    return u.reshape(n, h, w, -1).permute(0, 3, 1, 2)


@dataclass
class Concepts:
    """What ``factorize`` found at one layer.

    ``components`` ``(k, C)``: each concept as a mix of the layer's channels, each row of unit
    length, largest concept first (by its share of the coefficients over the images it was
    fitted on); ``fitted_maps`` ``(N, k, h, w)``: each concept's coefficient at each position
    of those images (``fitted_maps[n, j] * components[j]`` is concept j's part of the
    activations); ``error``: the relative reconstruction error ``||A - U W|| / ||A||``.
    """

    model: object
    layer: str
    components: torch.Tensor
    fitted_maps: torch.Tensor
    error: float
    images: torch.Tensor = field(repr=False)
    batch_size: int = 4

    @property
    def k(self) -> int:
        return self.components.shape[0]

    def maps(self, images: torch.Tensor) -> torch.Tensor:
        """Each concept's heat map on new ``images`` ``(N, 3, H, W)``: ``(N, k, h, w)`` at the
        layer's resolution, >= 0, from the best non-negative fit of their activations with
        these concepts held fixed (``nmf_transform``)."""
        acts = layer_activations(self.model, images, self.layer, batch_size=self.batch_size)
        self._check_channels(acts)
        return _grid(nmf_transform(_rows(acts), self.components), acts.shape).float()

    def _check_channels(self, acts: torch.Tensor) -> None:
        if acts.shape[1] != self.components.shape[1]:
            raise ValueError(f"{self.layer!r} gave {acts.shape[1]} channels; the concepts have "
                             f"{self.components.shape[1]}")

    def _inputs(self, target: Target, images: torch.Tensor | None):
        """The images, their concept maps ``(N, k, h, w)`` float64 and their classes ``(N,)``."""
        x = self.images if images is None else images
        _check_images(x)
        coefficients = self.fitted_maps.double() if images is None else self.maps(x).double()
        net = unwrap(self.model)
        with evaluating(net), torch.no_grad():
            logits = torch.cat([net(chunk) for chunk in x.split(self.batch_size)])
        return x, coefficients, resolve_targets(self.model, logits, target)

    def contributions(self, target: Target, images: torch.Tensor | None = None
                      ) -> torch.Tensor:
        """Each concept's contribution to the logit of ``target`` in each image, ``(N, k)``:
        ``sum over channels c and positions p of dS/dA[c, p] * U[p, j] * W[j, c]`` (gradient x
        input in concept space). ``images``: those the concepts were fitted on (default) or new
        ones (their maps come from ``maps``). ``target``: a class index or name, one per image,
        or ``None`` for each image's top class."""
        x, coefficients, classes = self._inputs(target, images)
        net = unwrap(self.model)
        parts = []
        with evaluating(net), torch.enable_grad():  # works inside torch.no_grad() too
            for start in range(0, len(x), self.batch_size):
                chunk = slice(start, start + self.batch_size)
                acts, logits = split_forward(net, x[chunk], self.layer)
                self._check_channels(acts)
                score = logits.gather(1, classes[chunk, None]).sum()
                (grad,) = torch.autograd.grad(score, acts)
                # dS/dA seen along each concept: (n, k, h, w) = sum_c grad[n, c] * W[j, c]
                along = torch.einsum("nchw,jc->njhw", grad.double(), self.components)
                parts.append((along * coefficients[chunk]).sum(dim=(2, 3)))
        return torch.cat(parts).float()

    def importance(self, target: Target, images: torch.Tensor | None = None) -> torch.Tensor:
        """Each concept's importance for ``target``: its contribution to the class logit
        (``contributions``), averaged over the images, ``(k,)``. Positive: the concept raises
        the class. Exact for the last layer before global pooling and a linear classifier."""
        return self.contributions(target, images).mean(dim=0)

    def deletion(self, target: Target, images: torch.Tensor | None = None) -> torch.Tensor:
        """How much the logit of ``target`` falls when concept ``j`` is taken out of the
        layer's activations (``A - U_j W_j``, the rest of the network unchanged), averaged over
        the images: ``(k,)``. Equal to ``importance`` where the rest of the network is affine
        in the activations (the last layer before a linear head); at earlier layers it measures
        what ``importance`` estimates to first order."""
        x, coefficients, classes = self._inputs(target, images)
        net = unwrap(self.model)
        module = get_layer(net, self.layer)[1]
        removed: list[torch.Tensor] = []

        def remove(module, inputs, output):
            return output - removed[0].to(output) if removed else output

        drops = torch.zeros(len(x), self.k, dtype=torch.float64)
        handle = module.register_forward_hook(remove)
        try:
            with evaluating(net), torch.no_grad():
                for start in range(0, len(x), self.batch_size):
                    chunk = slice(start, start + self.batch_size)
                    index = classes[chunk, None]
                    removed.clear()
                    base = net(x[chunk]).gather(1, index)[:, 0]
                    for j in range(self.k):
                        removed[:] = [torch.einsum("nhw,c->nchw", coefficients[chunk, j],
                                                   self.components[j])]
                        drops[chunk, j] = (base - net(x[chunk]).gather(1, index)[:, 0]).double()
        finally:
            handle.remove()
        return drops.mean(dim=0).float()


def factorize(model, images: torch.Tensor, layer: str, *, k: int, seed: int = 0,
              steps: int = STEPS, batch_size: int = 4) -> Concepts:
    """Concepts at ``layer``: NMF of its activations over ``images``, one row per position.

    Args:
        model: a ``LessonModel`` (or an ``nn.Module``).
        images: ``(N, 3, H, W)`` in the model's input space (``model.preprocess``): photos,
            crops of photos, collages. Every position of every image is one row.
        layer: a layer whose activations are >= 0 (after a ReLU): for EfficientNet and ResNet
            ``layer_roles(model).cam_layer``. A signed layer is refused.
        k: how many concepts, in [1, min(positions, channels)].
        seed: the random start (scikit-learn's ``init="random"``); NMF finds a local optimum,
            so another seed can give other concepts.
        steps: multiplicative updates.
        batch_size: images per forward pass (memory only: about 27 MB per 224 px image on
            Lite0).

    Returns a ``Concepts``: ``components`` ``(k, C)``, ``maps(images)`` ``(N, k, h, w)``,
    ``importance(target)`` ``(k,)``.
    Example: ``concepts = factorize(model, crops, "bn2", k=5)``.
    """
    acts = layer_activations(model, images, layer, batch_size=batch_size)
    rows = _rows(acts)
    check_int(f"k ({layer!r} has {rows.shape[1]} channels, the images {rows.shape[0]} positions)",
              k, high=min(rows.shape))
    u, w = nmf(rows, k, steps=steps, seed=seed)
    norms = w.norm(dim=1).clamp_min(1e-12)
    u, w = u * norms, w / norms[:, None]  # unit concepts; u holds the amounts
    order = u.sum(dim=0).argsort(descending=True)
    u, w = u[:, order], w[order]
    error = float((rows - u @ w).norm() / rows.norm())
    name = get_layer(unwrap(model), layer)[0]
    return Concepts(model, name, w, _grid(u, acts.shape), error, images, batch_size)
