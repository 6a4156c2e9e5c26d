"""Compare the outer-loop solvers at tuning lambda under one budget of search epochs (Single-Path NAS Fig. 9 left).

    python studies/compare_solvers.py --target-ms 80                     # paper: 5 repeats x 400 epochs, real searches
    python studies/compare_solvers.py --replay results/cifar10-grid-s0 --repeats 20 --budget-epochs 64  # no search: minutes
    python studies/compare_solvers.py --quick --runner local
    python studies/compare_solvers.py --replay results/cifar10-grid-s0 ... --against results/cifar10-compare-real

Each solver runs --repeats times with seeds --seed, --seed+1, ... (solver and searches), each repeat a
sub-study of --budget-epochs search epochs. Trials are real NAS searches (Ray or in-process), or, with
--replay, answered from recorded trials (automl/runners/replay.py: a lambda not recorded by interpolation
in log lambda, seed noise by drawing a recorded seed per trial), --workers sub-studies at once. Writes curves.csv (best Eq. 19
reward so far vs spent epochs, per solver and repeat), all_trials.csv, kendall.csv (rank agreement of
lambda at low vs full fidelity, from recorded trials with the same lambda at two fidelities) and a
report: best reward so far, mean +- std per solver, and each solver's Pareto front of all its trials.
--against DIR adds how far these curves are from another comparison's (against.csv, against_summary.csv).
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from _common import add_common, parse_solver_options, run_cli
from _experiment import EpochMeter, Progress, add_run_flags, apply_preset, check_ray, parse_list, spec_of, \
    study_fields

FULL = dict(solvers="random,bo,cbo,mfbo,bohb,tpe", repeats=5, budget_epochs=400, fidelity=8, min_fidelity=2)
QUICK = dict(repeats=2, budget_epochs=4, fidelity=2, min_fidelity=1)
QUICK_REPLAY = dict(repeats=3, budget_epochs=20)   # replayed trials cost nothing: a longer curve


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common(p, "runs/compare-solvers")
    p.add_argument("--solvers", default=None, help="comma-separated (default: random,bo,cbo,mfbo,bohb,tpe)")
    p.add_argument("--repeats", type=int, default=None, help="runs per solver, seeds --seed.. (paper: 5)")
    p.add_argument("--budget-epochs", type=int, default=None, help="search epochs per run (paper: 400)")
    p.add_argument("--fidelity", type=int, default=None, help="search epochs of a full trial (paper: 8)")
    p.add_argument("--min-fidelity", type=int, default=None, help="lowest fidelity of mfbo / bohb (paper: 2)")
    p.add_argument("--solver-option", action="append", default=None, metavar="SOLVER:NAME=VALUE",
                   help="option of one of --solvers, e.g. bo:init_points=3 (repeatable; JSON values; default: "
                        "each solver's own, sized to the budget)")
    p.add_argument("--replay", action="append", default=[], metavar="DIR",
                   help="answer trials from recorded trials.csv (a file or study folders, searched recursively; "
                        "repeatable) instead of running searches; --runner is then unused")
    p.add_argument("--replay-mode", default="interpolate", choices=["interpolate", "nearest"],
                   help="how a lambda that was not recorded is answered (automl/runners/replay.py)")
    p.add_argument("--replay-noise", default="seeds", choices=["seeds", "none"],
                   help="seeds: each replayed trial draws one recorded seed (or, where one seed was recorded, "
                        "the table's between-seed spread); none: the seed average, the same for every repeat")
    p.add_argument("--against", default=None, metavar="DIR",
                   help="another compare_solvers output (e.g. real searches, to check a replay): writes how far "
                        "this run's curves are from its curves.csv, per solver both ran (against.csv) and in the report")
    p.add_argument("--workers", type=int, default=None,
                   help="replayed sub-studies at once, in processes (default: the CPU count)")
    add_run_flags(p)
    return p


def plan(args):
    """Every sub-study's config (validated), the replay table; all input checks, before any work."""
    from automl.runners.replay import ReplayTable
    from automl.solvers import make_solver
    from automl.study import StudyConfig
    from searchers.errors import UsageError

    if args.repeats < 1:
        raise UsageError(f"--repeats must be >= 1, got {args.repeats}")
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be >= 1, got {args.workers}")
    solvers = list(dict.fromkeys(parse_list(args.solvers, str, "--solvers")))
    options = parse_solver_options(args.solver_option, solvers)
    fields = study_fields(args)
    configs = {}
    for s in solvers:
        for r in range(args.repeats):
            configs[s, r] = StudyConfig(**fields, out=f"{args.out}/{s}/repeat-{r:02d}", solver=s,
                                        solver_options=options[s],
                                        trials=max(1, args.budget_epochs // args.min_fidelity),  # budget binds
                                        budget_epochs=args.budget_epochs, fidelity=args.fidelity,
                                        min_fidelity=args.min_fidelity, seed=args.seed + r)
        cfg = configs[s, 0]
        make_solver(s, cfg.space(), budget_epochs=cfg.budget, seed=cfg.seed,   # solver-specific refusals now
                    **cfg.solver_options)
    against = None
    if args.against is not None:
        import pandas as pd

        path = Path(args.against) / "curves.csv"
        if not path.is_file():
            raise UsageError(f"--against {args.against} holds no curves.csv; give a compare_solvers.py --out folder")
        try:
            against = pd.read_csv(path)
        except (ValueError, UnicodeDecodeError):   # empty, or not a table (pandas' errors are ValueErrors)
            against = pd.DataFrame()
        if not {"solver", "repeat", "cum_epochs", "best_reward"} <= set(against.columns):
            raise UsageError(f"--against {path} is not a compare_solvers.py curves.csv (it needs the columns "
                             "solver, repeat, cum_epochs, best_reward)")
        common = [s for s in solvers if s in set(against["solver"])]
        if not common:
            raise UsageError(f"--against {args.against} ran none of --solvers {','.join(solvers)} "
                             f"(it has: {','.join(dict.fromkeys(against['solver']))})")
    table = None
    if args.replay:
        table = ReplayTable.load(*args.replay)
        table.check(configs[solvers[0], 0])
    return solvers, configs, table, against


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    apply_preset(args, FULL, {**QUICK, **(QUICK_REPLAY if args.replay else {})})
    import numpy as np
    import pandas as pd

    from automl.analysis import best_so_far_long, curve_gap, fidelity_rank_correlation, spread
    from automl.results import write_csv
    from automl.experiments import prepare_experiment, run_substudies, run_substudy, save_experiment
    from automl.runners.replay import replay_trial_fn
    from automl.study_reports import compare_source, write_compare_report
    from automl.tuning import prepare_out

    solvers, configs, table, against = plan(args)
    spec = spec_of(args, replay=[str(p) for p in args.replay])
    # more repeats or solvers on --resume add sub-studies; the finished ones are read back
    out = prepare_experiment(args.out, spec, resume=args.resume, resumable=("repeats", "solvers"))
    for cfg in configs.values():
        prepare_out(cfg, args.resume)
    if table is None:
        check_ray(args)
    save_experiment(out, spec)

    first = configs[solvers[0], 0]
    if table is not None:   # replay: no searches, each sub-study is its solver's computation alone
        source = compare_source(spec, table.seed_std(first))
        print(source, flush=True)
        jobs = {(s, r): configs[s, r] for r in range(args.repeats) for s in solvers}
        results = run_substudies(jobs, workers=args.workers or os.cpu_count() or 1, resume=args.resume,
                                 runner="local", trial_fn=replay_trial_fn(table, args.replay_mode, args.replay_noise))
    else:   # repeat-major: an interrupted run has every solver at equal depth
        source = compare_source(spec)
        meter = EpochMeter(sum(cfg.budget for cfg in configs.values()))
        shown = {key: Progress(f"{key[0]} repeat {key[1]}", meter) for key in configs}
        results = ((key, run_substudy(configs[key], resume=args.resume, runner=args.runner, on_row=shown[key],
                                      on_read_back=shown[key].read_back, verbose=int(args.verbose)))
                   for key in ((s, r) for r in range(args.repeats) for s in solvers))
    frames, t0 = {}, time.perf_counter()
    for (s, r), t in results:
        df = t.frame()
        df.insert(2, "repeat", r)
        frames[s, r] = df
        best = df["reward"].astype(float).max() if len(df) else float("nan")
        print(f"{s:>6} repeat {r}: {len(df)} trials, {int(df['fidelity'].sum())} epochs, "
              f"best reward {best:.4f}  ({time.perf_counter() - t0:.1f} s elapsed)", flush=True)
    frames = {key: frames[key] for key in sorted(frames, key=lambda k: (k[1], solvers.index(k[0])))}

    curves = best_so_far_long(frames, ("solver", "repeat"))
    curves.insert(2, "seed", curves["repeat"] + args.seed)
    trials = pd.concat(frames.values(), ignore_index=True)
    recorded = table.rows_for(first) if table is not None else trials
    names = first.space().names
    kendall = fidelity_rank_correlation(recorded, names)
    final = curves.groupby(["solver", "repeat"], sort=False).tail(1)
    summary = spread(final, ["solver"], ["best_reward", "cum_epochs", "trial"]).rename(
        columns={"trial_mean": "trials_mean", "trial_std": "trials_std"})

    paths = {"curves": out / "curves.csv", "trials": out / "all_trials.csv", "kendall": out / "kendall.csv",
             "summary": out / "summary.csv"}
    write_csv(curves, paths["curves"])
    write_csv(trials, paths["trials"])
    write_csv(kendall, paths["kendall"])
    write_csv(summary, paths["summary"])
    gap = None
    if against is not None:   # e.g. a replay against real searches: is the replay a stand-in for them?
        grid = np.arange(1, min(args.budget_epochs, int(against["cum_epochs"].max())) + 1)
        per_epoch, gap = curve_gap(curves, against, grid)
        paths["against"], paths["against_summary"] = out / "against.csv", out / "against_summary.csv"
        write_csv(per_epoch, paths["against"])
        write_csv(gap, paths["against_summary"])
    paths["report"] = write_compare_report(out / "report.html", curves, trials, kendall, summary,
                                           first, args.budget_epochs, source,
                                           against=None if gap is None else (args.against, per_epoch, gap))

    print("\nfinal best reward (Eq. 19) per solver, mean +- std over repeats:")
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print("\nKendall tau of the lambda ranking at low vs full fidelity "
          f"({'replayed table' if table is not None else 'trials of this run'}):")
    print(kendall.to_string(index=False, float_format=lambda v: f"{v:.3f}") if len(kendall)
          else "  (no lambda recorded at two fidelities: run studies/fidelity_grid.py and pass --replay)")
    if gap is not None:
        print(f"\nthis run's best-so-far curves against {args.against}'s (gap = this - that, over "
              f"{len(grid)} epochs; inside_band: share of epochs where that mean lies in this mean +- std):")
        print(gap.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    for k, v in paths.items():
        print(f"{k:>8}: {v}")
    return 0


if __name__ == "__main__":
    run_cli(main)
