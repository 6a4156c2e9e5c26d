"""The trials table (trials.csv): one row per finished trial, rewritten atomically after each one so
an interrupted study loses nothing it finished."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pandas as pd

from .study import TrialRow

BASE_COLUMNS = ["trial_id", "solver", "fidelity", "seed", "status", "error", "val_acc", "val_n", "test_acc",
                "runtime_ms", "flops", "target", "reward", "arch", "wall_s", "result_dir"]


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
        tmp = self.path.with_suffix(".csv.tmp")
        self.frame().to_csv(tmp, index=False)
        os.replace(tmp, self.path)

    def best(self, max_fidelity: int | None = None, target: float | None = None,
             measure=None) -> TrialRow | None:
        """The trial to deliver: highest Eq. 19 reward among successful trials (at full fidelity when
        there are any). With a `target`, the one-standard-error rule (Breiman et al.) settles ties:
        rewards within one binomial standard error of the best validation accuracy cannot be told
        apart on this validation set, and among those the trial whose cost (`measure(row)`) lies
        nearest the target is delivered: the network the user asked for, not a lucky smaller one."""
        ok = [r for r in self.rows if r.status == "ok"]
        full = [r for r in ok if max_fidelity is None or r.fidelity >= max_fidelity] or ok
        top = max(full, key=lambda r: (r.reward, -r.trial_id), default=None)
        if top is None or target is None or not top.val_n:
            return top
        se = math.sqrt(max(top.val_acc * (1 - top.val_acc), 1e-12) / top.val_n)
        tied = [r for r in full if r.reward >= top.reward - se]
        return min(tied, key=lambda r: (abs(measure(r) - target), -r.reward, r.trial_id))


def write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)
