"""Time the attribution and CAM methods against captum, torchcam and grad-cam, in one run.

Rows (Lite0 and ResNet50 at 224x224, one image, CPU):
- input-gradient methods vs the forward+backward floor (a bare forward and autograd.grad to the
  input); targets: saliency and guided backprop <= 1.05x floor, SmoothGrad(n) <= 1.1 x n x floor;
- Grad-CAM vs the fastest peer; class switch latency of the class explorer;
- Grad-CAM++, LayerCAM and HiResCAM vs the fastest peer that has them (grad-cam, torchcam);
- Score-CAM (full and fast mode) vs (channels x one no-grad forward), each run in its own process
  for an honest peak RSS, with the peers' Score-CAM in the same way.

Usage: python benchmarks/attribution.py [--full-resnet]   (ResNet50's full Score-CAM takes minutes)
       python benchmarks/attribution.py --ig   (only Integrated Gradients vs captum and the fooling
       image vs a plain loop, in their own section)
       python benchmarks/attribution.py --cam-variants   (only Grad-CAM and its variants vs the
       peers, CPU seconds, in their own section: for a busy machine)
"""

from __future__ import annotations

import copy
import functools
import json
import os
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
from helpers.cam import grad_cam, grad_cam_plus_plus, hires_cam, layer_cam, score_cam
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
    variants, variant_peers = variant_candidates(net, x, target, layer, peer, module)
    candidates.update(variants)
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
    for method, peers in variant_peers.items():
        fastest = min(t[f"{method} ({k})"] for k in peers)
        row(f"{method} (ours)", t[f"{method} (ours)"], fastest, "fastest peer", 1.0)
        for key in peers:
            row(f"{method} ({key})", t[f"{method} ({key})"], fastest, "fastest peer")
    if explorer:
        row("class switch in the explorer (Grad-CAM)", t["switch"] / len(switch_to), t["floor"],
            "floor")
    return rows


def variant_candidates(net, x, target, layer, peer, module) -> tuple[dict, dict]:
    """Grad-CAM++, LayerCAM and HiResCAM, ours and the peers' that have them:
    ``({"<method> (<who>)": fn}, {method: its peers})``."""
    from pytorch_grad_cam import GradCAMPlusPlus, HiResCAM, LayerCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from torchcam.methods import GradCAMpp as TorchcamGradCAMpp
    from torchcam.methods import LayerCAM as TorchcamLayerCAM

    variants = {"Grad-CAM++": (grad_cam_plus_plus, GradCAMPlusPlus, TorchcamGradCAMpp),
                "LayerCAM": (layer_cam, LayerCAM, TorchcamLayerCAM),
                "HiResCAM": (hires_cam, HiResCAM, None)}  # torchcam has no HiResCAM
    candidates, peers = {}, {}
    for method, (ours, theirs, torchcams) in variants.items():
        candidates[f"{method} (ours)"] = functools.partial(ours, net, x, target, layer=layer)
        candidates[f"{method} (grad-cam)"] = functools.partial(
            _gradcam, theirs, peer, module, x, ClassifierOutputTarget(target))
        peers[method] = ("grad-cam",)
        if torchcams:
            candidates[f"{method} (torchcam)"] = functools.partial(_torchcam, torchcams, peer,
                                                                   layer, x, target)
            peers[method] += ("torchcam",)
    return candidates, peers


CAM_ROUNDS = 7


