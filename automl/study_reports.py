"""HTML reports of the experiments made of sub-studies (studies/compare_solvers.py, fidelity_grid.py,
variance.py): one self-contained page each (plotly.js inlined once), built from the CSV tables the
studies write, so a report can be rebuilt from them."""
from __future__ import annotations

import html
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from .analysis import against_reference, best_per_epochs, mean_spread
from .report import COLORS, add_band, heatmap, pareto_front, rgba, table_html, write_page
from .reward import Target


def _cost(df: pd.DataFrame, config) -> tuple[str, str]:
    """Column and unit of R in Eq. 19 (adds an mflops column)."""
    df["mflops"] = pd.to_numeric(df["flops"], errors="coerce") / 1e6
    return ("runtime_ms", "ms") if config.target_metric == "runtime_ms" else ("mflops", "MFLOPs")


def compare_source(spec: dict, std: dict[str, float] | None = None) -> str:
    """Where a comparison's trials came from, for its report: real searches, or a replay and how it
    answers (experiment.json's replay flags; `std`: the replayed table's between-seed spread, when known)."""
    if not spec.get("replay"):
        return "real NAS searches"
    if spec["replay_noise"] == "none":
        noise = "none (the seed average: every repeat sees the same objective)"
    elif std == {}:
        noise = "none to draw (no point was recorded with two seeds: every repeat sees the same objective)"
    else:   # std None: a report rebuilt from the tables alone, which does not read the recorded table
        values = "" if std is None else " (" + ", ".join(f"{k} {v:.4g}" for k, v in std.items()) + ")"
        noise = "one recorded seed drawn per trial; where a single seed was recorded, a Gaussian draw with the " \
                f"between-seed std{values}"
    return (f"replayed from recorded trials ({', '.join(map(str, spec['replay']))}): a lambda not recorded is "
            f"answered by {spec['replay_mode']}; seed noise: {noise}")


