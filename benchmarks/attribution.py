"""Time the attribution and CAM methods against captum, torchcam and grad-cam, in one run.

Rows (Lite0 and ResNet50 at 224x224, one image, CPU):
- input-gradient methods vs the forward+backward floor (a bare forward and autograd.grad to the
  input); targets: saliency and guided backprop <= 1.05x floor, SmoothGrad(n) <= 1.1 x n x floor;
- Grad-CAM vs the fastest peer; class switch latency of the class explorer;
- Score-CAM (full and fast mode) vs (channels x one no-grad forward), each run in its own process
  for an honest peak RSS, with the peers' Score-CAM in the same way.

Usage: python benchmarks/attribution.py [--full-resnet]   (ResNet50's full Score-CAM takes minutes)
"""

from __future__ import annotations

import copy
import json
import statistics
import subprocess
import sys
import time
import warnings

import torch
import torchvision
from _report import table, write_section

import helpers
from helpers.attribution import guided_backprop, saliency, smooth_grad
from helpers.cam import grad_cam, score_cam
from helpers.widgets import ClassExplorer

warnings.filterwarnings("ignore")
N_SMOOTH = 10


def median_time(fn, repeat: int = 7, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def load(name: str):
    if name == "efficientnet_lite0":
        lesson = helpers.load_model()
        return lesson.model, lesson.preprocess("cat"), helpers.layer_roles(lesson).cam_layer
    torch.manual_seed(0)
    net = torchvision.models.resnet50(weights=None).eval().requires_grad_(False)
    return net, helpers.load_model().preprocess("cat"), "layer4"


def gradient_rows(name: str) -> list[dict]:
    from captum.attr import GuidedBackprop, LayerGradCam, Saliency
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from torchcam.methods import GradCAM as TorchcamGradCAM

    net, x, layer = load(name)
    target = 281
    peer = copy.deepcopy(net).requires_grad_(True)  # the peers need trainable parameters
    module = helpers.get_layer(peer, layer)[1]

    def floor():
        leaf = x.detach().requires_grad_(True)
        torch.autograd.grad(net(leaf)[0, target], leaf)

    explorer = ClassExplorer(helpers.load_model(), ["cat"], methods=["grad_cam"]) \
        if name == "efficientnet_lite0" else None
    switch_to = [v for _, v in explorer.class_menu.options][1:3] if explorer else []

    def class_switch():
        for c in switch_to:
            explorer.class_menu.value = c

    candidates = {
        "floor": floor,
        "saliency (ours)": lambda: saliency(net, x, target),
        "saliency (captum)": lambda: Saliency(peer).attribute(
            x.clone().requires_grad_(), target=target, abs=False),
        "guided backprop (ours)": lambda: guided_backprop(net, x, target),
        "guided backprop (captum)": lambda: GuidedBackprop(peer).attribute(
            x.clone().requires_grad_(), target=target),
        "smooth": lambda: smooth_grad(net, x, target, n=N_SMOOTH, progress=False),
        "Grad-CAM (ours)": lambda: grad_cam(net, x, target, layer=layer),
        "Grad-CAM (captum)": lambda: LayerGradCam(peer, module).attribute(x, target=target),
        "Grad-CAM (torchcam)": lambda: _torchcam(TorchcamGradCAM, peer, layer, x, target),
        "Grad-CAM (grad-cam)": lambda: _gradcam(GradCAM, peer, module, x,
                                                ClassifierOutputTarget(target)),
    }
    if explorer:
        candidates["switch"] = class_switch
    t = interleaved(candidates)
    fastest_peer = min(t[f"Grad-CAM ({k})"] for k in ("captum", "torchcam", "grad-cam"))
    rows = []

    def row(method, seconds, reference, label, target_ratio=None):
        ratio = seconds / reference
        verdict = "" if target_ratio is None else (" ok" if ratio <= target_ratio else " **over**")
        rows.append({"model": name, "method": method, "ms": f"{seconds * 1000:.1f}",
                     "vs": label, "ratio": f"{ratio:.2f}{verdict}"})

    row("forward + backward floor", t["floor"], t["floor"], "floor")
    for method in ("saliency", "guided backprop"):
        row(f"{method} (ours)", t[f"{method} (ours)"], t["floor"], "floor", 1.05)
        row(f"{method} (captum)", t[f"{method} (captum)"], t["floor"], "floor")
    row(f"SmoothGrad n={N_SMOOTH} (ours)", t["smooth"], N_SMOOTH * t["floor"],
        f"{N_SMOOTH} x floor", 1.1)
    row("Grad-CAM (ours)", t["Grad-CAM (ours)"], fastest_peer, "fastest peer", 1.0)
    for key in ("captum", "torchcam", "grad-cam"):
        row(f"Grad-CAM ({key})", t[f"Grad-CAM ({key})"], fastest_peer, "fastest peer")
    if explorer:
        row("class switch in the explorer (Grad-CAM)", t["switch"] / len(switch_to), t["floor"],
            "floor")
    return rows


def interleaved(candidates: dict, rounds: int = 11) -> dict[str, float]:
    """Median seconds of each function, measured in rotation (round 1: a, b, c; round 2: ...),
    so that a slow phase of a shared machine hits every candidate alike."""
    for fn in candidates.values():
        fn()
        fn()
    times = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def _torchcam(cls, net, layer, x, target):
    with cls(net, layer) as extractor:
        extractor(target, net(x))


def _gradcam(cls, net, module, x, target):
    with cls(model=net, target_layers=[module]) as cam:
        cam(input_tensor=x, targets=[target])


def score_cam_child(name: str, who: str, top_k: int | None) -> None:
    """Run one Score-CAM in this process; print seconds and peak RSS as JSON."""
    net, x, layer = load(name)
    start = time.perf_counter()
    if who == "ours":
        score_cam(net, x, 281, layer=layer, top_k=top_k, score="logit", channel_softmax=True,
                  progress=False)
    elif who == "torchcam":
        from torchcam.methods import ScoreCAM
        with ScoreCAM(net, layer, batch_size=32) as extractor, torch.no_grad():
            extractor(281, net(x))
    elif who == "grad-cam":
        from pytorch_grad_cam import ScoreCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
        peer = copy.deepcopy(net).requires_grad_(True)
        with ScoreCAM(model=peer, target_layers=[helpers.get_layer(peer, layer)[1]]) as cam:
            cam.batch_size = 32
            cam(input_tensor=x, targets=[ClassifierOutputTarget(281)])
    elif who == "forward":
        with torch.no_grad():
            t = median_time(lambda: net(x), repeat=20)
        print(json.dumps({"forward": t, "channels": _channels(net, x, layer)}))
        return
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak_gb": peak_rss_gb()}))


def peak_rss_gb() -> float:
    """This process's peak resident memory (VmHWM; ru_maxrss would include the parent's, which
    Linux keeps across fork and exec)."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1e6  # kB -> GB
    return float("nan")


def _channels(net, x, layer) -> int:
    with helpers.record(net, layer) as rec, torch.no_grad():
        net(x)
    return rec[layer].shape[1]


def child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def score_rows(name: str, full: bool) -> list[dict]:
    info = child(name, "forward", "0")
    floor = info["forward"] * info["channels"]
    rows = [{"model": name, "Score-CAM": f"floor: {info['channels']} x one no-grad forward",
             "s": f"{floor:.1f}", "ratio": "1.00", "peak RSS GB": "-"}]
    runs = [("ours, fast mode top_k=128", "ours", "128")]
    if full:
        runs = [("ours, full", "ours", "0"), ("torchcam", "torchcam", "0"),
                ("grad-cam", "grad-cam", "0")] + runs
    for label, who, k in runs:
        result = child(name, who, k)
        rows.append({"model": name, "Score-CAM": label, "s": f"{result['seconds']:.1f}",
                     "ratio": f"{result['seconds'] / floor:.2f}",
                     "peak RSS GB": f"{result['peak_gb']:.2f}"})
    return rows


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        name, who, k = sys.argv[2:5]
        score_cam_child(name, who, int(k) or None)
        return
    full_resnet = "--full-resnet" in sys.argv
    rows = gradient_rows("efficientnet_lite0") + gradient_rows("resnet50")
    write_section("attribution.py", "Attribution and CAM methods vs peers (one image, 224x224)",
                  "Ratios are against the row named in `vs`; targets: saliency and guided "
                  "backprop <= 1.05 x floor, SmoothGrad <= 1.1 x n x floor, Grad-CAM <= the "
                  "fastest peer. ResNet50 has random weights (timing only).\n\n" + table(rows)
                  + "\n\n" + table(score_rows("efficientnet_lite0", True)
                                   + score_rows("resnet50", full_resnet)))


if __name__ == "__main__":
    main()