def cam_variant_rows(name: str) -> list[dict]:
    """Grad-CAM and its variants against the peers on one model, CPU and wall milliseconds
    (medians of interleaved rounds): on a shared machine the CPU time is the work done."""
    from captum.attr import LayerGradCam
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from torchcam.methods import GradCAM as TorchcamGradCAM

    net, x, layer = load(name)
    target = 281
    peer = copy.deepcopy(net).requires_grad_(True)  # the peers need trainable parameters
    module = helpers.get_layer(peer, layer)[1]
    candidates = {
        "Grad-CAM (ours)": lambda: grad_cam(net, x, target, layer=layer),
        "Grad-CAM (captum)": lambda: LayerGradCam(peer, module).attribute(x, target=target),
        "Grad-CAM (torchcam)": lambda: _torchcam(TorchcamGradCAM, peer, layer, x, target),
        "Grad-CAM (grad-cam)": lambda: _gradcam(GradCAM, peer, module, x,
                                                ClassifierOutputTarget(target)),
    }
    variants, peers = variant_candidates(net, x, target, layer, peer, module)
    candidates.update(variants)
    peers = {"Grad-CAM": ("captum", "torchcam", "grad-cam"), **peers}
    c, w = interleaved_cpu_wall(candidates, CAM_ROUNDS)
    rows = []
    for method, who in peers.items():
        fastest = min(c[f"{method} ({k})"] for k in who)
        for key in ("ours", *who):
            ratio = c[f"{method} ({key})"] / fastest
            verdict = (" ok" if ratio <= 1.0 else " **over**") if key == "ours" else ""
            rows.append({"model": name, "method": f"{method} ({key})",
                         "CPU ms": f"{c[f'{method} ({key})'] * 1000:.1f}",
                         "wall ms": f"{w[f'{method} ({key})'] * 1000:.1f}",
                         "vs": "fastest peer (CPU)", "ratio": f"{ratio:.2f}{verdict}"})
    return rows


def interleaved_cpu_wall(candidates: dict, rounds: int, *, warmups: int = 1
                         ) -> tuple[dict[str, float], dict[str, float]]:
    """Median CPU seconds (of this process) and wall seconds of each function, measured in
    rotation (round 1: a, b, c; round 2: ...), so that a slow phase of a shared machine hits every
    candidate alike; each runs ``warmups`` times first."""
    for fn in candidates.values():
        for _ in range(warmups):
            fn()
    cpu = {name: [] for name in candidates}
    wall = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            start, begun = time.perf_counter(), time.process_time()
            fn()
            cpu[name].append(time.process_time() - begun)
            wall[name].append(time.perf_counter() - start)
    return ({name: statistics.median(v) for name, v in cpu.items()},
            {name: statistics.median(v) for name, v in wall.items()})


def interleaved(candidates: dict, rounds: int = 11) -> dict[str, float]:
    """Median wall seconds of each function, measured in rotation (see
    ``interleaved_cpu_wall``), after two warm-up calls."""
    return interleaved_cpu_wall(candidates, rounds, warmups=2)[1]


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


IG_STEPS, IG_ROUNDS = 32, 5


