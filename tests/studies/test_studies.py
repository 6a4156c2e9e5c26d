"""The experiments made of sub-studies (Single-Path NAS Fig. 8-9): each study's --quick run, exercised
in-process (`main(argv)`: the digits task loads once per session) and made smaller still (two lambdas,
1-2 epochs, two repeats), always with the local runner: no Ray cluster; their resume, progress lines,
rebuilt reports and bad input. The replay runner's own tests are in test_replay.py.
"""
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from automl.study import TrialRow

ROOT = Path(__file__).resolve().parents[2]


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
    versus = pd.read_csv(out / "versus.csv")   # one formulation: nothing to set against the first
    assert versus.empty and {"mean_diff", "p_mean", "std_ratio", "p_std"} <= set(versus.columns)
    assert_report_rebuilt(out)

    # two more repeats on --resume, two at once in processes, then their ConvNets two at once: the
    # recorded ones are read back, not rerun
    capsys.readouterr()
    run_main("variance", ["--quick", "--runner", "local", "--formulations", "single-path-softmax",
                          "--tune-trials", "1", "--repeats", "4", "--epochs", "1", "--intra-samples", "2",
                          "--proxy-epochs", "1", "--workers", "2", "--out", str(out), "--resume"])
    shown = capsys.readouterr().out
    assert "single-path-softmax repeat (seed 1): 1 trials, 1 epochs read back" in shown, shown
    assert "single-path-softmax repeat (seed 3): trial 0 " in shown, shown
    again = pd.read_csv(out / "runs.csv")
    assert (again.status == "ok").all() and list(again.kind).count("intra") == 2
    assert list(again[again.kind == "inter"].seed) == [1, 2, 3, 4] == list(again[again.kind == "proxy"].seed)
    assert list(again[again.kind == "proxy"].arch) == list(again[again.kind == "inter"].arch)
    pd.testing.assert_frame_equal(again[again.kind == "inter"].head(2), inter)
    pd.testing.assert_frame_equal(again[again.kind == "proxy"].head(2).reset_index(drop=True),
                                  proxy.reset_index(drop=True))
    assert (out / "single-path-softmax" / "repeat-03" / "trials" / "0000" / "result.json").exists()


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
