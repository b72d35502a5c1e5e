"""The report's interactive Pareto plot: every sub-network with its hover card, the front,
the unpruned model and the pick, and buttons that switch the x axis between costs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from nasprune.errors import NaspruneError, require
from nasprune.report.markup import pct
from nasprune.report.run import RunContents, run_title
from nasprune.report.text import compact, human
from nasprune.search.pareto import front_of
from nasprune.search.store import Trial

#: x axes of the Pareto plot: key, metric, axis title, relative to the unpruned model.
_X_AXES = (
    ("encoder", "encoder_params", "encoder parameters (% of the unpruned encoder)", True),
    ("params", "params", "total parameters", False),
    ("flops", "flops", "FLOPs per sequence", False),
    ("latency", "latency", "latency (ms)", False),
)
_X_BUTTONS = {"encoder": "encoder params (%)", "params": "total params", "flops": "FLOPs",
              "latency": "latency"}


def _hover(run: RunContents, trial: Trial, role: str | None = None) -> str:
    m, full = trial.metrics, run.full
    lines = [f"<b>trial #{trial.id}</b>" + (f" · {role}" if role else ""),
             f"shape: {compact(trial.subnet)}",
             f"layers kept: {trial.subnet.kept_layers}/{trial.subnet.num_layers}"]
    if "metric" in m:
        lines.append(f"{run.metric} ({run.split} split): {m['metric']:.4f}")
    else:
        lines.append(f"error ({run.split} split): {m.get('error', float('nan')):.4f}")
    validation = None
    if run.pick is not None and trial.id == run.pick.id and run.pick_exported:
        validation = run.exported_validation()
    elif run.full_trial is not None and trial.id == run.full_trial.id:
        validation = run.unpruned_validation()
    if validation is not None:
        lines.append(f"{run.metric} (validation): {validation:.4f}")
    for key, label in (("encoder_params", "encoder params"), ("params", "total params"),
                       ("flops", "FLOPs")):
        if key in m:
            lines.append(f"{label}: {human(m[key])} ({pct(m[key], full.get(key))})")
    if "latency" in m:
        lines.append(f"latency: {m['latency']:.2f} ms ({pct(m['latency'], full.get('latency'))})")
    return "<br>".join(lines)


def pareto_figure(run: RunContents) -> tuple[Any, list[Trial]]:
    """The interactive Pareto plot and its front (of the search's objectives)."""
    go = require("plotly.graph_objects", "report")
    trials, full = run.trials, run.full
    objectives = tuple(run.meta.get("objectives") or ("error", "params"))
    objectives = tuple(o for o in objectives if all(o in t.metrics for t in trials)) or \
        ("error", "params")
    front = front_of(trials, objectives, full)
    use_metric = all("metric" in t.metrics for t in trials)
    y_key = "metric" if use_metric else "error"
    y_title = f"{run.metric if use_metric else 'error'} on the {run.split} split"

    axes = []
    for key, metric, title, relative in _X_AXES:
        if not any(metric in t.metrics for t in trials):
            continue
        if relative and not full.get(metric):
            continue
        axes.append((key, metric, title, relative))

    def xs(items: Sequence[Trial], metric: str, relative: bool) -> list[float | None]:
        scale = 100.0 / full[metric] if relative else 1.0
        return [t.metrics[metric] * scale if metric in t.metrics else None for t in items]

    def ordered(metric: str) -> list[Trial]:
        return sorted(front, key=lambda t: (t.metrics.get(metric, float("inf")),
                                            -t.metrics.get(y_key, 0.0)))

    if not axes:
        raise NaspruneError("the search measured none of encoder_params, params, flops, "
                            "latency: nothing to put on the Pareto plot's x axis")
    key0, metric0, title0, rel0 = axes[0]
    others = [t for t in trials if t not in front]
    marked = [t for t in (run.full_trial, run.pick) if t is not None]
    fig = go.Figure()
    fig.add_trace(go.Scatter(
        x=xs(others, metric0, rel0), y=[t.metrics[y_key] for t in others], mode="markers",
        name=f"other sub-networks ({len(others)})", hoverinfo="text",
        hovertext=[_hover(run, t) for t in others], customdata=[t.id for t in others],
        marker={"size": 7, "color": "rgba(100,116,139,0.45)"}))
    first = ordered(metric0)
    fig.add_trace(go.Scatter(
        x=xs(first, metric0, rel0), y=[t.metrics[y_key] for t in first],
        mode="lines+markers", line={"shape": "hv", "width": 2},
        name=f"Pareto front ({len(front)}: {', '.join(objectives)})", hoverinfo="text",
        hovertext=[_hover(run, t, "on the Pareto front") for t in first],
        customdata=[t.id for t in first],
        marker={"size": 10, "color": "#2563eb", "line": {"width": 1, "color": "black"}}))
    if run.full_trial is not None:
        t = run.full_trial
        fig.add_trace(go.Scatter(
            x=xs([t], metric0, rel0), y=[t.metrics[y_key]], mode="markers",
            name="unpruned model", hoverinfo="text", customdata=[t.id],
            hovertext=[_hover(run, t, "unpruned model")],
            marker={"symbol": "star", "size": 18, "color": "crimson",
                    "line": {"width": 1, "color": "black"}}))
    annotations = []
    if run.pick is not None:
        t = run.pick
        label = (f"pick {run.pick_rule!r}: trial {t.id}" if run.pick_rule
                 else f"pick: trial {t.id}")
        fig.add_trace(go.Scatter(
            x=xs([t], metric0, rel0), y=[t.metrics[y_key]], mode="markers",
            name=label + (" (exported)" if run.pick_exported else ""), hoverinfo="text",
            customdata=[t.id], hovertext=[_hover(run, t, "the pick")],
            marker={"symbol": "diamond", "size": 16, "color": "gold",
                    "line": {"width": 2, "color": "black"}}))
        annotations.append({"x": xs([t], metric0, rel0)[0], "y": t.metrics[y_key],
                            "text": f"{label}<br>{compact(t.subnet)}", "showarrow": True,
                            "arrowhead": 2, "ax": 40, "ay": -40,
                            "bgcolor": "rgba(255,255,255,0.85)", "bordercolor": "#999",
                            "font": {"size": 11}})

    def x_axis(title: str, relative: bool, metric: str) -> dict:
        if relative:
            return {"title": {"text": title}, "ticksuffix": "%", "tickformat": ".0f"}
        return {"title": {"text": title}, "ticksuffix": " ms" if metric == "latency" else "",
                "tickformat": ".2f" if metric == "latency" else "~s"}

    buttons = []
    for key, metric, title, relative in axes:
        front_now = ordered(metric)
        data: dict[str, list] = {
            "x": [xs(others, metric, relative), xs(front_now, metric, relative)]
            + [xs([t], metric, relative) for t in marked],
            "y": [[t.metrics[y_key] for t in others], [t.metrics[y_key] for t in front_now]]
            + [[t.metrics[y_key]] for t in marked],
            "hovertext": [[_hover(run, t) for t in others],
                          [_hover(run, t, "on the Pareto front") for t in front_now]]
            + [fig.data[2 + i].hovertext for i in range(len(marked))],
            "customdata": [[t.id for t in others], [t.id for t in front_now]]
            + [[t.id] for t in marked],
        }
        layout = {f"xaxis.{k}": v for k, v in _flat(x_axis(title, relative, metric)).items()}
        if annotations:
            layout["annotations[0].x"] = xs([run.pick], metric, relative)[0]
        buttons.append({"label": _X_BUTTONS[key], "method": "update", "args": [data, layout]})
    heading = run_title(run.path, run.config)
    fig.update_layout(
        title={"text": (f"{heading}: " if heading else "") + f"{len(trials)} sub-networks, "
               f"{len(front)} on the Pareto front", "x": 0.01},
        xaxis=x_axis(title0, rel0, metric0), yaxis={"title": {"text": y_title}},
        annotations=annotations, height=520, hovermode="closest",
        legend={"orientation": "h", "y": -0.18}, margin={"t": 90},
        updatemenus=[{"type": "buttons", "direction": "right", "x": 0.0, "xanchor": "left",
                      "y": 1.13, "yanchor": "top", "buttons": buttons, "showactive": True,
                      "pad": {"r": 4, "t": 2}}] if len(buttons) > 1 else [],
    )
    return fig, front


def _flat(value: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in value.items():
        if isinstance(v, Mapping):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