def write_compare_report(path, curves, trials, kendall, summary, config, budget: int, source: str,
                         against: tuple | None = None):
    """Fig. 9 left: best reward so far vs spent epochs (mean +- std over repeats) per solver, and the
    Pareto front (accuracy vs cost) of all trials of each solver. `source`: where the trials came from
    (real searches, or a replay and how it answers). `against`: (name, per-epoch table, gap summary) of
    analysis.curve_gap against another comparison (e.g. real searches beside a replay); the other's mean
    curves are drawn dashed in each solver's colour."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    ok = trials[trials["status"] == "ok"].copy()
    cost, unit = _cost(ok, config)
    fig = make_subplots(rows=1, cols=2, subplot_titles=(
        "best reward (Eq. 19) so far vs spent search epochs (mean ± std over repeats)",
        f"Pareto front of all trials: validation accuracy vs {unit}"))
    grid = np.arange(1, budget + 1)
    bands = mean_spread(curves, "solver", "repeat", grid)
    for i, (solver, b) in enumerate(bands.groupby("solver", sort=False)):
        color = COLORS[i % len(COLORS)]
        add_band(fig, b["epochs"], b["mean"], b["std"], name=solver, color=color, row=1, col=1)
        if against is not None and solver in set(against[1]["solver"]):
            o = against[1][against[1]["solver"] == solver]
            fig.add_trace(go.Scatter(x=o["epochs"], y=o["other_mean"], mode="lines", line_shape="hv",
                                     name=f"{solver}: {against[0]}", line=dict(color=color, dash="dash")),
                          row=1, col=1)
        s = ok[ok["solver"] == solver]
        if s.empty:
            continue
        c, a = s[cost].to_numpy(float), s["val_acc"].to_numpy(float)
        keep = ~np.isnan(c)
        c, a = c[keep], a[keep]
        fig.add_trace(go.Scatter(x=c, y=a, mode="markers", legendgroup=solver, showlegend=False,
                                 marker=dict(color=rgba(color, 0.25), size=5), hoverinfo="skip"), row=1, col=2)
        f = pareto_front(c, a)
        fig.add_trace(go.Scatter(x=c[f], y=a[f], mode="lines+markers", line_shape="hv", legendgroup=solver,
                                 showlegend=False, line=dict(color=color), name=f"{solver} front"), row=1, col=2)
    fig.add_vline(x=config.target, line_dash="dash", annotation_text="target", row=1, col=2)
    fig.update_xaxes(title_text="search epochs spent", row=1, col=1)
    fig.update_yaxes(title_text="best reward so far", row=1, col=1)
    fig.update_xaxes(title_text=unit, row=1, col=2)
    fig.update_yaxes(title_text="validation accuracy", row=1, col=2)
    fig.update_layout(height=560)
    return write_page(path, f"Solvers tuning {config.searcher} toward {config.target_obj}", [
        f"<p>Trials: {html.escape(source)}. Budget {budget} search epochs per repeat; a failed trial counts reward 0.</p>",
        fig, "<h2>Final best reward per solver</h2>", table_html(summary),
        "<h2>Kendall tau of the lambda ranking at low vs full fidelity (DSNAS Table 2's measure)</h2>",
        table_html(kendall, 3) if len(kendall) else "<p>No hyperparameter value recorded at two fidelities.</p>",
        *([] if against is None else [
            f"<h2>These curves against {html.escape(str(against[0]))} (dashed)</h2>"
            "<p>gap = this mean - that mean of best reward so far, over the epochs both reached; inside_band: "
            "share of those epochs where that mean lies inside this mean ± std.</p>", table_html(against[2], 4)])])


def write_grid_report(path, df, best, kendall, config, name: str):
    """Fig. 9 right: Eq. 19, accuracy and cost over (lambda, epochs), the best lambda per epochs marked."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    ok = df[df["status"] == "ok"].copy()
    cost, unit = _cost(ok, config)
    fig = make_subplots(rows=3, cols=1, vertical_spacing=0.08, subplot_titles=(
        f"reward (Eq. 19, target {config.target_obj}); star: best {name} per epochs",
        "validation accuracy", f"{unit} (centred on the target: red is over it)"))
    if len(ok):
        bar = lambda y: dict(len=0.28, y=y)   # one colour bar beside each panel
        heatmap(fig, ok, name, "epochs", "reward", row=1, col=1, colorbar=bar(0.87))
        heatmap(fig, ok, name, "epochs", "val_acc", row=2, col=1, colorbar=bar(0.5))
        heatmap(fig, ok, name, "epochs", cost, row=3, col=1, colorbar=bar(0.13), fmt=".1f", zmid=config.target,
                colorscale="RdBu_r")
        fig.add_trace(go.Scatter(x=[f"{v:.3g}" for v in best[name]], y=[str(e) for e in best["epochs"]],
                                 mode="markers", name=f"best {name}",
                                 marker=dict(symbol="star", size=16, color="white", line=dict(color="black", width=1))),
                      row=1, col=1)
    for r in (1, 2, 3):
        fig.update_xaxes(title_text=name, row=r, col=1)
        fig.update_yaxes(title_text="search epochs", row=r, col=1)
    fig.update_layout(height=1300, showlegend=False)
    return write_page(path, f"Fidelity grid: {config.searcher} {name} x search epochs toward {config.target_obj}", [
        f"<p>Each cell is one NAS search (Single-Path NAS paper Fig. 9 right). Where the best {name} of few "
        "epochs lies right of the full-fidelity one, cheap evaluations overshoot toward over-constrained "
        "networks.</p>", fig,
        "<h2>Best per search epochs</h2>", table_html(best),
        "<h2>Kendall tau, low vs full fidelity (DSNAS Table 2's measure)</h2>",
        table_html(kendall, 3) if len(kendall) else "<p>Needs two or more epoch counts.</p>",
        "<h2>Grid</h2>", table_html(df.drop(columns=["result_dir"]))])


def versus_reference(runs: pd.DataFrame) -> pd.DataFrame:
    """Every formulation against the experiment's first (Fig. 8: better, and less varied?); intra-run
    samples against the first's proxy-trained repeats (both ConvNets trained alike from scratch)."""
    return against_reference(runs, ["test_acc", "val_acc", "runtime_ms", "flops"], {"intra": "proxy"})


