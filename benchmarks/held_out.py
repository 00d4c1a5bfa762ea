"""Held-out-view probability of class pictures, for classes lesson 07 does not show, over seeds
and thread counts: the robust recipe (the default call, 224 px x 128 steps) against the standard
transforms of Olah et al. it widens. The views (``held_out_views``) lie outside everything the
robust transforms draw: a flip, a 0.5x shrink on grey, a 1.5x centre crop, a 30 degree turn, upside
down.

Usage: ``.venv/bin/python benchmarks/held_out.py [size] [steps]``
"""

from __future__ import annotations

import sys
import time
import warnings

import torch
from _report import table, write_section

import helpers
from helpers.synthesis import STANDARD, class_visualization, held_out_probability

CLASSES = ["golden retriever", "lemon", "castle", "sports car"]  # not in lesson 07
VIEWS = ["flip", "0.5x", "1.5x", "30°", "upside down"]


def main() -> None:
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 224
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 128
    warnings.filterwarnings("ignore")
    model = helpers.load_model()
    indices = [model.class_index(c) for c in CLASSES]
    rows, lowest = [], {}
    runs = [("robust", None, threads, seed) for threads in (1, 2) for seed in (0, 1, 2)]
    runs += [("standard", STANDARD, 1, seed) for seed in (0, 1, 2)]
    for recipe, transforms, threads, seed in runs:
        torch.set_num_threads(threads)
        start = time.perf_counter()
        images = class_visualization(model, CLASSES, size=size, steps=steps, seed=seed,
                                     transforms=transforms, progress=False)
        seconds = (time.perf_counter() - start) / len(CLASSES)
        with torch.no_grad():
            probs = model(images).softmax(dim=1)[torch.arange(len(CLASSES)), indices]
        views = held_out_probability(model, images, indices, per_view=True)
        held_out = views.mean(dim=1)
        worst = views.min(dim=0).values
        lowest[recipe] = min(lowest.get(recipe, 1.0), held_out.min().item())
        rows.append({"transforms": recipe, "threads": threads, "seed": seed,
                     "p (min)": f"{probs.min():.3f}",
                     "held-out mean per class: " + ", ".join(CLASSES):
                         ", ".join(f"{h:.3f}" for h in held_out.tolist()),
                     "lowest view over the classes: " + ", ".join(VIEWS):
                         ", ".join(f"{w:.2f}" for w in worst.tolist()),
                     "s per image": f"{seconds:.1f}"})
        print(rows[-1], flush=True)
    summary = "; ".join(f"{recipe}: lowest held-out mean {value:.3f}"
                        for recipe, value in lowest.items())
    write_section(
        "held_out.py", "Held-out views of class pictures, classes the lesson does not show",
        f"{size} x {size} px, {steps} Adam steps, FFT + decorrelated colours, batches of 4. "
        f"{summary}.\n\n" + table(rows))


if __name__ == "__main__":
    main()
