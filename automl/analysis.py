"""Statistics over many trials and repeated runs: best-so-far curves on a common epoch axis (Fig. 9
left), rank agreement of low vs full fidelity (DSNAS Table 2's Kendall tau), mean and spread of
repeated searches (Fig. 8)."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from .report import best_so_far_curve


def best_so_far_long(frames: dict[tuple, pd.DataFrame], keys: tuple[str, ...]) -> pd.DataFrame:
    """One row per trial of every run: its keys, trial index, cumulative search epochs and best reward
    so far (Eq. 19; a failed trial counts 0, the worst reward)."""
    out = []
    for key, df in frames.items():
        if df.empty:
            continue
        epochs, best = best_so_far_curve(df)
        out.append(pd.DataFrame({**dict(zip(keys, key)), "trial": np.arange(1, len(epochs) + 1),
                                 "cum_epochs": epochs, "best_reward": best}))
    cols = [*keys, "trial", "cum_epochs", "best_reward"]
    return pd.concat(out, ignore_index=True)[cols] if out else pd.DataFrame(columns=cols)


def on_epoch_grid(curve: pd.DataFrame, grid: np.ndarray) -> np.ndarray:
    """A run's best-so-far step function read at `grid` epochs (NaN before its first finished trial)."""
    x, y = curve["cum_epochs"].to_numpy(float), curve["best_reward"].to_numpy(float)
    i = np.searchsorted(x, grid, side="right") - 1
    return np.where(i >= 0, y[np.clip(i, 0, None)], np.nan)


def mean_spread(curves: pd.DataFrame, group: str, run: str, grid: np.ndarray) -> pd.DataFrame:
    """Per `group` (solver): mean and standard deviation over runs (repeats) of best-so-far at `grid`."""
    out = []
    for g, d in curves.groupby(group, sort=False):
        ys = np.array([on_epoch_grid(c, grid) for _, c in d.groupby(run)])
        with np.errstate(all="ignore"):   # epochs before any run finished a trial: NaN, not a warning
            n = (~np.isnan(ys)).sum(0)
            mean = np.where(n > 0, np.nansum(ys, 0) / np.maximum(n, 1), np.nan)
            var = np.where(n > 0, np.nansum((ys - mean) ** 2, 0) / np.maximum(n, 1), np.nan)
        out.append(pd.DataFrame({group: g, "epochs": grid, "mean": mean, "std": np.sqrt(var), "runs": n}))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=[group, "epochs", "mean", "std", "runs"])


def fidelity_rank_correlation(df: pd.DataFrame, params: list[str], metrics=("reward", "val_acc")) -> pd.DataFrame:
    """Kendall tau between the ranking of hyperparameter values at each lower fidelity and at the
    highest recorded fidelity, over values recorded at both (seeds averaged): does a cheap evaluation
    rank lambdas as a full one does? (DSNAS Table 2; the assumption multi-fidelity solvers rest on,
    which Fig. 9 right questions.)"""
    from scipy.stats import kendalltau

    cols = ["low_fidelity", "full_fidelity", "n", *[f"tau_{m}" for m in metrics], *[f"p_{m}" for m in metrics]]
    ok = df[df["status"] == "ok"].copy()
    if ok.empty or any(p not in ok.columns for p in params):
        return pd.DataFrame(columns=cols)
    for c in (*params, *metrics):
        ok[c] = pd.to_numeric(ok[c], errors="coerce")
    ok["key"] = [tuple(np.round(r, 12)) for r in ok[params].to_numpy(float)]   # csv round-trip tolerant
    mean = ok.groupby(["key", "fidelity"])[list(metrics)].mean()
    fids = sorted(ok["fidelity"].astype(int).unique())
    if len(fids) < 2:
        return pd.DataFrame(columns=cols)
    full = fids[-1]
    hi = mean.xs(full, level="fidelity")
    out = []
    for f in fids[:-1]:
        lo = mean.xs(f, level="fidelity")
        both = lo.index.intersection(hi.index)
        row = {"low_fidelity": f, "full_fidelity": full, "n": len(both)}
        for m in metrics:
            tau, p = kendalltau(lo.loc[both, m], hi.loc[both, m]) if len(both) >= 2 else (np.nan, np.nan)
            row[f"tau_{m}"], row[f"p_{m}"] = float(tau), float(p)
        out.append(row)
    return pd.DataFrame(out, columns=cols)


def spread(df: pd.DataFrame, by: list[str], cols: list[str]) -> pd.DataFrame:
    """n, mean and standard deviation (ddof=1: an estimate from a sample of runs) of `cols` per group."""
    g = df.groupby(by, sort=False)
    out = g.size().rename("n").to_frame()
    for c in cols:
        v = pd.to_numeric(df[c], errors="coerce").groupby([df[b] for b in by], sort=False)
        out[f"{c}_mean"], out[f"{c}_std"] = v.mean(), v.std(ddof=1)
    return out.reset_index()


