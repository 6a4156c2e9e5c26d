"""The replay runner and the analyses over recorded trials (Single-Path NAS Fig. 9): replayed answers,
seed noise, the grid solver, Kendall tau and curve gaps, on a synthetic recorded table (no training,
milliseconds); and a replayed comparison interrupted by Ctrl-C that resumes into the uninterrupted one.
"""
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from automl.analysis import curve_gap, fidelity_rank_correlation
from automl.reward import reward
from automl.results import TrialsTable
from automl.runners.replay import ReplayTable, replay_trial, replay_trial_fn
from automl.solvers.base import Observation, Proposal
from automl.solvers.grid import GridSolver
from automl.study import StudyConfig, TrialRow
from automl.tuning import run_study
from searchers.errors import UsageError

ROOT = Path(__file__).resolve().parents[2]
LAMS = (0.001, 0.01, 0.1, 1.0)


def recorded_value(lam: float, fidelity: int) -> tuple[float, float]:
    """(val_acc, runtime_ms): runtime falls with log lambda, faster at low fidelity (Fig. 9's overshoot)."""
    u = math.log10(lam) + 3                      # 0 .. 3
    runtime = 130 - 25 * u * (1.5 if fidelity == 1 else 1.0)
    return 0.9 - 0.05 * u - (0.1 if fidelity == 1 else 0.0), runtime


def config(tmp_path, **kw) -> StudyConfig:
    base = dict(out=str(tmp_path / "study"), solver="random", target=80.0, trials=3, fidelity=2, min_fidelity=1,
                width=0.25, data_limit=96, seed=0)
    base.update(kw)
    return StudyConfig(**base)


@pytest.fixture
def recorded(tmp_path) -> Path:
    """A recorded study folder: study.json + trials.csv with every LAMS at fidelities 1 and 2."""
    d = tmp_path / "recorded"
    d.mkdir()
    config(tmp_path, out=str(d)).save(d / "study.json")
    table = TrialsTable(d / "trials.csv", ["lam"])
    for i, (f, lam) in enumerate((f, lam) for f in (1, 2) for lam in LAMS):
        acc, ms = recorded_value(lam, f)
        table.append(TrialRow(trial_id=i, solver="grid", params={"lam": lam}, fidelity=f, seed=0, status="ok",
                              val_acc=acc, test_acc=acc - 0.01, runtime_ms=ms, flops=1e6 * ms, target=80.0,
                              reward=reward(acc, ms, 80.0), arch=f"arch{i}", wall_s=10.0 * f))
    table.append(TrialRow(trial_id=99, solver="grid", params={"lam": 0.3}, fidelity=2, seed=0, status="failed",
                          error="diverged"))   # failed rows are no record
    return d


# -- replay ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["interpolate", "nearest"])
def test_replay_answers_a_recorded_point_exactly(recorded, tmp_path, mode):
    cfg = config(tmp_path, target=60.0)   # another target: Eq. 19 is recomputed, not copied
    row = replay_trial(cfg, Proposal(trial_id=5, params={"lam": 0.1}, fidelity=2), table=ReplayTable.load(recorded),
                       mode=mode)
    acc, ms = recorded_value(0.1, 2)
    assert row.status == "ok" and row.trial_id == 5 and row.fidelity == 2
    assert row.val_acc == pytest.approx(acc) and row.runtime_ms == pytest.approx(ms) and row.arch == "arch6"
    assert row.reward == pytest.approx(acc * 60.0 / ms) and row.wall_s == pytest.approx(20.0)


def test_replay_interpolates_in_log_lambda_between_two_neighbours(recorded, tmp_path):
    table, cfg = ReplayTable.load(recorded / "trials.csv"), config(tmp_path)
    mid = math.sqrt(0.01 * 0.1)   # halfway in log lambda
    r = table.lookup(cfg, {"lam": mid}, 2)
    (a0, m0), (a1, m1) = recorded_value(0.01, 2), recorded_value(0.1, 2)
    assert r["val_acc"] == pytest.approx((a0 + a1) / 2) and r["runtime_ms"] == pytest.approx((m0 + m1) / 2)
    near = table.lookup(cfg, {"lam": 0.02}, 2, mode="nearest")
    assert near["runtime_ms"] == pytest.approx(m0)
    assert table.lookup(cfg, {"lam": 5.0}, 2)["runtime_ms"] == pytest.approx(recorded_value(1.0, 2)[1])  # clamped
    far = table.lookup(cfg, {"lam": 0.1}, 8)          # unrecorded fidelity: the nearest one (2)
    assert far["fidelity_used"] == 2 and far["runtime_ms"] == pytest.approx(m1)


