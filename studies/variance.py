"""How much do NAS formulations vary across repeated searches? (Single-Path NAS paper Sec. VII-A, Fig. 8)

    python studies/variance.py --target-ms 80                      # paper: 20 repeats of each formulation
    python studies/variance.py --formulations single-path-sigmoid,single-path-softmax --repeats 10
    python studies/variance.py --quick --runner local

For each formulation: tune its trade-off hyperparameter toward the target with the outer loop (a short
study, --tune-trials; random search by rejection has nothing to tune), repeat the search --repeats
times at the tuned value with other seeds (inter-run), train each repeat's ConvNet from scratch for
--proxy-epochs (the "(proxy) accuracy" Fig. 8 compares: kind "proxy"), and for softmax-based
formulations train --intra-samples architectures sampled from the best repeat's distribution for
--proxy-epochs each (intra-run). --workers runs that many repeats, and then that many ConvNet
trainings, at once (local runner). Writes runs.csv, summary.csv (mean and standard deviation of
accuracy and cost), versus.csv (each formulation against the first: difference of means and ratio of
standard deviations, with p-values), tuned.csv and report.html (accuracy vs cost with error bars per
formulation, the target line).
"""
from __future__ import annotations

import argparse
import json

from _common import add_common, add_solver_options, parse_kv, run_cli
from _experiment import EpochMeter, Progress, add_run_flags, apply_preset, check_ray, parse_list, spec_of, \
    study_fields

# name -> (searcher, fixed hyperparameters, softmax-based: has an architecture distribution to sample)
FORMULATIONS = {
    "single-path-sigmoid": ("single-path", {"variant": "sigmoid"}, False),   # the paper's method
    "single-path-ste": ("single-path", {"variant": "ste"}, False),
    "single-path-softmax": ("single-path", {"variant": "softmax"}, True),    # Eq. 18, bilevel
    "multi-path": ("multi-path", {}, False),                                 # formulation 1: sigmoid, Eq. 8
    "multi-path-softmax": ("multi-path", {"weighting": "softmax"}, True),
    "random": ("random", {}, False),                                          # formulation 5: by rejection
}
FULL = dict(formulations="single-path-sigmoid,single-path-ste,single-path-softmax,multi-path,random",
            tune_trials=6, tune_solver="cbo", epochs=8, repeats=20, intra_samples=20, proxy_epochs=4)
QUICK = dict(tune_trials=2, tune_solver="random", epochs=2, repeats=2, intra_samples=2, proxy_epochs=1)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common(p, "runs/variance")
    p.add_argument("--formulations", default=None,
                   help=f"comma-separated: {', '.join(FORMULATIONS)}, or any registered searcher name")
    p.add_argument("--tune-trials", type=int, default=None, help="trials of each tuning study (default 6)")
    p.add_argument("--tune-solver", default=None, help="solver of the tuning studies (default cbo)")
    add_solver_options(p, "--tune-solver")
    p.add_argument("--epochs", type=int, default=None, help="search epochs of every search (paper: 8)")
    p.add_argument("--repeats", type=int, default=None, help="searches at the tuned value (paper: 20)")
    p.add_argument("--intra-samples", type=int, default=None,
                   help="architectures sampled from the best softmax search and trained (paper: 20; 0: none)")
    p.add_argument("--proxy-epochs", type=int, default=None,
                   help="training epochs of each repeat's ConvNet and each sampled architecture (paper: few)")
    p.add_argument("--workers", type=int, default=1,
                   help="repeated searches of a formulation at once, then its proxy and intra-run trainings, in "
                        "processes sharing the cores (--runner local; default 1)")
    add_run_flags(p)
    return p


