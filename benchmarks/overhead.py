"""Orchestration overhead of a study on Ray Tune, in one run, with where it goes. Goal <= 5 %.

    python benchmarks/overhead.py       # the default study: tune_lambda.py --target-ms 80 (digits, cbo, 8 x 4 epochs, 2 at once)
    python benchmarks/overhead.py --trials 4 --fidelity 3 --concurrency 1

Overhead = the share of the study's trial slots (wall time x concurrency) not spent in the inner searches
(run_trial's wall_s: the search, its evaluation and export). With one trial at a time that is
(wall - sum of searches) / wall. The breakdown, each part measured in this run:
  * Ray start-up and shutdown (start_ray / stop_ray, timed around the study, which then finds Ray running);
  * in the workers, around each search: Ray's trial time (time_total_s of its last result) minus run_trial's
    wall_s (the trainable's set-up, reporting each epoch to Ray; the first trial on a worker also imports);
  * the driver between trials: the rest of the trial loop's time not covered by Ray trial time (solver asks,
    Ray's scheduling and result handling, the live view);
  * the outputs: best/ copy, verdict and report.html (tuning.finalize, timed again on the same table).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def ray_trial_seconds(out: Path) -> list[float]:
    """Ray's own time of each trial (time_total_s of its last reported result)."""
    times = []
    for result in sorted((out / "ray").glob("*/result.json")):
        lines = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        if lines:
            times.append(float(lines[-1]["time_total_s"]))
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--fidelity", type=int, default=4)
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--solver", default="cbo")
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--data-limit", type=int, default=None)
    args = p.parse_args()

    import os

    from automl.runners.ray_tune import start_ray, stop_ray
    from automl.study import StudyConfig
    from automl.tuning import finalize, run_study

    cpus = max(1.0, (os.cpu_count() or 1) / args.concurrency)
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "study"
        cfg = StudyConfig(out=str(out), solver=args.solver, trials=args.trials, fidelity=args.fidelity,
                          min_fidelity=min(2, args.fidelity), width=args.width, data_limit=args.data_limit,
                          concurrency=args.concurrency, cpus_per_trial=cpus)
        node = Path(d) / "node"   # start_ray records the node it started in a folder (not the study's)
        node.mkdir()
        t0 = time.perf_counter()
        start_ray(dataclasses.replace(cfg, out=str(node)), verbose=0)
        t1 = time.perf_counter()
        outcome = run_study(cfg, runner="ray", verbose=0)
        t2 = time.perf_counter()
        stop_ray()
        t3 = time.perf_counter()
        ray_trials = ray_trial_seconds(out)
        f0 = time.perf_counter()
        finalize(cfg, outcome.table)   # the outputs again, on the same table: their cost alone
        outputs = time.perf_counter() - f0
    wall, slots = t3 - t0, (t3 - t0) * args.concurrency
    inner = sum(r.wall_s for r in outcome.table.rows)
    around = sum(ray_trials) - inner
    loop = (t2 - t1) - outputs
    between = loop * args.concurrency - sum(ray_trials)
    print(f"trials {len(outcome.table.rows)} x {args.fidelity} epochs, solver {args.solver}, "
          f"concurrency {args.concurrency}, {cpus:g} CPU each")
    print(f"study wall time              {wall:8.1f} s  x {args.concurrency} slots = {slots:.1f} slot-s")
    print(f"inner searches (run_trial)   {inner:8.1f} slot-s")
    print(f"overhead                     {slots - inner:8.1f} slot-s = {(slots - inner) / slots:.1%} "
          "of the study (goal <= 5 %)")
    print("where it goes (slot-s):")
    for name, seconds in (("Ray start-up", (t1 - t0) * args.concurrency),
                          ("Ray shutdown", (t3 - t2) * args.concurrency),
                          ("in workers around searches", around),
                          ("driver between trials / idle slots", between),
                          ("outputs (best/, verdict, report)", outputs * args.concurrency)):
        print(f"  {name:34s} {seconds:8.1f} = {seconds / slots:6.1%}")


if __name__ == "__main__":
    main()
