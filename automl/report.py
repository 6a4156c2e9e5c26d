"""Self-contained HTML report of a study (plotly.js inlined, so it opens offline)."""
from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from searchers.result import atomic_text


def pareto_front(cost: np.ndarray, acc: np.ndarray) -> np.ndarray:
    """Indices of points no other point beats on both lower cost and higher accuracy, by cost."""
    order = np.lexsort((-acc, cost))
    front, best = [], -np.inf
    for i in order:
        if acc[i] > best:
            front.append(i)
            best = acc[i]
    return np.array(front, dtype=int)


def best_so_far_curve(df, order_col: str = "trial_id"):
    """(cumulative search epochs, best reward so far) in the order trials were asked."""
    d = df.sort_values(order_col)
    epochs = d["fidelity"].cumsum().to_numpy()
    reward = d["reward"].fillna(0.0).astype(float).cummax().to_numpy()
    return epochs, reward


def verdict_html(verdict) -> str:
    """The study's verdict (automl/verdict.py) as a short block for the top of the report."""
    color = "#2ca02c" if verdict.met else "#d62728"
    head, *rest = verdict.lines
    items = "".join(f"<li>{html.escape(line.strip())}</li>" for line in rest)
    return (f"<div style='border-left:6px solid {color};padding:4px 12px;margin:8px 0;background:#f7f7f7'>"
            f"<p><b>{html.escape(head)}</b></p><ul>{items}</ul></div>")


def write_report(path: Path, table, config, verdict=None, measured: list[str] | None = None) -> Path:
    """report.html of one study: the verdict on top, then one figure per question a user asks (how the
    tuned value moved cost and accuracy, how the reward grew with spent epochs, where the delivered
    network sits among the trials, what it is layer by layer) and a sortable trials table. `measured`:
    the lines of the delivered model's timing on this machine (measured.json, --measure)."""
    df = table.frame()
    best = table.best(config.fidelity, config.target, lambda r: config.target_obj.measure(r.runtime_ms, r.flops))
    if verdict is None:
        from .verdict import make_verdict
        verdict = make_verdict(table, config, best)
    ok = df[df["status"] == "ok"].copy()
    ok["cost"] = ok["runtime_ms"].astype(float) if config.target_metric == "runtime_ms" else \
        ok["flops"].astype(float) / 1e6
    view = _View(config=config, ok=ok, best=best, pname=table.param_names[0] if table.param_names else None)
    figures = [fig_tuned_vs_cost(view), fig_tuned_vs_accuracy(view), fig_best_reward(df),
               fig_accuracy_vs_cost(view), fig_architectures(view)]
    title = f"{config.searcher} tuned by {config.solver} toward {config.target_obj}"
    timed = "" if not measured else f"<pre style='white-space:pre-wrap'>{html.escape(chr(10).join(measured))}</pre>"
    return write_page(path, title, [verdict_html(verdict), delivered_html(best, config), timed,
                                    *[f for f in figures if f is not None],
                                    "<h2>Trials</h2>", sortable_table(df)])


@dataclass(frozen=True)
class _View:
    """What every figure of one study's report reads."""

    config: object
    ok: object            # the successful trials, with a `cost` column in the target's unit
    best: object          # the delivered TrialRow, or None
    pname: str | None     # the (first) tuned hyperparameter

    @property
    def cost_title(self) -> str:
        c = self.config
        return f"runtime on {c.profile} (ms)" if c.target_metric == "runtime_ms" else "FLOPs (MFLOPs, multiply-adds)"

    @property
    def tuned_title(self) -> str:
        log = _is_log(self.config, self.pname)
        return f"{self.pname} ({'log scale' if log else 'linear'})"

    def delivered(self):
        """The delivered trial's row of `ok` (empty when none)."""
        return self.ok[self.ok["trial_id"] == self.best.trial_id] if self.best is not None else self.ok.iloc[:0]


