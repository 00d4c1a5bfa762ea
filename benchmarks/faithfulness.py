"""Time occlusion, the causal curves and ROAD's imputation against peers, rounds interleaved.

- occlusion (Lite0, one 224x224 image, window 32, stride 16: 169 occluded copies) against captum's
  ``Occlusion`` with its default ``perturbations_per_eval=1`` and with 8 (the batch we use);
- ROAD's noisy linear imputation of one image (50 % of the pixels missing, in Grad-CAM's order: one
  large hole; in a random order: scattered pixels) against pytorch-grad-cam's ``NoisyLinearImputer``
  (the authors' code: scipy's sparse direct solver);
- one deletion curve (28 steps, grey) for scale.

``--store``: the evidence of lesson 09 instead. Every method of
``helpers.scoreboard.course_methods`` on every case of ``helpers.evaluation.make_cases`` (Lite0),
every measure, and the randomisation check with both randomisations; the scores go to
``helpers/data/scores/efficientnet_lite0.json`` (the lesson loads them and recomputes a sample to
check them) and the cost per case to RESULTS.md. It takes hours on one thread: ROAD's imputation
is a linear solve per image: ``--part k/n`` runs every n-th case from k (one process each), and
``--merge PARTS...`` joins them into ``--out`` and writes the cost per case to RESULTS.md.

Usage: python benchmarks/faithfulness.py [--rounds 5]
       python benchmarks/faithfulness.py --store --part 0/2 --out part0.json  (and 1/2)
       python benchmarks/faithfulness.py --merge part0.json part1.json
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
import warnings
from pathlib import Path

import torch
from _report import machine, table, write_section

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


# The randomisation check runs every cheap method on every case; the three methods that cost
# tens of passes per map (and per randomised network) run on a seeded subset of this many cases.
COSTLY = ("SmoothGrad", "Score-CAM", "occlusion")
COSTLY_SANITY_CASES = 24
STORE = Path(__file__).resolve().parent.parent / "helpers" / "data" / "scores"


def store(limit: int | None, part: tuple[int, int], out: Path) -> None:
    """Score every method on the cases of this part (every ``part[1]``-th case from
    ``part[0]``) and write them to ``out`` (see the module docstring); ``--merge`` joins the
    parts."""
    from helpers.evaluation import make_cases
    from helpers.scoreboard import (
        Scores,
        course_methods,
        measure_maps,
        method_maps,
        randomised_similarity,
        save_scores,
    )

    model = helpers.load_model()
    begin = time.perf_counter()
    cpu = time.process_time()
    cases = make_cases(model)
    case_seconds = time.process_time() - cpu
    everything = list(range(len(cases) if limit is None else min(limit, len(cases))))
    which = everything[part[0]::part[1]]
    methods = course_methods()
    seconds = {name: 0.0 for name in methods}
    measuring = {name: 0.0 for name in methods}
    parts: dict[str, list] = {name: [] for name in methods}
    for start in range(0, len(which), 4):
        chunk = which[start:start + 4]
        for name, fn in methods.items():
            cpu = time.process_time()
            maps = method_maps(model, cases, chunk, {name: fn})
            seconds[name] += time.process_time() - cpu
            cpu = time.process_time()
            parts[name].append(measure_maps(model, cases, chunk, maps))
            measuring[name] += time.process_time() - cpu
        print(f"{start + len(chunk)} / {len(which)} cases, {time.perf_counter() - begin:.0f} s",
              flush=True)
    joined = {name: Scores.concat(p) for name, p in parts.items()}
    first = joined["saliency"]
    measures = Scores({name: s.values[name] for name, s in joined.items()}, which,
                      first.better, first.settings)
    cheap = {name: fn for name, fn in methods.items() if name not in COSTLY}
    subset = set(random.Random(0).sample(everything, min(COSTLY_SANITY_CASES, len(everything))))
    costly = {name: methods[name] for name in COSTLY}
    sanity, sanity_costly = None, None
    for how in ("shuffle", "reinit"):
        cpu = time.process_time()
        got = randomised_similarity(model, cases, cheap, randomize=how, which=which,
                                    progress=False)
        sanity = got if sanity is None else sanity.merge(got)
        got = randomised_similarity(model, cases, costly, randomize=how,
                                    which=[i for i in which if i in subset], progress=False)
        sanity_costly = got if sanity_costly is None else sanity_costly.merge(got)
        seconds[f"randomisation ({how})"] = time.process_time() - cpu
        print(f"randomised ({how}): {seconds[f'randomisation ({how})']:.0f} s CPU", flush=True)
    measures.settings.update({
        "machine": machine(), "cases made in CPU s": round(case_seconds, 1),
        "wall s": round(time.perf_counter() - begin), "map CPU s": seconds,
        "measure CPU s": measuring, "load average": round(os.getloadavg()[0], 1)})
    save_scores(out, measures=measures, sanity=sanity, sanity_costly=sanity_costly)


def merge(files: list[Path], out: Path) -> None:
    """Join the parts' scores (sorted by case) into ``out`` and report their cost."""
    from helpers.scoreboard import BASELINES, Scores, load_scores, save_scores

    loaded = [load_scores(f) for f in files]
    joined = {}
    for section in loaded[0]:
        pieces = [part[section] for part in loaded]
        order = sorted(range(sum(len(p.which) for p in pieces)),
                       key=[i for p in pieces for i in p.which].__getitem__)
        whole = Scores.concat(pieces)
        joined[section] = Scores(
            {m: {k: v[order] for k, v in t.items()} for m, t in whole.values.items()},
            [whole.which[i] for i in order], whole.better, whole.settings)
    settings = [part["measures"].settings for part in loaded]
    n = len(joined["measures"].which)
    maps = {k: sum(s["map CPU s"][k] for s in settings) for k in settings[0]["map CPU s"]}
    measuring = {k: sum(s["measure CPU s"][k] for s in settings)
                 for k in settings[0]["measure CPU s"]}
    wall = max(s["wall s"] for s in settings)
    joined["measures"].settings = {
        "steps": settings[0]["steps"], "road steps": settings[0]["road steps"],
        "cases": settings[0]["cases"], "model": settings[0]["model"],
        "machine": settings[0]["machine"], "parts": len(files)}
    save_scores(out, **joined)
    rows = [{"map": name, "map, CPU s per case": f"{maps[name] / n:.2f}",
             "its 6 measures, CPU s per case": f"{measuring[name] / n:.2f}"}
            for name in measuring if name not in BASELINES or name == "random"]
    randomising = sum(v for k, v in maps.items() if k.startswith("randomisation"))
    body = (f"Lite0 on the {n} cases of `helpers.evaluation.make_cases()` (192 x 192 collages), "
            f"1 thread per process, {len(files)} processes; load average "
            f"{max(s['load average'] for s in settings):.1f}. CPU seconds per case to make "
            "each map, and to measure it (pointing game, energy, deletion and insertion in 8 "
            "steps, ROAD in both orders in 4 steps: ROAD's imputation is most of it; smooth "
            "maps, which delete one large hole, cost the most). The model-free baselines other "
            "than the random map cost as much to measure and nothing to make. The randomisation "
            f"check (both randomisations, 4 depths; {', '.join(COSTLY)} on "
            f"{COSTLY_SANITY_CASES} of the cases) took {randomising / 60:.0f} CPU min more. "
            f"Wall time {wall / 60:.0f} min. Scores: `helpers/data/scores/{out.name}`; lesson 09 "
            "loads them and recomputes a sample.\n\n" + table(rows))
    write_section("faithfulness.py --store", "Lesson 09's evidence: the cost of every method "
                  "and measure per case", body)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--store", action="store_true",
                        help="score every method on every case and store the scores")
    parser.add_argument("--limit", type=int, default=None, help="with --store: the first N cases")
    parser.add_argument("--part", default="0/1", help="with --store: k/n, every n-th case from k")
    parser.add_argument("--out", type=Path, default=STORE / "efficientnet_lite0.json",
                        help="with --store: the JSON file; with --merge: the joined file")
    parser.add_argument("--merge", type=Path, nargs="+", default=None,
                        help="join the parts that --store --part wrote")
    args = parser.parse_args()
    if args.merge:
        merge(args.merge, args.out)
        return
    if args.store:
        k, n = (int(v) for v in args.part.split("/"))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        store(args.limit, (k, n), args.out)
        return
    rounds = args.rounds
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
