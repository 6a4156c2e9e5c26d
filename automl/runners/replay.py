"""Replay runner: answer a solver's proposals from recorded trials instead of running searches, so
solvers can be compared over many repetitions in seconds (Single-Path NAS paper Fig. 9 left; the
tabular / surrogate benchmarks of the HPO literature do the same).

The record is what every study already writes: trials.csv rows (hyperparameters, fidelity, seed ->
val_acc, test_acc, runtime_ms, flops, ...) with study.json beside them. The fidelity grid
(studies/fidelity_grid.py) records every lambda at every epoch count, the natural table to replay.
Per-epoch metrics are recorded too (trials/NNNN/result.json "history"); `epoch_table` assembles them
into one table. A run of E epochs is not the first E epochs of a longer run (the cosine schedule,
warm-up and fine-tuning phases all scale with the budget), so replay answers a fidelity from the
trials recorded at that fidelity, not from truncated histories.

How a proposal is answered (`ReplayTable.lookup`):
  * rows at the proposal's fidelity, or at the nearest recorded one (ties: the higher, closer to a
    full search);
  * mode "interpolate" (the default): val_acc, test_acc, runtime_ms, flops and wall_s linear in log
    lambda (a hyperparameter's search scale: log where its range is log) between the two recorded
    neighbours (clamped at the ends, no extrapolation). The default
    because a grid has few lambdas: nearest-neighbour turns the objective into a step function with as
    many values as grid points, on which every solver ties as soon as it hits the best step;
  * mode "nearest": the recorded point nearest in the search scale (exact answers only).
Interpolation needs a single hyperparameter; with several, "interpolate" falls back to "nearest".

Seed noise (`noise`): a real search at a lambda gives another network with another seed, so a replay that
answered every repeat with the seed average would be smoother than the studies it stands for (every
repeat of a solver would see the same objective).
  * "seeds" (the default): each replayed trial draws one seed, uniformly from the seeds recorded at
    every point it reads (both neighbours), and answers from that seed's rows: the same draw on both
    sides, as a real search's seed moves nearby lambdas together. Where the fidelity holds a single seed,
    it adds one Gaussian draw per metric (val_acc, test_acc, runtime_ms, flops) with the between-seed
    standard deviation pooled over every point of the table recorded with several seeds (`seed_std`):
    the assumption is that seed noise at a fidelity without repeats is that of the fidelities with them.
    A table without any repeated point has no noise to draw and replays the recorded values.
    The draw is keyed by (study seed, trial id), so a replayed study is reproducible and resumable.
  * "none": the seed average, deterministic (the same objective for every repeat).
The reward is then recomputed with Eq. 19 for the replaying study's target (not interpolated:
Eq. 19 is not linear in R), so a table recorded for 80 ms also answers a study toward 60 ms.
A replayed row carries val_n but no per-image correctness (an interpolated or seed-averaged accuracy has
none), so the delivery rule (TrialsTable.best) compares replayed trials with its unpaired standard error.
"""
from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from searchers.errors import UsageError, check_choice

from ..results import BASE_COLUMNS
from ..solvers.base import Proposal
from ..study import StudyConfig, TrialRow, trial_reward

MODES = ("interpolate", "nearest")
NOISES = ("seeds", "none")
METRICS = ("val_acc", "test_acc", "runtime_ms", "flops", "wall_s")
NOISY = ("val_acc", "test_acc", "runtime_ms", "flops")   # what differs between seeds (not wall_s)
REPLAYED = "replay:"   # result_dir of a replayed row: it is no record, and loading skips it


def _trials_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(path.rglob("trials.csv"))
    raise UsageError(f"recorded trials {path} do not exist (expected a trials.csv or a study folder)")


