"""One end-to-end study on Ray Tune (local cluster, CPU, tiny searches)."""
import pandas as pd
import pytest

from automl.study import StudyConfig
from automl.tuning import run_study


@pytest.mark.slow
def test_ray_study_end_to_end(tmp_path, monkeypatch):
    import ray

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
    assert (outcome.paths["best"] / "model.pt").exists()
    events = list((tmp_path / "study" / "ray").rglob("events.out.tfevents*"))
    assert events, "TensorBoard logs are written for every trial"
    # every trial checkpointed per epoch (Hyperband / lost workers resume from there)
    assert list((tmp_path / "study" / "ray").rglob("searcher_state.pt"))