def with_second_seed(recorded: Path, shift: float = 0.02) -> Path:
    """`recorded` plus seed 1 at fidelity 2: val_acc +shift (test_acc too), runtime -100*shift ms."""
    df = pd.read_csv(recorded / "trials.csv", keep_default_na=False)
    again = df[(df.fidelity == 2) & (df.status == "ok")].copy()
    again["seed"], again["trial_id"] = 1, again["trial_id"] + 100
    for c, d in (("val_acc", shift), ("test_acc", shift), ("runtime_ms", -100 * shift)):
        again[c] = again[c].astype(float) + d
    pd.concat([df, again]).to_csv(recorded / "trials.csv", index=False)
    return recorded


def test_replay_draws_one_recorded_seed_per_trial_and_the_between_seed_spread_where_one_was_recorded(
        recorded, tmp_path):
    table, cfg = ReplayTable.load(with_second_seed(recorded)), config(tmp_path)
    acc0, ms0 = recorded_value(0.1, 2)
    # the seed average without a draw; the pooled std of two seeds 0.02 apart is 0.02/sqrt(2)
    assert table.lookup(cfg, {"lam": 0.1}, 2)["val_acc"] == pytest.approx(acc0 + 0.01)
    std = table.seed_std(cfg)
    assert std["val_acc"] == pytest.approx(0.02 / math.sqrt(2)) and std["runtime_ms"] == pytest.approx(2 / math.sqrt(2))
    mid = math.sqrt(0.01 * 0.1)
    rows = [replay_trial(cfg, Proposal(trial_id=i, params={"lam": mid}, fidelity=2), table=table) for i in range(40)]
    interpolated = (recorded_value(0.01, 2)[0] + acc0) / 2
    # both neighbours answered by the same drawn seed: exactly one seed's interpolation, never a mix
    assert {round(r.val_acc - interpolated, 9) for r in rows} == {0.0, 0.02}
    assert {r.result_dir for r in rows} == {"replay:interpolate@2 seed 0", "replay:interpolate@2 seed 1"}
    again = replay_trial(cfg, Proposal(trial_id=7, params={"lam": mid}, fidelity=2), table=table)
    assert again.val_acc == rows[7].val_acc   # keyed by (study seed, trial id): reproducible, resumable
    # fidelity 1 has one seed: Gaussian draws around the recorded value with the pooled spread
    acc1 = recorded_value(0.1, 1)[0]
    one = [replay_trial(cfg, Proposal(trial_id=i, params={"lam": 0.1}, fidelity=1), table=table) for i in range(400)]
    dev = np.array([r.val_acc for r in one]) - acc1
    assert abs(dev.mean()) < 0.003 and np.std(dev) == pytest.approx(std["val_acc"], rel=0.15)
    assert all(r.result_dir.endswith("+noise") for r in one)
    none = replay_trial(cfg, Proposal(trial_id=3, params={"lam": 0.1}, fidelity=1), table=table, noise="none")
    assert none.val_acc == pytest.approx(acc1)


def test_replay_refuses_a_table_of_another_searcher(recorded, tmp_path):
    with pytest.raises(UsageError, match="no recorded trial of searcher multi-path"):
        ReplayTable.load(recorded).check(config(tmp_path, searcher="multi-path"))
    with pytest.raises(UsageError, match="do not exist"):
        ReplayTable.load(tmp_path / "nowhere")


@pytest.mark.parametrize("solver", ["random", "bohb"])
def test_replayed_study_takes_well_under_a_second_per_trial(recorded, tmp_path, solver):
    cfg = config(tmp_path, solver=solver, trials=30, budget_epochs=40)
    replay, in_trials = replay_trial_fn(ReplayTable.load(recorded)), []

    def timed(*a, **kw):
        t = time.perf_counter()
        row = replay(*a, **kw)
        in_trials.append(time.perf_counter() - t)
        return row

    t0 = time.perf_counter()
    outcome = run_study(cfg, runner="local", trial_fn=timed)
    per_trial = (time.perf_counter() - t0) / len(outcome.table.rows)   # solver, table and report included
    df = pd.read_csv(outcome.paths["trials"])
    assert len(df) >= 20 and (df.status == "ok").all() and df.result_dir.str.startswith("replay:").all()
    # loose bounds (a loaded 2-core machine): the lookup is ~1 ms, a study step well under a second
    assert np.mean(in_trials) < 0.05 and per_trial < 1.0
    with pytest.raises(UsageError, match="no successful"):   # replayed rows are never a record
        ReplayTable.load(outcome.paths["trials"])


# -- grid solver, rank correlation --------------------------------------------------------------------

def test_grid_solver_asks_each_point_once_and_resumes(tmp_path):
    space = config(tmp_path).space()
    points = [({"lam": lam}, f) for f in (1, 2) for lam in (0.01, 0.1)]
    solver = GridSolver(space, points)
    asked = [solver.ask() for _ in range(4)]
    assert [(p.params, p.fidelity) for p in asked] == points and solver.ask() is None
    assert solver.spent_epochs == 6
    resumed = GridSolver(space, points)   # a resumed study re-tells finished rows (csv floats)
    for p in asked[:3]:
        resumed.charge(p.fidelity, p.trial_id)
        resumed.tell(Observation(params={"lam": float(repr(p.params["lam"]))}, fidelity=p.fidelity, reward=0.5,
                                 trial_id=p.trial_id))
    last = resumed.ask()
    assert (last.params, last.fidelity) == points[3] and last.trial_id == 3 and resumed.ask() is None