def _figure(title: str, x_title: str, y_title: str, height: int = 420):
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.update_layout(title=title, height=height, margin=dict(t=60, b=60), legend=dict(orientation="h", y=-0.2))
    fig.update_xaxes(title_text=x_title)
    fig.update_yaxes(title_text=y_title)
    return fig


def _trial_hover(ok) -> list[str]:
    return [f"trial {t}<br>{html.escape(str(a))[:120]}" for t, a in zip(ok["trial_id"], ok["arch"])]


def _mark_delivered(fig, view: "_View", x: str, y: str) -> None:
    import plotly.graph_objects as go

    d = view.delivered()
    if len(d):
        fig.add_trace(go.Scatter(x=d[x], y=d[y], mode="markers", name=f"delivered (trial {view.best.trial_id})",
                                 marker=dict(symbol="star", size=18, color="#d62728", line=dict(width=1))))


def fig_tuned_vs_cost(view: "_View"):
    """The tuned value against the cost it led to, the target drawn: does the knob move the cost?"""
    import plotly.graph_objects as go

    if view.pname is None or not len(view.ok):
        return None
    fig = _figure(f"{view.pname} vs cost (target {view.config.target:g})", view.tuned_title, view.cost_title)
    fig.add_trace(go.Scatter(x=view.ok[view.pname], y=view.ok["cost"], mode="markers", name="trials",
                             text=_trial_hover(view.ok), marker=dict(color=view.ok["fidelity"], colorscale="Viridis",
                                                                     # the study's fidelities, not the trials'
                                                                     # spread (one value: a bar 3.6-4.4)
                                                                     cmin=min(view.config.min_fidelity,
                                                                              view.config.fidelity - 1),
                                                                     cmax=view.config.fidelity,
                                                                     colorbar=dict(title="epochs"), size=9)))
    _mark_delivered(fig, view, view.pname, "cost")
    fig.add_hline(y=view.config.target, line_dash="dash", line_color="#d62728", annotation_text="target")
    fig.update_xaxes(type="log" if _is_log(view.config, view.pname) else "linear")
    return fig


def fig_tuned_vs_accuracy(view: "_View"):
    import plotly.graph_objects as go

    if view.pname is None or not len(view.ok):
        return None
    fig = _figure(f"{view.pname} vs validation accuracy", view.tuned_title, "validation accuracy (fraction)")
    fig.add_trace(go.Scatter(x=view.ok[view.pname], y=view.ok["val_acc"], mode="markers", name="trials",
                             text=_trial_hover(view.ok), marker=dict(size=9)))
    _mark_delivered(fig, view, view.pname, "val_acc")
    fig.update_xaxes(type="log" if _is_log(view.config, view.pname) else "linear")
    return fig


def fig_best_reward(df):
    """Best Eq. 19 reward so far against search epochs spent: what more budget would buy."""
    import plotly.graph_objects as go

    if not len(df):
        return None
    x, y = best_so_far_curve(df)
    fig = _figure("best reward so far vs search epochs spent", "search epochs spent (cumulative)",
                  "best reward so far (Eq. 19, 0-1)")
    fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name="best reward", line_shape="hv"))
    # Eq. 19 is accuracy times (R/RT)^w <= 1: a fixed 0-1 axis compares studies at a glance
    fig.update_yaxes(range=[0, 1.02])
    fig.update_xaxes(rangemode="tozero")
    return fig


def fig_accuracy_vs_cost(view: "_View"):
    """Every trial's accuracy against its cost, the Pareto front, the target and the delivered network."""
    import plotly.graph_objects as go

    if not len(view.ok):
        return None
    fig = _figure("validation accuracy vs cost (Pareto front)", view.cost_title, "validation accuracy (fraction)")
    cost, acc = view.ok["cost"].to_numpy(float), view.ok["val_acc"].to_numpy(float)
    fig.add_trace(go.Scatter(x=cost, y=acc, mode="markers", name="trials", text=_trial_hover(view.ok),
                             marker=dict(size=9)))
    f = pareto_front(cost, acc)
    fig.add_trace(go.Scatter(x=cost[f], y=acc[f], mode="lines", name="Pareto front", line_shape="hv"))
    _mark_delivered(fig, view, "cost", "val_acc")
    fig.add_vline(x=view.config.target, line_dash="dash", line_color="#d62728", annotation_text="target")
    return fig


