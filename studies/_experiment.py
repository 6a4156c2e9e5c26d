"""Flags and presets shared by the studies made of sub-studies (compare_solvers, fidelity_grid,
variance): how trials run (runner, concurrency, resources), the --quick preset, and the StudyConfig
fields every sub-study shares. The machinery itself is automl/experiments.py."""
from __future__ import annotations

import argparse
import time

from _common import default_width, parse_kv, target_of, trial_resources

# Flags that change how an experiment runs or what it is shown beside, not what it computes: --resume may
# change them.
RUN_ONLY = ("runner", "concurrency", "cpus_per_trial", "gpus_per_trial", "address", "resume", "out", "quick",
            "verbose", "workers", "against")

# --quick: the embedded digits task, tiny searches (StudyConfig tests' scale); each study adds its own.
QUICK = dict(data_limit=96)


def add_run_flags(p: argparse.ArgumentParser, runner: bool = True) -> None:
    p.add_argument("--quick", action="store_true",
                   help="preset that finishes in minutes on a 2-core CPU (explicit flags still win)")
    if runner:
        p.add_argument("--runner", default="ray", choices=["ray", "local"], help="local: in-process, no Ray")
        p.add_argument("--concurrency", type=int, default=1, help="trials at once (Ray runner)")
        p.add_argument("--cpus-per-trial", type=float, default=None, help="default: all cores / concurrency")
        p.add_argument("--gpus-per-trial", type=float, default=None, help="default: 1/concurrency with --device cuda")
        p.add_argument("--address", default=None, help="join this Ray cluster (HOST:PORT) instead of starting one")


def apply_preset(args, full: dict, quick: dict) -> None:
    """Fill flags left unset (None) from the --quick preset or the full (paper) defaults."""
    preset = {**full, **QUICK, **quick} if args.quick else full
    for k, v in preset.items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)


def parse_list(text: str, kind, flag: str) -> list:
    from searchers.errors import UsageError

    try:
        values = [kind(v) for v in str(text).replace(" ", "").split(",") if v]
    except ValueError:
        raise UsageError(f"{flag} expects a comma-separated list of {kind.__name__}s, got {text!r}") from None
    if not values:
        raise UsageError(f"{flag} is empty")
    return values


def study_fields(args, searcher: str | None = None, searcher_params: dict | None = None) -> dict:
    """StudyConfig fields shared by every sub-study of an experiment."""
    target, metric = target_of(args)
    concurrency = getattr(args, "concurrency", 1)
    cpus, gpus = trial_resources(args, concurrency, getattr(args, "runner", "local"))
    return dict(searcher=searcher or args.searcher,
                searcher_params=parse_kv(args.param) if searcher_params is None else searcher_params,
                target=target, target_metric=metric, data=args.data, data_limit=args.data_limit,
                profile=args.profile, device=args.device, width=default_width(args), batch_size=args.batch_size,
                concurrency=concurrency, cpus_per_trial=cpus, gpus_per_trial=gpus,
                address=getattr(args, "address", None))


def spec_of(args, **extra) -> dict:
    """What the experiment computes (experiment.json): the flags minus how it runs."""
    return {**{k: v for k, v in vars(args).items() if k not in RUN_ONLY}, **extra}


def check_ray(args) -> None:
    if getattr(args, "runner", "local") == "ray":
        from automl.runners.ray_tune import check_address
        check_address(args.address)


class EpochMeter:
    """An experiment's progress over all its sub-studies: search epochs spent of its total (the paper's
    budget unit), elapsed and estimated remaining time, as tune_lambda's progress line (automl/live.py).
    Epochs a resumed experiment reads back count as spent but not toward the pace: the estimate comes
    from this session's searches alone."""

    def __init__(self, total_epochs: int):
        self.total, self.spent, self.read, self.t0 = total_epochs, 0, 0, time.perf_counter()

    def add(self, epochs: int, *, read_back: bool = False) -> str:
        from automl.live import duration

        self.spent += epochs
        self.read += epochs if read_back else 0
        elapsed, searched = time.perf_counter() - self.t0, self.spent - self.read
        left = f"~{duration(elapsed / searched * max(self.total - self.spent, 0))} left" if searched else "~? left"
        return f"[{self.spent}/{self.total} epochs | {duration(elapsed)} elapsed, {left}]"


class Progress:
    """A one-line print per finished trial, as tune_lambda prints it (automl/live.py), with the seed
    (the repeats of an experiment differ by it) and, given the experiment's `meter`, its progress; and
    one line per sub-study that --resume read back (`read_back`)."""

    def __init__(self, prefix: str, meter: EpochMeter | None = None):
        self.prefix, self.meter = prefix, meter

    def __call__(self, row) -> None:
        from automl.live import format_row

        head = f"{self.meter.add(row.fidelity)} " if self.meter is not None else ""
        print(f"{head}{self.prefix} (seed {row.seed}): {format_row(row)}", flush=True)

    def read_back(self, rows: list) -> None:
        if not rows:
            return
        epochs = sum(r.fidelity for r in rows)
        head = f"{self.meter.add(epochs, read_back=True)} " if self.meter is not None else ""
        print(f"{head}{self.prefix} (seed {rows[0].seed}): {len(rows)} trials, {epochs} epochs read back",
              flush=True)
