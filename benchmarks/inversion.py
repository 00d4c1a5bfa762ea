"""Feature inversion: seconds per optimiser step against torch-lucent's ``render_vis``.

torch-lucent has no inversion recipe; its documented way to add one is a custom objective, here
Mahendran & Vedaldi's normalised distance to the photo's activations at the layer, which
``render_vis`` minimises with its FFT + decorrelated image, Adam 0.05 and the same transforms as
ours (``INVERSION``, built from lucent's own transform functions). The photo's activations are
computed once, as lucent's objectives take a fixed target. Ours (``feature_inversion``) sends
the photo through the network with the picture every step, so that both see the same random
transforms (twice the images per forward pass), and stops the forward pass at the layer; lucent
runs the whole network. The runs alternate lucent, ours, lucent; CPU seconds of this process are
given beside wall seconds (on a busy machine the wall time also measures the other tenants).

Usage: ``.venv/bin/python benchmarks/inversion.py [size] [steps]``
"""

from __future__ import annotations

import os
import sys
import time
import warnings

import torch
import torch.nn.functional as F
from _report import table, write_section

import helpers
from helpers.synthesis import feature_inversion
from helpers.synthesis.transforms import ROTATIONS

LAYERS = ["blocks.1", "blocks.5"]
NOTE = ("Ours sends the photo through the network with the picture (the price of transforms that "
        "keep the two aligned), so a step is a forward and backward pass of two images against "
        "lucent's one; it stops at the layer, lucent runs the whole network. Early layers "
        "favour ours, deep ones lucent. Compare the CPU columns: on a busy machine the wall time "
        "also measures the other tenants, and two threads on shared cores can cost far more CPU "
        "than one.")


def timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def lucent_inversion(model, photo: torch.Tensor, layer: str, steps: int) -> None:
    from lucent.optvis import objectives, param, render, transform

    net = model.model
    with helpers.record(net, layer) as rec, torch.no_grad():
        net(photo)
    target = rec[layer]

    @objectives.wrap_objective()
    def match(layer_name, target):
        def inner(hook):
            acts = hook(layer_name.replace(".", "_"))
            return (acts - target).pow(2).sum() / target.pow(2).sum()
        return inner

    mean = torch.tensor(model.mean).view(1, 3, 1, 1)
    std = torch.tensor(model.std).view(1, 3, 1, 1)
    transforms = [transform.pad(8, mode="constant", constant_value=0.5), transform.jitter(8),
                  transform.random_scale([1 + (i - 5) / 50 for i in range(11)]),
                  transform.random_rotate(ROTATIONS), transform.jitter(4),
                  lambda x: (x - mean) / std]  # then render_vis resizes to the photo's size
    render.render_vis(net, match(layer, target), param_f=lambda: param.image(photo.shape[-1]),
                      transforms=transforms, thresholds=(steps,), preprocess=False,
                      progress=False, show_image=False, fixed_image_size=photo.shape[-1])
    for module in net.modules():  # render_vis leaves its forward hooks behind
        module._forward_hooks.clear()


def main() -> None:
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 128
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 48
    warnings.filterwarnings("ignore")
    model = helpers.load_model()
    photo = F.interpolate(model.preprocess("cat"), size=(size, size), mode="bilinear",
                          antialias=True, align_corners=False)
    rows = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for layer in LAYERS:
            lucent = [timed(lambda layer=layer: lucent_inversion(model, photo, layer, steps))]
            ours = timed(lambda layer=layer: feature_inversion(model, photo, layer, steps=steps,
                                                               progress=False))
            lucent.append(timed(lambda layer=layer: lucent_inversion(model, photo, layer, steps)))
            wall, cpu = (sum(run[i] for run in lucent) / 2 for i in (0, 1))
            rows.append({"threads": threads, "layer": layer,
                         "lucent ms per step (wall / CPU)":
                             f"{1000 * wall / steps:.0f} / {1000 * cpu / steps:.0f}",
                         "ours ms per step (wall / CPU)":
                             f"{1000 * ours[0] / steps:.0f} / {1000 * ours[1] / steps:.0f}",
                         "ours / lucent (CPU)": f"{ours[1] / cpu:.2f}"})
            print(rows[-1], flush=True)
    load = os.getloadavg()[0]
    write_section(
        "inversion.py", "Feature inversion: time per step vs torch-lucent",
        f"Lite0, the cat photo at {size} x {size} px, {steps} Adam steps, seed 0, the "
        f"`INVERSION` transforms; load average at the end {load:.1f}.\n\n" + table(rows)
        + "\n\n" + NOTE)


if __name__ == "__main__":
    main()
