"""Class visualisation: seconds per class image against torch-lucent's ``render_vis``, same run.

Both use FFT + decorrelated colours and Adam 0.05 at the same size and number of steps, on the
bundled Lite0. lucent runs twice per round: with its own ``standard_transforms`` (its default)
and with the course's ``ROBUST`` transforms (the same recipe as ours, built from lucent's own
transform functions). lucent renders one image per call; ``class_visualization`` optimises the
classes ``batch_size`` (4) at a time. Each thread count runs lucent, ours, lucent, so that a
change in the machine's load hits both. Neither computes gradients for the weights (the lesson
model's weights do not require them). CPU seconds of this process are reported next to wall
seconds: on a busy machine the wall time also measures the other tenants.

Usage: ``.venv/bin/python benchmarks/synthesis.py [size] [steps] [classes]``
"""

from __future__ import annotations

import os
import sys
import time
import warnings

import torch
from _report import table, write_section

import helpers
from helpers.synthesis import class_visualization, held_out_probability
from helpers.synthesis.transforms import ROBUST_SCALES, ROTATIONS

NOTE = ("Both recipes draw the same transforms, but they differ in one way that matters for "
        "time: lucent's `jitter` translates the image (its size stays) and its `random_scale` pads "
        "a shrunk image back to its size, while ours, like lucid's, crops and passes the smaller "
        "image on. So our forward passes are smaller, more so with the robust jitters and scales. "
        "With the standard transforms ours takes 10.8 to 11.0 s per class image at 1 thread "
        "(`benchmarks/held_out.py`): about 0.75 x lucent.")
CLASSES = ["goldfish", "tarantula", "monarch", "espresso", "volcano", "daisy", "pizza",
           "jellyfish"]


def timed(fn, *args) -> tuple[float, float]:
    """``(wall s, CPU s)`` of one call ``fn(*args)``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn(*args)
    return time.perf_counter() - wall, time.process_time() - cpu


def lucent_render(model, index: int, size: int, steps: int, recipe: str) -> None:
    """One ``render_vis`` call for one class, Lite0's normalisation as the last transform."""
    from lucent.optvis import objectives, param, render, transform

    if recipe == "standard":
        transforms = list(transform.standard_transforms)
    else:  # the course's ROBUST list, made of lucent's own transforms
        transforms = [transform.pad(12, mode="constant", constant_value=0.5),
                      transform.jitter(24), transform.random_scale(ROBUST_SCALES),
                      transform.random_rotate(ROTATIONS), transform.jitter(8)]
    net = model.model
    mean = torch.tensor(model.mean).view(1, 3, 1, 1)
    std = torch.tensor(model.std).view(1, 3, 1, 1)
    render.render_vis(net, objectives.channel("classifier", index),
                      param_f=lambda: param.image(size),
                      transforms=[*transforms, lambda x: (x - mean) / std],
                      thresholds=(steps,), preprocess=False, progress=False, show_image=False)
    for module in net.modules():  # render_vis leaves its forward hooks behind
        module._forward_hooks.clear()


def main() -> None:
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 224
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 128
    classes = CLASSES[: int(sys.argv[3])] if len(sys.argv) > 3 else CLASSES[:4]
    warnings.filterwarnings("ignore")
    model = helpers.load_model()
    indices = [model.class_index(c) for c in classes]
    rows, images = [], None
    for threads in (1, 2):
        torch.set_num_threads(threads)
        lucent = {"standard": [], "robust": []}
        for recipe in lucent:
            lucent[recipe].append(timed(lucent_render, model, indices[0], size, steps, recipe))

        def ours_run(views=1):
            nonlocal images
            images = class_visualization(model, classes, size=size, steps=steps, views=views,
                                         progress=False)
        ours = [t / len(classes) for t in timed(ours_run)]
        two_views = [t / len(classes) for t in timed(ours_run, 2)]
        for recipe in lucent:
            lucent[recipe].append(timed(lucent_render, model, indices[1], size, steps, recipe))
        reference = sum(w for w, _ in lucent["robust"]) / 2
        for recipe, runs in lucent.items():
            wall, cpu = (sum(r[i] for r in runs) / len(runs) for i in (0, 1))
            rows.append({"threads": threads,
                         "what": f"torch-lucent render_vis, {recipe} transforms, 1 class per call",
                         "wall s per class image": f"{wall:.1f}", "CPU s": f"{cpu:.1f}",
                         "ours / this": f"{ours[0] / wall:.2f}",
                         "ours with 2 views / this": f"{two_views[0] / wall:.2f}"})
        rows.append({"threads": threads,
                     "what": f"ours: class_visualization (robust), {len(classes)} classes, "
                             "batches of 4",
                     "wall s per class image": f"{ours[0]:.1f}", "CPU s": f"{ours[1]:.1f}",
                     "ours / this": "1.00", "ours with 2 views / this": "-"})
        rows.append({"threads": threads,
                     "what": f"ours: class_visualization (robust, views=2), {len(classes)} "
                             "classes, batches of 4",
                     "wall s per class image": f"{two_views[0]:.1f}",
                     "CPU s": f"{two_views[1]:.1f}",
                     "ours / this": f"{ours[0] / two_views[0]:.2f}",
                     "ours with 2 views / this": "1.00"})
        print(rows[-4:], f"ratio to lucent, same recipe: {ours[0] / reference:.2f}; "
              f"2 views: {two_views[0] / reference:.2f}", flush=True)
    with torch.no_grad():
        probs = model(images).softmax(dim=1)[torch.arange(len(classes)), indices]
    held_out = held_out_probability(model, images, indices)
    quality = [{"class": c, "p": f"{p:.3f}", "held-out views (mean of 5)": f"{h:.3f}"}
               for c, p, h in zip(classes, probs.tolist(), held_out.tolist())]
    load = os.getloadavg()[0]
    write_section(
        "synthesis.py", "Class visualisation: time per class image vs torch-lucent",
        f"{size} x {size} px, {steps} Adam steps, seed 0; load average at the end {load:.1f}. "
        "Target: ours <= 0.6 x lucent's time per class image (lucent draws one view per step; "
        "`views=2` draws two).\n\n" + table(rows) + "\n\n"
        "Our pictures in the last run (2 threads, views=2):\n\n" + table(quality) + "\n\n" + NOTE)


if __name__ == "__main__":
    main()
