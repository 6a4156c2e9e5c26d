"""Study orchestration without Ray: validation, the in-process runner, failures, resume."""
import pandas as pd
import pytest

from automl.study import StudyConfig
from automl.tuning import run_study
from searchers.errors import UsageError


def tiny_config(tmp_path, **kw):
    base = dict(out=str(tmp_path / "study"), solver="random", target=80.0, trials=3, fidelity=1, min_fidelity=1,
                width=0.25, batch_size=32, data_limit=96, seed=0)
    base.update(kw)
    return StudyConfig(**base)


@pytest.mark.parametrize("kw, message", [
    (dict(target=0.0), "> 0"),
    (dict(target=500.0), "30.63-131.46"),
    (dict(solver="grid"), "valid choices"),
    (dict(budget_epochs=4, fidelity=8), "smaller than one trial"),
    (dict(searcher="nope"), "valid choices"),
    (dict(searcher_params={"colour": 1}), "valid choices"),
    (dict(searcher="gold"), "gold has no runtime model"),
    (dict(searcher="entran", target_metric="mflops", target=5.0, data="/nonexistent"), "does not exist"),
    (dict(concurrency=0), "trials and concurrency must be >= 1, got 3 and 0"),
    (dict(data_limit=0), "data limit must be >= 1"),
    (dict(cpus_per_trial=float("inf")), "cpus per trial must be > 0"),
])
def test_bad_study_config_is_refused(kw, message, tmp_path):
    with pytest.raises(UsageError, match=message):
        tiny_config(tmp_path, **kw)


def test_local_study_writes_everything(tmp_path):
    cfg = tiny_config(tmp_path)
    outcome = run_study(cfg, runner="local")
    df = pd.read_csv(outcome.paths["trials"])
    assert len(df) == 3 and sorted(df.trial_id) == [0, 1, 2]
    for col in ("trial_id", "solver", "lam", "fidelity", "seed", "status", "error", "val_acc", "test_acc",
                "runtime_ms", "flops", "reward", "arch", "wall_s"):
        assert col in df.columns
    assert (df.status == "ok").all()
    assert (outcome.paths["best"] / "model.onnx").exists()
    assert outcome.paths["report"].stat().st_size > 100_000  # plotly.js inlined: opens offline
    from automl.results import correctness, diff_se
    top = max(outcome.table.rows, key=lambda r: r.reward)
    assert all(correctness(r) is not None and len(correctness(r)) == r.val_n for r in outcome.table.rows)
    if outcome.best.runtime_ms <= 80.0:   # best, or tied with the top within one paired SE
        assert outcome.best.reward >= top.reward - diff_se(top, outcome.best) - 1e-12
    assert outcome.verdict is not None and (outcome.paths["verdict"]).exists()
    assert "verdict: target 80 ms" in outcome.paths["report"].read_text()
    with pytest.raises(UsageError, match="already holds a study"):
        run_study(cfg, runner="local")
    with pytest.raises(UsageError, match="different study"):
        run_study(tiny_config(tmp_path, target=70.0), runner="local", resume=True)


def test_interrupted_study_resumes_without_duplicates(tmp_path):
    cfg = tiny_config(tmp_path, trials=3)
    seen = []

    def interrupt(row):
        seen.append(row.trial_id)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_study(cfg, runner="local", on_row=interrupt)
    before = pd.read_csv(tmp_path / "study" / "trials.csv")
    assert list(before.trial_id) == [0, 1]
    resumed = []
    run_study(cfg, runner="local", resume=True, on_row=lambda r: resumed.append(r.trial_id))
    after = pd.read_csv(tmp_path / "study" / "trials.csv")
    assert len(resumed) == 1 and list(after.trial_id) == [0, 1, 2]
    pd.testing.assert_frame_equal(after.iloc[:2], before)  # finished trials neither re-run nor lost


def test_failed_trial_is_recorded_and_told_as_worst(tmp_path):
    # lr so large the search diverges: the trial fails with its error, the study goes on
    cfg = tiny_config(tmp_path, trials=2, searcher_params={"lr": 1e30, "warmup_epochs": 0})
    outcome = run_study(cfg, runner="local")
    df = pd.read_csv(outcome.paths["trials"], keep_default_na=False)
    assert (df.status == "failed").all() and df.error.str.contains("diverged").all()
    assert outcome.best is None


def test_final_training_continues_the_delivered_network_and_resumes(tmp_path):
    """--final-epochs: the delivered child trained on into final/, scored like a trial; a finished
    study resumed with --final-epochs trains then, and a second resume keeps what is there."""
    import json

    import torch

    from searchers.result import load_model

    cfg = tiny_config(tmp_path, trials=2)
    outcome = run_study(cfg, runner="local")
    assert "final" not in outcome.paths and outcome.final is None
    trained = run_study(tiny_config(tmp_path, trials=2, final_epochs=2), runner="local", resume=True)
    final = json.loads((trained.paths["final"] / "result.json").read_text())
    assert final["epochs"] == 2 and len(final["history"]) == 2 and final["arch"] == trained.best.arch
    assert final["runtime_ms"] == trained.best.runtime_ms and 0 < final["test_acc"] <= 1
    _, searched = load_model(trained.paths["best"] / "model.pt")
    _, after = load_model(trained.paths["final"] / "model.pt")
    assert any(not torch.equal(a, b) for a, b in zip(searched.state_dict().values(), after.state_dict().values()))
    stamp = (trained.paths["final"] / "model.pt").stat().st_mtime_ns
    again = run_study(tiny_config(tmp_path, trials=2, final_epochs=2), runner="local", resume=True)
    assert again.final == trained.final and (again.paths["final"] / "model.pt").stat().st_mtime_ns == stamp
    with pytest.raises(UsageError, match="final epochs"):
        tiny_config(tmp_path, final_epochs=-1)