def test_kendall_tau_of_low_vs_full_fidelity(recorded):
    df = pd.read_csv(recorded / "trials.csv", keep_default_na=False)
    k = fidelity_rank_correlation(df, ["lam"])
    assert list(k.columns[:3]) == ["low_fidelity", "full_fidelity", "n"]
    assert k.iloc[0].n == 4 and k.iloc[0].tau_val_acc == pytest.approx(1.0)   # same order of accuracy
    # Eq. 19 at RT 80 by hand (recorded_value): fidelity 1 rewards .492 .649 .700 .650, fidelity 2
    # .554 .648 .800 .750 (lam .001 .01 .1 1): all 6 pairs ordered alike, tau 1; exact two-sided p of
    # tau 1 among 4 items: 2 of 4! orderings
    assert k.iloc[0].tau_reward == pytest.approx(1.0) and k.iloc[0].p_reward == pytest.approx(2 / 24)
    # lam .1 at fidelity 1 down to 0.6 (below .649 and .650): pairs (.01, .1) and (.1, 1) flip, 4 of 6
    # concordant, tau (4 - 2) / 6
    low = (df.fidelity == 1) & (df.lam.astype(str) == "0.1")
    assert low.sum() == 1
    df.loc[low, ["val_acc", "reward"]] = "0.6"   # runtime 55 ms, under the target: reward = accuracy
    assert fidelity_rank_correlation(df, ["lam"]).iloc[0].tau_reward == pytest.approx(2 / 6)


def test_curve_gap_between_two_comparisons_by_hand():
    def curves(solver, runs):   # runs: per repeat, (cumulative epochs, best reward so far) steps
        return pd.DataFrame([{"solver": solver, "repeat": r, "cum_epochs": e, "best_reward": b}
                             for r, steps in enumerate(runs) for e, b in steps])

    # this: two repeats, 0.4 then 0.6 at epoch 2 / 0.5 then 0.8 at epoch 2: mean .45 (std .05), .7 (std .1)
    this = pd.concat([curves("bo", [[(1, 0.4), (2, 0.6)], [(1, 0.5), (2, 0.8)]]), curves("tpe", [[(1, 0.3)]])])
    other = pd.concat([curves("bo", [[(1, 0.48), (2, 0.48)]]), curves("random", [[(1, 0.9)]])])
    per_epoch, gap = curve_gap(this, other, np.arange(1, 3))
    assert list(per_epoch.gap) == pytest.approx([-0.03, 0.22]) and list(per_epoch.solver) == ["bo", "bo"]
    row = gap.set_index("solver").loc["bo"]
    assert list(gap.solver) == ["bo"]   # only solvers both ran
    assert (row.mean_abs_gap, row.max_abs_gap, row.final_gap) == pytest.approx((0.125, 0.22, 0.22))
    assert (row.final_mean, row.final_std, row.other_final_mean) == pytest.approx((0.7, 0.1, 0.48))
    assert row.inside_band == pytest.approx(0.5)   # .48 in [.4, .5] at epoch 1; not in [.6, .8] at epoch 2
    assert (row.runs, row.other_runs, row.epochs_compared) == (2, 1, 2)


# -- a replayed comparison, interrupted ------------------------------------------------------------------

def test_a_replayed_comparison_interrupted_by_ctrl_c_resumes_into_the_uninterrupted_one(recorded, tmp_path):
    flags = ["studies/compare_solvers.py", "--replay", str(recorded), "--target-ms", "80", "--data-limit", "96",
             "--solvers", "bo,random", "--repeats", "4", "--budget-epochs", "12", "--fidelity", "2",
             "--min-fidelity", "1", "--workers", "2"]
    out = tmp_path / "stopped"
    p = subprocess.Popen([sys.executable, *flags, "--out", str(out)], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        line = p.stdout.readline()
        while line and not re.match(r"\s*\w+ repeat \d+: ", line):   # a sub-study has finished, the rest run
            line = p.stdout.readline()
        os.killpg(p.pid, signal.SIGINT)            # what Ctrl-C in a terminal does: the whole group
        stdout, stderr = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == 130 and "--resume" in stderr + stdout, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-2000:]   # the workers leave quietly
    assert not (out / "curves.csv").exists()
    resumed = subprocess.run([sys.executable, *flags, "--out", str(out), "--resume"], cwd=ROOT, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    whole = subprocess.run([sys.executable, *flags, "--out", str(tmp_path / "whole")], cwd=ROOT, capture_output=True,
                           text=True, timeout=300)
    assert whole.returncode == 0, whole.stderr[-2000:]
    pd.testing.assert_frame_equal(pd.read_csv(out / "curves.csv"), pd.read_csv(tmp_path / "whole" / "curves.csv"))
