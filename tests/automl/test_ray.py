"""Studies on Ray Tune (local cluster, CPU, tiny searches): what a trial reports arrives in trials.csv
unchanged, and a trial that fails outside the search is recorded with its own error."""
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import traceback
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from automl.study import StudyConfig
from automl.tuning import run_study

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_ray_study_end_to_end(tmp_path, monkeypatch):
    import ray

    from automl.reward import reward
    from searchers import load_model, load_task

    monkeypatch.chdir(tmp_path)  # a relative --out, as users type it
    cfg = StudyConfig(out="study", solver="tpe", target=80.0, trials=3, fidelity=2, min_fidelity=1,
                      width=0.25, batch_size=32, data_limit=96, concurrency=2, cpus_per_trial=1.0)
    try:
        outcome = run_study(cfg, runner="ray", verbose=0)
    finally:
        ray.shutdown()
    df = pd.read_csv(outcome.paths["trials"])
    assert sorted(df.trial_id) == [0, 1, 2] and (df.status == "ok").all()
    assert df.val_correct.str.startswith(f"{df.val_n[0]}:").all()   # per-image correctness through Ray
    for row in outcome.table.rows:   # what each trial's search wrote is what the table says, Eq. 19 on it
        res = json.loads((tmp_path / "study" / "trials" / f"{row.trial_id:04d}" / "result.json").read_text())
        assert (res["arch"], res["val_acc"], res["runtime_ms"]) == (row.arch, row.val_acc, row.runtime_ms)
        assert res["hyperparameters"]["lam"] == pytest.approx(row.params["lam"], rel=1e-12)
        assert row.reward == pytest.approx(reward(row.val_acc, row.runtime_ms, 80.0), rel=1e-12)
    # the delivered network is the best row's: rebuilt from best/model.pt it scores that row's val accuracy
    best = outcome.best
    arch, model = load_model(outcome.paths["best"] / "model.pt")
    assert str(arch) == best.arch
    assert load_task("digits", limit=96).accuracy(model, "val") == pytest.approx(best.val_acc, abs=1e-12)
    events = list((tmp_path / "study" / "ray").rglob("events.out.tfevents*"))
    assert events, "TensorBoard logs are written for every trial"
    # every trial checkpointed per epoch (Hyperband / lost workers resume from there)
    assert list((tmp_path / "study" / "ray").rglob("searcher_state.pt"))


