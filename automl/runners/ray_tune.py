"""Ray Tune runs every trial: one adapter turns any of our solvers into a ray.tune Searcher, and one
function trainable runs a full inner search, reporting and checkpointing every epoch.

Checkpoints: each epoch the searcher's full state goes into a Tune checkpoint, so a trial restarted
after a lost worker (FailureConfig(max_failures=...)) continues from its last epoch, bit-identically
on CPU. The solver sees only the finished trial's Eq. 19 reward, through on_trial_complete.
"""
from __future__ import annotations

import contextlib
import os
import socket
import tempfile
from pathlib import Path
from typing import Callable

import torch

from searchers.errors import UsageError

from ..solvers.base import Proposal, Solver
from ..study import StudyConfig, TrialRow, failed_row, failure_text, make_searcher, observation, run_trial, \
    trial_reward

STATE_FILE = "searcher_state.pt"


def check_address(address: str | None) -> None:
    """Fail before Ray starts when --address names a head we cannot reach."""
    if address in (None, "", "auto", "local"):
        return
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"bad --address {address!r}; expected HOST:PORT (e.g. 127.0.0.1:6379) or 'auto'")
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError as e:
        raise UsageError(f"cannot reach Ray cluster at {address}: {e.strerror or e}") from None


PROPOSAL_KEYS = ("trial", "epochs", "info")


def trainable(config: dict, study_json: dict) -> None:
    """One trial: a full inner NAS search for the proposal in `config` (its hyperparameters at the
    top level, so Ray's live table shows them; the study arrives once through tune.with_parameters)."""
    from ray import tune

    study = StudyConfig.from_json(study_json)
    proposal = Proposal(trial_id=config["trial"], fidelity=config["epochs"], info=config.get("info", {}),
                        params={k: v for k, v in config.items() if k not in PROPOSAL_KEYS})
    torch.set_num_threads(max(1, int(study.cpus_per_trial)))
    try:   # outside run_trial's own catch: the data load, the searcher's construction, its checkpoint
        searcher = make_searcher(study, proposal)
        ckpt = tune.get_checkpoint()
        if ckpt is not None:  # a restarted trial continues from its last epoch
            with ckpt.as_directory() as d:
                searcher.load_state_dict(torch.load(Path(d) / STATE_FILE, weights_only=True))
    except Exception as e:   # recorded with its own error, not as an anonymous Ray failure
        tune.report(_done_metrics(failed_row(study, proposal, failure_text(e)), proposal))
        return

    def on_epoch(m):
        with tempfile.TemporaryDirectory() as d:
            torch.save(searcher.state_dict(), Path(d) / STATE_FILE)
            tune.report(_epoch_metrics(study, proposal.params, m), checkpoint=tune.Checkpoint.from_directory(d))

    row = run_trial(study, proposal, result_dir=Path(study.out) / "trials" / f"{proposal.trial_id:04d}",
                    on_epoch=on_epoch, searcher=searcher)
    tune.report(_done_metrics(row, proposal))


def _done_metrics(row: TrialRow, proposal: Proposal) -> dict:
    flat = {k: v for k, v in row.flat().items() if v is not None}
    final = {**proposal.params, "runtime_ms": flat.pop("runtime_ms", None), "val_acc": flat.pop("val_acc", None),
             "reward": row.reward if row.status == "ok" else 0.0, **flat, "done_row": True}
    return {k: v for k, v in final.items() if v is not None}


def _epoch_metrics(study: StudyConfig, params: dict, m) -> dict:
    # Ray's live table shows the first four numeric metrics: hyperparameters, cost, accuracy, reward
    d = dict(params)
    if m.runtime_ms is not None:
        d["runtime_ms"] = m.runtime_ms
    d["val_acc"] = m.val_acc
    try:
        d["reward"] = trial_reward(study, m.val_acc, m.runtime_ms, m.flops)  # Eq. 19 so far
    except UsageError:
        pass
    d.update(epoch=m.epoch, loss=m.loss, flops=m.flops, arch=m.arch)
    return d


RAY_FAILURE = "trial errored in Ray (worker lost or exception outside the search)"


