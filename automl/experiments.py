"""Studies made of studies (compare solvers, fidelity grid, variance; Single-Path NAS paper Fig. 8-9).

Each part is a sub-study in its own folder of the experiment's --out, run by the same machinery as
tune_lambda (a solver's ask/tell, the Ray or the local runner, trials.csv, study.json). A finished
sub-study gets a done.json marker, so --resume reads it back instead of running it again, and an
interrupted one resumes trial by trial as run_study does. The experiment's own flags are kept in
experiment.json: resuming with different flags is refused before any work.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
from pathlib import Path
from typing import Callable, Iterator

from searchers.errors import UsageError

from .journal import resume_solver, stopped_early
from .results import TrialsTable, write_json
from .runners.local import run_local
from .solvers import Solver, make_solver
from .solvers.base import Proposal
from .study import StudyConfig, TrialRow, cached_task, load_checkpoint, run_trial, save_checkpoint
from .tuning import prepare_out

EXPERIMENT, DONE = "experiment.json", "done.json"


def prepare_experiment(out: str | os.PathLike, spec: dict, *, resume: bool, resumable=()) -> Path:
    """Refuse an --out that holds another experiment (or anything, without --resume). Writes nothing."""
    out = Path(out)
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK):
        raise UsageError(f"--out {out} is not writable")
    spec = json.loads(json.dumps(spec))     # tuples -> lists: compared as stored
    stored = out / EXPERIMENT
    if stored.exists():
        if not resume:
            raise UsageError(f"--out {out} already holds an experiment; pass --resume to continue it or choose another --out")
        old = json.loads(stored.read_text())
        diff = sorted(k for k in set(old) | set(spec) if k not in resumable and old.get(k) != spec.get(k))
        if diff:
            raise UsageError(f"--out {out} holds a different experiment (differs in: {', '.join(diff)}); "
                             "use the same flags with --resume, or another --out")
    elif out.exists() and any(out.iterdir()):
        raise UsageError(f"--out {out} is not empty and holds no experiment; choose another --out")
    return out


def save_experiment(out: Path, spec: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / EXPERIMENT, spec)


def is_done(out: str | os.PathLike) -> bool:
    return (Path(out) / DONE).exists()


def light_trial(config: StudyConfig, proposal: Proposal, *, result_dir: Path | None = None,
                after: Callable | None = None, checkpoint: Path | None = None) -> TrialRow:
    """run_trial, saving result.json (per-epoch history included) and model.pt but no ONNX: on a CPU
    the export costs about as much as a tiny search, and an experiment of hundreds of searches deploys
    none of them (model.pt exports later). `after(searcher, result_dir)` may save more (e.g. samples of
    a softmax distribution, which only the live searcher holds)."""
    return run_trial(config, proposal, result_dir=result_dir, onnx=False, after=after, checkpoint=checkpoint)


_dashboard_printed = False


def run_substudy(config: StudyConfig, *, resume: bool, runner: str = "local", solver: Solver | None = None,
                 trial_fn: Callable | None = None, label: str | None = None, verbose: int = 0,
                 on_row: Callable[[TrialRow], None] | None = None,
                 on_read_back: Callable[[list[TrialRow]], None] | None = None) -> TrialsTable:
    """Run (or finish, or read back) one sub-study; returns its trials table. `on_row` is called with
    each trial this call runs, `on_read_back` once with the trials --resume found recorded.

    `solver`: a solver instance (e.g. a GridSolver) instead of config.solver's; `label` replaces the
    solver name in the rows (StudyConfig only admits registered solvers). `trial_fn` is the local
    runner's (default light_trial; the replay runner passes its own); Ray runs its own trainable."""
    global _dashboard_printed
    out = Path(config.out)
    space = config.space()
    if resume and is_done(out):
        prepare_out(config, resume=True)   # the same study, or refuse
        table = TrialsTable(out / "trials.csv", space.names)
        if on_read_back is not None:
            on_read_back(list(table.rows))
        return table
    prepare_out(config, resume)
    solver = solver or make_solver(config.solver, space, budget_epochs=config.budget, seed=config.seed,
                                   **config.solver_options)
    out.mkdir(parents=True, exist_ok=True)
    config.save(out / "study.json")
    table = TrialsTable(out / "trials.csv", space.names)
    if on_read_back is not None:
        on_read_back(list(table.rows))
    solver = resume_solver(solver, config, table)   # an interrupted sub-study goes on where it stopped

    def record(row: TrialRow):
        if label:
            row.solver = label
        table.append(row)
        if on_row is not None:
            on_row(row)

    remaining = config.trials - len(table.rows)
    if remaining > 0:
        if runner == "ray":
            from .runners.ray_tune import run_ray, start_ray
            url = start_ray(config, verbose=verbose)
            if url and not _dashboard_printed:
                print(f"Ray dashboard: {url}", flush=True)
                _dashboard_printed = True
            run_ray(config, solver, max_trials=remaining, on_row=record, verbose=verbose)
        elif runner == "local":
            run_local(config, solver, max_trials=remaining, on_row=record, trial_fn=trial_fn or light_trial)
        else:
            raise UsageError(f"unknown runner {runner!r}; valid choices: ray, local")
    if stopped_early(solver):   # Ctrl-C under Ray: not done; the next sub-study must not start
        raise KeyboardInterrupt
    write_json(out / DONE, {"trials": len(table.rows), "spent_epochs": solver.spent_epochs})
    return table


