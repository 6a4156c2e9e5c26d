"""The experiments made of sub-studies (Single-Path NAS Fig. 8-9) and the replay runner.

Replay and grid-solver tests use a synthetic recorded table (no training, milliseconds). Each study's
--quick run is exercised in-process (`main(argv)`: the digits task loads once per session) and made
smaller still (two lambdas, 1-2 epochs, two repeats), always with the local runner: no Ray cluster.
"""
import json
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


# -- the studies' --quick runs, smaller still ----------------------------------------------------------

def run_main(module, argv):
    mod = __import__(module)
    assert mod.main(argv) == 0


def test_a_resumed_experiments_progress_counts_read_back_epochs_but_paces_by_new_ones(monkeypatch, capsys):
    import _experiment

    now = [0.0]
    monkeypatch.setattr(_experiment.time, "perf_counter", lambda: now[0])
    shown = _experiment.Progress("random repeat", _experiment.EpochMeter(40))
    for seed in (1, 2, 3):   # three searches an interrupted run had finished, read back at once
        shown.read_back([TrialRow(trial_id=0, solver="none", params={}, fidelity=4, seed=seed)])
    now[0] = 600.0           # then this session's first search: 4 epochs in 10 minutes
    shown(TrialRow(trial_id=0, solver="none", params={}, fidelity=4, seed=4, status="ok", val_acc=0.5,
                   runtime_ms=80.0, reward=0.5, wall_s=600.0))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "[4/40 epochs | 0s elapsed, ~? left] random repeat (seed 1): 1 trials, 4 epochs read back"
    # 24 epochs left at this session's pace (4 epochs in 10 minutes), not at 16 epochs per 10 minutes
    assert lines[3].startswith("[16/40 epochs | 10m00s elapsed, ~1h00m left] random repeat (seed 4): trial 0"), lines


def test_fidelity_grid_then_compare_solvers_by_replay(tmp_path, capsys):
    grid = tmp_path / "grid"
    run_main("fidelity_grid", ["--quick", "--runner", "local", "--lams", "0.01,1", "--epochs-list", "1,2",
                               "--out", str(grid)])
    df = pd.read_csv(grid / "grid.csv")
    assert len(df) == 4 and {"lam", "epochs", "val_acc", "runtime_ms", "reward", "seed"} <= set(df.columns)
    assert sorted(zip(df.lam, df.epochs)) == [(0.01, 1), (0.01, 2), (1.0, 1), (1.0, 2)]
    assert len(pd.read_csv(grid / "epochs.csv")) == 1 + 1 + 2 + 2   # one row per epoch of every search
    assert list(pd.read_csv(grid / "kendall.csv").columns[:4]) == ["low_fidelity", "full_fidelity", "n", "tau_reward"]
    assert (grid / "report.html").stat().st_size > 1_000_000   # plotly.js inlined
    before = (grid / "grid" / "trials.csv").read_text()
    capsys.readouterr()
    t0 = time.perf_counter()
    run_main("fidelity_grid", ["--quick", "--runner", "local", "--lams", "0.01,1", "--epochs-list", "1,2",
                               "--out", str(grid), "--resume"])
    assert time.perf_counter() - t0 < 10 and (grid / "grid" / "trials.csv").read_text() == before  # read back
    assert "[6/6 epochs | 0s elapsed, ~? left] grid (seed 0): 4 trials, 6 epochs read back" in capsys.readouterr().out

    out = tmp_path / "compare"
    run_main("compare_solvers", ["--quick", "--replay", str(grid), "--solvers", "random,tpe,bohb", "--repeats", "2",
                                 "--out", str(out)])
    curves = pd.read_csv(out / "curves.csv")
    assert list(curves.columns) == ["solver", "repeat", "seed", "trial", "cum_epochs", "best_reward"]
    assert set(curves.solver) == {"random", "tpe", "bohb"} and set(curves.repeat) == {0, 1}
    assert curves.groupby(["solver", "repeat"]).cum_epochs.max().le(20).all()
    trials = pd.read_csv(out / "all_trials.csv")
    assert {"solver", "repeat", "lam", "fidelity", "reward"} <= set(trials.columns)
    assert len(pd.read_csv(out / "kendall.csv")) == 1 and (out / "report.html").stat().st_size > 1_000_000
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary.solver) == ["random", "tpe", "bohb"] and (summary.n == 2).all()
    # sub-studies in two processes (the default on this machine) give what one process gives
    run_main("compare_solvers", ["--quick", "--replay", str(grid), "--solvers", "random,tpe,bohb", "--repeats", "2",
                                 "--workers", "1", "--out", str(tmp_path / "serial"), "--against", str(out)])
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "serial" / "curves.csv"), curves)
    # --against: the same curves, so no gap anywhere, and every epoch inside the band
    gap = pd.read_csv(tmp_path / "serial" / "against_summary.csv")
    assert list(gap.solver) == ["random", "tpe", "bohb"] and gap.epochs_compared.between(19, 20).all()  # 1st trial
    assert (gap.max_abs_gap == 0).all() and (gap.inside_band == 1).all() and (gap.runs == gap.other_runs).all()
    assert len(pd.read_csv(tmp_path / "serial" / "against.csv")) == 3 * 20
    assert "against" not in json.loads((tmp_path / "serial" / "experiment.json").read_text())
    # each experiment's report again from its tables alone: the same figures
    for folder in (grid, out, tmp_path / "serial"):
        assert_report_rebuilt(folder)


