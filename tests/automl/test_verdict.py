"""The verdict a study ends with (automl/verdict.py): met or missed, accuracy vs cost, advice."""
import json

import numpy as np

from automl.results import TrialsTable
from automl.study import StudyConfig, TrialRow
from automl.verdict import make_verdict
from searchers.result import pack_bits


def config(tmp_path, **kw):
    return StudyConfig(**{"out": str(tmp_path), "solver": "random", "target": 80.0, "trials": 8, "fidelity": 4,
                          "min_fidelity": 2, **kw})


def table(tmp_path, trials, *, target=80.0, n=360, correct=None, flops=None):
    """trials: (lam, runtime ms, val acc); correct: per-trial bool vectors (None: unknown)."""
    t = TrialsTable(tmp_path / "trials.csv", ["lam"])
    for i, (lam, ms, acc) in enumerate(trials):
        fl = flops[i] if flops else 1e6
        r = ms if flops is None else fl / 1e6
        t.append(TrialRow(trial_id=i, solver="bo", params={"lam": lam}, fidelity=4, seed=0, status="ok",
                          val_acc=acc, val_n=n, val_correct=pack_bits(correct[i]) if correct else "",
                          runtime_ms=ms, flops=fl, target=target, reward=acc * min(1.0, target / r)))
    return t


# the default study's eight trials on the embedded digits task (README: 65.35 ms delivered for 80 ms)
DIGITS = [(0.0022, 131.46, 0.986), (0.0108, 130.28, 0.995), (0.0270, 115.58, 0.981), (0.1415, 65.35, 0.986),
          (0.2315, 37.51, 0.981), (0.2502, 37.28, 0.986), (0.3240, 37.28, 0.986), (0.9981, 34.61, 0.972)]


def test_missed_target_names_the_bracketing_trials(tmp_path):
    v = make_verdict(table(tmp_path, DIGITS), config(tmp_path))
    assert not v.met and v.delivered.trial == 3 and round(v.distance_pct, 1) == -18.3
    assert v.band == (76.0, 80.0) and v.in_band == 0 and v.under_target == 5
    assert (v.below.trial, v.above.trial) == (3, 2)
    assert "--range lam=0.027:0.1415" in v.advice[0] and "more trials" in v.advice[0]
    assert v.growth.smallest.trial == 7 and v.growth.larger.trial == 3 and not v.growth.paired
    assert v.lines[0].startswith("verdict: target 80 ms missed: delivered 65.35 ms (trial 3), -18.3 %")
    json.dumps(v.to_json())


def test_flat_accuracy_is_said_with_numbers(tmp_path):
    n = 360
    same = np.ones(n, bool)
    same[:5] = False
    trials = [(0.01, 131.0, 0.986), (0.03, 110.0, 0.986), (0.14, 65.0, 0.986), (0.3, 37.0, 0.986)]
    v = make_verdict(table(tmp_path, trials, correct=[same] * 4), config(tmp_path))
    assert v.growth.trend == "flat" and v.growth.paired and v.growth.diff == 0
    assert any("capacity matters" in a for a in v.advice)
    assert "flat within noise" in "\n".join(v.lines)


def test_met_target_gives_no_advice(tmp_path):
    rng = np.random.default_rng(0)
    small, large = rng.random(360) < 0.80, rng.random(360) < 0.97
    v = make_verdict(table(tmp_path, [(0.02, 78.0, large.mean()), (0.5, 35.0, small.mean())],
                           correct=[large, small]), config(tmp_path))
    assert v.met and v.delivered.trial == 0 and v.advice == ()
    assert v.growth.trend == "grew" and v.growth.paired and v.growth.diff > 3 * v.growth.se
    assert "grew by" in v.lines[2] and "met" in v.lines[0]


def test_every_trial_over_the_target(tmp_path):
    v = make_verdict(table(tmp_path, [(0.01, 131.0, 0.99), (0.05, 100.0, 0.98)]), config(tmp_path))
    assert not v.met and v.under_target == 0 and v.delivered.trial == 1 and v.distance_pct == 25.0
    assert "raise the upper bound" in v.advice[0]
    assert (v.growth.larger.trial, v.growth.smallest.trial) == (0, 1)


def test_flops_target(tmp_path):
    cfg = config(tmp_path, target=2.0, target_metric="mflops")
    v = make_verdict(table(tmp_path, [(0.01, 120.0, 0.99), (0.1, 60.0, 0.98), (0.5, 35.0, 0.90)], target=2.0,
                           flops=[4.0e6, 1.95e6, 1.0e6]), cfg)
    assert v.unit == "MFLOPs" and v.met and v.delivered.trial == 1 and v.delivered.measure == 1.95
    assert v.lines[0].startswith("verdict: target 2 MFLOPs met: delivered 1.95 MFLOPs")


def test_no_successful_trial(tmp_path):
    t = TrialsTable(tmp_path / "trials.csv", ["lam"])
    t.append(TrialRow(trial_id=0, solver="bo", params={"lam": 0.1}, fidelity=4, seed=0, status="failed", error="x"))
    v = make_verdict(t, config(tmp_path))
    assert not v.met and v.delivered is None and "no trial succeeded" in v.lines[0]
