"""Ray Tune runs every trial: one adapter turns any of our solvers into a ray.tune Searcher, and one
function trainable runs a full inner search, reporting and checkpointing every epoch.

Checkpoints: each epoch the searcher's full state is saved under the study folder (study.run_trial),
so a trial restarted after a lost worker (FailureConfig(max_failures=...)) or by a resumed study
continues from its last epoch, bit-identically on CPU. On a multi-node cluster the study folder must
be on storage every node sees (as Ray's own storage_path must). The solver sees only the finished
trial's Eq. 19 parts, through on_trial_complete.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
from pathlib import Path
from typing import Callable

import torch

from searchers.errors import UsageError

from ..solvers.base import Proposal, Solver
from ..study import StudyConfig, TrialRow, checkpoint_path, failed_row, observation, run_trial, trial_reward


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
    # A Ray head's GCS speaks gRPC. Any other server accepts the TCP connection too, and ray.init then
    # retries for minutes (measured: still retrying after 5 min): a gRPC handshake tells them apart.
    import grpc

    channel = grpc.insecure_channel(f"{host}:{port}")
    try:
        grpc.channel_ready_future(channel).result(timeout=10)
    except grpc.FutureTimeoutError:
        raise UsageError(f"no Ray head answers at {address} (something listens there, but not Ray's GCS); "
                         "give the address `ray start --head` printed") from None
    finally:
        channel.close()


PROPOSAL = "proposal"   # the one config key a trial reads: the whole Proposal (the hyperparameters
ROW = "trial_row"      # also sit beside it, for Ray's live table); and the one result key it answers with


def trainable(config: dict, study_json: dict) -> None:
    """One trial: a full inner NAS search for the proposal in `config[PROPOSAL]` (the study arrives
    once, through tune.with_parameters). Checkpoints: study.run_trial's, one file per trial under the
    study folder, which a restarted trial or a resumed study continues from."""
    import ray
    from ray import tune

    study = StudyConfig.from_json(study_json)
    proposal = Proposal(**config[PROPOSAL])
    torch.set_num_threads(max(1, int(study.cpus_per_trial)))
    row = run_trial(study, proposal, result_dir=Path(study.out) / "trials" / f"{proposal.trial_id:04d}",
                    on_epoch=lambda m: tune.report(_epoch_metrics(study, proposal.params, m)),
                    checkpoint=checkpoint_path(study, proposal.trial_id))
    tune.report({**_done_metrics(row), "node_id": ray.get_runtime_context().get_node_id()})   # where it ran


def _done_metrics(row: TrialRow) -> dict:
    # the row as one typed message; the first keys are for Ray's live table and its loggers only
    shown = {**row.params, "runtime_ms": row.runtime_ms, "val_acc": row.val_acc,
             "reward": row.reward if row.status == "ok" else 0.0}
    return {**{k: v for k, v in shown.items() if v is not None}, ROW: json.dumps(dataclasses.asdict(row))}


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


def _row_from_result(study: StudyConfig, proposal: Proposal, result: dict | None) -> TrialRow:
    if result is None or ROW not in result:   # the trial died before it could answer
        return failed_row(study, proposal, RAY_FAILURE)
    row = TrialRow(**json.loads(result[ROW]))
    if (row.trial_id, row.fidelity) != (proposal.trial_id, proposal.fidelity):
        raise RuntimeError(f"trial {proposal.trial_id} answered as trial {row.trial_id}")
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
            return {**p.params, PROPOSAL: dataclasses.asdict(p)}

        def save(self, checkpoint_path: str) -> None:
            """Nothing to save: a study resumes from trials.csv (tuning.py), not from Ray's state."""

        def restore(self, checkpoint_path: str) -> None:
            pass

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
            p = self.live.pop(trial_id)
            row = _row_from_result(study, p, result)
            if row.error == RAY_FAILURE:   # Ray tells its error to callbacks next (TuneController order)
                self.failed[trial_id] = row
            else:   # the row first: a study killed between the two tells the row's trial on resume
                on_row(row)
            solver.tell(observation(study, row))

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


def join_ray(study: StudyConfig) -> str | None:
    """Connect to the cluster at `study.address` (the study calls this before it writes anything) and
    return its dashboard URL; one line (UsageError) when it cannot: unreachable, not a Ray head, or
    refused (token authentication)."""
    check_address(study.address)
    _token_mode_for_join()
    try:   # Ray's C++ client prints its own retry warnings before this line (no setting silenced them)
        return start_ray(study)
    except ConnectionError as e:   # a Ray head answered check_address's handshake, then refused us
        raise UsageError(f"cannot join the Ray cluster at {study.address}: {str(e)[:200]}; its token "
                         "authentication may have refused this driver (RAY_AUTH_MODE=token with the cluster's "
                         "token in RAY_AUTH_TOKEN or ~/.ray/auth_token), or its Ray is another version") from None


def _token_mode_for_join() -> None:
    """Ray 2.60's `ray start --head` turns token authentication on and writes its token to
    ~/.ray/auth_token, but a driver sends it only with RAY_AUTH_MODE=token: without it, joining a
    cluster started the documented way fails. When the user set no mode and a token is at hand, use it."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH") or \
            (Path.home() / ".ray" / "auth_token").exists():
        os.environ["RAY_AUTH_MODE"] = "token"


def start_ray(study: StudyConfig, dashboard_host: str = "127.0.0.1", verbose: int = 1) -> str | None:
    """Join `study.address` or start a local Ray; return the dashboard URL (None when it has none).
    `verbose` 0: Ray's driver logs only from warnings up (its INFO lines repeat what the study prints)."""
    import logging

    import ray

    if ray.is_initialized():
        return None
    kw = dict(address=study.address, include_dashboard=True, dashboard_host=dashboard_host,
              log_to_driver=False, configure_logging=False) if study.address else \
        dict(address="local",   # a Ray of our own: without it, ray.init joins any `ray start` cluster
             # running on this machine (another program's, whose CPUs our trials may not fit: it hung)
             include_dashboard=True, dashboard_host=dashboard_host, log_to_driver=False,
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

    import ray

    node = getattr(ray._private.worker, "_global_node", None)   # Ray's own record of the node it started
    write_json(out / NODE_FILE, {"node_id": node_id, "driver_pid": os.getpid(),
                                 "driver_start": _start_time(os.getpid()),
                                 "session_dir": node.get_session_dir_path() if node is not None else None})


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
    # Ray 2.60's agents carry no RAY_NODE_ID and retitle their command line, but keep their logs open
    # in the node's session folder (its name has the driver's pid): that marks them too
    session = rec.get("session_dir")

    def ours(pid: str) -> bool:
        with open(f"/proc/{pid}/environ", "rb") as f:
            if marker in f.read().split(b"\0"):
                return True
        if session:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(session + "/"):
                        return True
                except OSError:
                    pass
        return False

    stopped = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            if ours(d):
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