def assert_report_rebuilt(folder: Path) -> None:
    """`python -m automl.report DIR` rewrites an experiment's report.html from experiment.json and its tables,
    with the figures the study drew (the against curves' label aside: --against is not recorded)."""
    from automl.report import main as report

    def figures(page: Path) -> list:   # each plotly figure's traces and layout, as the page embeds them
        t, dec, out = page.read_text(), json.JSONDecoder(), []
        for m in re.finditer(r'Plotly\.newPlot\(\s*"[^"]+",\s*', t):
            traces, end = dec.raw_decode(t, m.end())
            for trace in traces:   # "bo: <the --against folder>", rebuilt as "bo: the comparison it was run against"
                trace["name"] = trace.get("name", "").split(": ")[0]
            out.append((traces, dec.raw_decode(t, t.index("{", end))[0]))
        return out

    drawn = figures(folder / "report.html")
    (folder / "report.html").unlink()
    assert report([str(folder)]) == 0
    assert figures(folder / "report.html") == drawn and drawn


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


def test_compare_solvers_with_real_searches(tmp_path, capsys):
    out = tmp_path / "compare"
    run_main("compare_solvers", ["--quick", "--runner", "local", "--solvers", "random", "--repeats", "1",
                                 "--budget-epochs", "2", "--fidelity", "1", "--out", str(out)])
    # one line per trial, in tune_lambda's words (automl/live.py), with the experiment's progress over
    # its whole budget, the sub-study and the seed in front
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "] random repeat 0 (seed " in ln]
    assert [ln.split(": trial ")[1].split()[0] for ln in lines] == ["0", "1"], lines
    assert [ln.split(" epochs |")[0] for ln in lines] == ["[1/2", "[2/2"], lines
    assert all(" 1 ep  " in ln and " ms  val " in ln and "  reward " in ln for ln in lines), lines
    trials = pd.read_csv(out / "all_trials.csv")
    assert len(trials) == 2 and (trials.status == "ok").all()
    assert (out / "random" / "repeat-00" / "trials" / "0000" / "result.json").exists()
    assert len(pd.read_csv(out / "curves.csv")) == 2


