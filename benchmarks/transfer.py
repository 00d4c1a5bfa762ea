"""Class pictures that other networks recognise: the probability EfficientNet-Lite1 and Lite2
(which took no part in the optimisation) give the class of Lite0's pictures, on classes lesson 07
does not show, over seeds, for each recipe; and, with ``--store``, the 224 px pictures lesson 07
shows, made once with the showcase recipe.

Never optimised against the judges: every picture is made on Lite0 alone.

Usage:
    .venv/bin/python benchmarks/transfer.py            # the table in RESULTS.md (about 20 min)
    .venv/bin/python benchmarks/transfer.py --store    # helpers/data/pictures/*.png (about 1 min)
"""

from __future__ import annotations

import sys
import time
import warnings

import torch
from _report import table, write_section

import helpers
from helpers.synthesis import (
    SHOWCASE,
    class_visualization,
    held_out_probability,
    other_networks_probability,
    store_class_pictures,
)

# Declared before any recipe was tried: the held-out classes of benchmarks/held_out.py and
# benchmarks/synthesis.py that lesson 07 does not show.
CLASSES = ["golden retriever", "lemon", "castle", "sports car", "volcano", "daisy", "pizza",
           "jellyfish"]
SEEDS = (0, 1, 2)
RECIPES = {
    f"showcase: robust, {SHOWCASE['views']} views, {SHOWCASE['steps']} steps":
        {k: v for k, v in SHOWCASE.items() if k != "seed"},  # the seeds are the table's
    "robust, 1 view, 128 steps (the default call)": {},
    "robust, 2 views, 128 steps": {"views": 2},
}


def main() -> None:
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    model = helpers.load_model()
    if "--store" in sys.argv:
        start = time.perf_counter()
        paths = store_class_pictures(model)
        print(f"stored {len(paths)} pictures in {time.perf_counter() - start:.0f} s")
        return
    indices = [model.class_index(c) for c in CLASSES]
    rows, summary = [], []
    for name, knobs in RECIPES.items():
        means, lows, seconds = [], [], []
        for seed in SEEDS:
            start = time.perf_counter()
            images = class_visualization(model, CLASSES, seed=seed, progress=False, **knobs)
            seconds.append((time.perf_counter() - start) / len(CLASSES))
            with torch.no_grad():
                p = model(images).softmax(dim=1)[torch.arange(len(CLASSES)), indices]
            judged = other_networks_probability(model, images, indices, per_judge=True)
            other = judged.mean(dim=1)
            held = held_out_probability(model, images, indices)
            means.append(other.mean().item())
            lows.append(other.min().item())
            rows.append({"recipe": name, "seed": seed, "p (min)": f"{p.min():.2f}",
                         "held-out views (mean)": f"{held.mean():.2f}",
                         "Lite1, Lite2 (mean)": f"{judged[:, 0].mean():.2f}, "
                                                f"{judged[:, 1].mean():.2f}",
                         "other networks per class": ", ".join(f"{v:.2f}" for v in other),
                         "mean": f"{other.mean():.2f}", "lowest": f"{other.min():.2f}",
                         "s per image": f"{seconds[-1]:.1f}"})
            print(rows[-1], flush=True)
        summary.append(f"- {name}: mean {min(means):.2f} to {max(means):.2f} over the seeds, "
                       f"lowest class {min(lows):.2f}; {sum(seconds) / len(seconds):.1f} s per "
                       "image")
    write_section(
        "transfer.py", "Class pictures that other networks recognise (classes lesson 07 does "
        "not show)",
        "The probability of the class for EfficientNet-Lite1 and Lite2 (mean of the two), which "
        "took no part in the optimisation; 224 x 224 px, batches of 4, seeds "
        f"{', '.join(map(str, SEEDS))}. Classes, in the order of the per-class column: "
        f"{', '.join(CLASSES)}. The aim: mean >= 0.85 and every class >= 0.5.\n\n"
        + "\n".join(summary) + "\n\n" + table(rows))


if __name__ == "__main__":
    main()
