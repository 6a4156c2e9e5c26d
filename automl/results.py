"""The trials table (trials.csv): one row per finished trial, rewritten atomically after each one so
an interrupted study loses nothing it finished."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from .study import TrialRow

BASE_COLUMNS = ["trial_id", "solver", "fidelity", "seed", "status", "error", "val_acc", "test_acc",
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

    def best(self, max_fidelity: int | None = None) -> TrialRow | None:
        """Highest reward among successful trials (at full fidelity when there are any)."""
        ok = [r for r in self.rows if r.status == "ok"]
        full = [r for r in ok if max_fidelity is None or r.fidelity >= max_fidelity] or ok
        return max(full, key=lambda r: (r.reward, -r.trial_id), default=None)


def write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)
