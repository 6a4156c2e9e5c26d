"""Run a study end to end: validate, start (or resume) the solver, run trials on a runner, and write
trials.csv, study.json, best/ (result.json, model.pt, model.onnx of the delivered trial), verdict.json
(automl/verdict.py: target met or not, and what to do) and report.html."""
from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from searchers.errors import UsageError
from searchers.result import check_writable

from .journal import resume_solver, stopped_early
from .live import LiveView
from .results import TrialsTable, write_json
from .study import StudyConfig, TrialRow, cached_task
from .verdict import Verdict, make_verdict

# Fields a resumed study may change: how it runs, not what it computes.
# final_epochs too: --resume --final-epochs N trains the network a finished study delivered; and measure.
RESUMABLE_CHANGES = {"trials", "budget_epochs", "concurrency", "address", "cpus_per_trial", "gpus_per_trial",
                     "final_epochs", "measure"}


@dataclass
class StudyOutcome:
    config: StudyConfig
    table: TrialsTable
    best: TrialRow | None
    paths: dict[str, Path]
    dashboard: str | None = None
    verdict: Verdict | None = None   # automl/verdict.py; also saved as verdict.json
    final: dict | None = None        # final/result.json: the delivered network after final training
    measured: object | None = None   # searchers.cost.delivered.DeliveredTiming (--measure), also measured.json
    interrupted: bool = False        # stopped early (Ctrl-C): --resume continues it


def prepare_out(config: StudyConfig, resume: bool) -> Path:
    """Refuse an --out holding a different study (or any study, without --resume); bad input only."""
    out = Path(config.out)
    check_writable(out)
    stored_path = out / "study.json"
    if stored_path.exists():
        if not resume:
            raise UsageError(f"--out {out} already holds a study; pass --resume to continue it or choose another --out")
        try:
            stored = StudyConfig.from_json(json.loads(stored_path.read_text()))
        except (ValueError, TypeError) as e:   # not ours, or edited by hand (ours is written atomically)
            raise UsageError(f"{stored_path} is not a study this tool wrote ({type(e).__name__}: "
                             f"{str(e)[:120]}); choose another --out") from None
        diff = [f.name for f in dataclasses.fields(StudyConfig)
                if f.name not in RESUMABLE_CHANGES and getattr(stored, f.name) != getattr(config, f.name)]
        if diff:
            raise UsageError(f"--out {out} holds a different study (differs in: {', '.join(diff)}); "
                             "use the same flags with --resume, or another --out")
    elif out.exists() and any(out.iterdir()):
        raise UsageError(f"--out {out} is not empty and holds no study; choose another --out")
    return out


def run_study(config: StudyConfig, *, resume: bool = False, runner: str = "ray",
              on_row: Callable[[TrialRow], None] | None = None, trial_fn=None, verbose: int = 1,
              live: bool = False, on_start: Callable[[Path], None] | None = None) -> StudyOutcome:
    """`verbose`: Ray Tune's own output (0: none). `live`: print the compact view (automl/live.py).
    `on_start(out)`: called once the input is checked and the study folder exists, before any trial."""
    # Absolute: Ray runs each trial in its own working directory, where a relative --out would land.
    config = dataclasses.replace(config, out=str(Path(config.out).resolve()))
    out = prepare_out(config, resume)
    joined = None
    if runner == "ray" and config.address:   # a cluster that cannot be joined is refused before any write
        from .runners.ray_tune import join_ray, stop_ray
        joined = join_ray(config)
    try:
        return _run_study(config, out, resume, runner, on_row, trial_fn, verbose, live, on_start, joined)
    finally:
        if config.address and runner == "ray":
            stop_ray()   # disconnects from the joined cluster; never stops it


def _run_study(config, out, resume, runner, on_row, trial_fn, verbose, live, on_start, joined) -> StudyOutcome:
    from .solvers import make_solver

    space = config.space()
    solver = make_solver(config.solver, space, budget_epochs=config.budget, seed=config.seed,
                         **config.solver_options)
    out.mkdir(parents=True, exist_ok=True)
    config.save(out / "study.json")
    if on_start:
        on_start(out)
    table = TrialsTable(out / "trials.csv", space.names)
    # resume: the solver replays its journal (automl/journal.py); finished trials are not re-run, and
    # those that were running continue from their last epoch
    solver = resume_solver(solver, config, table)

    # With Ray's own lines on (verbose), the view prints plain lines: no redraw in place among them.
    view = LiveView(config, done=table.rows, tty=None if verbose == 0 else False) if live else None

    def record(row: TrialRow):
        table.append(row)
        if on_row:
            on_row(row)
        if view:
            view.finished(row)

    remaining = config.trials - len(table.rows)
    dashboard = None
    if remaining > 0:
        try:
            dashboard = _run_trials(config, solver, runner, remaining, record, trial_fn, verbose, view, joined)
        finally:   # an interrupted run too leaves its last progress line, ended by a newline
            if view:
                view.close()
    return finalize(config, table, dashboard, interrupted=stopped_early(solver))


