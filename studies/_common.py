"""Flags every study shares, and the one-line-error wrapper (exit 2, nothing written)."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python studies/x.py` from a checkout
    sys.path.insert(0, str(ROOT))


def parse_kv(items: list[str], flag: str = "--param") -> dict:
    """--param variant=ste --param lr=0.001 -> {"variant": "ste", "lr": 0.001} (values are JSON where
    they parse as JSON, else strings)."""
    from searchers.errors import UsageError

    out = {}
    for it in items or []:
        if "=" not in it:
            raise UsageError(f"{flag} expects NAME=VALUE, got {it!r}")
        k, v = it.split("=", 1)
        try:
            out[k.replace("-", "_")] = json.loads(v)
        except json.JSONDecodeError:
            out[k.replace("-", "_")] = v
    return out


def add_common(p: argparse.ArgumentParser, out_default: str | None, out_help: str | None = None) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--target-ms", type=float, default=None, help="runtime target RT of Eq. 19 (ms on --profile)")
    g.add_argument("--target-mflops", type=float, default=None, help="FLOPs target RT of Eq. 19 (MFLOPs)")
    p.add_argument("--searcher", default="single-path")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="fixed hyperparameter of the searcher (e.g. variant=ste)")
    p.add_argument("--data", default="digits", help="digits | cifar10:DIR | ImageFolder DIR")
    p.add_argument("--profile", default="pixel1-single-path")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--width", type=float, default=None, help="supernet width (default: 0.25 on digits, else 1.0)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--data-limit", type=int, default=None, help="at most N images of each split, a stratified subset (quick runs, CPU-sized studies)")
    p.add_argument("--out", default=out_default, help=out_help)
    p.add_argument("--resume", action="store_true", help="continue the study in --out")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also print Ray Tune's own output (its configuration and result boxes)")


def add_solver_options(p: argparse.ArgumentParser, solver_flag: str = "--solver") -> None:
    # default None, not []: an experiment.json written before the flag existed compares equal on --resume
    p.add_argument("--solver-option", action="append", default=None, metavar="NAME=VALUE",
                   help=f"option of the {solver_flag} solver, e.g. init_points=3 (repeatable; JSON values; "
                        "default: the solver's own, sized to the budget; saved in study.json)")


def parse_solver_options(items: list[str] | None, solvers: list[str]) -> dict[str, dict]:
    """--solver-option bo:init_points=3 --solver-option tpe:n_startup_trials=4 -> {"bo": {...}, "tpe":
    {...}}, for studies that run several solvers; each SOLVER must be one of `solvers`."""
    from searchers.errors import UsageError, check_choice

    out: dict[str, dict] = {s: {} for s in solvers}
    for it in items or []:
        solver, sep, kv = it.partition(":")
        if not sep or "=" not in kv:
            raise UsageError(f"--solver-option expects SOLVER:NAME=VALUE, got {it!r}")
        check_choice("solver of --solver-option (not in --solvers)", solver, solvers)
        out[solver].update(parse_kv([kv], "--solver-option"))
    return out


def parse_ranges(items: list[str] | None, searcher: str) -> dict[str, tuple[float, float, bool]]:
    """--range lam=0.01:0.04 -> {"lam": (0.01, 0.04, True)}: a narrower (or wider) range for a tuned
    hyperparameter, on the scale the searcher declares for it (log for lambda)."""
    from searchers import get_searcher
    from searchers.errors import UsageError, check_choice

    tunable = get_searcher(searcher).tunable
    out = {}
    for it in items or []:
        name, sep, rng = it.partition("=")
        lo, colon, hi = rng.partition(":")
        if not sep or not colon:
            raise UsageError(f"--range expects NAME=LOW:HIGH, got {it!r}")
        check_choice(f"tuned hyperparameter of {searcher} (--range)", name, list(tunable))
        try:
            out[name] = (float(lo), float(hi), tunable[name][2])
        except ValueError:
            raise UsageError(f"--range expects numbers in NAME=LOW:HIGH, got {it!r}") from None
    return out


def target_of(args) -> tuple[float, str]:
    if args.target_mflops is not None:
        return args.target_mflops, "mflops"
    return (80.0 if args.target_ms is None else args.target_ms), "runtime_ms"


def trial_resources(args, concurrency: int, runner: str = "ray") -> tuple[float, float]:
    """(cpus, gpus) per trial: the flags, else the machine shared by `concurrency` trials. Checked
    first: the defaults divide by it."""
    from searchers.errors import UsageError

    if concurrency < 1:
        raise UsageError(f"--concurrency must be >= 1 trial at once, got {concurrency}")
    cpus, gpus = getattr(args, "cpus_per_trial", None), getattr(args, "gpus_per_trial", None)
    if cpus is None:
        cpus = max(1.0, (os.cpu_count() or 1) // concurrency)
    if gpus is None:
        gpus = 1.0 / concurrency if args.device.startswith("cuda") and runner == "ray" else 0.0
    return cpus, gpus


def default_width(args) -> float:
    return args.width if args.width is not None else (0.25 if args.data == "digits" else 1.0)


def run_cli(main) -> None:
    """Call main(); a UsageError becomes `error: ...` on stderr and exit code 2."""
    from searchers.errors import UsageError

    try:
        sys.exit(main())
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:   # Ctrl-C: what finished is on disk; the shell's code for it
        print("\ninterrupted: continue with the same flags and --resume", file=sys.stderr)
        sys.exit(130)