def resolve(args) -> tuple[dict, list[str]]:
    """Formulations to run -> (searcher, params, softmax); notes on the ones skipped."""
    import searchers
    from searchers.errors import UsageError

    # declared names (the registry) vs present modules (list_searchers): a declared searcher whose module
    # is not written yet is skipped with a note, an unknown name is an error
    registered, present = set(searchers._REGISTRY), set(searchers.list_searchers())
    chosen, notes = {}, []
    user = parse_kv(args.param)
    for name in dict.fromkeys(parse_list(args.formulations, str, "--formulations")):
        if name in FORMULATIONS:
            searcher, params, softmax = FORMULATIONS[name]
        elif name in registered:
            searcher, params, softmax = name, {}, None   # softmax: decided by the class (sample_archs)
        else:
            raise UsageError(f"unknown formulation {name!r}; valid choices: "
                             f"{', '.join([*FORMULATIONS, *sorted(registered - set(FORMULATIONS))])}")
        if searcher not in present:
            notes.append(f"{name}: searcher {searcher} is not available yet; skipped")
            continue
        clash = {k for k in user if k in params and user[k] != params[k]}
        if clash:
            raise UsageError(f"--param {', '.join(sorted(clash))} contradicts formulation {name}")
        cls = searchers.get_searcher(searcher)
        if softmax is None:
            softmax = hasattr(cls, "sample_archs")
        if softmax and not hasattr(cls, "sample_archs"):
            notes.append(f"{name}: {searcher} cannot sample its architecture distribution; no intra-run")
            softmax = False
        chosen[name] = (searcher, {**params, **user}, softmax)
    return chosen, notes


