"""Self-contained HTML report of a study (plotly.js inlined, so it opens offline)."""
from __future__ import annotations

import html
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


def write_report(path: Path, table, config, verdict=None) -> Path:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    df = table.frame()
    ok = df[df["status"] == "ok"].copy()
    metric = "runtime_ms" if config.target_metric == "runtime_ms" else "mflops"
    if metric == "mflops":
        ok["mflops"] = ok["flops"].astype(float) / 1e6
    unit = "ms" if metric == "runtime_ms" else "MFLOPs"
    pname = table.param_names[0] if table.param_names else None
    fig = make_subplots(rows=2, cols=2, subplot_titles=(
        "best reward (Eq. 19) vs cumulative search epochs", f"{pname} vs {unit}",
        f"{pname} vs validation accuracy", f"accuracy vs {unit} (Pareto front)"))
    if len(df):
        x, y = best_so_far_curve(df)
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name="best reward", line_shape="hv"), 1, 1)
    if len(ok) and pname:
        hover = ok["arch"].map(lambda a: html.escape(str(a))[:200])
        fig.add_trace(go.Scatter(x=ok[pname], y=ok[metric], mode="markers", name=unit, text=hover,
                                 marker=dict(color=ok["fidelity"], colorscale="Viridis", showscale=False)), 1, 2)
        fig.add_hline(y=config.target, line_dash="dash", annotation_text="target", row=1, col=2)
        fig.add_trace(go.Scatter(x=ok[pname], y=ok["val_acc"], mode="markers", name="val acc", text=hover), 2, 1)
        fig.update_xaxes(type="log" if _is_log(config, pname) else "linear", row=1, col=2)
        fig.update_xaxes(type="log" if _is_log(config, pname) else "linear", row=2, col=1)
        cost, acc = ok[metric].to_numpy(float), ok["val_acc"].to_numpy(float)
        fig.add_trace(go.Scatter(x=cost, y=acc, mode="markers", name="trials", text=hover), 2, 2)
        f = pareto_front(cost, acc)
        fig.add_trace(go.Scatter(x=cost[f], y=acc[f], mode="lines+markers", name="Pareto front",
                                 line_shape="hv"), 2, 2)
        fig.add_vline(x=config.target, line_dash="dash", annotation_text="target", row=2, col=2)
    fig.update_layout(height=900, title=f"{config.searcher} tuned by {config.solver} toward {config.target_obj}",
                      showlegend=False)
    best = table.best(config.fidelity, config.target, lambda r: config.target_obj.measure(r.runtime_ms, r.flops))
    summary = "<p>No successful trial.</p>" if best is None else (
        f"<p><b>Delivered trial {best.trial_id}</b>: {html.escape(str(best.params))}, val acc {best.val_acc:.4f}, "
        f"test acc {best.test_acc:.4f}, runtime {best.runtime_ms if best.runtime_ms is not None else '-'} ms, "
        f"{(best.flops or 0) / 1e6:.2f} MFLOPs, reward {best.reward:.4f}<br><code>{html.escape(best.arch)}</code></p>")
    if verdict is None:
        from .verdict import make_verdict
        verdict = make_verdict(table, config, best)
    body = fig.to_html(full_html=False, include_plotlyjs=True)
    table_html = df.drop(columns=["result_dir", "val_correct"], errors="ignore").to_html(
        index=False, float_format=lambda v: f"{v:.4g}")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>study report</title></head><body>"
            f"<h1>{html.escape(fig.layout.title.text)}</h1>{verdict_html(verdict)}{summary}{body}<h2>Trials</h2>{table_html}</body></html>")
    atomic_text(path, page)
    return path


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
