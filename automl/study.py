"""A study: the configuration of one outer-loop run, and what one trial of it does.

`StudyConfig` is everything a study needs, frozen and validated before any work (bad input fails
here, before Ray starts) and saved as study.json beside the results. `run_trial` runs one inner NAS
search for a proposal and turns its result into a trial row scored by Eq. 19; every runner (Ray Tune,
local, replay) goes through it or through rows it wrote.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
import traceback
from dataclasses import InitVar, dataclass, field
from pathlib import Path
from typing import Any, Callable

from searchers import RunSettings, check_data, get_searcher, list_searchers, load_task
from searchers.errors import UsageError, check_choice
from searchers.result import atomic_text, atomic_write

from .reward import Target, reward
from .solvers import check_solver_options, get_solver, list_solvers
from .solvers.base import Observation, Proposal
from .spaces import Param, Space


@dataclass(frozen=True, kw_only=True)
class StudyConfig:
    out: str = "runs/tune-lambda"
    searcher: str = "single-path"
    searcher_params: dict[str, Any] = field(default_factory=dict)   # fixed (not tuned) method knobs
    solver: str = "cbo"
    solver_options: dict[str, Any] = field(default_factory=dict)    # beyond the solver's defaults (which
                                                                    # are sized to the budget)
    target: float = 80.0                 # RT of Eq. 19
    target_metric: str = "runtime_ms"    # or "mflops"
    trials: int = 8                      # at most this many trials ...
    budget_epochs: int | None = None     # ... and at most this many search epochs (default trials*fidelity)
    fidelity: int = 8                    # search epochs of a full trial (the paper's 8)
    min_fidelity: int = 2                # lowest fidelity multi-fidelity solvers may use (paper: 2)
    concurrency: int = 1
    data: str = "digits"
    data_limit: int | None = None        # at most N images of each split, stratified (quick presets, tests)
    profile: str = "pixel1-single-path"
    seed: int = 0                        # seeds the solver; every trial searches with this seed too
                                         # (common random numbers: trials differ only by their λ)
    device: str = "cpu"
    width: float = 1.0
    batch_size: int = RunSettings.batch_size
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0          # fractional: 0.25 lets four small searches share one GPU
    address: str | None = None           # join this Ray cluster instead of starting one
    param_ranges: dict[str, tuple[float, float, bool]] = field(default_factory=dict)  # override tunable
    final_epochs: int = 0                # train the delivered network this many more epochs (final/;
                                         # searchers/final.py); 0: deliver the search's child as is
    measure: bool = False                # time the delivered model.onnx here (searchers/cost/delivered.py) into
                                         # measured.json; off by default: timings vary with the machine's load
    # False: a recorded study read back (a report rebuilt): its data and this machine's cores are not
    # asked for, only what the config says is checked. Not a field: study.json does not hold it.
    check_environment: InitVar[bool] = True

    def __post_init__(self, check_environment: bool):
        check_choice("solver", self.solver, list_solvers())
        # names and types now; ranges when run_study builds the solver, still before Ray starts
        check_solver_options(self.solver, self.solver_options)
        check_choice("searcher", self.searcher, list_searchers())
        Target(value=self.target, metric=self.target_metric)
        if self.trials < 1 or self.concurrency < 1:
            raise UsageError(f"trials and concurrency must be >= 1, got {self.trials} and {self.concurrency}")
        if not 1 <= self.min_fidelity <= self.fidelity:
            raise UsageError(f"need 1 <= min fidelity ({self.min_fidelity}) <= fidelity ({self.fidelity}) epochs")
        if self.budget < self.fidelity and not get_solver(self.solver).multi_fidelity:
            raise UsageError(f"budget of {self.budget} epochs is smaller than one trial's fidelity ({self.fidelity})")
        if self.budget < self.min_fidelity:
            raise UsageError(f"budget of {self.budget} epochs is smaller than the lowest fidelity ({self.min_fidelity})")
        if self.final_epochs < 0:
            raise UsageError(f"final epochs must be >= 0, got {self.final_epochs}")
        if not (math.isfinite(self.cpus_per_trial) and self.cpus_per_trial > 0) or \
                not (math.isfinite(self.gpus_per_trial) and self.gpus_per_trial >= 0):
            raise UsageError(f"cpus per trial must be > 0 and gpus per trial >= 0, got {self.cpus_per_trial:g} "
                             f"and {self.gpus_per_trial:g}")
        # Ray waits forever for resources no node has: refuse what a local cluster cannot offer
        if self.gpus_per_trial > 0 and not self.device.startswith("cuda"):
            raise UsageError(f"gpus per trial ({self.gpus_per_trial:g}) needs --device cuda; valid with --device cpu: 0")
        cores = os.cpu_count() or 1
        if check_environment and self.address is None and self.cpus_per_trial > cores:
            raise UsageError(f"cpus per trial ({self.cpus_per_trial:g}) exceeds this machine's {cores} CPUs; "
                             f"valid: up to {cores}, or join a larger cluster with --address")
        tunable = get_searcher(self.searcher).tunable
        for name, rng in self.param_ranges.items():
            check_choice(f"tuned hyperparameter of {self.searcher} (--range)", name, list(tunable))
            Param(name=name, low=rng[0], high=rng[1], log=rng[2])   # low < high, > 0 on a log scale
        if not self.space().params:
            raise UsageError(f"searcher {self.searcher} has no tunable hyperparameter")
        cls = get_searcher(self.searcher)
        cls.make_params(**self.searcher_params)  # unknown / invalid fixed knobs fail now
        for name, (low, high, _) in self.param_ranges.items():   # both ends of a --range the searcher accepts
            for end in (low, high):
                try:
                    cls.make_params(**{**self.searcher_params, name: end})
                except (UsageError, ValueError) as e:
                    raise UsageError(f"--range {name}={low:g}:{high:g} leaves {self.searcher}'s valid values: {e}") from None
        RunSettings(epochs=self.fidelity, seed=self.seed, device=self.device, batch_size=self.batch_size,
                    width=self.width, profile=self.profile)
        if check_environment:   # a data spec that cannot make a task: refused now, not per trial
            _check_data(self.data, self.data_limit)
        # the searcher says what it can measure (a runtime model or FLOPs only); the study asks it
        cls.check_target(target_ms=self.target if self.target_metric == "runtime_ms" else None, profile=self.profile)

    @property
    def budget(self) -> int:
        return self.budget_epochs if self.budget_epochs is not None else self.trials * self.fidelity

    @property
    def target_obj(self) -> Target:
        return Target(value=self.target, metric=self.target_metric)

    def space(self) -> Space:
        tunable = dict(get_searcher(self.searcher).tunable)
        tunable.update({k: tuple(v) for k, v in self.param_ranges.items()})
        params = tuple(Param(name=n, low=lo, high=hi, log=log) for n, (lo, hi, log) in tunable.items()
                       if n not in self.searcher_params)
        return Space(params=params, min_fidelity=self.min_fidelity, max_fidelity=self.fidelity)

    def settings(self, epochs: int) -> RunSettings:
        return RunSettings(epochs=epochs, seed=self.seed, device=self.device, batch_size=self.batch_size,
                           width=self.width, profile=self.profile,
                           target_ms=self.target if self.target_metric == "runtime_ms" else None)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any], *, check_environment: bool = True) -> "StudyConfig":
        d = dict(d)
        d["param_ranges"] = {k: tuple(v) for k, v in d.get("param_ranges", {}).items()}
        return cls(**d, check_environment=check_environment)

    def save(self, path: Path) -> None:
        atomic_text(path, json.dumps(self.to_json(), indent=2))   # a kill mid-write keeps the old study.json


# once per process: every trial rebuilds its StudyConfig from study.json, and the data did pass already
_check_data = functools.lru_cache(maxsize=8)(check_data)


@dataclass(kw_only=True)
class TrialRow:
    """One row of trials.csv (the design's contract: what every trial records)."""

    trial_id: int
    solver: str
    params: dict[str, float]
    fidelity: int
    seed: int
    status: str = "running"      # running | ok | failed
    error: str = ""
    val_acc: float | None = None
    val_n: int | None = None     # validation images behind val_acc (its standard error, for best())
    val_correct: str = ""        # per-image validation correctness (searchers.result.pack_bits; "" =
                                 # unknown): trials share the images, so best() compares them paired
    test_acc: float | None = None
    runtime_ms: float | None = None
    flops: float | None = None
    target: float | None = None
    reward: float | None = None
    arch: str = ""
    wall_s: float = 0.0
    result_dir: str = ""

    def flat(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.update(d.pop("params"))
        return d


_TASKS: dict[tuple, Any] = {}


def cached_task(data: str, limit: int | None = None):
    """Load each data set once per process (Ray reuses worker processes across trials)."""
    if (data, limit) not in _TASKS:
        _TASKS[(data, limit)] = load_task(data, limit=limit)
    return _TASKS[(data, limit)]


def trial_reward(config: StudyConfig, val_acc: float, runtime_ms: float | None, flops: float) -> float:
    t = config.target_obj
    return reward(val_acc, t.measure(runtime_ms, flops), t.value)


def observation(config: StudyConfig, row: TrialRow) -> Observation:
    """What a solver is told of a finished trial: Eq. 19's reward and, for solvers that model them
    (cbo.py), its parts: validation accuracy, R (runtime or MFLOPs, by the target) and RT."""
    ok = row.status == "ok"
    t = config.target_obj
    return Observation(params=row.params, fidelity=row.fidelity, reward=row.reward if ok else None,
                       trial_id=row.trial_id, accuracy=row.val_acc if ok else None,
                       cost=t.measure(row.runtime_ms, row.flops or 0.0) if ok else None, target=t.value)


def make_searcher(config: StudyConfig, proposal: Proposal):
    cls = get_searcher(config.searcher)
    params = cls.make_params(**config.searcher_params, **proposal.params)
    return cls(params, cached_task(config.data, config.data_limit), config.settings(proposal.fidelity))


def checkpoint_path(config: StudyConfig, trial_id: int) -> Path:
    return Path(config.out) / "checkpoints" / f"{trial_id:04d}.pt"


def _checkpoint_key(config: StudyConfig, proposal: Proposal) -> dict:
    return {"trial_id": proposal.trial_id, "params": proposal.params, "fidelity": proposal.fidelity,
            "seed": config.seed}


def load_checkpoint(path: Path, key: dict, searcher) -> None:
    """Continue `searcher` from its last epoch when `path` holds this very trial's state (a trial that
    was running when its study or its worker died); otherwise it starts at epoch 0."""
    import torch

    if path.exists():
        saved = torch.load(path, weights_only=True)
        if saved["key"] == key:
            searcher.load_state_dict(saved["state"])


def save_checkpoint(path: Path, key: dict, searcher) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: torch.save({"key": key, "state": searcher.state_dict()}, tmp))


def run_trial(config: StudyConfig, proposal: Proposal, *, result_dir: Path | None = None,
              on_epoch: Callable | None = None, searcher=None, onnx: bool = True,
              after: Callable | None = None, checkpoint: Path | None = None) -> TrialRow:
    """Run one inner search for `proposal`; failures (exceptions, NaN) become a failed row.
    The result goes to `result_dir` (ONNX export optional: on a CPU it costs about a tiny search);
    `after(searcher, result_dir)` may save more from the live searcher (e.g. softmax samples).
    `checkpoint`: the searcher's whole state is saved there after every epoch (atomically), and a
    trial started again (a resumed study, a restarted worker) continues from it; removed once the
    trial has its result. On CPU the continued search is bit-identical to an uninterrupted one."""
    row = TrialRow(trial_id=proposal.trial_id, solver=config.solver, params=dict(proposal.params),
                   fidelity=proposal.fidelity, seed=config.seed, target=config.target)
    t0 = time.perf_counter()
    key = _checkpoint_key(config, proposal)

    def epoch_done(m):
        if checkpoint is not None:
            save_checkpoint(checkpoint, key, searcher)
        if on_epoch is not None:
            on_epoch(m)

    try:
        searcher = searcher or make_searcher(config, proposal)
        if checkpoint is not None:
            load_checkpoint(checkpoint, key, searcher)
        result = searcher.run(epoch_done)
        row.val_acc, row.test_acc = result.val_acc, result.test_acc
        row.val_n, row.val_correct = len(searcher.task.val[1]), result.val_correct
        row.runtime_ms, row.flops, row.arch = result.runtime_ms, result.flops, result.arch
        # Eq. 19 on validation accuracy: the test split stays untouched by the tuning
        row.reward = trial_reward(config, result.val_acc, result.runtime_ms, result.flops)
        row.status = "ok"
        if result_dir is not None:
            result.save(result_dir, onnx=onnx)
            row.result_dir = str(result_dir)
            if after is not None:
                after(searcher, Path(result_dir))
    except Exception as e:  # a trial that raises or diverges is recorded, told as worst, and the study goes on
        row.status, row.error = "failed", failure_text(e)
    if checkpoint is not None:
        checkpoint.unlink(missing_ok=True)
    row.wall_s = round(time.perf_counter() - t0, 3)
    return row


def failure_text(e: BaseException) -> str:
    """A failed trial's error column: the exception's own first line, then where it was raised (the
    innermost frame of its traceback), unless it is the user's input (UsageError) or a divergence."""
    text = (f"{type(e).__name__}: {e}".splitlines() or [type(e).__name__])[0][:300]
    frames = traceback.extract_tb(e.__traceback__)
    if frames and not isinstance(e, UsageError) and "diverged" not in str(e):
        f = frames[-1]
        text += f" | {Path(f.filename).name}:{f.lineno} in {f.name}"[:200]
    return text


def failed_row(config: StudyConfig, proposal: Proposal, error: str) -> TrialRow:
    return TrialRow(trial_id=proposal.trial_id, solver=config.solver, params=dict(proposal.params),
                    fidelity=proposal.fidelity, seed=config.seed, status="failed", target=config.target, error=error)