def ray_error_text(text: str | None) -> str:
    """The error column of a trial Ray failed, from the text Ray keeps of it (error.txt: the worker's
    traceback, then the exception's own line): that line, then where it was raised."""
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip() and not ln.startswith("Failure #")]
    if not lines:
        return RAY_FAILURE
    where = [ln for ln in lines if ln.startswith('File "')]
    own = lines[-1][:300]
    if where:
        f = where[-1]   # File "/path/x.py", line 12, in fn
        name, _, rest = f[len('File "'):].partition('"')
        own += f" | {Path(name).name}:{rest.replace(', line ', '').replace(', in ', ' in ', 1).strip()}"[:200]
    return own


def _row_from_result(study: StudyConfig, proposal: Proposal, result: dict | None, error: bool) -> TrialRow:
    if result is None or not result.get("done_row"):
        return failed_row(study, proposal, RAY_FAILURE)
    # Ray adds its own keys (its trial_id among them): take ours from the proposal
    ours = set(TrialRow.__dataclass_fields__) - {"params", "trial_id", "fidelity"}
    row = TrialRow(trial_id=proposal.trial_id, fidelity=proposal.fidelity,
                   params={k: result[k] for k in proposal.params},
                   **{k: result[k] for k in ours if k in result})
    if row.status != "ok":
        row.reward = None
    return row


def make_adapter(solver: Solver, study: StudyConfig, on_row: Callable[[TrialRow], None], max_trials: int):
    from ray.tune.search import Searcher

    class SolverSearcher(Searcher):
        """ray.tune Searcher over any ask/tell Solver (ours own the loop logic; Ray owns execution)."""

        def __init__(self):
            super().__init__(metric="reward", mode="max")
            self.live: dict[str, Proposal] = {}
            self.failed: dict[str, TrialRow] = {}   # failed in Ray, waiting for its error text
            self.asked = 0

        def suggest(self, trial_id: str):
            if self.asked >= max_trials:
                return Searcher.FINISHED
            p = solver.ask()
            if p is None:
                return Searcher.FINISHED
            self.asked += 1
            self.live[trial_id] = p
            return {"trial": p.trial_id, **p.params, "epochs": p.fidelity, "info": p.info}

        def save(self, checkpoint_path: str) -> None:
            """Nothing to save: a study resumes from trials.csv (tuning.py), not from Ray's state."""

        def restore(self, checkpoint_path: str) -> None:
            pass

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
            p = self.live.pop(trial_id)
            row = _row_from_result(study, p, result, error)
            solver.tell(observation(study, row))
            if row.error == RAY_FAILURE:   # Ray tells its error to callbacks next (TuneController order)
                self.failed[trial_id] = row
            else:
                on_row(row)

        def flush(self, trial_id: str | None = None, error_text: str | None = None) -> None:
            """Record a trial Ray failed, with Ray's text of its error; all still held without one."""
            for tid in [trial_id] if trial_id is not None else list(self.failed):
                row = self.failed.pop(tid, None)
                if row is not None:
                    row.error = ray_error_text(error_text)
                    on_row(row)

    return SolverSearcher()


def error_callback(adapter):
    """A Tune callback that hands the adapter each failed trial's error text, which Ray gives callbacks
    only (a Searcher's on_trial_complete gets a flag)."""
    from ray.tune import Callback

    class RecordErrors(Callback):
        def on_trial_error(self, iteration, trials, trial, **info):
            text = None
            try:
                text = trial.get_error()
            except Exception:   # noqa: BLE001 - no error text is still a recorded failure
                pass
            adapter.flush(trial.trial_id, str(text) if text is not None else None)

    return RecordErrors()


def start_ray(study: StudyConfig, dashboard_host: str = "127.0.0.1", verbose: int = 1) -> str | None:
    """Join `study.address` or start a local Ray; return the dashboard URL (None when it has none).
    `verbose` 0: Ray's driver logs only from warnings up (its INFO lines repeat what the study prints)."""
    import logging

    import ray

    if ray.is_initialized():
        return None
    # one checkpoint per epoch is the point (resumable trials); Ray warns about it by default
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    kw = dict(address=study.address, include_dashboard=True, dashboard_host=dashboard_host,
              log_to_driver=False, configure_logging=False) if study.address else \
        dict(include_dashboard=True, dashboard_host=dashboard_host, log_to_driver=False,
             logging_level=logging.INFO if verbose else logging.WARNING)
    if not study.address:
        reap_killed_node(Path(study.out))
    ctx = ray.init(**kw)
    if not study.address:
        record_node(Path(study.out), ray.get_runtime_context().get_node_id())
    url = getattr(ctx, "dashboard_url", None)
    return f"http://{url}" if url and not url.startswith("http") else url