def test_variance_quick(tmp_path, capsys):
    out = tmp_path / "variance"
    run_main("variance", ["--quick", "--runner", "local", "--formulations", "single-path-softmax",
                          "--tune-trials", "1", "--repeats", "2", "--epochs", "1", "--intra-samples", "2",
                          "--proxy-epochs", "1", "--out", str(out)])
    runs = pd.read_csv(out / "runs.csv")
    assert {"formulation", "kind", "seed", "val_acc", "test_acc", "runtime_ms", "reward", "arch"} <= set(runs.columns)
    assert sorted(runs.kind) == ["inter", "inter", "intra", "intra", "proxy", "proxy"]
    assert list(runs[runs.kind == "inter"].seed) == [1, 2]
    # each repeat's ConvNet trained from scratch with the repeat's seed: same architecture and cost
    inter, proxy = runs[runs.kind == "inter"], runs[runs.kind == "proxy"]
    assert list(proxy.seed) == [1, 2] and list(proxy.arch) == list(inter.arch)
    assert list(proxy.runtime_ms) == pytest.approx(list(inter.runtime_ms))
    summary = pd.read_csv(out / "summary.csv")
    assert {"val_acc_mean", "val_acc_std", "runtime_ms_mean", "runtime_ms_std"} <= set(summary.columns)
    assert len(summary) == 3 and (out / "report.html").stat().st_size > 1_000_000
    assert pd.read_csv(out / "tuned.csv").tuned.str.contains("lam").all()
    assert_report_rebuilt(out)

    # a third repeat on --resume, two at once in processes: the two recorded ones are read back, not rerun
    capsys.readouterr()
    run_main("variance", ["--quick", "--runner", "local", "--formulations", "single-path-softmax",
                          "--tune-trials", "1", "--repeats", "3", "--epochs", "1", "--intra-samples", "2",
                          "--proxy-epochs", "1", "--workers", "2", "--out", str(out), "--resume"])
    shown = capsys.readouterr().out
    assert "single-path-softmax repeat (seed 1): 1 trials, 1 epochs read back" in shown, shown
    assert "single-path-softmax repeat (seed 3): trial 0 " in shown, shown
    again = pd.read_csv(out / "runs.csv")
    assert list(again[again.kind == "inter"].seed) == [1, 2, 3] and (again.status == "ok").all()
    pd.testing.assert_frame_equal(again[again.kind == "inter"].head(2), inter)
    assert (out / "single-path-softmax" / "repeat-02" / "trials" / "0000" / "result.json").exists()


def test_a_fixed_search_killed_after_an_epoch_continues_from_its_checkpoint(tmp_path, monkeypatch):
    """Random search by rejection (run_fixed: nothing to tune) keeps its state after every epoch, as a
    trial does: a run killed after epoch 1 continues there and ends as the uninterrupted run."""
    import automl.experiments as experiments
    from automl.reward import Target
    from searchers import RunSettings

    def run(out):
        settings = RunSettings(epochs=2, seed=1, batch_size=32, width=0.25, target_ms=80.0)
        return experiments.run_fixed(out, searcher="random", searcher_params={"n_samples": 2}, settings=settings,
                                     data="digits", data_limit=96, target=Target(value=80.0), seed=1,
                                     resume=True).rows[0]

    whole = run(tmp_path / "whole")
    save = experiments.save_checkpoint

    def killed_after_epoch_1(path, key, searcher):
        save(path, key, searcher)
        raise KeyboardInterrupt   # not a failure: the process dies here, its checkpoint stays

    monkeypatch.setattr(experiments, "save_checkpoint", killed_after_epoch_1)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "killed")
    assert (tmp_path / "killed" / "checkpoints" / "0000.pt").exists()
    monkeypatch.setattr(experiments, "save_checkpoint", save)
    epochs, load = [], experiments.load_checkpoint

    def loaded(path, key, searcher):   # the epoch the resumed search starts from
        load(path, key, searcher)
        epochs.append(searcher.epoch)

    monkeypatch.setattr(experiments, "load_checkpoint", loaded)
    resumed = run(tmp_path / "killed")
    assert epochs == [1]   # continued after epoch 1, not from the start
    assert (resumed.status, resumed.arch, resumed.val_acc, resumed.runtime_ms) == \
        (whole.status, whole.arch, whole.val_acc, whole.runtime_ms) and resumed.status == "ok"
    assert not (tmp_path / "killed" / "checkpoints" / "0000.pt").exists()


