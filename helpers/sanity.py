"""Sanity checks for maps (Adebayo et al. 2018): randomise the model's weights from the output
down and measure how much each method's map still looks like the trained one.

``cascading_randomization(model, x, target=None, *, methods, knobs)`` randomises a deep copy,
never the caller's model.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .common import Target, check_batch, fixed_targets, unwrap
from .maps import as_grey, to_map
from .progress import progress_bar
from .similarity import rank_correlation, ssim

__all__ = ["randomization_layers", "Cascade", "cascading_randomization"]


def randomization_layers(model) -> list[str]:
    """The default randomisation order: the top-level modules that hold parameters, from the
    output down; a container (``nn.Sequential`` / ``nn.ModuleList`` such as EfficientNet's
    ``blocks``) is split into its children. Lite0: ``classifier, bn2, conv_head, blocks.6, ...,
    blocks.0, bn1, conv_stem``."""
    names = []
    for name, child in unwrap(model).named_children():
        if not any(True for _ in child.parameters()):
            continue
        if isinstance(child, (nn.Sequential, nn.ModuleList)) and len(child) > 1:
            names += [f"{name}.{sub}" for sub, grandchild in child.named_children()
                      if any(True for _ in grandchild.parameters())]
        else:
            names.append(name)
    return names[::-1]


def _randomize(module: nn.Module, how: str, generator: torch.Generator) -> None:
    """Randomise a module's parameters in place, keeping each tensor's scale; buffers (BatchNorm
    running statistics) are left as they are.

    ``"shuffle"``: permute each tensor's entries (the same values, structure destroyed);
    ``"gaussian"``: new entries drawn from a normal with the tensor's own mean and std. Either way
    the weights keep their size, so activations stay in the range the trained BatchNorm
    statistics expect; ``reset_parameters()`` instead resets BatchNorm to mean 0 / variance 1 and
    re-initialises convolutions at another scale, and on Lite0 the activations overflow to NaN.
    """
    with torch.no_grad():
        for p in module.parameters():
            flat = p.detach().flatten()
            if how == "shuffle":
                perm = torch.randperm(flat.numel(), generator=generator).to(p.device)
                p.copy_(flat[perm].view_as(p))
            else:
                std = flat.std() if flat.numel() > 1 else flat.new_zeros(())
                noise = torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device)
                p.copy_(flat.mean() + std * noise)


@dataclass
class Cascade:
    """What :func:`cascading_randomization` measured.

    ``layers[k]``: the module randomised at step ``k`` (cascading: together with every module
    before it in the list). ``rank_correlation[m][k]`` and ``ssim[m][k]``: method ``m``'s map after
    step ``k`` against its map on the trained model (mean over the batch). ``trained[m]``:
    ``(N, H, W)`` pictures on the trained model; ``randomized[m]``: ``(steps, N, H, W)``. Pictures
    are |map| capped at the 99th percentile, in [0, 1].
    """

    layers: list[str]
    rank_correlation: dict[str, list[float]]
    ssim: dict[str, list[float]]
    trained: dict[str, torch.Tensor]
    randomized: dict[str, torch.Tensor]
    cascading: bool = True


MethodFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def cascading_randomization(model, x: torch.Tensor, target: Target = None, *,
                            methods: Mapping[str, MethodFn] | Sequence[MethodFn],
                            layers: Sequence[str] | None = None, cascading: bool = True,
                            randomize: str = "shuffle", seed: int = 0,
                            progress: bool = True) -> Cascade:
    """Model parameter randomisation test (Adebayo et al. 2018, "Sanity checks for saliency maps").

    On a deep copy of the model, randomise ``layers`` (default :func:`randomization_layers`:
    from the output down) one more at each step (``cascading=False``: one at a time, the others
    trained) and, after each step, compute every method's map for the same class (fixed on the
    trained model) and compare it with the trained model's map: Spearman rank correlation of
    |map| (``rank_correlation``) and SSIM of the pictures (``ssim``; pictures are ``as_grey``).
    A map that still looks the same once the weights it should explain are noise does not
    explain them.

    ``methods``: ``{name: fn}`` or a list of functions (named by ``__name__``), each
    ``fn(model, x, target) -> (N, H, W) or (N, C, H, W)`` (every method of ``helpers`` fits).
    ``randomize``: ``"shuffle"`` (default) or ``"gaussian"``, see ``_randomize``; BatchNorm
    running statistics are kept, which keeps every activation finite.
    The caller's model is never touched. Returns a :class:`Cascade`.

    Example: ``cascading_randomization(model, x, "tabby", methods={"Grad-CAM": grad_cam})``.
    """
    check_batch(x)
    if randomize not in ("shuffle", "gaussian"):
        raise ValueError("randomize must be 'shuffle' or 'gaussian'")
    if not isinstance(methods, Mapping):
        methods = {getattr(fn, "__name__", f"method {i}"): fn for i, fn in enumerate(methods)}
    if not methods:
        raise ValueError("give at least one method")
    classes = fixed_targets(model, x, target)
    trained_net = unwrap(model)
    layers = list(layers) if layers is not None else randomization_layers(trained_net)
    modules = dict(trained_net.named_modules())
    unknown = [name for name in layers if name not in modules or not name]
    if unknown:
        raise ValueError(f"unknown layers {unknown}; randomization_layers(model) lists the "
                         f"default ones")
    trained_state = {k: v.detach().clone() for k, v in trained_net.state_dict().items()}
    net = copy.deepcopy(trained_net).eval()
    copied = dict(net.named_modules())
    generator = torch.Generator().manual_seed(seed)

    def maps(m):  # {method: (|map|, picture)}
        out = {}
        for name, fn in methods.items():
            attribution = fn(m, x, classes).detach()
            out[name] = (to_map(attribution), as_grey(attribution.float()))
        return out

    trained = maps(net)
    steps: dict[str, list[torch.Tensor]] = {name: [] for name in methods}
    rho: dict[str, list[float]] = {name: [] for name in methods}
    structural: dict[str, list[float]] = {name: [] for name in methods}
    for layer in progress_bar(layers, desc="randomising", enabled=progress):
        if not cascading:
            net.load_state_dict(trained_state)
        _randomize(copied[layer], randomize, generator)
        for name, (magnitude, picture) in maps(net).items():
            steps[name].append(picture)
            rho[name].append(float(rank_correlation(magnitude, trained[name][0]).mean()))
            structural[name].append(float(ssim(picture, trained[name][1]).mean()))
    return Cascade(layers, rho, structural, {name: t[1] for name, t in trained.items()},
                   {name: torch.stack(pics) for name, pics in steps.items()}, cascading)
