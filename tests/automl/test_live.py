"""automl/live.py: the compact view of a running study (one line per trial, one progress line)."""
import io
import subprocess
import sys
from pathlib import Path

import pytest

from automl.live import LiveView, duration, format_row
from automl.study import StudyConfig, TrialRow

ROOT = Path(__file__).resolve().parents[2]


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def row(trial_id, reward=0.9, fidelity=4, status="ok", **kw):
    base = dict(trial_id=trial_id, solver="random", params={"lam": 0.0213}, fidelity=fidelity, seed=0,
                status=status, val_acc=reward, runtime_ms=72.314, reward=reward if status == "ok" else None,
                wall_s=48.2)
    return TrialRow(**{**base, **kw})


def config(**kw):
    return StudyConfig(**{**dict(solver="random", trials=8, fidelity=4, concurrency=2), **kw})


def test_durations_and_trial_lines():
    assert [duration(s) for s in (4.4, 65, 3725)] == ["4s", "1m05s", "1h02m"]
    assert format_row(row(3)) == "trial 3  lam=0.0213  4 ep  72.31 ms  val 0.9000  reward 0.9000  48s"
    failed = row(4, status="failed", error="ValueError: loss diverged | File x.py, line 3")
    assert format_row(failed) == "trial 4  lam=0.0213  4 ep  failed: ValueError: loss diverged  48s"
    flops = row(5, runtime_ms=None, flops=12.5e6)
    assert "12.50 MFLOPs  val 0.9000" in format_row(flops)


def test_progress_counts_epochs_trials_best_and_remaining_time():
    clock, out = Clock(), io.StringIO()
    view = LiveView(config(), stream=out, tty=False, clock=clock)
    view.started(0)
    view.started(1)
    view.epoch(0, 2)
    view.epoch(1, 1)
    clock.t += 30
    assert view.status() == "[ 3/32 epochs] trials 0 done, 2 running, 0 failed | best reward - | 30s elapsed, ~4m50s left"
    view.epoch(0, 4)
    view.finished(row(0, reward=0.8))
    view.finished(row(1, status="failed", fidelity=4, error="boom"))
    clock.t += 30
    # 8 epochs in 60 s: 24 left at that pace is 3 minutes
    assert view.status() == "[ 8/32 epochs] trials 2 done, 0 running, 1 failed | best reward 0.8000 | 1m00s elapsed, ~3m00s left"
    lines = out.getvalue().splitlines()
    # Not a terminal: each finished trial is a line, then the progress line; nothing is redrawn.
    assert len(lines) == 4 and lines[0].startswith("trial 0") and lines[1].startswith("[ 5/32 epochs] trials 1 done, 1 running")
    assert "\r" not in out.getvalue()


def test_budget_smaller_than_the_trials_and_a_resumed_study():
    clock = Clock()
    view = LiveView(config(budget_epochs=10), done=[row(0), row(1, reward=0.95)], stream=io.StringIO(),
                    tty=False, clock=clock)
    view.started(2)
    assert view.status().startswith("[ 8/10 epochs] trials 2 done, 1 running, 0 failed | best reward 0.9500")
    assert view.status().endswith("~? left")     # no epoch run in this session yet: no pace to go by
    view.epoch(2, 1)
    clock.t += 10
    assert view.status().endswith("10s elapsed, ~10s left")   # the resumed epochs are not this session's pace


def test_on_a_terminal_the_progress_line_is_redrawn_in_place():
    clock, out = Clock(), io.StringIO()
    view = LiveView(config(), stream=out, tty=True, clock=clock)
    view.started(0)
    view.tick()                       # within a second: no redraw
    clock.t += 1.5
    view.tick()
    view.finished(row(0))
    view.close()
    text = out.getvalue()
    assert text.count("\r\033[K[") == 4   # start, the tick after a second, after the trial, the last one
    assert text.endswith("\n") and "\r\033[Ktrial 0  lam=0.0213" in text
    # What stays on screen: the trial line and one progress line.
    screen = [part.rsplit("\r\033[K", 1)[-1] for part in text.split("\n")[:-1]]
    assert [s[:7] for s in screen] == ["trial 0", "[ 4/32 "]


def test_local_study_prints_a_few_lines(tmp_path, capsys):
    import tune_lambda

    argv = ["--runner", "local", "--solver", "random", "--trials", "3", "--fidelity", "1", "--min-fidelity", "1",
            "--data-limit", "96", "--out", str(tmp_path / "s")]
    assert tune_lambda.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    trials = [ln for ln in lines if ln.startswith("trial ")]
    assert [ln.split()[1] for ln in trials] == ["0", "1", "2"] and all(" ep  " in ln for ln in trials)
    assert lines[0] == f"study folder: {tmp_path / 's'}"
    assert lines[1].startswith("single-path: tuning lam toward 80 ms with random, up to 3 trials / 3 search epochs, 1 at a time")
    assert sum(ln.startswith("[3/3 epochs] trials 3 done, 0 running") for ln in lines) == 1
    assert any(ln.startswith("best lam = ") for ln in lines) and len(lines) <= 40, "\n".join(lines)


@pytest.mark.slow
@pytest.mark.parametrize("verbose", [False, True])
def test_ray_study_prints_ray_boxes_only_with_v(tmp_path, verbose):
    argv = [sys.executable, "studies/tune_lambda.py", "--solver", "random", "--trials", "2", "--fidelity", "1",
            "--min-fidelity", "1", "--data-limit", "64", "--out", str(tmp_path / "s"), *(["-v"] if verbose else [])]
    r = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = (r.stdout + r.stderr).splitlines()
    assert sum(ln.startswith("trial ") for ln in r.stdout.splitlines()) == 2
    assert any(ln.startswith("Ray dashboard: http") for ln in lines)
    boxes = [ln for ln in lines if ln.startswith(("╭", "│", "Trial status", "View detailed results"))]
    if verbose:
        assert boxes
    else:
        assert not boxes and len(lines) <= 40, "\n".join(lines)
