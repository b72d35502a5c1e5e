"""The report's other Plotly figures: the fine-tuning curve, the pick's shape per layer,
and a load test's response time and throughput vs. users."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from nasprune.core.subnet import Subnet
from nasprune.errors import require
from nasprune.report.run import as_dict
from nasprune.report.text import compact


def finetune_figure(history: Sequence[Mapping[str, Any]], metric: str,
                    best: int | None) -> Any:
    """The task metric per epoch on the search and validation splits; ``best`` marked."""
    go = require("plotly.graph_objects", "report")
    epochs = [h.get("epoch", i + 1) for i, h in enumerate(history)]
    fig = go.Figure()
    search = [as_dict(h.get("search")).get(metric) for h in history]
    if any(v is not None for v in search):
        fig.add_trace(go.Scatter(x=epochs, y=search, mode="lines+markers",
                                 name=f"{metric} on the search split (chooses the epoch)"))
    fig.add_trace(go.Scatter(x=epochs, y=[h.get(metric) for h in history],
                             mode="lines+markers", name=f"{metric} on the validation split"))
    if best is not None:
        fig.add_vline(x=best, line_dash="dot", line_color="grey",
                      annotation_text=f"best epoch {best}", annotation_position="bottom left")
    fig.update_layout(title="Fine-tuning: the task metric per epoch", height=360,
                      xaxis={"title": "epoch", "dtick": 1}, yaxis={"title": metric},
                      legend={"orientation": "h", "y": -0.25}, margin={"t": 50, "b": 40})
    return fig


def shape_figure(subnet: Subnet, shape: Mapping[str, int]) -> Any:
    """Heads and FFN units kept per layer, each bar against the layer's total."""
    go = require("plotly.graph_objects", "report")
    subplots = require("plotly.subplots", "report")
    heads_total, units_total = shape.get("num_heads"), shape.get("ffn")
    layers = [f"layer {i}" for i in range(subnet.num_layers)]  # 0-based, as encoder.layer.i
    fig = subplots.make_subplots(rows=1, cols=2, subplot_titles=(
        f"attention heads kept (of {heads_total})", f"FFN units kept (of {units_total})"))
    for col, index, total, colour in ((1, 0, heads_total, "#2563eb"),
                                      (2, 1, units_total, "#16a34a")):
        kept = [layer[index] for layer in subnet.layers]
        fig.add_trace(go.Bar(x=layers, y=[total] * len(layers), name="total",
                             marker_color="#e5e7eb", showlegend=col == 1,
                             hoverinfo="skip"), row=1, col=col)
        fig.add_trace(go.Bar(x=layers, y=kept, name="kept", marker_color=colour,
                             text=[f"{k}/{total}" for k in kept], textposition="auto",
                             showlegend=col == 1,
                             hovertemplate="%{x}: %{y} of " + str(total) + "<extra></extra>"),
                      row=1, col=col)
    fig.update_layout(barmode="overlay", height=340, margin={"t": 60},
                      title={"text": f"{compact(subnet)}  ({subnet.kept_layers} of "
                                     f"{subnet.num_layers} layers kept)", "x": 0.01})
    return fig


def loadtest_figure(summary: Mapping[str, Any]) -> Any:
    """Response time (p50, p95, the SLO) and throughput vs. users, one colour per target."""
    go = require("plotly.graph_objects", "report")
    subplots = require("plotly.subplots", "report")
    fig = subplots.make_subplots(rows=1, cols=2, subplot_titles=(
        "response time vs. users", "throughput vs. users"))
    palette = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c")
    users_all: set[int] = set()
    for i, (name, target) in enumerate(summary["targets"].items()):
        steps = [s for s in target.get("steps") or () if isinstance(s, dict)]
        users = [s.get("users") for s in steps]
        users_all.update(u for u in users if isinstance(u, int))
        colour = palette[i % len(palette)]
        for q, dash in (("p50_ms", "solid"), ("p95_ms", "dash")):
            fig.add_trace(go.Scatter(x=users, y=[s.get(q) for s in steps], mode="lines+markers",
                                     name=f"{name} {q[:3]}", line={"color": colour, "dash": dash},
                                     legendgroup=name), row=1, col=1)
        fig.add_trace(go.Scatter(x=users, y=[s.get("ok_rps") for s in steps],
                                 mode="lines+markers", name=f"{name} req/s",
                                 line={"color": colour}, legendgroup=name), row=1, col=2)
        saturated = target.get("saturation_users")
        if saturated is not None:
            for col in (1, 2):
                fig.add_vline(x=saturated, line_dash="dot", line_color=colour, row=1, col=col)
    slo = as_dict(summary.get("config")).get("slo_ms")
    ticks = sorted(users_all)
    if slo and ticks:
        fig.add_trace(go.Scatter(x=[ticks[0], ticks[-1]], y=[slo, slo], mode="lines",
                                 name=f"SLO {slo:g} ms (p95)", hoverinfo="name",
                                 line={"color": "grey", "dash": "dashdot", "width": 1}),
                      row=1, col=1)
    for col in (1, 2):
        fig.update_xaxes(title_text="concurrent users", tickmode="array", tickvals=ticks,
                         row=1, col=col)
    fig.update_yaxes(title_text="response time (ms)", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="successful requests / s", rangemode="tozero", row=1, col=2)
    fig.update_layout(height=380, margin={"t": 50}, legend={"orientation": "h", "y": -0.25})
    return fig