def fig_architectures(view: "_View", max_rows: int = 30):
    """The delivered architecture and the others as strips of the 20 searchable layers: each cell a
    layer's decision (kernel, expansion, SE, or skip), coloured by its runtime from the device profile;
    stage boundaries drawn. MBConv space only (the profile prices nothing else)."""
    import plotly.graph_objects as go

    from searchers.cost import load_profile
    from searchers.cost.price import price
    from searchers.spaces.mbconv import LAYERS_PER_STAGE, NUM_SEARCHABLE, MBConvArch

    if not len(view.ok) or not view.ok["arch"].astype(str).str.startswith("mbconv ").all():
        return None
    profile = load_profile(view.config.profile)
    rows = view.ok.sort_values("cost")
    if view.best is not None:   # the delivered network on top
        rows = rows.iloc[np.argsort(rows["trial_id"].to_numpy() != view.best.trial_id, kind="stable")]
    rows = rows.head(max_rows)
    z, text, hover, labels = [], [], [], []
    for t, a, c in zip(rows["trial_id"], rows["arch"], rows["cost"]):
        p = price(MBConvArch.parse(a), profile)
        z.append([lp.runtime_ms if lp.block != "skip" else None for lp in p.layers])
        text.append([lp.block.replace("se0.", "se.") for lp in p.layers])
        hover.append([f"trial {t}, layer {lp.layer} (stage {lp.stage})<br>{lp.block}: {lp.runtime_ms:.2f} ms, "
                      f"{lp.macs_profile / 1e6:.2f}M MACs at {p.profile_size}" for lp in p.layers])
        delivered = view.best is not None and t == view.best.trial_id
        labels.append(f"{'delivered ' if delivered else ''}trial {t} ({c:.4g})")
    fig = _figure(f"architectures: the {NUM_SEARCHABLE} searchable layers, coloured by runtime on {profile.name}",
                  "searchable layer (stages separated by lines)", "trial (cost)", height=160 + 28 * len(rows))
    fig.add_trace(go.Heatmap(z=z, x=list(range(1, NUM_SEARCHABLE + 1)), y=labels, text=text,
                             texttemplate="%{text}", hovertext=hover, hoverinfo="text", colorscale="YlOrRd",
                             colorbar=dict(title="layer ms"), xgap=2, ygap=2))
    for b in range(LAYERS_PER_STAGE, NUM_SEARCHABLE, LAYERS_PER_STAGE):
        fig.add_vline(x=b + 0.5, line_width=3, line_color="#333")
    fig.update_xaxes(tickmode="linear", dtick=1)
    fig.update_yaxes(autorange="reversed", type="category")
    return fig


def delivered_html(best, config) -> str:
    if best is None:
        return "<p>No successful trial.</p>"
    unit = "ms" if config.target_metric == "runtime_ms" else "MFLOPs"
    cost = best.runtime_ms if unit == "ms" else (best.flops or 0) / 1e6
    params = ", ".join(f"{k} = {v:.4g}" for k, v in best.params.items())
    return (f"<p><b>Delivered trial {best.trial_id}</b>: {html.escape(params)}; val acc {best.val_acc:.4f}, "
            f"test acc {best.test_acc:.4f}; {cost:.2f} {unit} (target {config.target:g}); "
            f"{(best.flops or 0) / 1e6:.2f} MFLOPs; reward {best.reward:.4f}</p>"
            f"<div style='overflow-x:auto'><code style='white-space:nowrap'>{html.escape(best.arch)}</code></div>")