@pytest.mark.slow
def test_variance_random_search_by_rejection(tmp_path):
    out = tmp_path / "variance"
    run_main("variance", ["--quick", "--formulations", "random", "--repeats", "2", "--epochs", "1",
                          "--runner", "local", "--out", str(out)])
    runs = pd.read_csv(out / "runs.csv")
    assert sorted(runs.kind) == ["inter", "inter", "proxy", "proxy"] and (runs.status == "ok").all()
    assert np.all(np.abs(runs.runtime_ms / 80.0 - 1) <= 0.05)   # within the rejection window

    # --resume with another formulation and a third repeat: random's two searches are read back, not rerun
    first = out / "random" / "repeat-00"
    before = {f: f.stat().st_mtime_ns for f in first.rglob("*") if f.is_file()}
    run_main("variance", ["--quick", "--formulations", "random,single-path-sigmoid", "--repeats", "3", "--epochs", "1",
                          "--runner", "local", "--out", str(out), "--resume"])
    again = pd.read_csv(out / "runs.csv")
    assert sorted(again.groupby(["formulation", "kind"]).size().items()) == [
        (("random", "inter"), 3), (("random", "proxy"), 3), (("single-path-sigmoid", "inter"), 3),
        (("single-path-sigmoid", "proxy"), 3)]
    assert again[(again.formulation == "random") & (again.kind == "inter")].head(2).reset_index(drop=True).equals(
        runs[runs.kind == "inter"].reset_index(drop=True))
    assert {f: f.stat().st_mtime_ns for f in first.rglob("*") if f.is_file()} == before


# -- bad input: one line, exit 2, nothing written -------------------------------------------------------

@pytest.mark.parametrize("module, argv, message", [
    ("compare_solvers", ["--solvers", "random,nope"], "valid choices"),
    ("compare_solvers", ["--replay", "/nonexistent"], "do not exist"),
    ("compare_solvers", ["--solvers", "random,bo", "--solver-option", "tpe:gamma=0.2"], "not in --solvers"),
    ("compare_solvers", ["--solvers", "bo", "--solver-option", "bo:init_point=2"], "valid choices: init_points"),
    ("compare_solvers", ["--solvers", "bo", "--solver-option", "init_points=2"], "SOLVER:NAME=VALUE"),
    ("compare_solvers", ["--against", "/nonexistent"], "holds no curves.csv"),
    ("variance", ["--tune-solver", "tpe", "--solver-option", "n_startup=1"], "valid choices: n_startup_trials"),
    ("fidelity_grid", ["--epochs-list", "2,x"], "comma-separated"),
    ("fidelity_grid", ["--searcher", "dsnas"], "one hyperparameter"),
    ("variance", ["--formulations", "single-path-sigmoid,nope"], "unknown formulation"),
    ("variance", ["--repeats", "0"], ">= 1"),
    ("variance", ["--workers", "0"], "--workers must be >= 1"),
    ("variance", ["--workers", "2", "--runner", "ray"], "above 1 needs --runner local"),
])
def test_bad_input_is_refused_before_any_work(module, argv, message, tmp_path, capsys):
    from _common import run_cli

    out = tmp_path / "out"
    mod = __import__(module)
    with pytest.raises(SystemExit) as e:
        run_cli(lambda: mod.main(["--quick", "--runner", "local", "--out", str(out), *argv]))
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize("curves, message", [
    ("", "is not a compare_solvers.py curves.csv"),
    ("a,b\n1,2\n", "is not a compare_solvers.py curves.csv"),
    ("solver,repeat,cum_epochs,best_reward\ntpe,0,2,0.5\n", "ran none of --solvers random (it has: tpe)"),
])
def test_against_a_folder_without_this_runs_curves_is_refused_before_any_work(curves, message, tmp_path, capsys):
    from _common import run_cli

    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "curves.csv").write_text(curves)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        run_cli(lambda: __import__("compare_solvers").main(["--quick", "--runner", "local", "--solvers", "random",
                                                           "--against", str(tmp_path / "other"), "--out", str(out)]))
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_cli_error_exits_2_as_a_subprocess(tmp_path):
    p = subprocess.run([sys.executable, "studies/compare_solvers.py", "--quick", "--repeats", "0",
                        "--out", str(tmp_path / "o")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.startswith("error:") and len(p.stderr.strip().splitlines()) == 1
