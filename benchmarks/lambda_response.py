"""How a searcher's trade-off hyperparameter moves the architecture it finds, at each fidelity.

For every value of the tuned hyperparameter (log-spaced over the searcher's tunable range, or
--values) and every fidelity (search epochs), one full search on the same data and seed; prints the
value x fidelity table of the delivered network's runtime (ms on --profile; MFLOPs for searchers
without a runtime model) and validation accuracy, and per fidelity the span of the runtimes as a
share of the profile's range and the number of rises against the trend (a search whose runtime does
not fall as the value grows). Runs in --workers processes of one thread each.

    python benchmarks/lambda_response.py                               # single-path, lam, 2/4/8 epochs
    python benchmarks/lambda_response.py --searcher dsnas --param resource
    python benchmarks/lambda_response.py --searcher gold --param mu --fidelities 4 8
    python benchmarks/lambda_response.py --csv runs/lambda-response.csv
"""
from __future__ import annotations

import argparse
import csv
import itertools
import math
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def one_search(job: dict) -> dict:
    import torch

    torch.set_num_threads(1)
    from searchers import RunSettings, get_searcher, load_task

    cls = get_searcher(job["searcher"])
    params = cls.make_params(**{job["param"]: job["value"]}, **job["fixed"])
    settings = RunSettings(epochs=job["epochs"], seed=job["seed"], width=job["width"],
                           batch_size=job["batch_size"], profile=job["profile"])
    r = cls(params, load_task(job["data"], limit=job["limit"]), settings).run()
    return dict(job, runtime_ms=r.runtime_ms, mflops=r.flops / 1e6, val_acc=r.val_acc, test_acc=r.test_acc,
                wall_s=r.wall_s, arch=r.arch)


def main() -> int:
    from searchers import get_searcher
    from searchers.cost import load_profile
    from searchers.cost.runtime import runtime_range

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--searcher", default="single-path")
    p.add_argument("--param", default=None, help="the tuned hyperparameter (default: the searcher's first)")
    p.add_argument("--values", type=float, nargs="*", default=None,
                   help="values to sweep (default: --n log-spaced over the tunable range; linear if not log)")
    p.add_argument("--n", type=int, default=9)
    p.add_argument("--fidelities", type=int, nargs="*", default=[2, 4, 8])
    p.add_argument("--fixed", action="append", default=[], metavar="NAME=VALUE",
                   help="a fixed hyperparameter of the searcher (e.g. variant=ste)")
    p.add_argument("--data", default="digits")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--profile", default="pixel1-single-path")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--csv", default=None, help="also write every search as a row here")
    a = p.parse_args()

    cls = get_searcher(a.searcher)
    name = a.param or next(iter(cls.tunable))
    lo, hi, log = cls.tunable[name]
    if a.values:
        values = a.values
    elif log:
        values = [math.exp(math.log(lo) + i * (math.log(hi) - math.log(lo)) / (a.n - 1)) for i in range(a.n)]
    else:
        values = [lo + i * (hi - lo) / (a.n - 1) for i in range(a.n)]
    fixed = {}
    for kv in a.fixed:
        k, v = kv.split("=", 1)
        try:
            fixed[k] = float(v)
        except ValueError:
            fixed[k] = v
    jobs = [dict(searcher=a.searcher, param=name, value=v, epochs=e, fixed=fixed, data=a.data, limit=a.limit,
                 width=a.width, batch_size=a.batch_size, profile=a.profile, seed=a.seed)
            for e, v in itertools.product(sorted(a.fidelities, reverse=True), values)]
    print(f"{len(jobs)} searches of {a.searcher} ({name} x fidelity) on {a.data}, width {a.width}, "
          f"{a.workers} worker(s) ...", flush=True)
    rows = []
    with ProcessPoolExecutor(a.workers) as pool:
        for i, r in enumerate(pool.map(one_search, jobs), 1):
            rows.append(r)
            print(f"  [{i}/{len(jobs)}] {name}={r['value']:.4g} epochs={r['epochs']}: "
                  f"{r['runtime_ms'] if r['runtime_ms'] is not None else float('nan'):.1f} ms "
                  f"{r['mflops']:.2f} MFLOPs val {r['val_acc']:.3f} ({r['wall_s']:.0f} s)", flush=True)
    if a.csv:
        Path(a.csv).parent.mkdir(parents=True, exist_ok=True)
        with open(a.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=[k for k in rows[0] if k != "fixed"], extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)

    has_runtime = rows[0]["runtime_ms"] is not None
    measure, unit = ("runtime_ms", "ms") if has_runtime else ("mflops", "MFLOPs")
    lo_ms, hi_ms = runtime_range(load_profile(a.profile)) if has_runtime else (None, None)
    fids = sorted(a.fidelities)
    cell = lambda v, e, key: next(r[key] for r in rows if r["value"] == v and r["epochs"] == e)
    print(f"\n{measure} ({unit}) / val accuracy, by {name} (rows) and search epochs (columns)")
    print(f"{name:>10} " + "".join(f"{f'{e} epochs':>18}" for e in fids))
    for v in values:
        print(f"{v:>10.4g} " + "".join(f"{cell(v, e, measure):>10.1f} / {cell(v, e, 'val_acc'):.3f}" for e in fids))
    print()
    for e in fids:
        ms = [cell(v, e, measure) for v in values]
        rises = sum(b > a_ + 1.0 for a_, b in zip(ms, ms[1:]))   # 1 ms / 1 MFLOP tolerance
        span = max(ms) - min(ms)
        share = f", {100 * span / (hi_ms - lo_ms):.0f} % of the profile's {lo_ms:.1f}-{hi_ms:.1f} ms" if has_runtime else ""
        distinct = len({round(m, 1) for m in ms})
        print(f"{e} epochs: span {span:.1f} {unit}{share}; {distinct} distinct values; rises against the trend: {rises}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