def run_substudies(jobs: dict, *, workers: int, **kw) -> Iterator[tuple[object, TrialsTable]]:
    """run_substudy for each (key -> config) of `jobs`, `workers` at once in processes (replayed trials:
    the solver's own computation is the whole cost, and sub-studies share nothing), yielding (key, table)
    as each finishes; in this process, in order, with workers=1. Each sub-study is what it would be
    alone (its own seed, folder and journal), so the results do not depend on `workers`."""
    if workers <= 1:
        for key, config in jobs.items():
            yield key, run_substudy(config, **kw)
        return
    yield from in_processes(_substudy_job, [(key, config, kw) for key, config in jobs.items()], workers)


def in_processes(fn: Callable, jobs: list, workers: int) -> Iterator:
    """fn(job) for each job, `workers` at once in processes, each with an equal share of the cores as
    torch's thread count, yielding the results as each finishes. `fn` must be a module-level function
    and jobs picklable."""
    import multiprocessing

    # spawn: the parent may hold torch's thread pools, which a forked child must not inherit. Ctrl-C (a
    # terminal signals the whole process group) is the parent's alone: the workers start with it ignored,
    # which exec keeps, and the parent ends them; a sub-study cut short resumes from its journal.
    parent = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        # torch's default, every core, would oversubscribe the machine `workers` times
        pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_share_cores,
                                                         initargs=(max(1, (os.cpu_count() or 1) // workers),))
    finally:
        signal.signal(signal.SIGINT, parent)
    try:
        yield from pool.imap_unordered(fn, jobs)
    finally:   # done, failed or interrupted
        pool.terminate()
        pool.join()


def _share_cores(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _substudy_job(job: tuple) -> tuple[object, TrialsTable]:
    key, config, kw = job
    return key, run_substudy(config, **kw)


def run_fixed(out: Path, *, searcher: str, searcher_params: dict, settings, data: str, data_limit: int | None,
              target, seed: int, resume: bool, after: Callable | None = None,
              on_row: Callable[[TrialRow], None] | None = None,
              on_read_back: Callable[[list[TrialRow]], None] | None = None) -> TrialsTable:
    """One search with fixed hyperparameters, in-process, recorded as a one-row study folder
    (trials.csv, fixed.json, trials/0000/). For searchers with nothing to tune, which StudyConfig
    refuses (random search by rejection: its target window is its only knob). `on_row` and
    `on_read_back` as run_substudy's."""
    from searchers import get_searcher
    from .reward import reward

    out = Path(out)
    table = TrialsTable(out / "trials.csv", [])
    if resume and is_done(out):
        if on_read_back is not None:
            on_read_back(list(table.rows))
        return table
    cls = get_searcher(searcher)
    row = TrialRow(trial_id=0, solver="none", params={}, fidelity=settings.epochs, seed=seed, target=target.value)
    # the searcher's state after every epoch, as run_trial keeps a trial's: a killed run continues there
    checkpoint = out / "checkpoints" / "0000.pt"
    key = {"searcher": searcher, "params": searcher_params, "settings": dataclasses.asdict(settings)}
    t0 = time.perf_counter()
    try:
        task = cached_task(data, data_limit)
        s = cls(cls.make_params(**searcher_params), task, settings)
        load_checkpoint(checkpoint, key, s)
        result = s.run(lambda m: save_checkpoint(checkpoint, key, s))
        row.val_n, row.val_correct = len(task.val[1]), result.val_correct
        row.val_acc, row.test_acc, row.runtime_ms, row.flops, row.arch = (
            result.val_acc, result.test_acc, result.runtime_ms, result.flops, result.arch)
        row.reward = reward(result.val_acc, target.measure(result.runtime_ms, result.flops), target.value)  # Eq. 19
        row.status, row.result_dir = "ok", str(out / "trials" / "0000")
        result.save(row.result_dir, onnx=False)
        if after is not None:
            after(s, Path(row.result_dir))
    except Exception as e:   # recorded like a failed trial; the experiment goes on
        row.status, row.error = "failed", f"{type(e).__name__}: {e}".splitlines()[0][:300]
    checkpoint.unlink(missing_ok=True)
    row.wall_s = round(time.perf_counter() - t0, 3)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "fixed.json", {"searcher": searcher, "searcher_params": searcher_params,
                                    "settings": dataclasses.asdict(settings),
                                    "data": data, "data_limit": data_limit})
    table.rows = []
    table.append(row)
    write_json(out / DONE, {"trials": 1})
    if on_row is not None:
        on_row(row)
    return table
