"""Self-contained HTML report of a study (plotly.js inlined, so it opens offline)."""
from __future__ import annotations

import html
import os
from pathlib import Path

import numpy as np


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


def write_report(path: Path, table, config) -> Path:
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
    best = table.best(config.fidelity)
    summary = "<p>No successful trial.</p>" if best is None else (
        f"<p><b>Best trial {best.trial_id}</b>: {html.escape(str(best.params))}, val acc {best.val_acc:.4f}, "
        f"test acc {best.test_acc:.4f}, runtime {best.runtime_ms if best.runtime_ms is not None else '-'} ms, "
        f"{(best.flops or 0) / 1e6:.2f} MFLOPs, reward {best.reward:.4f}<br><code>{html.escape(best.arch)}</code></p>")
    body = fig.to_html(full_html=False, include_plotlyjs=True)
    table_html = df.drop(columns=["result_dir"]).to_html(index=False, float_format=lambda v: f"{v:.4g}")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>study report</title></head><body>"
            f"<h1>{html.escape(fig.layout.title.text)}</h1>{summary}{body}<h2>Trials</h2>{table_html}</body></html>")
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(page)
    os.replace(tmp, path)
    return path


def _is_log(config, name: str) -> bool:
    space = {p.name: p for p in config.space().params}
    return name in space and space[name].log
