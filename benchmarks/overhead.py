"""Orchestration overhead of a study on Ray Tune, in one run, with where it goes. Goal <= 5 %.

    python benchmarks/overhead.py       # the default study: tune_lambda.py --target-ms 80 (digits, cbo, 8 x 4 epochs, 2 at once)
    python benchmarks/overhead.py --trials 4 --fidelity 3 --concurrency 1

Overhead = the share of the study's trial slots (wall time x concurrency) not spent in the inner searches
(run_trial's wall_s: the search, its evaluation and export). With one trial at a time that is
(wall - sum of searches) / wall. The breakdown, each part measured in this run:
  * Ray start-up and shutdown (start_ray / stop_ray, timed around the study, which then finds Ray running);
  * in the workers, around each search: Ray's trial time (time_total_s of its last result) minus run_trial's
    wall_s (the trainable's set-up, reporting each epoch to Ray; the first trial on a worker also imports);
  * per trial, from the solver's ask to its tell (the journal's times) minus Ray's trial time: launching
    the trial on a worker (the first trial on a worker also imports torch and loads the task) and
    handling its result;
  * slots idle on that timeline: before every slot has its first trial (Tune's own start), between a
    tell and the next ask (the solver's ask, Ray's scheduling), and after the last ask (a slot with
    nothing left to run while the others finish: a study of a fixed number of unequal trials ends with
    the last of them running alone);
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


def ray_trials(out: Path) -> dict[int, tuple[float, int]]:
    """Ray's own time of each trial (time_total_s of its last reported result) and the worker process
    that ran it, by the study's trial id."""
    trials = {}
    for result in (out / "ray").glob("*/result.json"):
        lines = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        if lines:
            last = lines[-1]
            trials[last["config"]["proposal"]["trial_id"]] = (float(last["time_total_s"]), int(last["pid"]))
    return trials


def trial_spans(out: Path) -> dict[int, tuple[float, float]]:
    """(asked, told) wall-clock times of each trial, from the study's journal (automl/journal.py)."""
    asked, spans = {}, {}
    for line in (out / "journal.jsonl").read_text().splitlines():
        e = json.loads(line)
        if "ask" in e:
            asked[e["ask"]["trial_id"]] = e["t"]
        elif "tell" in e:
            spans[e["tell"]] = (asked.pop(e["tell"]), e["t"])
    return spans


def idle_slots(spans: list[tuple[float, float]], start: float, end: float, slots: int) -> dict[str, float]:
    """Idle slot-seconds in [start, end] (slots minus trials between ask and tell), split at the moment
    every slot had been given a trial and the moment of the last ask."""
    spans = sorted(spans)
    asks = [a for a, _ in spans]
    first_full, last = asks[min(slots, len(asks)) - 1], asks[-1]
    edges = sorted({start, end, *[t for span in spans for t in span if start <= t <= end]})
    idle = {"before every slot's first trial": 0.0, "between a tell and the next ask": 0.0,
            "after the last ask": 0.0}
    for a, b in zip(edges, edges[1:]):
        free = max(0, slots - sum(1 for s, e in spans if s <= a and e >= b)) * (b - a)
        idle["before every slot's first trial" if b <= first_full else "after the last ask" if a >= last
             else "between a tell and the next ask"] += free
    return idle


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
        t1, w1 = time.perf_counter(), time.time()
        outcome = run_study(cfg, runner="ray", verbose=0)
        t2 = time.perf_counter()
        stop_ray()
        t3 = time.perf_counter()
        ray = ray_trials(out)
        spans = trial_spans(out)
        f0 = time.perf_counter()
        finalize(cfg, outcome.table)   # the outputs again, on the same table: their cost alone
        outputs = time.perf_counter() - f0
    wall, slots = t3 - t0, (t3 - t0) * args.concurrency
    inner = sum(r.wall_s for r in outcome.table.rows)
    ray_total = sum(t for t, _ in ray.values())
    around = ray_total - inner
    loop = (t2 - t1) - outputs
    launch = {tid: e - s - ray[tid][0] for tid, (s, e) in spans.items()}   # ask to tell, less Ray's time
    first = {min((tid for tid in ray if ray[tid][1] == pid), key=lambda tid: spans[tid][0])
             for pid in {pid for _, pid in ray.values()}}   # each worker's first trial: it imports
    idle = idle_slots(list(spans.values()), w1, w1 + loop, args.concurrency)
    rest = loop * args.concurrency - ray_total - sum(launch.values()) - sum(idle.values())   # ~0: rounding
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
                          ("launching trials, handling results", sum(launch.values())),
                          *((f"idle slots {k}", v) for k, v in idle.items()),
                          ("unaccounted (timeline rounding)", rest),
                          ("outputs (best/, verdict, report)", outputs * args.concurrency)):
        print(f"  {name:46s} {seconds:8.1f} = {seconds / slots:6.1%}")
    mean = lambda v: sum(v) / max(1, len(v))
    print(f"launching a trial and handling its result: {mean([launch[t] for t in first]):.1f} s on a worker's first "
          f"trial ({len(first)} workers: imports, task load), {mean([v for t, v in launch.items() if t not in first]):.1f} s "
          f"on the others ({len(launch) - len(first)})")


if __name__ == "__main__":
    main()