# Click a header to sort by it (again: the other way); numbers sort as numbers, blanks last.
SORT_JS = """<script>
document.querySelectorAll('table.sortable th').forEach(function (th, col) {
  th.style.cursor = 'pointer'; th.title = 'sort';
  th.addEventListener('click', function () {
    var body = th.closest('table').tBodies[0], rows = Array.from(body.rows);
    var dir = th.dataset.dir === 'asc' ? -1 : 1; th.dataset.dir = dir === 1 ? 'asc' : 'desc';
    var key = function (r) { var t = r.cells[col].textContent.trim(), n = Number(t);
                             return t === '' ? null : (isNaN(n) ? t : n); };
    rows.sort(function (a, b) { var x = key(a), y = key(b);
      if (x === null) return 1; if (y === null) return -1;
      return (typeof x === typeof y ? (x < y ? -1 : x > y ? 1 : 0) : (typeof x === 'number' ? -1 : 1)) * dir; });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
</script>"""


def sortable_table(df) -> str:
    """The trials as an HTML table a person can sort by any column; one line per trial (the
    architecture does not wrap: the table scrolls sideways)."""
    shown = df.drop(columns=["result_dir", "val_correct"], errors="ignore")
    table = shown.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="", classes="sortable", border=0)
    style = ("<style>table.sortable{border-collapse:collapse;font:13px sans-serif}"
             "table.sortable td,table.sortable th{padding:2px 8px;border-bottom:1px solid #ddd;white-space:nowrap}"
             "table.sortable th{background:#f0f0f0;position:sticky;top:0}</style>")
    return f"{style}<div style='overflow-x:auto'>{table}</div>{SORT_JS}"


def _is_log(config, name: str) -> bool:
    space = {p.name: p for p in config.space().params}
    return name in space and space[name].log


# -- helpers for the multi-study reports (compare solvers, fidelity grid, variance) -----------------

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
          "#bcbd22", "#17becf")


def rgba(color: str, alpha: float) -> str:
    r, g, b = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def add_band(fig, x, mean, std, *, name: str, color: str, row: int | None = None, col: int | None = None) -> None:
    """Mean line with a shaded mean +- std band (repeated runs of one method)."""
    import plotly.graph_objects as go

    x, mean, std = np.asarray(x, float), np.asarray(mean, float), np.nan_to_num(np.asarray(std, float))
    keep = ~np.isnan(mean)
    x, mean, std = x[keep], mean[keep], std[keep]
    rc = dict(row=row, col=col) if row is not None else {}
    fig.add_trace(go.Scatter(x=np.concatenate([x, x[::-1]]), y=np.concatenate([mean + std, (mean - std)[::-1]]),
                             fill="toself", fillcolor=rgba(color, 0.2), line=dict(width=0), hoverinfo="skip",
                             legendgroup=name, showlegend=False, line_shape="hv"), **rc)
    fig.add_trace(go.Scatter(x=x, y=mean, mode="lines", name=name, legendgroup=name, line=dict(color=color),
                             line_shape="hv"), **rc)


def heatmap(fig, df, x: str, y: str, z: str, *, row: int, col: int, colorbar: dict | None = None,
            fmt: str = ".3f", zmid: float | None = None, colorscale: str = "Viridis") -> None:
    """A z(x, y) heatmap of a long table with each cell's value written in it; x categorical (its values
    formatted), so a log-spaced grid gets equal-width cells."""
    import plotly.graph_objects as go

    piv = df.pivot_table(index=y, columns=x, values=z, aggfunc="mean").sort_index()
    piv = piv[sorted(piv.columns)]
    xs = [f"{v:.3g}" for v in piv.columns]
    text = [[("" if np.isnan(v) else format(v, fmt)) for v in r] for r in piv.to_numpy(float)]
    fig.add_trace(go.Heatmap(z=piv.to_numpy(float), x=xs, y=[str(v) for v in piv.index], text=text,
                             texttemplate="%{text}", colorscale=colorscale, zmid=zmid,
                             colorbar=dict(title=z, **(colorbar or {}))), row=row, col=col)
    fig.update_xaxes(type="category", row=row, col=col)
    fig.update_yaxes(type="category", row=row, col=col)