def write_variance_report(path, runs, summary, versus, config_like, notes: list[str]):
    """Fig. 8: accuracy vs cost, mean ± std (inter-run; the repeats' ConvNets proxy-trained; intra-run for
    softmax samples) per formulation, every run faint behind, the target as a line."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    ok = runs[runs["status"] == "ok"].copy()
    cost, unit = _cost(ok, config_like)
    summary = summary.copy()
    if cost == "mflops":
        summary["mflops_mean"], summary["mflops_std"] = summary["flops_mean"] / 1e6, summary["flops_std"] / 1e6
    fig = make_subplots(rows=1, cols=2, subplot_titles=("validation accuracy vs " + unit,
                                                        "test accuracy vs " + unit))
    symbols = {"inter": "circle", "proxy": "square"}   # intra: diamond
    for i, ((form, kind), s) in enumerate(summary.groupby(["formulation", "kind"], sort=False)):
        color, symbol = COLORS[i % len(COLORS)], symbols.get(kind, "diamond")
        name = f"{form} ({kind})"
        pts = ok[(ok["formulation"] == form) & (ok["kind"] == kind)]
        for col, acc in ((1, "val_acc"), (2, "test_acc")):
            fig.add_trace(go.Scatter(x=pts[cost], y=pts[acc], mode="markers", legendgroup=name, showlegend=False,
                                     marker=dict(color=rgba(color, 0.3), size=6,
                                                 symbol=symbol),
                                     text=pts["arch"].map(lambda a: html.escape(str(a))[:200])), row=1, col=col)
            r = s.iloc[0]
            fig.add_trace(go.Scatter(x=[r[f"{cost}_mean"]], y=[r[f"{acc}_mean"]], mode="markers", name=name,
                                     legendgroup=name, showlegend=col == 1,
                                     marker=dict(color=color, size=12, symbol=symbol),
                                     error_x=dict(type="data", array=[np.nan_to_num(r[f"{cost}_std"])]),
                                     error_y=dict(type="data", array=[np.nan_to_num(r[f"{acc}_std"])])),
                          row=1, col=col)
    for col in (1, 2):
        fig.add_vline(x=config_like.target, line_dash="dash", annotation_text="target", row=1, col=col)
        fig.update_xaxes(title_text=unit, row=1, col=col)
    fig.update_yaxes(title_text="accuracy")
    fig.update_layout(height=600)
    parts = ["<p>Mean ± standard deviation across repeated searches at each formulation's tuned value: the "
             "search's own accuracy (inter) and its ConvNet trained from scratch for a few epochs (proxy, the "
             "accuracy every formulation is compared by); and across architectures sampled from the best "
             "softmax search's distribution, each trained the same way (intra-run). Single-Path NAS paper "
             "Fig. 8.</p>"]
    parts += [f"<p><i>{html.escape(n)}</i></p>" for n in notes]
    return write_page(path, f"Variance of NAS formulations toward {config_like.target_obj}",
                      parts + [fig, "<h2>Summary</h2>", table_html(summary), *_versus_html(versus),
                               "<h2>Runs</h2>", table_html(runs.drop(columns=["result_dir"], errors="ignore"))])


def _versus_html(versus: pd.DataFrame) -> list[str]:
    if versus.empty:
        return []
    return [f"<h2>Against {html.escape(str(versus['reference'].iloc[0]))}</h2>",
            "<p>Difference of means (this minus the reference) with Welch's t-test p-value, and ratio of "
            "standard deviations (this over the reference) with the Brown-Forsythe test's p-value. With ten "
            "runs a side, a ratio must be about 2 before the test tells it from chance: a large p means "
            "not shown, not equal.</p>", table_html(versus, 4)]


# -- rebuilding an experiment's report from its tables: python -m automl.report DIR -----------------------

def _table(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:   # a table written with no rows and no columns
        return pd.DataFrame()


def rebuild_experiment_report(folder: str | Path) -> Path:
    """report.html of an experiment folder (studies/compare_solvers.py, fidelity_grid.py, variance.py)
    again, from its experiment.json and the tables it wrote alone: no search, solver, data or Ray. Which
    experiment it was is told by its tables: runs.csv (variance), grid.csv (grid), curves.csv (compare)."""
    from searchers.errors import UsageError

    from .study import StudyConfig

    folder = Path(folder)
    try:
        spec = json.loads((folder / "experiment.json").read_text())
        target = Target(value=spec["target_mflops"], metric="mflops") if spec.get("target_mflops") is not None \
            else Target(value=spec.get("target_ms") or 80.0)   # the studies' default target (studies/_common.py)
        searcher = spec["searcher"]
    except (ValueError, TypeError, KeyError, AttributeError) as err:   # UsageError too: a target it refuses
        raise UsageError(f"{folder}/experiment.json: not an experiment this tool wrote ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else ''})") from None
    view = SimpleNamespace(searcher=searcher, target=target.value, target_metric=target.metric,
                           target_obj=target)
    page = folder / "report.html"
    if (folder / "runs.csv").is_file():
        runs = _table(folder / "runs.csv")
        return write_variance_report(page, runs, _table(folder / "summary.csv"), versus_reference(runs), view, [])
    if (folder / "grid.csv").is_file():
        config = StudyConfig.from_json(json.loads((folder / "grid" / "study.json").read_text()),
                                       check_environment=False)
        name = config.space().names[0]
        grid = _table(folder / "grid.csv")
        return write_grid_report(page, grid, best_per_epochs(grid, name), _table(folder / "kendall.csv"), config, name)
    if (folder / "curves.csv").is_file():
        against = None
        if (folder / "against.csv").is_file():   # --against is how a run was shown, not recorded: unnamed here
            against = ("the comparison it was run against", _table(folder / "against.csv"),
                       _table(folder / "against_summary.csv"))
        return write_compare_report(page, _table(folder / "curves.csv"), _table(folder / "all_trials.csv"),
                                    _table(folder / "kendall.csv"), _table(folder / "summary.csv"), view,
                                    int(spec["budget_epochs"]), compare_source(spec), against=against)
    raise UsageError(f"{folder} holds no experiment's tables (runs.csv, grid.csv or curves.csv): nothing to "
                     "rebuild; was the experiment finished?")