def _read(csv: Path) -> pd.DataFrame:
    df = pd.read_csv(csv, keep_default_na=False)
    missing = {"fidelity", "status", "arch", "result_dir", *METRICS} - set(df.columns)
    if missing:
        raise UsageError(f"{csv} is not a trials table (missing {', '.join(sorted(missing))})")
    study = csv.parent / "study.json"
    meta = json.loads(study.read_text()) if study.exists() else {}
    df["searcher"] = meta.get("searcher", "")
    df["searcher_params"] = json.dumps(meta.get("searcher_params", {}), sort_keys=True) if meta else ""
    df["source"] = str(csv)
    return df


class ReplayTable:
    """Successful recorded trials of one or more studies, ready to answer proposals."""

    def __init__(self, frame: pd.DataFrame):
        ok = frame[(frame["status"] == "ok") & ~frame["result_dir"].astype(str).str.startswith(REPLAYED)]
        self.frame = ok.reset_index(drop=True)
        if self.frame.empty:
            raise UsageError("the recorded trials hold no successful (non-replayed) trial to replay")
        self._cache: dict[tuple, dict] = {}

    @classmethod
    def load(cls, *paths) -> "ReplayTable":
        """From trials.csv files or study folders (searched recursively for trials.csv)."""
        files = [f for p in paths for f in _trials_files(Path(p))]
        if not files:
            raise UsageError(f"no trials.csv under {', '.join(map(str, paths))}")
        return cls(pd.concat([_read(f) for f in files], ignore_index=True))

    @property
    def param_columns(self) -> list[str]:
        extra = {"searcher", "searcher_params", "source"}
        return [c for c in self.frame.columns if c not in BASE_COLUMNS and c not in extra]

    def rows_for(self, config: StudyConfig) -> pd.DataFrame:
        """Rows recorded by the same searcher with the same fixed knobs (unknown when no study.json)."""
        names = config.space().names
        df = self.frame
        known = df["searcher"] != ""
        same = (df["searcher"] == config.searcher) & (
            df["searcher_params"] == json.dumps(config.searcher_params, sort_keys=True))
        df = df[~known | same]
        missing = [n for n in names if n not in df.columns]
        if df.empty or missing:
            raise UsageError(f"no recorded trial of searcher {config.searcher} {config.searcher_params or ''} "
                             f"with hyperparameters {names} to replay (recorded: "
                             f"{sorted(set(self.frame['searcher']) - {''}) or 'unknown'} over {self.param_columns})")
        df = df[df[names].replace("", np.nan).notna().all(axis=1)]
        if df.empty:
            raise UsageError(f"no recorded trial has values for {names} to replay")
        return df

    def check(self, config: StudyConfig) -> None:
        """Fail now (before any work) when `config` cannot be replayed from this table."""
        self._grouped(config)

    def _grouped(self, config: StudyConfig) -> dict:
        space = config.space()
        key = (config.searcher, json.dumps(config.searcher_params, sort_keys=True), tuple(space.params))
        if key not in self._cache:
            names = space.names
            df = self.rows_for(config).copy()
            for c in (*names, *METRICS):
                df[c] = pd.to_numeric(df[c], errors="coerce")
            df["fidelity"] = df["fidelity"].astype(int)
            if "val_n" not in df.columns:   # tables recorded before val_n existed
                df["val_n"] = np.nan
            df["val_n"] = pd.to_numeric(df["val_n"], errors="coerce")
            df["seed"] = pd.to_numeric(df["seed"], errors="coerce").fillna(0).astype(int)
            # one row per (point, fidelity, seed): a seed recorded twice counts once (its mean)
            df = df.groupby([*names, "fidelity", "seed"], as_index=False).agg(
                {**{m: "mean" for m in METRICS}, "arch": "first", "val_n": "first"})
            mean = df.groupby([*names, "fidelity"], as_index=False).agg(
                {**{m: "mean" for m in METRICS}, "arch": "first", "val_n": "first"})
            by_fid = {}
            for f, g in mean.groupby("fidelity"):
                g = g.sort_values(names).reset_index(drop=True)
                recorded = df[df["fidelity"] == f].merge(g[names].reset_index(), on=names)
                seeds = {int(s): r.set_index("index") for s, r in recorded.groupby("seed")}   # seed -> rows by point
                by_fid[int(f)] = (_unit(space, g[names].to_numpy(float)), g, seeds)
            self._cache[key] = {"space": space, "by_fid": by_fid, "seed_std": _pooled_seed_std(df, names)}
        return self._cache[key]

    def seed_std(self, config: StudyConfig) -> dict[str, float]:
        """Between-seed standard deviation of each noisy metric, pooled over the points recorded with
        several seeds (empty when none is)."""
        return dict(self._grouped(config)["seed_std"])

    def lookup(self, config: StudyConfig, params: dict[str, float], fidelity: int,
               mode: str = "interpolate", rng: np.random.Generator | None = None) -> dict:
        """Recorded metrics for `params` at `fidelity` (see the module doc for how): the seed average
        without `rng`, one drawn seed (or the Gaussian stand-in for one) with it."""
        check_choice("replay mode", mode, MODES)
        g = self._grouped(config)
        space, by_fid = g["space"], g["by_fid"]
        fids = np.array(sorted(by_fid))
        used = int(fids[np.lexsort((-fids, np.abs(fids - fidelity)))[0]])   # nearest, ties -> higher
        coords, rows, seeds = by_fid[used]
        x = _unit(space, np.array([[float(params[n]) for n in space.names]]))[0]
        if mode == "interpolate" and len(space.params) == 1 and len(rows) > 1:
            lo, hi, t = _neighbours(coords[:, 0], x[0])
        else:
            lo = hi = int(np.argmin(((coords - x) ** 2).sum(axis=1)))
            t = 0.0
        drawn, noise = None, {}
        if rng is not None:
            common = sorted(s for s, r in seeds.items() if lo in r.index and hi in r.index)
            if len(common) > 1:
                drawn = int(rng.choice(common))
                rows = seeds[drawn]
            else:   # one seed here: a Gaussian stand-in for another seed's draw (module doc)
                noise = {m: float(rng.normal(0.0, sd)) for m, sd in g["seed_std"].items()}
        out = {}
        for m in METRICS:
            a, b = _num(rows.at[lo, m]), _num(rows.at[hi, m])
            out[m] = None if a is None or b is None else a + t * (b - a) + noise.get(m, 0.0)
        for m in ("val_acc", "test_acc"):
            if m in noise and out[m] is not None:
                out[m] = float(np.clip(out[m], 0.0, 1.0))
        for m in ("runtime_ms", "flops"):
            if m in noise and out[m] is not None:
                out[m] = max(out[m], 0.01 * (out[m] - noise[m]))   # a draw never makes a cost <= 0
        out["arch"] = rows.at[lo if t < 0.5 else hi, "arch"]
        n = _num(rows["val_n"].iloc[0])
        out["val_n"], out["fidelity_used"] = (None if n is None else int(n)), used
        out["seed_drawn"], out["noise_added"] = drawn, bool(noise)
        return out