def write_page(path: Path, title: str, parts: list) -> Path:
    """One self-contained HTML page of headings, paragraphs, tables (str) and plotly figures; plotly.js
    inlined once (the first figure), so the page opens offline. Written atomically."""
    body, js = [], True
    for p in parts:
        if isinstance(p, str):
            body.append(p)
        else:
            body.append(p.to_html(full_html=False, include_plotlyjs=js))
            js = False
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
            f"<body><h1>{html.escape(title)}</h1>{''.join(body)}</body></html>")
    atomic_text(path, page)
    return Path(path)


def table_html(df, digits: int = 4) -> str:
    return df.to_html(index=False, float_format=lambda v: f"{v:.{digits}g}", na_rep="-")


# -- rebuilding a study's report from its tables: python -m automl.report DIR [--screenshot PNG] ------------
# (an experiment's folder, with experiment.json: automl/study_reports.py rebuild_experiment_report)

def rebuild_report(folder: str | Path) -> Path:
    """report.html of a study folder again, from what it recorded alone: study.json, trials.csv and, when
    the delivered model was timed (--measure), final/ or best/measured.json. The verdict is recomputed by
    the same rule finalize used. No search, solver or Ray is needed."""
    import json

    from searchers.cost.delivered import MEASURED
    from searchers.errors import UsageError

    from .results import TrialsTable
    from .study import StudyConfig

    folder = Path(folder)
    missing = [name for name in ("study.json", "trials.csv") if not (folder / name).is_file()]
    if missing:
        raise UsageError(f"{folder} is not a study folder: no {' or '.join(missing)} (studies/tune_lambda.py --out "
                         f"DIR writes them), nor an experiment's (no experiment.json: compare_solvers.py, "
                         f"fidelity_grid.py and variance.py write one)")
    try:
        # a recorded study: its data need not be on this machine, nor its cores
        config = StudyConfig.from_json(json.loads((folder / "study.json").read_text()), check_environment=False)
    except (ValueError, TypeError) as err:   # UsageError too: a study.json its checks refuse
        raise UsageError(f"{folder}/study.json: cannot read the study ({str(err).splitlines()[0]})") from None
    table = TrialsTable(folder / "trials.csv", config.space().names)
    timed = [folder / sub / MEASURED for sub in ("final", "best") if (folder / sub / MEASURED).is_file()]
    measured = json.loads(timed[0].read_text())["lines"] if timed else None
    return write_report(folder / "report.html", table, config, measured=measured)


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    from searchers.errors import UsageError

    p = argparse.ArgumentParser(prog="python -m automl.report",
                                description="rebuild DIR/report.html from a study's or an experiment's tables; "
                                            "optionally a PNG of its top with headless Chromium")
    p.add_argument("dir", help="a study folder (study.json, trials.csv), e.g. runs/tune-lambda/latest, or an "
                               "experiment's (experiment.json and its tables), e.g. results/cifar10-grid-s0")
    p.add_argument("--screenshot", metavar="PNG", help="also write a picture of the report's top here")
    p.add_argument("--window-size", default="1200,1600", metavar="W,H", help="screenshot size in pixels")
    args = p.parse_args(argv)
    try:
        if args.screenshot:   # a bad size or a missing browser is refused before the report is rewritten
            from .browser import find_chromium, screenshot, window_size

            width, height = window_size(args.window_size)
            find_chromium()
        if (Path(args.dir) / "experiment.json").is_file():
            from .study_reports import rebuild_experiment_report
            page = rebuild_experiment_report(args.dir)
        else:
            page = rebuild_report(args.dir)
        print(f"wrote {page}")
        if args.screenshot:
            print(f"wrote {screenshot(page, args.screenshot, width=width, height=height)}")
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