def plan(args):
    """Per formulation: the tuning study's config (None: nothing to tune) and the repeats' base config."""
    from automl.solvers import list_solvers, make_solver
    from automl.study import StudyConfig
    from searchers import RunSettings, check_data, get_searcher
    from searchers.errors import UsageError, check_choice

    if args.searcher != "single-path":
        raise UsageError("variance compares --formulations; --searcher does not apply")
    if min(args.tune_trials, args.repeats, args.epochs, args.proxy_epochs) < 1 or args.intra_samples < 0:
        raise UsageError("--tune-trials, --repeats, --epochs and --proxy-epochs must be >= 1, --intra-samples >= 0")
    if args.workers < 1 or (args.workers > 1 and args.runner != "local"):
        raise UsageError(f"--workers must be >= 1, and above 1 needs --runner local (got {args.workers} with "
                         f"--runner {args.runner})")
    check_choice("tune solver", args.tune_solver, list_solvers())
    chosen, notes = resolve(args)
    plans = {}
    for name, (searcher, params, softmax) in chosen.items():
        fields = study_fields(args, searcher, params)
        if get_searcher(searcher).tunable:
            tune = StudyConfig(**fields, out=f"{args.out}/{name}/tune", solver=args.tune_solver,
                               solver_options=parse_kv(args.solver_option, "--solver-option"),
                               trials=args.tune_trials, fidelity=args.epochs, min_fidelity=args.epochs, seed=args.seed)
            make_solver(tune.solver, tune.space(), budget_epochs=tune.budget, seed=tune.seed,   # ranges now
                        **tune.solver_options)
        else:   # random search by rejection: its runtime window is its only knob; no StudyConfig checks it
            cls = get_searcher(searcher)
            cls.check_target(target_ms=fields["target"] if fields["target_metric"] == "runtime_ms" else None,
                             profile=args.profile)
            check_data(args.data, args.data_limit)
            cls.make_params(**params)
            tune = None
        RunSettings(epochs=args.epochs, seed=args.seed, device=args.device, batch_size=args.batch_size,
                    width=fields["width"], profile=args.profile)
        plans[name] = dict(searcher=searcher, params=params, softmax=softmax, tune=tune, fields=fields)
    if not plans:
        raise UsageError("none of the --formulations is available: " + "; ".join(notes))
    return plans, notes


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    apply_preset(args, FULL, QUICK)
    import pandas as pd

    from automl.analysis import spread
    from automl.results import write_csv
    from automl.experiments import prepare_experiment, save_experiment
    from automl.study_reports import versus_reference, write_variance_report
    from automl.tuning import prepare_out
    from automl.variance import inter_runs, intra_runs, proxy_runs, tuned_value

    plans, notes = plan(args)
    # more repeats or formulations on --resume add searches; the finished ones are read back (so one
    # experiment can also be run as several processes, each given some of the formulations)
    out = prepare_experiment(args.out, spec_of(args), resume=args.resume, resumable=("repeats", "formulations"))
    for p in plans.values():
        if p["tune"] is not None:
            prepare_out(p["tune"], args.resume)
    check_ray(args)
    for n in notes:
        print(f"note: {n}")
    save_experiment(out, spec_of(args))

    frames, tuned = [], []
    seeds = [args.seed + 1 + r for r in range(args.repeats)]   # not the tuning seed: no selection bias
    meter = EpochMeter(sum((p["tune"].budget if p["tune"] is not None else 0) + len(seeds) * args.epochs
                           for p in plans.values()))
    for name, p in plans.items():
        tune_progress, repeat_progress = Progress(f"{name} tune", meter), Progress(f"{name} repeat", meter)
        value, tune_reward = tuned_value(p["tune"], resume=args.resume, runner=args.runner, on_row=tune_progress,
                                         on_read_back=tune_progress.read_back, verbose=int(args.verbose))
        tuned.append({"formulation": name, "searcher": p["searcher"], "fixed": json.dumps(p["params"]),
                      "tuned": json.dumps(value), "tune_reward": tune_reward})
        if value is None:
            notes.append(f"{name}: no tuning trial succeeded; no repeats")
            continue
        inter = inter_runs(name, searcher=p["searcher"], params=p["params"], value=value, fields=p["fields"],
                           out=out / name, epochs=args.epochs, seeds=seeds, resume=args.resume, runner=args.runner,
                           samples=args.intra_samples if p["softmax"] else 0, workers=args.workers,
                           on_row=repeat_progress,
                           on_read_back=repeat_progress.read_back, verbose=int(args.verbose))
        frames.append(inter)
        print(f"{name}: tuned {value or '(nothing to tune)'}; {len(inter)} repeats, "
              f"val acc {inter['val_acc'].astype(float).mean():.4f} ± {inter['val_acc'].astype(float).std():.4f}",
              flush=True)
        proxy = proxy_runs(name, inter=inter, fields=p["fields"], out=out / name, proxy_epochs=args.proxy_epochs,
                           resume=args.resume, workers=args.workers)
        if len(proxy):
            frames.append(proxy)
            print(f"{name} proxy: {len(proxy)} repeats' ConvNets trained {args.proxy_epochs} epochs, val acc "
                  f"{proxy['val_acc'].mean():.4f} ± {proxy['val_acc'].std():.4f}", flush=True)
        if p["softmax"] and args.intra_samples:
            intra = intra_runs(name, inter=inter, fields=p["fields"], out=out / name, epochs=args.epochs,
                               n=args.intra_samples, proxy_epochs=args.proxy_epochs, seed=args.seed,
                               resume=args.resume, workers=args.workers)
            if len(intra):
                frames.append(intra)
                print(f"{name} intra-run: {len(intra)} samples, val acc {intra['val_acc'].mean():.4f} "
                      f"± {intra['val_acc'].std():.4f}", flush=True)

    runs = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    summary = spread(runs, ["formulation", "kind"], ["val_acc", "test_acc", "runtime_ms", "flops", "reward"]) \
        if len(runs) else pd.DataFrame()
    versus = versus_reference(runs) if len(runs) else pd.DataFrame()
    paths = {"runs": out / "runs.csv", "summary": out / "summary.csv", "versus": out / "versus.csv",
             "tuned": out / "tuned.csv"}
    write_csv(runs, paths["runs"])
    write_csv(summary, paths["summary"])
    write_csv(versus, paths["versus"])
    write_csv(pd.DataFrame(tuned), paths["tuned"])
    if len(runs):
        paths["report"] = write_variance_report(out / "report.html", runs, summary, versus, _target(plans),
                                                 notes)
    print("\n" + (summary.to_string(index=False, float_format=lambda v: f"{v:.4g}") if len(summary) else "no runs"))
    if len(versus):
        print("\nagainst " + versus["reference"].iloc[0] + " (difference of means, Welch p; ratio of stds, "
              "Brown-Forsythe p):\n" + versus.drop(columns=["reference"]).to_string(
                  index=False, float_format=lambda v: f"{v:.4g}"))
    for k, v in paths.items():
        print(f"{k:>8}: {v}")
    return 0


def _target(plans):
    """What the report needs of the (shared) target: RT, its metric and its name."""
    from automl.reward import Target

    f = next(iter(plans.values()))["fields"]
    return argparse.Namespace(target=f["target"], target_metric=f["target_metric"],
                              target_obj=Target(value=f["target"], metric=f["target_metric"]))


if __name__ == "__main__":
    run_cli(main)