def _unit(space, values: np.ndarray) -> np.ndarray:
    """Each hyperparameter in its search scale, [0, 1] over its range (log for lambda): distances and
    interpolation weights are taken there."""
    out = np.empty_like(values, dtype=float)
    for j, p in enumerate(space.params):
        v = np.clip(values[:, j], 1e-300, None) if p.log else values[:, j]
        out[:, j] = [p.to_unit(float(x)) for x in v]
    return out


def _num(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _neighbours(xs: np.ndarray, x: float) -> tuple[int, int, float]:
    """The bracketing recorded points and the weight of the upper one: linear in log lambda, clamped
    outside the recorded range (no extrapolation)."""
    j = int(np.searchsorted(xs, x))
    lo, hi = max(0, min(j - 1, len(xs) - 2)), max(1, min(j, len(xs) - 1))
    t = float(np.clip((x - xs[lo]) / (xs[hi] - xs[lo]), 0.0, 1.0)) if xs[hi] > xs[lo] else 0.0
    return lo, hi, t


def _pooled_seed_std(df: pd.DataFrame, names: list[str]) -> dict[str, float]:
    """sqrt(sum_i (n_i - 1) s_i^2 / sum_i (n_i - 1)) over the (point, fidelity) groups with n_i > 1 seeds."""
    groups = [g for _, g in df.groupby([*names, "fidelity"]) if len(g) > 1]
    if not groups:
        return {}
    dof = sum(len(g) - 1 for g in groups)
    return {m: float(math.sqrt(sum(float(g[m].var(ddof=1)) * (len(g) - 1) for g in groups) / dof))
            for m in NOISY if all(g[m].notna().all() for g in groups)}


def replay_trial(config: StudyConfig, proposal: Proposal, *, table: ReplayTable, mode: str = "interpolate",
                 noise: str = "seeds", result_dir: Path | None = None, checkpoint: Path | None = None) -> TrialRow:
    """A trial answered from `table` (run_local's trial_fn: bind `table`, `mode` and `noise` with
    functools.partial, or use `replay_trial_fn`). Reward: Eq. 19 for `config`'s target. wall_s is the
    recorded search time (the time the replayed search would have taken), not the lookup's; nothing is
    written to `result_dir` (a replayed trial has no artefacts) nor to `checkpoint` (nor state).
    The seed draw is keyed by (study seed, trial id): the same trial of the same study draws the same."""
    check_choice("replay noise", noise, NOISES)
    rng = np.random.default_rng([config.seed, proposal.trial_id]) if noise == "seeds" else None
    r = table.lookup(config, proposal.params, proposal.fidelity, mode, rng)
    how = "" if rng is None else (f" seed {r['seed_drawn']}" if r["seed_drawn"] is not None
                                  else " +noise" if r["noise_added"] else "")
    row = TrialRow(trial_id=proposal.trial_id, solver=config.solver, params=dict(proposal.params),
                   fidelity=proposal.fidelity, seed=config.seed, target=config.target, status="ok",
                   val_acc=r["val_acc"], test_acc=r["test_acc"], runtime_ms=r["runtime_ms"], flops=r["flops"],
                   arch=str(r["arch"]), wall_s=round(r["wall_s"] or 0.0, 3), val_n=r["val_n"],
                   result_dir=f"{REPLAYED}{mode}@{r['fidelity_used']}{how}")
    row.reward = trial_reward(config, row.val_acc, row.runtime_ms, row.flops or 0.0)
    return row


def replay_trial_fn(table: ReplayTable, mode: str = "interpolate", noise: str = "seeds"):
    check_choice("replay mode", mode, MODES)
    check_choice("replay noise", noise, NOISES)
    return functools.partial(replay_trial, table=table, mode=mode, noise=noise)


def epoch_table(*study_dirs) -> pd.DataFrame:
    """Per-epoch metrics of every recorded trial: one row per (trial, epoch) with the trial's
    hyperparameters, fidelity and seed, from trials.csv + trials/NNNN/result.json (study folders are
    searched recursively). Trials without a saved result (failed, replayed) contribute no rows."""
    out = []
    for d in study_dirs:
        for csv in _trials_files(Path(d)):
            df = pd.read_csv(csv, keep_default_na=False)
            params = [c for c in df.columns if c not in BASE_COLUMNS]
            for r in df.to_dict("records"):
                res = Path(str(r["result_dir"])) / "result.json"
                if r["status"] != "ok" or not res.is_file():
                    continue
                for h in json.loads(res.read_text())["history"]:
                    out.append({"study": str(csv.parent), "trial_id": r["trial_id"],
                                **{p: r[p] for p in params}, "fidelity": r["fidelity"], "seed": r["seed"],
                                **{k: h[k] for k in ("epoch", "loss", "ce", "val_acc", "runtime_ms", "flops",
                                                     "wall_s", "arch")}})
    return pd.DataFrame(out)
