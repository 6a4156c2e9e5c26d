"""Orchestration overhead of a study on Ray Tune: (study wall time - sum of inner search times) / study
wall time, in one run. Goal <= 5 %. Ray's start-up, trial scheduling, per-epoch checkpoints, result
export and the report all count as overhead; the searches' own training and evaluation do not.

    python benchmarks/overhead.py                 # 4 trials x 3 epochs on digits, one at a time
    python benchmarks/overhead.py --trials 8 --fidelity 6
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--fidelity", type=int, default=3)
    p.add_argument("--solver", default="bo")
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--data-limit", type=int, default=None)
    args = p.parse_args()

    import ray

    from automl.study import StudyConfig
    from automl.tuning import run_study

    with tempfile.TemporaryDirectory() as d:
        cfg = StudyConfig(out=str(Path(d) / "study"), solver=args.solver, trials=args.trials, fidelity=args.fidelity,
                          min_fidelity=min(2, args.fidelity), width=args.width, data_limit=args.data_limit,
                          concurrency=1, cpus_per_trial=1.0)
        t0 = time.perf_counter()
        outcome = run_study(cfg, runner="ray", verbose=0)
        wall = time.perf_counter() - t0
        ray.shutdown()
    inner = sum(r.wall_s for r in outcome.table.rows)
    print(f"trials {len(outcome.table.rows)} x {args.fidelity} epochs, solver {args.solver}, concurrency 1")
    print(f"study wall time      {wall:8.1f} s (Ray start-up included)")
    print(f"sum of trial times   {inner:8.1f} s (run_trial: search, evaluation, export)")
    print(f"overhead             {wall - inner:8.1f} s = {(wall - inner) / wall:.1%} of the study (goal <= 5 %)")


if __name__ == "__main__":
    main()