@pytest.mark.slow
def test_trial_failing_outside_the_search_is_recorded_with_its_error(tmp_path, monkeypatch):
    """A folder whose sampled images pass the check but whose 6th image of a class is not an image: the
    data load in the trial fails, outside run_trial. Was: 'trial errored in Ray (worker lost ...)'."""
    import ray
    from PIL import Image

    monkeypatch.setenv("HWNAS_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in ("a", "b"):
            d = tmp_path / "data" / split / c
            d.mkdir(parents=True)
            for i in range(12):
                Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(d / f"{i:02d}.png")
    (tmp_path / "data" / "train" / "b" / "05.png").write_bytes(b"not a png")
    cfg = StudyConfig(out=str(tmp_path / "study"), solver="random", target=80.0, trials=2, fidelity=1,
                      min_fidelity=1, width=0.25, data=str(tmp_path / "data"), concurrency=1, cpus_per_trial=1.0)
    try:
        outcome = run_study(cfg, runner="ray", verbose=0)
    finally:
        ray.shutdown()
    df = pd.read_csv(outcome.paths["trials"], keep_default_na=False)
    assert len(df) == 2 and (df.status == "failed").all()
    assert df.error.str.startswith("UsageError: image ").all(), df.error.tolist()
    assert df.error.str.contains("05.png cannot be read").all()


def test_ray_error_text_is_the_exception_and_where_it_was_raised():
    """What Ray keeps of a failed trial (error.txt: a header, then str() of its RayTaskError) becomes
    the exception's own line and its innermost frame."""
    from ray.exceptions import RayTaskError

    from automl.runners.ray_tune import RAY_FAILURE, ray_error_text

    def load():
        raise FileNotFoundError("no such file: /data/x.png")

    try:
        load()
    except FileNotFoundError as e:
        err = RayTaskError("ImplicitFunc.train", traceback.format_exc(), e, pid=1, ip="127.0.0.1")
    text = ray_error_text("Failure # 1 (occurred at 2026-01-01_00-00-00)\n" + str(err))
    assert text.startswith("FileNotFoundError: no such file: /data/x.png | test_ray.py:")
    assert text.endswith(" in load")
    assert ray_error_text(None) == ray_error_text("") == RAY_FAILURE   # nothing kept: still a row


# -- nothing outlives the study --------------------------------------------------------------------------

def marked_processes(mark: str) -> list[str]:
    """Processes (ours only: found by an environment variable every child of the study inherits,
    Ray's raylet, GCS, dashboard, agents and workers included) still alive."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/environ", "rb") as f:
                if f"HWNAS_TEST_MARK={mark}".encode() not in f.read().split(b"\0"):
                    continue
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")[:120]
            found.append(f"{d} {cmd}")
        except OSError:   # gone, or not ours to read
            pass
    return found


def left_after(mark: str, wait_s: float = 30.0) -> list[str]:
    t0 = time.perf_counter()
    while (left := marked_processes(mark)) and time.perf_counter() - t0 < wait_s:
        time.sleep(1)
    return left


@contextlib.contextmanager
def marked_study(tmp_path, trials: int):
    """A tiny tune_lambda study on the Ray runner in a subprocess of its own session (Ctrl-C at a
    terminal signals the whole foreground group, driver and Ray alike) whose environment carries a
    fresh mark; yields (argv, env, process, mark) and kills what is left of it, by pid, at the end."""
    mark = uuid.uuid4().hex
    argv = [sys.executable, "studies/tune_lambda.py", "--solver", "random", "--trials", str(trials), "--fidelity",
            "1", "--min-fidelity", "1", "--data-limit", "48", "--concurrency", "1", "--out", str(tmp_path / "s")]
    env = {**os.environ, "HWNAS_TEST_MARK": mark}
    p = subprocess.Popen(argv, cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    try:
        yield argv, env, p, mark
    finally:
        for line in marked_processes(mark):   # the test's own processes only
            try:
                os.kill(int(line.split()[0]), signal.SIGKILL)
            except OSError:
                pass


def wait_for_ray(p) -> None:
    for line in p.stdout:   # Ray is up; a trial starts
        if line.startswith("Ray dashboard"):
            return


@pytest.mark.slow
@pytest.mark.parametrize("interrupt", [False, True], ids=["ends", "ctrl-c"])
def test_no_ray_process_outlives_the_study(tmp_path, interrupt):
    with marked_study(tmp_path, trials=4 if interrupt else 1) as (_, _, p, mark):
        if interrupt:
            wait_for_ray(p)
            assert marked_processes(mark), "the study's processes carry the mark"
            time.sleep(5)
            os.killpg(p.pid, signal.SIGINT)
        p.communicate(timeout=240)
        assert interrupt or p.returncode == 0
        assert left_after(mark) == []


@pytest.mark.slow
def test_a_killed_drivers_ray_processes_are_stopped_by_the_next_start(tmp_path):
    """kill -9 of the driver leaves Ray's node agents running (they outlive their raylet); the next
    start of the same study (--resume) stops them, and that study leaves nothing when it ends."""
    agent = lambda procs: any("DashboardAgent" in o or "RuntimeEnvAgent" in o for o in procs)
    with marked_study(tmp_path, trials=2) as (argv, env, p, mark):
        wait_for_ray(p)
        t0 = time.perf_counter()
        while not agent(marked_processes(mark)) and time.perf_counter() - t0 < 60:   # the raylet starts them
            time.sleep(0.5)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        time.sleep(5)
        # Ray's agents usually outlive the killed driver and its raylet (in 3 of 4 runs here; in the
        # fourth none was left): the resumed study must stop any that did and leave nothing of its own.
        # The reaping itself is tested deterministically below.
        r = subprocess.run([*argv, "--resume"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        assert left_after(mark) == []


def test_reap_stops_the_recorded_nodes_processes_only_once_its_driver_is_gone(tmp_path):
    from automl.runners.ray_tune import NODE_FILE, _start_time, reap_killed_node

    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    ours = subprocess.Popen(sleeper, env={**os.environ, "RAY_NODE_ID": "n-killed"})
    other = subprocess.Popen(sleeper, env={**os.environ, "RAY_NODE_ID": "n-other"})
    try:
        time.sleep(0.5)   # both have exec'd: their environments are readable
        record = tmp_path / NODE_FILE
        record.write_text(json.dumps({"node_id": "n-killed", "driver_pid": os.getpid(),
                                      "driver_start": _start_time(os.getpid())}))
        assert reap_killed_node(tmp_path) == [] and ours.poll() is None   # its driver still runs
        record.write_text(json.dumps({"node_id": "n-killed", "driver_pid": os.getpid(), "driver_start": -1}))
        assert reap_killed_node(tmp_path) == [ours.pid]   # a pid reused by another process is not the driver
        assert ours.wait(timeout=10) == -signal.SIGKILL and other.poll() is None and not record.exists()
    finally:
        for proc in (ours, other):
            proc.kill()
            proc.wait()
