"""The trials table and its delivery rule (TrialsTable.best): Eq. 19 with the target as a hard limit
while any trial meets it, ties within one (paired) standard error, nearest the target from below."""
import math

import numpy as np
import pandas as pd
import pytest

from automl.results import TrialsTable, correctness, diff_se
from automl.study import TrialRow
from searchers.result import pack_bits

TARGET = 80.0
ms = lambda r: r.runtime_ms


def row(i, acc, runtime, *, n=200, correct=None, fidelity=8, target=TARGET):
    reward = acc * (1.0 if runtime <= target else target / runtime)   # Eq. 19
    return TrialRow(trial_id=i, solver="bo", params={"lam": 0.1 * (i + 1)}, fidelity=fidelity, seed=0, status="ok",
                    val_acc=acc, val_n=n, val_correct="" if correct is None else pack_bits(correct),
                    runtime_ms=runtime, flops=1e6, target=target, reward=reward)


def table_of(tmp_path, rows, name="t"):
    t = TrialsTable(tmp_path / f"{name}.csv", ["lam"])
    for r in rows:
        t.append(r)
    return t


def wrong_on(n, images):
    c = np.ones(n, dtype=bool)
    c[list(images)] = False
    return c


def test_over_target_trial_is_never_delivered_while_one_meets_it(tmp_path):
    # the case: 0.990 at 40 ms against 0.9876 at 80.6 ms (reward 0.9802), target 80 ms. Both
    # rewards lie within one SE, and 80.6 ms is the nearer to the target, but it exceeds it.
    t = table_of(tmp_path, [row(0, 0.990, 40.0), row(1, 0.9876, 80.6)])
    assert t.best(8, TARGET, ms).trial_id == 0
    # a trial at the target from a lower fidelity still beats every full-fidelity trial over it
    t = table_of(tmp_path, name="b", rows=[row(0, 0.999, 81.0), row(1, 0.95, 79.0, fidelity=2)])
    assert t.best(8, TARGET, ms).trial_id == 1
    assert t.best(8).trial_id == 0                          # no target: plain Eq. 19 maximum at full fidelity


def test_a_failed_trial_is_never_delivered(tmp_path):
    """Failed rows keep the numbers they had (a search that diverged after its runtime was known), but
    are never delivered, not even over a successful trial of reward 0; all failed: nothing to deliver."""
    failed = TrialRow(trial_id=0, solver="bo", params={"lam": 0.1}, fidelity=8, seed=0, status="failed",
                      error="diverged", val_acc=0.99, runtime_ms=60.0, flops=1e6, target=TARGET)
    zero = row(1, 0.0, 70.0)
    t = table_of(tmp_path, [failed, zero])
    assert t.best(8, TARGET, ms).trial_id == 1 and t.best(8).trial_id == 1
    t = table_of(tmp_path, [failed], name="all-failed")
    assert t.best(8, TARGET, ms) is None and t.best(8) is None


def test_ties_go_to_the_trial_nearest_the_target_from_below(tmp_path):
    t = table_of(tmp_path, [row(0, 0.990, 40.0), row(1, 0.985, 79.0), row(2, 0.900, 80.0), row(3, 0.995, 120.0)])
    assert t.best(8).trial_id == 0                          # plain Eq. 19 maximum
    assert t.best(8, TARGET, ms).trial_id == 1              # 0.985 within one SE of 0.990; 0.900 is not
    assert TrialsTable(tmp_path / "t.csv", ["lam"]).best(8, TARGET, ms).trial_id == 1   # from trials.csv


def test_accuracy_one_does_not_give_a_zero_standard_error(tmp_path):
    # sqrt(p(1-p)/n) is 0 at p = 1: the old rule then tied nothing. One error in 200 images is noise.
    assert diff_se(row(0, 1.0, 40.0), row(1, 0.995, 78.0)) > 0.005
    t = table_of(tmp_path, [row(0, 1.0, 40.0), row(1, 0.995, 78.0)])          # unpaired: no vectors
    assert t.best(8, TARGET, ms).trial_id == 1
    all_right = np.ones(200, bool)
    paired = table_of(tmp_path, name="p", rows=[row(0, 1.0, 40.0, correct=all_right),
                                                row(1, 0.995, 78.0, correct=wrong_on(200, [7]))])
    assert paired.best(8, TARGET, ms).trial_id == 1        # one discordant image: tied
    far = table_of(tmp_path, name="f", rows=[row(0, 1.0, 40.0, correct=all_right),
                                             row(1, 0.95, 78.0, correct=wrong_on(200, range(10)))])
    assert far.best(8, TARGET, ms).trial_id == 0           # ten, all one way: a real difference


def test_every_trial_over_the_target(tmp_path):
    # rewards 0.9375 (32 ms), 0.9351 (31.6 ms, tied), 0.4839 (31 ms): the tied one nearest from above
    t = table_of(tmp_path, [row(0, 1.0, 32.0, target=30.0), row(1, 0.985, 31.6, target=30.0),
                            row(2, 0.5, 31.0, target=30.0)])
    assert t.best(8, 30.0, ms).trial_id == 1
    # no tie: the best reward, whatever its cost
    t2 = table_of(tmp_path, name="b", rows=[row(0, 0.99, 40.0, target=30.0), row(1, 0.60, 31.0, target=30.0)])
    assert t2.best(8, 30.0, ms).trial_id == 0