def _run_trials(config, solver, runner, remaining, record, trial_fn, verbose, view, joined) -> str | None:
    """Run up to `remaining` trials on `runner`; returns the dashboard URL when Ray has one (`joined`:
    that of the cluster run_study joined)."""
    dashboard = None
    if runner == "ray":
        from .runners.ray_tune import ray_running, run_ray, start_ray, stop_ray
        ours = not ray_running()   # a Ray the caller started (or joined) is the caller's to stop
        dashboard = joined or start_ray(config, verbose=verbose)
        try:
            if dashboard:
                print(f"Ray dashboard: {dashboard}  (token auth: see README)", flush=True)
            if view:
                view.begin(config.concurrency)
            run_ray(config, solver, max_trials=remaining, on_row=record, verbose=verbose,
                    callbacks=[view.ray_callback()] if view else ())
        finally:   # ended, failed or interrupted (Ctrl-C): no Ray process outlives the study
            if ours:
                stop_ray()
    elif runner == "local":
        from .runners.local import run_local
        from .study import run_trial
        fn = trial_fn or run_trial
        if view:
            view.begin()
        run_local(config, solver, max_trials=remaining, on_row=record,
                  trial_fn=view.local_trial_fn(fn) if view else fn)
    else:
        raise UsageError(f"unknown runner {runner!r}; valid choices: ray, local")
    return dashboard


def finalize(config: StudyConfig, table: TrialsTable, dashboard: str | None = None, *,
             interrupted: bool = False) -> StudyOutcome:
    """The study's outputs from its trials so far. `interrupted`: the report and verdict are written,
    but the delivered network is neither trained on nor timed (--resume does both once it has ended)."""
    from .report import write_report

    out = Path(config.out)
    paths = {"trials": out / "trials.csv", "study": out / "study.json"}
    best = table.best(config.fidelity, config.target, lambda r: config.target_obj.measure(r.runtime_ms, r.flops))
    if best is not None and best.result_dir and Path(best.result_dir).is_dir():
        paths["best"] = replace_dir(out / "best", lambda tmp: shutil.copytree(best.result_dir, tmp))
    final = measured = None
    if config.final_epochs and "best" in paths and not interrupted:
        paths["final"], final = train_final(config, paths["best"])
    if config.measure and "best" in paths and not interrupted:
        measured, paths["measured"] = measure_delivered_model(config, paths.get("final", paths["best"]))
    verdict = make_verdict(table, config, best)
    paths["verdict"] = out / "verdict.json"
    write_json(paths["verdict"], verdict.to_json())
    paths["report"] = write_report(out / "report.html", table, config, verdict, measured.lines() if measured else None)
    return StudyOutcome(config, table, best, paths, dashboard, verdict, final, measured, interrupted)


def measure_delivered_model(config: StudyConfig, folder: Path):
    """Time the delivered model (final/ when trained on, else best/) on this machine, after every trial
    has ended, and compare with the profile when it was measured here; writes folder/measured.json."""
    from searchers.cost.delivered import measure_delivered, write_measured

    print(f"timing {folder.name}/model.onnx on this machine", flush=True)
    timing = measure_delivered(folder, profile=config.profile, shown=folder.name)
    return timing, write_measured(folder, timing)


def train_final(config: StudyConfig, best: Path) -> tuple[Path, dict]:
    """Train the delivered network (best/model.pt) config.final_epochs more epochs into final/, in
    this process; a final/ already trained from this network for these epochs is kept (resume)."""
    import torch

    from searchers import RunSettings
    from searchers.final import train_delivered

    dst = Path(config.out) / "final"
    done = dst / "result.json"
    if done.exists():
        kept = json.loads(done.read_text())
        if kept["epochs"] == config.final_epochs and kept["hyperparameters"]["from"] == str(best / "model.pt"):
            return dst, kept
    settings = RunSettings(epochs=config.final_epochs, seed=config.seed, device=config.device,
                           batch_size=config.batch_size, width=config.width, profile=config.profile)
    print(f"final training of the delivered network: {config.final_epochs} epochs", flush=True)
    # As many threads as a trial has cores: torch's default (every core) oversubscribes a machine
    # that runs other trials (measured: 681 s for one CIFAR-10 epoch beside two trials, ~10x slower).
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(config.cpus_per_trial)))
    try:
        result = train_delivered(best / "model.pt", cached_task(config.data, config.data_limit), settings,
                                 on_epoch=lambda m: print(f"  epoch {m.epoch}/{config.final_epochs}  loss {m.loss:.4f}  "
                                                          f"val {m.val_acc:.4f}  ({m.wall_s:.0f} s)", flush=True))
    finally:
        torch.set_num_threads(threads)
    replace_dir(dst, result.save)
    return dst, json.loads(done.read_text())


def replace_dir(dst: Path, fill: Callable[[Path], object]) -> Path:
    """Replace folder `dst` with one `fill(tmp)` writes, by renames: best/ and final/ hold the files of
    one trial, never a mix of two or a half-copied one. POSIX cannot swap two folders in one rename; a
    kill between the two leaves `dst` absent and its old copy in .dst.old, and every finalize (--resume
    included) rebuilds it from trials.csv."""
    tmp, old = dst.with_name(f".{dst.name}.tmp"), dst.with_name(f".{dst.name}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    fill(tmp)
    if dst.exists():
        dst.rename(old)
    tmp.rename(dst)
    shutil.rmtree(old, ignore_errors=True)
    return dst
