"""Class visualisation: seconds per class image against torch-lucent's ``render_vis``, same run.

Both use the same recipe (FFT + decorrelated colours, lucent's standard transforms, Adam 0.05),
the same size and the same number of steps, on the bundled Lite0. lucent renders one image per
call; ``class_visualization`` optimises all classes as one batch (one image per class). The
runs alternate (lucent, ours, lucent) so that a change in the machine's load hits both.
Also reported: p and the held-out-view probability of our pictures. Target: <= 0.6 x lucent.

Usage: ``.venv/bin/python benchmarks/synthesis.py [size] [steps] [classes]``
"""

from __future__ import annotations

import sys
import time
import warnings

import torch
from _report import table, write_section

import helpers
from helpers.synthesis import class_visualization, held_out_probability

CLASSES = ["goldfish", "tarantula", "monarch", "espresso", "volcano", "daisy", "pizza",
           "jellyfish"]


def lucent_seconds(model, index: int, size: int, steps: int) -> float:
    """One ``render_vis`` call for one class (lucent's defaults: FFT, decorrelated, standard
    transforms, Adam 0.05), with Lite0's normalisation as the last transform. As its README
    shows it, on a model whose weights require grad: ``loss.backward()`` also computes the
    weights' gradients, which ``class_visualization`` never does."""
    from lucent.optvis import objectives, param, render, transform

    net = model.model
    mean = torch.tensor(model.mean).view(1, 3, 1, 1)
    std = torch.tensor(model.std).view(1, 3, 1, 1)
    transforms = [*transform.standard_transforms, lambda x: (x - mean) / std]
    start = time.perf_counter()
    render.render_vis(net, objectives.channel("classifier", index),
                      param_f=lambda: param.image(size), transforms=transforms,
                      thresholds=(steps,), preprocess=False, progress=False, show_image=False)
    elapsed = time.perf_counter() - start
    for module in net.modules():  # render_vis leaves its hooks and the weights' .grad behind
        module._forward_hooks.clear()
    for p in net.parameters():
        p.grad = None
    return elapsed


def main() -> None:
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 224
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 128
    classes = CLASSES[: int(sys.argv[3])] if len(sys.argv) > 3 else CLASSES
    warnings.filterwarnings("ignore")
    model = helpers.load_model()
    indices = [model.class_index(c) for c in classes]
    lucent = [lucent_seconds(model, indices[0], size, steps)]
    start = time.perf_counter()
    images = class_visualization(model, classes, size=size, steps=steps, progress=False)
    ours = (time.perf_counter() - start) / len(classes)
    lucent.append(lucent_seconds(model, indices[1], size, steps))
    lucent_per_image = sum(lucent) / len(lucent)
    with torch.no_grad():
        probs = model(images).softmax(dim=1)[torch.arange(len(classes)), indices]
    held_out = held_out_probability(model, images, indices)
    rows = [
        {"what": f"torch-lucent render_vis, 1 class per call (mean of {len(lucent)} calls)",
         "s per class image": f"{lucent_per_image:.1f}", "ratio": "1.00"},
        {"what": f"ours: class_visualization, {len(classes)} classes in one batch",
         "s per class image": f"{ours:.1f}",
         "ratio": f"{ours / lucent_per_image:.2f}"
                  + (" ok" if ours / lucent_per_image <= 0.6 else " **over**")},
    ]
    quality = [{"class": c, "p": f"{p:.3f}", "held-out views (mean of 5)": f"{h:.3f}"}
               for c, p, h in zip(classes, probs.tolist(), held_out.tolist())]
    write_section(
        "synthesis.py", "Class visualisation: time per class image vs torch-lucent",
        f"{size} x {size} px, {steps} Adam steps, seed 0, the same recipe in both; "
        "target: <= 0.6 x lucent.\n\n" + table(rows) + "\n\n"
        "Our pictures in that run:\n\n" + table(quality))


if __name__ == "__main__":
    main()
