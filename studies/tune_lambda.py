"""Tune a NAS method's trade-off hyperparameter (λ of Single-Path NAS by default) toward a target.

    python studies/tune_lambda.py --target-ms 80
    python studies/tune_lambda.py --target-ms 80 --solver mfbo --trials 12 --budget-epochs 64
    python studies/tune_lambda.py --searcher gold --target-mflops 20 --solver tpe
    python studies/tune_lambda.py --target-ms 80 --solver bo --solver-option init_points=3
    python studies/tune_lambda.py --target-ms 80 --resume --final-epochs 8   # train the delivered network on
    python studies/tune_lambda.py --target-ms 80 --measure   # time the delivered model.onnx on this machine

Without --out each run writes to a folder of its own, runs/tune-lambda/YYYY-mm-dd_HHMMSS (printed at
the start; runs/tune-lambda/latest links the last one), and --resume alone continues the latest run.
It prints one line per finished trial and a progress line (automl/live.py); -v adds Ray Tune's own.

Each trial is one full NAS search run by Ray Tune; the solver picks the next value to maximise the
reward of Eq. 19 (Single-Path NAS paper, Sec. VII-B). Ends with the best value, its architecture,
accuracy, runtime and reward, the verdict (target met or missed, why, what to do; automl/verdict.py)
and the paths of trials.csv, study.json, best/, verdict.json and report.html.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from _common import add_common, add_solver_options, default_width, parse_kv, parse_ranges, run_cli, target_of, \
    trial_resources

from automl.solvers import list_solvers

RUNS = "runs/tune-lambda"   # without --out, each run gets a folder of its own in here


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common(p, None, out_help=f"study folder; refused if it holds a study, unless --resume (default: a new "
                                 f"folder {RUNS}/YYYY-mm-dd_HHMMSS per run, {RUNS}/latest links the last one; "
                                 f"--resume alone continues it)")
    p.add_argument("--solver", default="cbo", help=" | ".join(list_solvers()))
    add_solver_options(p)
    p.add_argument("--range", action="append", default=None, metavar="NAME=LOW:HIGH",
                   help="tune NAME over [LOW, HIGH] instead of the searcher's range, e.g. lam=0.01:0.04 "
                        "(the verdict of a study that missed its target suggests one)")
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--budget-epochs", type=int, default=None, help="total search epochs (default trials x fidelity)")
    p.add_argument("--fidelity", type=int, default=4,
                   help="search epochs of one full trial (default 4 on a laptop CPU: warm-up, 2 search, fine-tune)")
    p.add_argument("--min-fidelity", type=int, default=2)
    p.add_argument("--concurrency", type=int, default=2, help="trials at once (default 2: one per core of a laptop)")
    p.add_argument("--cpus-per-trial", type=float, default=None, help="default: all cores / concurrency")
    p.add_argument("--gpus-per-trial", type=float, default=None, help="default: 1/concurrency with --device cuda")
    p.add_argument("--address", default=None, help="join this Ray cluster (HOST:PORT) instead of starting one")
    p.add_argument("--final-epochs", type=int, default=0,
                   help="train the delivered network N more epochs into OUT/final (searchers/final.py); "
                        "with --resume, also for a study that has finished")
    p.add_argument("--measure", action="store_true",
                   help="time the delivered model.onnx (final/ if trained on, else best/) with ONNX Runtime on "
                        "this machine, 1 thread and all threads, into measured.json; with a profile measured "
                        "here (python -m searchers profile), also predicted vs measured")
    p.add_argument("--runner", default="ray", choices=["ray", "local"], help="local: in-process, no Ray")
    return p


def study_folder(args) -> str:
    """--out, or without it a new folder per run (--resume: the latest run); automl/run_dirs.py."""
    from automl.run_dirs import latest_run_dir, new_run_dir

    if args.out is not None:
        return args.out
    return str(latest_run_dir(RUNS) if args.resume else new_run_dir(RUNS))


def config_from_args(args):
    from automl.study import StudyConfig

    target, metric = target_of(args)
    cpus, gpus = trial_resources(args, args.concurrency, args.runner)
    return StudyConfig(out=study_folder(args), searcher=args.searcher, searcher_params=parse_kv(args.param),
                       solver=args.solver, solver_options=parse_kv(args.solver_option, "--solver-option"),
                       target=target, target_metric=metric, trials=args.trials,
                       budget_epochs=args.budget_epochs, fidelity=args.fidelity, min_fidelity=args.min_fidelity,
                       concurrency=args.concurrency, data=args.data, data_limit=args.data_limit, profile=args.profile, seed=args.seed,
                       device=args.device, width=default_width(args), batch_size=args.batch_size,
                       cpus_per_trial=cpus, gpus_per_trial=gpus, address=args.address,
                       param_ranges=parse_ranges(args.range, args.searcher), final_epochs=args.final_epochs,
                       measure=args.measure)


def print_outcome(outcome) -> None:
    b = outcome.best
    print()
    if outcome.interrupted:
        print(f"interrupted after {len(outcome.table.rows)} of {outcome.config.trials} trials; continue it with "
              f"the same flags and --resume (running trials go on from their last epoch). So far:")
    if b is None:
        print("No trial succeeded; see trials.csv for the errors.")
    else:
        unit = "ms" if outcome.config.target_metric == "runtime_ms" else "MFLOPs"
        r = b.runtime_ms if unit == "ms" else (b.flops or 0) / 1e6
        print(f"best {', '.join(f'{k} = {v:.4g}' for k, v in b.params.items())}  (trial {b.trial_id}, "
              f"{b.fidelity} epochs)")
        print(f"  architecture  {b.arch}")
        print(f"  accuracy      val {b.val_acc:.4f}  test {b.test_acc:.4f}")
        print(f"  cost          {r:.2f} {unit} (target {outcome.config.target:g})  "
              f"{(b.flops or 0) / 1e6:.2f} MFLOPs")
        print(f"  reward        {b.reward:.4f}  (Eq. 19)")
    if outcome.final is not None:
        f = outcome.final
        print(f"  final training  {f['epochs']} more epochs: val {f['val_acc']:.4f}  test {f['test_acc']:.4f}  "
              f"({f['wall_s']:.0f} s)")
    if outcome.measured is not None:   # searchers/cost/delivered.py: the delivered model timed here
        print("\n".join("  " + line for line in outcome.measured.lines()))
    if outcome.verdict is not None:   # automl/verdict.py: met or missed, why, and what to do
        print()
        print("\n".join(outcome.verdict.lines))
        print()
    for k, v in outcome.paths.items():
        print(f"{k:>8}: {v}")


def _shown(path: Path) -> str:
    """A path as the user would type it: relative to the working directory when under it."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from automl.tuning import run_study

    config = config_from_args(args)

    def started(out: Path):
        if args.out is None:   # a run of its own: runs/tune-lambda/latest now points at it
            from automl.run_dirs import link_latest
            link_latest(out)
        print(f"study folder: {_shown(out)}", flush=True)

    outcome = run_study(config, resume=args.resume, runner=args.runner, verbose=int(args.verbose), live=True,
                        on_start=started)
    print_outcome(outcome)
    return 130 if outcome.interrupted else 0   # the shell's code for a run stopped by Ctrl-C


if __name__ == "__main__":
    run_cli(main)