def test_paired_standard_error_counts_only_discordant_images(tmp_path):
    n = 400
    top = wrong_on(n, range(20))                                  # 0.95
    nested = wrong_on(n, range(24))                               # 0.94, wrong wherever top is, and 4 more
    crossed = wrong_on(n, range(20, 44))                          # 0.94, errors on other images: b=24, c=20
    # Agresti-Min: cells + 0.5, SE = sqrt(((b + .5) + (c + .5))/(n + 2) - ((b - c)/(n + 2))^2) / sqrt(n + 2)
    am = lambda b, c: math.sqrt((b + c + 1) / (n + 2) - ((b - c) / (n + 2)) ** 2) / math.sqrt(n + 2)
    a = row(0, 0.95, 40.0, n=n, correct=top)
    assert diff_se(a, row(1, 0.94, 79.0, n=n, correct=nested)) == pytest.approx(am(4, 0))
    assert diff_se(a, row(1, 0.94, 79.0, n=n, correct=crossed)) == pytest.approx(am(24, 20))
    assert diff_se(a, row(1, 0.95, 79.0, n=n, correct=top)) == pytest.approx(am(0, 0))   # identical: tiny
    # unpaired fallback (Agresti-Caffo) sits between: the shared images are not used
    pa, pb = 381 / 402, 377 / 402
    assert diff_se(a, row(1, 0.94, 79.0, n=n)) == pytest.approx(math.sqrt(pa * (1 - pa) / 402 + pb * (1 - pb) / 402))
    # 0.01 apart: a real difference when the extra errors are all the 79 ms trial's, noise when crossed
    for correct, delivered in ((nested, 0), (crossed, 1), (None, 1)):
        t = table_of(tmp_path, [a, row(1, 0.94, 79.0, n=n, correct=correct)], name=f"{delivered}{correct is None}")
        assert t.best(8, TARGET, ms).trial_id == delivered
    # equal accuracy: tied (difference 0) whatever the patterns; the nearer to the target is delivered
    for k, correct in enumerate((top, wrong_on(n, range(100, 120)))):
        t = table_of(tmp_path, [a, row(1, 0.95, 79.0, n=n, correct=correct)], name=f"eq{k}")
        assert t.best(8, TARGET, ms).trial_id == 1


def test_scaled_rewards_scale_the_standard_error():
    a, b = row(0, 0.95, 100.0, correct=wrong_on(200, range(10))), row(1, 0.9, 90.0, correct=wrong_on(200, range(20)))
    s_a, s_b = 0.8, 80 / 90
    d = s_a * a.val_acc - s_b * b.val_acc
    per_image = s_a * correctness(a) - s_b * correctness(b)
    assert per_image.mean() == pytest.approx(d)
    # close to the plain SE of the per-image differences (the +0.5 cells move it a little)
    assert diff_se(a, b, s_a, s_b) == pytest.approx(per_image.std() / math.sqrt(200), rel=0.1)


def test_correctness_round_trips_and_old_tables_load(tmp_path):
    c = wrong_on(200, [3, 150])
    t = table_of(tmp_path, [row(0, 0.99, 40.0, correct=c)])
    back = TrialsTable(tmp_path / "t.csv", ["lam"]).rows[0]
    assert (correctness(back) == c).all() and back.val_n == 200
    # a table written before the column existed: correctness unknown, best() falls back to unpaired
    df = pd.read_csv(tmp_path / "t.csv", keep_default_na=False).drop(columns=["val_correct"])
    df.to_csv(tmp_path / "old.csv", index=False)
    old = TrialsTable(tmp_path / "old.csv", ["lam"])
    assert old.rows[0].val_correct == "" and correctness(old.rows[0]) is None
    assert old.best(8, TARGET, ms).trial_id == 0
    old.save()
    assert "val_correct" in pd.read_csv(tmp_path / "old.csv").columns


WRITER = r"""
import sys
from automl.results import TrialsTable
from automl.study import StudyConfig, TrialRow
out = sys.argv[1]
cfg = StudyConfig(out=out, solver="random", target=80.0, trials=1, fidelity=1, min_fidelity=1, data_limit=8)
table = TrialsTable(out + "/trials.csv", ["lam"])
print("ready", flush=True)
for i in range(10**9):   # until killed: every write is a whole file, so a kill lands mid-write often
    cfg.save(__import__("pathlib").Path(out) / "study.json")
    table.append(TrialRow(trial_id=i, solver="random", params={"lam": 0.01}, fidelity=1, seed=0, status="ok",
                          val_acc=0.5, val_n=100, runtime_ms=70.0, flops=1e6, target=80.0, reward=0.5,
                          arch="x" * 2000, error=""))
"""


def test_study_json_and_trials_csv_survive_a_writer_killed_mid_write(tmp_path):
    """kill -9 of the writer at any moment: study.json and trials.csv are the last whole version (was:
    a plain write of study.json; a kill mid-write left truncated JSON and --resume died on it)."""
    import json
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from automl.study import StudyConfig

    root = Path(__file__).resolve().parents[2]
    p = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], cwd=root, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    seen, t0 = [], time.perf_counter()
    while time.perf_counter() - t0 < 1.5 or len(seen) < 3:   # read while it writes
        if (tmp_path / "trials.csv").exists():
            seen.append(len(TrialsTable(tmp_path / "trials.csv", ["lam"]).rows))
            StudyConfig.from_json(json.loads((tmp_path / "study.json").read_text()))
    p.send_signal(signal.SIGKILL)
    p.wait()
    rows = TrialsTable(tmp_path / "trials.csv", ["lam"]).rows
    assert [r.trial_id for r in rows] == list(range(len(rows))) and len(rows) >= seen[-1] > 0
    assert seen == sorted(seen)   # a reader never saw rows vanish or a torn table
    StudyConfig.from_json(json.loads((tmp_path / "study.json").read_text()))
