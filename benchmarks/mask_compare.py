"""Single-Path NAS with feature gating (the default) vs weights-only masking (Eq. 2-4 literally), on digits.

    nice -n 19 python benchmarks/mask_compare.py --lams 0.01 0.03 0.1 --epochs 4

Part 1, the gradient each threshold gets from the cross-entropy: one supernet trained one warm-up
epoch, its weights copied into a "features" and a "weights" supernet, thresholds given their units
(as the search phase does), one batch, loss = CE only; prints dL/dt per threshold of one layer and the
median |dL/dt| over the searchable layers. Part 2, whole searches: one per mask and lam (same seed,
data and schedule), printing runtime on the profile, validation accuracy of the delivered child, wall
time and the decisions found. Nothing is asserted (superkernel.py explains the difference).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from searchers import RunSettings, get_searcher, load_task
from searchers.single_path import SuperNet
from searchers.spaces.superkernel import MASKS

THRESHOLDS = ("t_k5", "t_e6", "t_e3", "t_se25", "t_se50")


def threshold_grads(task, layer: str, width: float, seed: int) -> dict[str, dict[str, float | list[float]]]:
    """dL/dt (CE only) per threshold: of layer `layer`, and over every searchable layer, for each mask."""
    cls = get_searcher("single-path")
    warm = cls(cls.make_params(), task, RunSettings(epochs=4, seed=seed, batch_size=32, width=width))
    warm.step()  # one warm-up epoch: zero-initialised residual branches pass no gradient before it
    state = warm.net.state_dict()
    x, y = next(task.batches("train", 64, torch.Generator().manual_seed(seed)))
    out = {}
    for mask in MASKS:
        net = SuperNet(width, task.image_size, task.num_classes, "sigmoid", mask=mask)
        net.load_state_dict(state)
        net.train()
        net.head.dropout.p = 0.0  # the same loss for both masks
        for m in net.searchable():
            m.set_threshold_units()
        F.cross_entropy(net(x), y).backward()
        per_layer = {t: [float(getattr(m, t).grad) for m in net.searchable() if hasattr(m, t)] for t in THRESHOLDS}
        one = net.layers[layer]
        out[mask] = {"layer": {t: float(getattr(one, t).grad) for t in THRESHOLDS if hasattr(one, t)},
                     "median_abs": {t: statistics.median(abs(g) for g in v) for t, v in per_layer.items()}}
    return out


def decisions(arch: str) -> str:
    """Counts over the 20 searchable layers: skipped, e6, k5, SE 0.25, SE 0.5."""
    tokens = [t for part in arch.split("|")[1:] for t in part.split()]
    kept = [t for t in tokens if t != "skip"]
    return (f"skip {len(tokens) - len(kept):2d}  e6 {sum('e6' in t for t in kept):2d}  "
            f"k5 {sum(t.startswith('k5') for t in kept):2d}  se.25 {sum(t.endswith('se0.25') for t in kept):2d}  "
            f"se.5 {sum(t.endswith('se0.5') for t in kept):2d}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lams", type=float, nargs="+", default=[0.01, 0.03, 0.1])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layer", default="6", help="profile layer whose thresholds part 1 prints (1..20)")
    ap.add_argument("--profile", default="pixel1-single-path")
    ap.add_argument("--no-search", action="store_true", help="part 1 only")
    a = ap.parse_args()
    torch.set_num_threads(1)
    task = load_task("digits")

    g = threshold_grads(task, a.layer, a.width, a.seed)
    print(f"dL/dt from the cross-entropy (digits, width {a.width}, one warm-up epoch, batch 64), features vs weights")
    print(f"{'threshold':>10} {'layer ' + a.layer + ' features':>18} {'weights':>11}   "
          f"{'median |.| features':>20} {'weights':>11}")
    for t in THRESHOLDS:
        lf, lw = g["features"]["layer"].get(t), g["weights"]["layer"].get(t)
        cell = lambda v: f"{v:+.2e}" if v is not None else "-"
        print(f"{t:>10} {cell(lf):>18} {cell(lw):>11}   {g['features']['median_abs'][t]:>20.2e} "
              f"{g['weights']['median_abs'][t]:>11.2e}")
    if a.no_search:
        return

    cls = get_searcher("single-path")
    rows = []
    for lam in a.lams:
        for mask in MASKS:
            t0 = time.perf_counter()
            s = cls(cls.make_params(lam=lam, mask=mask), task,
                    RunSettings(epochs=a.epochs, seed=a.seed, batch_size=32, width=a.width, profile=a.profile))
            r = s.run()
            rows.append((lam, mask, r, time.perf_counter() - t0))
            print(f"lam {lam:g} mask {mask}: {r.runtime_ms:.1f} ms, val {r.val_acc:.3f}, {r.arch}", flush=True)
    print(f"\nsearches: digits, width {a.width}, {a.epochs} epochs, seed {a.seed}, profile {a.profile}")
    print(f"{'lam':>6} {'mask':>8} {'runtime ms':>10} {'val acc':>8} {'wall s':>7}   decisions (of 20 layers)")
    for lam, mask, r, wall in rows:
        print(f"{lam:>6g} {mask:>8} {r.runtime_ms:>10.1f} {r.val_acc:>8.3f} {wall:>7.0f}   {decisions(r.arch)}")


if __name__ == "__main__":
    main()
