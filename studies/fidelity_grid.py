"""Grid of searches over lambda x search epochs, the objective of Eq. 19 on it (Single-Path NAS Fig. 9 right).

    python studies/fidelity_grid.py --target-ms 80
    python studies/fidelity_grid.py --target-ms 80 --lams 0.003,0.01,0.03,0.1 --epochs-list 2,4,8
    python studies/fidelity_grid.py --quick --runner local

Every grid point is one full NAS search (a trial of one sub-study, run by Ray or in-process). The
report shows heatmaps of the reward, the accuracy and the runtime (lambda on x, epochs on y) with the
best lambda of each epoch count marked: where it moves right as epochs shrink, low-fidelity
evaluations "overshoot" toward over-constrained networks (the paper's finding against multi-fidelity
BO). The Kendall tau of the lambda rankings at low vs full fidelity (DSNAS Table 2) puts a number on
it. grid/trials.csv is a recorded table for `compare_solvers.py --replay`.
"""
from __future__ import annotations

import argparse

import numpy as np

from _common import add_common, run_cli
from _experiment import EpochMeter, Progress, add_run_flags, apply_preset, check_ray, parse_list, spec_of, \
    study_fields

FULL = dict(epochs_list="2,3,4,5,6,7,8", n_lams=5)   # the paper's fidelities: two to eight epochs
QUICK = dict(epochs_list="1,2", n_lams=3)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common(p, "runs/fidelity-grid")
    p.add_argument("--lams", default=None,
                   help="comma-separated values of the searcher's tunable hyperparameter "
                        "(default: --n-lams log-spaced over its tunable range)")
    p.add_argument("--n-lams", type=int, default=None, help="grid size when --lams is not given (default 5)")
    p.add_argument("--epochs-list", default=None, help="comma-separated search epochs (default 2,...,8)")
    add_run_flags(p)
    return p


def plan(args):
    """The grid's StudyConfig and points; every check of the input happens here, before any work."""
    from automl.study import StudyConfig
    from searchers.errors import UsageError

    epochs = sorted(set(parse_list(args.epochs_list, int, "--epochs-list")))
    if epochs[0] < 1:
        raise UsageError(f"--epochs-list needs epochs >= 1, got {epochs}")
    fields = study_fields(args)
    probe = StudyConfig(**fields, out=f"{args.out}/grid", solver="random", trials=1,
                        fidelity=epochs[-1], min_fidelity=epochs[0], seed=args.seed)
    params = probe.space().params
    if len(params) != 1:
        raise UsageError(f"the grid spans one hyperparameter; {args.searcher} tunes {[q.name for q in params]}: "
                         "fix the others with --param NAME=VALUE")
    q = params[0]
    if args.lams:
        lams = sorted(set(parse_list(args.lams, float, "--lams")))
        if q.log and lams[0] <= 0:
            raise UsageError(f"--lams must be > 0 ({q.name} is searched in log scale)")
    else:
        if args.n_lams < 2:
            raise UsageError(f"--n-lams must be >= 2, got {args.n_lams}")
        lams = list((np.geomspace if q.log else np.linspace)(q.low, q.high, args.n_lams))
    points = [({q.name: float(v)}, e) for e in epochs for v in lams]   # cheap rows first
    config = StudyConfig(**fields, out=f"{args.out}/grid", solver="random", trials=len(points),
                         budget_epochs=sum(e for _, e in points), fidelity=epochs[-1], min_fidelity=epochs[0],
                         seed=args.seed)
    return config, points


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    apply_preset(args, FULL, QUICK)
    from pathlib import Path

    from automl.analysis import best_per_epochs, fidelity_rank_correlation
    from automl.results import write_csv
    from automl.experiments import prepare_experiment, run_substudy, save_experiment
    from automl.runners.replay import epoch_table
    from automl.solvers.grid import GridSolver
    from automl.study_reports import write_grid_report
    from automl.tuning import prepare_out

    config, points = plan(args)
    out = prepare_experiment(args.out, spec_of(args), resume=args.resume)
    prepare_out(config, args.resume)
    check_ray(args)
    save_experiment(out, spec_of(args))

    name = config.space().names[0]
    # StudyConfig admits registered solvers only: the grid's rows are labelled "grid" (study.json says random)
    shown = Progress("grid", EpochMeter(sum(e for _, e in points)))
    table = run_substudy(config, resume=args.resume, runner=args.runner, label="grid",
                         solver=GridSolver(config.space(), points, seed=args.seed), on_row=shown,
                         on_read_back=shown.read_back, verbose=int(args.verbose))
    df = table.frame().rename(columns={"fidelity": "epochs"})
    write_csv(df, out / "grid.csv")
    write_csv(epoch_table(out / "grid"), out / "epochs.csv")
    kendall = fidelity_rank_correlation(table.frame(), [name])
    write_csv(kendall, out / "kendall.csv")
    best = best_per_epochs(df, name)
    report = write_grid_report(out / "report.html", df, best, kendall, config, name)

    print(f"\nbest {name} per search epochs (Eq. 19 reward):")
    print(best.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print("\nKendall tau of the ranking at low vs full fidelity:")
    print(kendall.to_string(index=False, float_format=lambda v: f"{v:.3f}") if len(kendall) else "  (need >= 2 epochs)")
    for k, v in {"grid": out / "grid.csv", "trials": Path(config.out) / "trials.csv", "epochs": out / "epochs.csv",
                 "kendall": out / "kendall.csv", "report": report}.items():
        print(f"{k:>8}: {v}")
    return 0


if __name__ == "__main__":
    run_cli(main)