NODE_FILE = ".ray-node.json"   # the local Ray node a study started, for the next start to clean up after


def _start_time(pid: int) -> int | None:
    """A process's start time (clock ticks after boot): with the pid, it names one process, never a
    later one that reused the pid. None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rpartition(")")[2].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def record_node(out: Path, node_id: str) -> None:
    from ..results import write_json

    write_json(out / NODE_FILE, {"node_id": node_id, "driver_pid": os.getpid(),
                                 "driver_start": _start_time(os.getpid())})


def reap_killed_node(out: Path) -> list[int]:
    """After a driver of this study was killed (SIGKILL), Ray's per-node agents (DashboardAgent,
    RuntimeEnvAgent) outlive it. Stop the processes of the node it recorded, found by the node id in
    their environment, only once that driver is gone: never a live study's, a joined cluster's or
    another program's Ray (their node ids differ). Returns the pids stopped."""
    import json
    import signal

    try:
        rec = json.loads((out / NODE_FILE).read_text())
    except (OSError, ValueError):
        return []
    if _start_time(rec["driver_pid"]) == rec["driver_start"]:
        return []   # that driver still runs
    marker = f"RAY_NODE_ID={rec['node_id']}".encode()
    stopped = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open(f"/proc/{d}/environ", "rb") as f:
                if marker in f.read().split(b"\0"):
                    os.kill(int(d), signal.SIGKILL)
                    stopped.append(int(d))
        except OSError:   # gone meanwhile, or another user's
            pass
    (out / NODE_FILE).unlink(missing_ok=True)
    return stopped


def ray_running() -> bool:
    import ray

    return ray.is_initialized()


def stop_ray() -> None:
    """Leave no Ray process behind: a local Ray this process started stops with it (raylet, GCS,
    dashboard, their agents, the workers); a joined cluster (--address) is only disconnected from."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


def run_ray(study: StudyConfig, solver: Solver, *, max_trials: int, on_row: Callable[[TrialRow], None],
            verbose: int = 1, callbacks=()) -> int:
    """`verbose` 0: Ray Tune prints nothing (the study's own view, automl/live.py, is fed through
    `callbacks`, ray.tune Callbacks); 1: Ray Tune's configuration and result boxes."""
    from ray import tune

    rows: list[TrialRow] = []

    def record(row):
        rows.append(row)
        on_row(row)

    resources = {"cpu": study.cpus_per_trial, "gpu": study.gpus_per_trial}
    adapter = make_adapter(solver, study, record, max_trials)
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(trainable, study_json=study.to_json()), resources),
        tune_config=tune.TuneConfig(search_alg=adapter,
                                    num_samples=max_trials, max_concurrent_trials=study.concurrency,
                                    metric="reward", mode="max",
                                    # keep worker processes between trials: no torch import or data
                                    # load per trial (each searcher seeds itself, so no state leaks)
                                    reuse_actors=True),
        run_config=tune.RunConfig(
            name="ray", storage_path=str(Path(study.out).resolve()), verbose=verbose,
            callbacks=[error_callback(adapter), *callbacks],
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            failure_config=tune.FailureConfig(max_failures=1)),
    )
    try:
        with _quiet_tune(verbose == 0):
            tuner.fit()
    finally:
        adapter.flush()   # a failure Ray gave no text for is still a row
    return len(rows)


@contextlib.contextmanager
def _quiet_tune(quiet: bool):
    """Ray Tune's newer output engine prints its configuration box and results path even at
    verbose=0; its legacy engine (RAY_AIR_NEW_OUTPUT=0, a documented Ray setting) prints nothing at
    verbose=0. Set for this fit only, so a caller's own setting comes back after it."""
    if not quiet:
        yield
        return
    old = os.environ.get("RAY_AIR_NEW_OUTPUT")
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = old
