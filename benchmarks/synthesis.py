"""Seconds per gradient-ascent step against the forward+backward floor at the same resolution.

The floor is a bare forward pass and ``autograd.grad`` to the input; a step of ``ascend`` adds
the objective, jitter, normalisation, clamping and (every 4th step) a blur. Target: <= 1.15x.
"""

from __future__ import annotations

import statistics
import time

import torch
from _report import table, write_section

import helpers
from helpers.synthesis import ascend, class_visualization, deep_dream, layer_norm


def per_step(fn, steps: int, rounds: int = 5) -> float:
    fn(2)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn(steps)
        times.append((time.perf_counter() - start) / steps)
    return statistics.median(times)


def main() -> None:
    model = helpers.load_model()
    rows = []
    for size, batch in ((160, 1), (224, 1), (224, 3)):
        x = torch.zeros(batch, 3, size, size)

        def floor(steps, x=x):
            for _ in range(steps):
                leaf = x.detach().requires_grad_(True)
                torch.autograd.grad(model.model(leaf)[:, 1].sum(), leaf)

        def class_step(steps, batch=batch, size=size):
            class_visualization(model, [1] * batch, steps=steps, size=size, progress=False)

        def dream_step(steps, x=x):
            ascend(model, x, layer_norm("blocks.3"), steps=steps, jitter=16, progress=False)

        t_floor = per_step(floor, 20)
        for name, fn in (("class visualisation", class_step), ("deep dream step", dream_step)):
            t = per_step(fn, 20)
            ratio = t / t_floor
            rows.append({"what": name, "input": f"{batch} x {size}x{size}",
                         "ms / step": f"{t * 1000:.1f}", "floor ms": f"{t_floor * 1000:.1f}",
                         "ratio": f"{ratio:.2f}" + (" ok" if ratio <= 1.15 else " **over**")})
    x = model.preprocess("grace_hopper")
    start = time.perf_counter()
    deep_dream(model, x, "blocks.3", octaves=4, steps=10, progress=False)
    rows.append({"what": "deep dream, 4 octaves x 10 steps (whole call)", "input": "1 x 224x224",
                 "ms / step": f"{(time.perf_counter() - start) * 1000 / 40:.1f}",
                 "floor ms": "-", "ratio": "-"})
    write_section("synthesis.py", "Gradient ascent: time per step vs the forward+backward floor",
                  "Target: <= 1.15 x floor at the same resolution.\n\n" + table(rows))


if __name__ == "__main__":
    main()
