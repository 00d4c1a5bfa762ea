"""Time occlusion, the causal curves and ROAD's imputation against peers, rounds interleaved.

- occlusion (Lite0, one 224x224 image, window 32, stride 16: 169 occluded copies) against captum's
  ``Occlusion`` with its default ``perturbations_per_eval=1`` and with 8 (the batch we use);
- ROAD's noisy linear imputation of one image (50 % of the pixels missing, in Grad-CAM's order: one
  large hole; in a random order: scattered pixels) against pytorch-grad-cam's ``NoisyLinearImputer``
  (the authors' code: scipy's sparse direct solver);
- one deletion curve (28 steps, grey) for scale.

Usage: python benchmarks/faithfulness.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

import torch
from _report import table, write_section

import helpers
from helpers.baselines import random_map
from helpers.cam import grad_cam
from helpers.causal import deletion
from helpers.imputation import noisy_linear_imputation
from helpers.occlusion import occlusion

warnings.filterwarnings("ignore")


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process): on a shared machine the CPU time of a
    1-thread run measures the work done, the wall time also the other tenants' load."""
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    from captum.attr import Occlusion
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    model = helpers.load_model()
    x = model.preprocess("cat")
    target = model.predict(x, 1)[0][0].index
    cam = grad_cam(model, x, target)
    masks = {}
    for name, ranking in (("one hole (Grad-CAM order)", cam), ("scattered (random order)",
                                                                random_map(x))):
        order = ranking.flatten().argsort(descending=True)
        known = torch.ones(x.shape[-1] ** 2, dtype=torch.bool)
        known[order[: order.numel() // 2]] = False
        masks[name] = known.view(1, *x.shape[-2:])

    candidates = {
        "occlusion 32/16 (ours, batches of 8)": lambda: occlusion(
            model, x, target, window=32, stride=16, progress=False),
        "occlusion 32/16 (captum, 1 per eval)": lambda: Occlusion(model.model).attribute(
            x, sliding_window_shapes=(3, 32, 32), strides=(3, 16, 16), baselines=0.0,
            target=target),
        "occlusion 32/16 (captum, 8 per eval)": lambda: Occlusion(model.model).attribute(
            x, sliding_window_shapes=(3, 32, 32), strides=(3, 16, 16), baselines=0.0,
            target=target, perturbations_per_eval=8),
        "deletion curve, 28 steps (ours)": lambda: deletion(model, x, target, attribution=cam,
                                                            steps=28, progress=False),
    }
    for name, known in masks.items():
        candidates[f"ROAD imputation, {name} (ours)"] = (
            lambda known=known: noisy_linear_imputation(x, known))
        candidates[f"ROAD imputation, {name} (pytorch-grad-cam)"] = (
            lambda known=known: NoisyLinearImputer()(x[0], known[0].float()))

    with torch.no_grad():
        model(x)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in candidates}
    cpu: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):  # interleaved: a burst of load hits every candidate alike
        for name, fn in candidates.items():
            wall, used = timed(fn)
            times[name].append(wall)
            cpu[name].append(used)
    medians = {name: statistics.median(values) for name, values in cpu.items()}

    def versus(name: str) -> str:
        if "(ours" in name:
            return "-"
        ours = next(n for n in medians if n.startswith(name.split(" (")[0]) and "(ours" in n)
        return f"{medians[name] / medians[ours]:.1f} x ours"

    rows = [{"what": name, "CPU s (median)": f"{medians[name]:.3f}",
             "wall s (median)": f"{statistics.median(times[name]):.3f}",
             "peer / ours (CPU)": versus(name)}
            for name in candidates]
    load = os.getloadavg()[0]
    body = (f"Lite0, one 224x224 image (cat), {rounds} interleaved rounds, "
            f"{torch.get_num_threads()} thread(s); load average at the end {load:.1f}. The ratio "
            "uses CPU seconds of this process, the work done; on a busy shared machine wall "
            "seconds mostly measure the other tenants.\n\n" + table(rows))
    write_section("faithfulness.py", "Faithfulness: occlusion and ROAD imputation vs peers", body)


if __name__ == "__main__":
    main()