def ig_rows() -> list[dict]:
    """Integrated Gradients (32 Gauss-Legendre steps, Lite0, one 224x224 image) against captum with
    the same chunk size, and against 32 x the forward+backward floor; the
    fooling image (10 steps) against the plain loop a lesson writes. CPU seconds of this process
    (the work done) and wall seconds, medians of interleaved rounds."""
    from captum.attr import IntegratedGradients

    from helpers.adversarial import fooling_image
    from helpers.attribution import integrated_gradients

    lesson = helpers.load_model()
    net, x, target = lesson.model, lesson.preprocess("cat"), 281
    captum = IntegratedGradients(net)
    black, white = lesson.input_range
    unit, goal, budget, steps = white - black, 1, 2 / 255, 10

    def floor():
        for _ in range(IG_STEPS):
            leaf = x.detach().requires_grad_(True)
            torch.autograd.grad(net(leaf)[0, target], leaf)

    def plain_loop():  # lesson 11's hand-written loop
        low = torch.maximum(x - budget * unit, black)
        high = torch.minimum(x + budget * unit, white)
        fooled = x.clone()
        for _ in range(steps):
            leaf = fooled.clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(net(leaf).log_softmax(dim=1)[0, goal], leaf)
            fooled = torch.minimum(torch.maximum(fooled + 2.5 * budget / steps * unit
                                                 * grad.sign(), low), high)

    candidates = {
        "floor": floor,
        "ours": lambda: integrated_gradients(lesson, x, target, steps=IG_STEPS, progress=False),
        "captum 4": lambda: captum.attribute(x, baselines=0.0, target=target, n_steps=IG_STEPS,
                                             internal_batch_size=4),
        "fool ours": lambda: fooling_image(lesson, x, goal, epsilon=budget, steps=steps,
                                           progress=False),
        "fool plain": plain_loop,
    }
    c, w = interleaved_cpu_wall(candidates, IG_ROUNDS)
    rows = []
    for label, name, reference in (
            (f"{IG_STEPS} x forward + backward floor", "floor", "floor"),
            ("Integrated Gradients (ours, batch_size=4)", "ours", "captum 4"),
            ("Integrated Gradients (captum, internal_batch_size=4)", "captum 4", "captum 4"),
            ("fooling image, 10 steps (ours)", "fool ours", "fool plain"),
            ("fooling image, 10 steps (plain loop)", "fool plain", "fool plain")):
        rows.append({"what": label, "CPU s": f"{c[name]:.2f}", "wall s": f"{w[name]:.2f}",
                     "vs": reference, "CPU ratio": f"{c[name] / c[reference]:.2f}",
                     "vs floor (CPU)": f"{c[name] / c['floor']:.2f}" if "Integrated" in label
                     else "-"})
    return rows


def main() -> None:
    if "--ig" in sys.argv:
        rows = ig_rows()
        write_section("attribution.py --ig", "Integrated Gradients vs captum; fooling images vs "
                      "a plain loop (Lite0, one 224x224 image)",
                      f"{IG_STEPS} Gauss-Legendre steps, baseline 0, {IG_ROUNDS} interleaved "
                      "rounds, torch threads as given; CPU seconds of this process (the work "
                      "done; on a shared machine wall seconds mostly measure the other tenants); "
                      f"load average at the end {os.getloadavg()[0]:.1f}. Target: ours <= captum "
                      "with the same chunk size.\n\n" + table(rows))
        return
    if "--cam-variants" in sys.argv:
        rows = cam_variant_rows("efficientnet_lite0") + cam_variant_rows("resnet50")
        write_section("attribution.py --cam-variants", "Grad-CAM and its variants vs peers "
                      "(one image, 224x224)",
                      f"Lite0 at bn2, ResNet50 (random weights) at layer4; {CAM_ROUNDS} "
                      f"interleaved rounds, {torch.get_num_threads()} torch thread(s); CPU "
                      "milliseconds of this process (the work done; on a shared machine wall "
                      "time mostly measures the other tenants), medians; load average at the end "
                      f"{os.getloadavg()[0]:.1f}. Target: ours <= the fastest peer that has the "
                      "method (torchcam has no HiResCAM; torchcam 0.5's GradCAMpp computes "
                      "sum g^2 ReLU(g), not the paper's weights).\n\n" + table(rows))
        return
    if sys.argv[1:2] == ["--child"]:
        name, who, k = sys.argv[2:5]
        score_cam_child(name, who, int(k) or None)
        return
    full_resnet = "--full-resnet" in sys.argv
    rows = gradient_rows("efficientnet_lite0") + gradient_rows("resnet50")
    write_section("attribution.py", "Attribution and CAM methods vs peers (one image, 224x224)",
                  "Ratios are against the row named in `vs`; targets: saliency and guided "
                  "backprop <= 1.05 x floor, SmoothGrad <= 1.1 x n x floor, Grad-CAM and its "
                  "variants <= the fastest peer. ResNet50 has random weights (timing only)."
                  "\n\n" + table(rows)
                  + "\n\n" + table(score_rows("efficientnet_lite0", True)
                                   + score_rows("resnet50", full_resnet)))


if __name__ == "__main__":
    main()