def against_reference(runs: pd.DataFrame, cols: list[str], reference_kind: dict[str, str] | None = None
                      ) -> pd.DataFrame:
    """Each formulation's runs against the first formulation's (the reference), per kind and column: the
    difference of means with Welch's t-test p-value, and the ratio of standard deviations with the
    Brown-Forsythe test's p-value (Levene's test about the median, robust to the few, skewed runs a
    variance study has). Fig. 8 asks both: is one formulation better, and does it vary less? With 10
    runs a side, a std ratio must be about 2 before the test tells it from chance, so a ratio near 1
    with a large p says "not shown", not "equal". `reference_kind` maps a kind to the reference's kind it
    is compared with where the reference has none of its own (intra-run samples against proxy-trained
    repeats: both ConvNets trained the same epochs from scratch)."""
    from scipy.stats import levene, ttest_ind

    out_cols = ["formulation", "kind", "reference", "reference_kind", "column", "n", "reference_n",
                "mean_diff", "p_mean", "std_ratio", "p_std"]
    ok = runs[runs["status"] == "ok"]
    if ok.empty:
        return pd.DataFrame(columns=out_cols)
    order = list(dict.fromkeys(ok["formulation"]))
    ref = order[0]
    ref_kinds = set(ok.loc[ok["formulation"] == ref, "kind"])
    rows = []
    for (form, kind), d in ok.groupby(["formulation", "kind"], sort=False):
        rk = kind if kind in ref_kinds else (reference_kind or {}).get(kind)
        if form == ref or rk not in ref_kinds:
            continue
        r = ok[(ok["formulation"] == ref) & (ok["kind"] == rk)]
        for c in cols:
            a, b = pd.to_numeric(d[c], errors="coerce").dropna(), pd.to_numeric(r[c], errors="coerce").dropna()
            row = {"formulation": form, "kind": kind, "reference": ref, "reference_kind": rk, "column": c,
                   "n": len(a), "reference_n": len(b), "mean_diff": a.mean() - b.mean(), "p_mean": np.nan,
                   "std_ratio": a.std(ddof=1) / b.std(ddof=1) if len(b) > 1 and b.std(ddof=1) > 0 else np.nan,
                   "p_std": np.nan}
            if len(a) > 1 and len(b) > 1 and (a.std() > 0 or b.std() > 0):
                with warnings.catch_warnings():
                    # one constant side (every run at the same cost, e.g. one architecture fits the
                    # window) is a valid sample: Welch's t uses each side's own variance, and scipy's
                    # "precision loss" check flags a variance of zero, not a wrong result
                    warnings.filterwarnings("ignore", "Precision loss", RuntimeWarning)
                    row["p_mean"] = float(ttest_ind(a, b, equal_var=False).pvalue)
                row["p_std"] = float(levene(a, b, center="median").pvalue)
            rows.append(row)
    return pd.DataFrame(rows, columns=out_cols)


def curve_gap(curves: pd.DataFrame, other: pd.DataFrame, grid: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    """How far one comparison's best-so-far curves are from another's (e.g. a replay's from real
    searches'), per solver both ran, at `grid` epochs. Returns the per-epoch table (each side's mean and
    std over repeats, gap = this - other) and a summary per solver: mean and largest |gap| over the
    epochs where both have a value, the gap at the last of them, and the share of those epochs where the
    other mean lies inside this run's mean +- std band (a band too narrow to hold the other's curve is
    smoother than the other run)."""
    cols = ["solver", "runs", "other_runs", "epochs_compared", "mean_abs_gap", "max_abs_gap", "final_gap",
            "final_mean", "final_std", "other_final_mean", "other_final_std", "inside_band"]
    a, b = mean_spread(curves, "solver", "repeat", grid), mean_spread(other, "solver", "repeat", grid)
    both = a.merge(b, on=["solver", "epochs"], suffixes=("", "_other"))
    both = both.rename(columns={"mean_other": "other_mean", "std_other": "other_std", "runs_other": "other_runs"})
    both["gap"] = both["mean"] - both["other_mean"]
    rows = []
    for solver, d in both.groupby("solver", sort=False):
        d = d.dropna(subset=["mean", "other_mean"])
        if d.empty:
            continue
        last, gap = d.iloc[-1], d["gap"].abs()
        inside = (d["other_mean"] >= d["mean"] - d["std"]) & (d["other_mean"] <= d["mean"] + d["std"])
        rows.append({"solver": solver, "runs": int(d["runs"].max()), "other_runs": int(d["other_runs"].max()),
                     "epochs_compared": len(d), "mean_abs_gap": gap.mean(), "max_abs_gap": gap.max(),
                     "final_gap": last["gap"], "final_mean": last["mean"], "final_std": last["std"],
                     "other_final_mean": last["other_mean"], "other_final_std": last["other_std"],
                     "inside_band": inside.mean()})
    per_epoch = both[["solver", "epochs", "mean", "std", "runs", "other_mean", "other_std", "other_runs", "gap"]]
    return per_epoch, pd.DataFrame(rows, columns=cols)


def best_per_epochs(grid: pd.DataFrame, name: str) -> pd.DataFrame:
    """The grid's best `name` by Eq. 19 at each search-epoch count (Fig. 9 right's stars)."""
    cols = ["epochs", name, "reward", "val_acc", "runtime_ms"]
    ok = grid[grid["status"] == "ok"]
    if ok.empty:
        return ok[cols]
    return ok.loc[ok.groupby("epochs")["reward"].idxmax(), cols].reset_index(drop=True)
