"""The trials table (trials.csv): one row per finished trial, rewritten atomically after each one so
an interrupted study loses nothing it finished."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from searchers.result import atomic_text, atomic_write, unpack_bits

from .study import TrialRow

BASE_COLUMNS = ["trial_id", "solver", "fidelity", "seed", "status", "error", "val_acc", "val_n", "val_correct",
                "test_acc", "runtime_ms", "flops", "target", "reward", "arch", "wall_s", "result_dir"]


def correctness(row: TrialRow) -> np.ndarray | None:
    """The trial's per-image validation correctness, or None where it was not recorded (tables written
    before the column existed, replayed rows) or does not match val_n."""
    c = unpack_bits(row.val_correct)
    return c if c is not None and len(c) and row.val_n in (None, len(c)) else None


def diff_se(a: TrialRow, b: TrialRow, scale_a: float = 1.0, scale_b: float = 1.0) -> float:
    """Standard error of D = scale_a*acc_a - scale_b*acc_b: a difference of Eq. 19 rewards (scale =
    (R/RT)^w, a constant per trial) or, with unit scales, of validation accuracies.

    Paired, when both trials' per-image correctness on the same images is known. D is the mean of
    d_i = scale_a*a_i - scale_b*b_i over the n images, so SE(D) = sqrt(Var(d)/n) with Var(d) from the
    2x2 table of (a_i, b_i): n11 both right, n10 only a, n01 only b, n00 neither. With unit scales
    d_i is +1, -1 or 0 and Var(d) = (n10 + n01)/n - ((n10 - n01)/n)^2: only the discordant images
    count (McNemar), so two trials with the same errors are not told apart by noise they do not have.
    The raw table gives SE 0 whenever one trial is right wherever the other is (one discordant side
    empty, e.g. at 100 % accuracy), so every cell gets 0.5 added (Agresti & Min 2005, adjusted Wald
    for matched pairs: p_jk = (n_jk + 0.5)/(n + 2), SE = sqrt(Var_p(d)/(n + 2))).

    Unpaired otherwise (correctness unknown): the two accuracies as independent binomials, each
    adjusted by one success and one failure (Agresti & Caffo 2000: p = (k + 1)/(n + 2), never 0 or 1),
    SE = sqrt(scale_a^2 p_a(1 - p_a)/(n_a + 2) + scale_b^2 p_b(1 - p_b)/(n_b + 2)). Conservative: the
    trials share images, and their positively correlated errors cancel in a paired difference.
    0 when not even the image counts are known (tables from before val_n): only exact ties tie."""
    ca, cb = correctness(a), correctness(b)
    if ca is not None and cb is not None and len(ca) == len(cb):
        n = len(ca)
        cells = {(1, 1): (ca & cb).sum(), (1, 0): (ca & ~cb).sum(), (0, 1): (~ca & cb).sum(),
                 (0, 0): (~ca & ~cb).sum()}
        p = {k: (v + 0.5) / (n + 2) for k, v in cells.items()}
        d = {(i, j): scale_a * i - scale_b * j for (i, j) in cells}
        mean = sum(p[k] * d[k] for k in cells)
        var = sum(p[k] * d[k] ** 2 for k in cells) - mean ** 2
        return math.sqrt(max(var, 0.0) / (n + 2))
    na = a.val_n or (len(ca) if ca is not None else 0)
    nb = b.val_n or (len(cb) if cb is not None else 0)
    if not na or not nb or a.val_acc is None or b.val_acc is None:
        return 0.0
    pa, pb = (round(a.val_acc * na) + 1) / (na + 2), (round(b.val_acc * nb) + 1) / (nb + 2)
    return math.sqrt(scale_a ** 2 * pa * (1 - pa) / (na + 2) + scale_b ** 2 * pb * (1 - pb) / (nb + 2))


class TrialsTable:
    def __init__(self, path: str | os.PathLike, param_names: list[str]):
        self.path, self.param_names = Path(path), list(param_names)
        self.rows: list[TrialRow] = []
        if self.path.exists():
            self.rows = [self._row(r) for r in pd.read_csv(self.path, keep_default_na=False).to_dict("records")]

    def _row(self, r: dict) -> TrialRow:
        num = lambda v: None if v in ("", None) else float(v)
        return TrialRow(trial_id=int(r["trial_id"]), solver=r["solver"],
                        params={k: float(r[k]) for k in self.param_names}, fidelity=int(r["fidelity"]),
                        seed=int(r["seed"]), status=r["status"], error=str(r["error"]), val_acc=num(r["val_acc"]),
                        val_n=None if r.get("val_n") in ("", None) else int(r["val_n"]),
                        val_correct=str(r.get("val_correct") or ""),   # absent in older tables: unknown
                        test_acc=num(r["test_acc"]), runtime_ms=num(r["runtime_ms"]), flops=num(r["flops"]),
                        target=num(r["target"]), reward=num(r["reward"]), arch=str(r["arch"]),
                        wall_s=float(r["wall_s"]), result_dir=str(r["result_dir"]))

    def append(self, row: TrialRow) -> None:
        self.rows.append(row)
        self.save()

    def frame(self) -> pd.DataFrame:
        cols = ["trial_id", "solver", *self.param_names, *BASE_COLUMNS[2:]]
        return pd.DataFrame([r.flat() for r in self.rows], columns=cols)

    def save(self) -> None:
        # The whole table, rewritten and replaced, rather than an append: a reader (--resume, the report,
        # a user's pandas) sees every finished row or the table before, never a torn last line, and
        # rows are few enough (one per NAS search) that the rewrite costs milliseconds.
        write_csv(self.frame(), self.path)

    def best(self, max_fidelity: int | None = None, target: float | None = None,
             measure=None) -> TrialRow | None:
        """The trial to deliver.

        Without a `target`: the highest Eq. 19 reward among successful trials at full fidelity (all
        successful trials when none is at full fidelity).

        With a `target` (RT) and `measure(row)` (R: runtime ms or MFLOPs):
          1. candidates: the successful trials with R <= RT, at full fidelity, else at any fidelity (a
             network meeting the target is never passed over for one exceeding it); only when no trial
             meets the target, every successful trial at full fidelity (else all successful trials);
          2. top: the candidate with the highest reward (under the target reward = val accuracy);
          3. tied: candidates whose reward is within one standard error of the top's, SE of the
             difference of the two rewards on the shared validation images (`diff_se`: paired where
             per-image correctness is recorded, a conservative unpaired SE otherwise; never 0 at
             100 % accuracy). Such rewards cannot be told apart on this validation set;
          4. deliver, among the tied: under the target, the largest R (nearest the target from below:
             the network the user asked for, not a luckier smaller one); with every trial over the
             target, the smallest R (nearest it from above). Then higher reward, then lower trial id."""
        ok = [r for r in self.rows if r.status == "ok" and r.reward is not None]
        full = [r for r in ok if max_fidelity is None or r.fidelity >= max_fidelity] or ok
        if target is None or not full:
            return max(full, key=lambda r: (r.reward, -r.trial_id), default=None)
        if measure is None:
            measure = lambda r: r.runtime_ms
        meets = lambda r: measure(r) <= target
        under = [r for r in full if meets(r)] or [r for r in ok if meets(r)]
        pool = under or full
        top = max(pool, key=lambda r: (r.reward, -r.trial_id))
        scale = lambda r: 1.0 if meets(r) else target / measure(r)   # Eq. 19's (R/RT)^w
        tied = [r for r in pool if top.reward - r.reward <= diff_se(top, r, scale(top), scale(r)) + 1e-12]
        if under:
            return max(tied, key=lambda r: (measure(r), r.reward, -r.trial_id))
        return min(tied, key=lambda r: (measure(r), -r.reward, r.trial_id))


def write_json(path: Path, obj) -> None:
    atomic_text(path, json.dumps(obj, indent=2, default=str))


def write_csv(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    return atomic_write(path, lambda p: df.to_csv(p, index=False))
