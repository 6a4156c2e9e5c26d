"""Studies on Ray Tune (local cluster, CPU, tiny searches): what a trial reports arrives in trials.csv
unchanged, and a trial that fails outside the search is recorded with its own error."""
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from automl.study import StudyConfig
from automl.tuning import run_study



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
    # the solver's journal holds each ask and tell; each trial's checkpoint went once it had its row
    events = [json.loads(ln) for ln in (tmp_path / "study" / "journal.jsonl").read_text().splitlines()]
    assert sorted(e["ask"]["trial_id"] for e in events if "ask" in e) == sorted(e["tell"] for e in events
                                                                                if "tell" in e) == [0, 1, 2]
    assert not list((tmp_path / "study" / "checkpoints").glob("*.pt"))


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


# -- a killed driver's Ray processes (the CLI-level fault tests: tests/studies/test_faults.py) ------------

def test_reap_stops_the_recorded_nodes_processes_only_once_its_driver_is_gone(tmp_path):
    from automl.runners.ray_tune import NODE_FILE, _start_time, reap_killed_node

    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    session, elsewhere = tmp_path / "session_1", tmp_path / "session_2"
    for d in (session, elsewhere):
        (d / "logs").mkdir(parents=True)
    # Ray 2.60's agents: no RAY_NODE_ID, only their logs open in the node's session folder
    holds = lambda d: [sys.executable, "-c", f"import time; f = open({str(d / 'logs' / 'a.log')!r}, 'w'); "
                                             "time.sleep(60)"]
    ours = subprocess.Popen(sleeper, env={**os.environ, "RAY_NODE_ID": "n-killed"})
    agent = subprocess.Popen(holds(session))
    other = subprocess.Popen(sleeper, env={**os.environ, "RAY_NODE_ID": "n-other"})
    other_agent = subprocess.Popen(holds(elsewhere))
    procs = (ours, agent, other, other_agent)
    try:
        time.sleep(1.0)   # all have exec'd and opened their logs: environments and fds are readable
        record = tmp_path / NODE_FILE
        rec = {"node_id": "n-killed", "driver_pid": os.getpid(), "session_dir": str(session)}
        record.write_text(json.dumps({**rec, "driver_start": _start_time(os.getpid())}))
        assert reap_killed_node(tmp_path) == [] and ours.poll() is None   # its driver still runs
        record.write_text(json.dumps({**rec, "driver_start": -1}))
        # a pid reused by another process is not the driver
        assert sorted(reap_killed_node(tmp_path)) == sorted([ours.pid, agent.pid])
        assert ours.wait(timeout=10) == agent.wait(timeout=10) == -signal.SIGKILL
        assert other.poll() is None and other_agent.poll() is None and not record.exists()
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
