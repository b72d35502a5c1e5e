"""``nasprune report RUN``: one self-contained HTML page about a run directory.

The page opens without a network (Plotly's JavaScript is inlined once, in the head) and
shows what the run directory holds, each part left out with a short note when its stage
has not run yet:

- the run's configuration (``RUN/config.json``);
- the fine-tuning curve: the task metric on the search and validation splits per epoch
  (``RUN/finetune/metrics.json``);
- the Pareto front of the search (``RUN/search/trials.db``), interactive: hover shows each
  sub-network's shape, its metric on the search split (and on validation where measured:
  the unpruned model and the exported pick), size, FLOPs and latency; the x axis switches
  between encoder parameters (% of the unpruned encoder), total parameters, FLOPs and
  latency;
- the pick's shape per layer (heads and FFN units kept of the total);
- the export's before/after table, every row naming its split (``RUN/summary.json``,
  ``RUN/export/{metrics,recovery,subnet}.json``);
- load tests written inside the run directory (``nasprune loadtest --out RUN/...``: any
  ``summary.json`` with ``targets``): response time and throughput vs. users.

Plotly is an optional dependency (``pip install 'nasprune[report]'``), imported only here.
"""

from __future__ import annotations

import html
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nasprune.core.subnet import Subnet
from nasprune.errors import NaspruneError, require
from nasprune.report.plots import compact, run_config, run_title
from nasprune.search.pareto import front_of, full_reference
from nasprune.search.store import STORE_RELPATH, Trial, TrialStore

#: Default file name inside the run directory.
REPORT_NAME = "report.html"

#: What makes a folder a run directory (any one of these).
_MARKERS = ("config.json", "summary.json", "finetune/metrics.json", str(STORE_RELPATH))

#: x axes of the Pareto plot: key, metric, axis title, relative to the unpruned model.
_X_AXES = (
    ("encoder", "encoder_params", "encoder parameters (% of the unpruned encoder)", True),
    ("params", "params", "total parameters", False),
    ("flops", "flops", "FLOPs per sequence", False),
    ("latency", "latency", "latency (ms)", False),
)
_X_BUTTONS = {"encoder": "encoder params (%)", "params": "total params", "flops": "FLOPs",
              "latency": "latency"}

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0;
       color: #1d2330; background: #f6f7f9; }
header { background: #1d2330; color: #fff; padding: 18px 32px; }
header h1 { margin: 0 0 4px 0; font-size: 22px; }
header p { margin: 0; opacity: .8; font-size: 13px; }
main { max-width: 1100px; margin: 0 auto; padding: 8px 24px 40px 24px; }
section { background: #fff; border: 1px solid #e1e4ea; border-radius: 8px; margin: 18px 0;
          padding: 14px 20px; }
h2 { font-size: 17px; margin: 4px 0 10px 0; }
p.note { color: #6b7280; font-style: italic; margin: 6px 0; }
table { border-collapse: collapse; font-size: 13px; margin: 6px 0; }
th, td { border-bottom: 1px solid #e5e7eb; padding: 4px 10px; text-align: left; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f3f4f6; }
details pre { background: #f3f4f6; padding: 10px; overflow: auto; font-size: 12px; }
code { background: #f3f4f6; padding: 1px 4px; border-radius: 3px; }
"""


# --------------------------------------------------------------------------- reading


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def check_run_dir(run_dir: str | Path) -> Path:
    """The run directory as a path, or a ``NaspruneError`` naming what is missing."""
    path = Path(run_dir)
    if not path.is_dir():
        raise NaspruneError(f"{run_dir} is not a directory: give a run directory "
                            "(the --run-dir of nasprune run)")
    if not any((path / marker).exists() for marker in _MARKERS):
        raise NaspruneError(f"{run_dir} is not a run directory: it has none of "
                            f"{', '.join(_MARKERS)}")
    return path


class _Run:
    """What the report reads from a run directory (each part None when absent)."""

    def __init__(self, path: Path):
        self.path = path
        self.config = run_config(path)
        self.summary = _dict(_read_json(path / "summary.json"))
        self.finetune = _dict(_read_json(path / "finetune" / "metrics.json"))
        self.export = _dict(_read_json(path / "export" / "metrics.json"))
        self.export_subnet = _dict(_read_json(path / "export" / "subnet.json"))
        self.recovery = _dict(_read_json(path / "export" / "recovery.json"))
        self.trials: list[Trial] = []
        self.meta: dict[str, Any] = {}
        self.full: dict[str, float] = {}
        self.full_trial: Trial | None = None
        if (path / STORE_RELPATH).is_file():
            with TrialStore.open_existing(path) as store:
                self.trials = [t for t in store.trials() if t.is_full_fidelity]
                self.meta = store.meta()
                full_subnet = store.full_subnet()
            if self.trials:
                self.full = full_reference(self.trials, full_subnet)
                self.full_trial = next((t for t in self.trials if t.subnet == full_subnet),
                                       max(self.trials, key=lambda t: t.get("params", 0.0)))
        self.metric = (self.summary.get("metric") or self.finetune.get("metric")
                       or self.export.get("task_metric") or "metric")
        self.split = self.meta.get("split") or self.summary.get("split") or "search"
        self.pick, self.pick_exported = self._pick()

    def _pick(self) -> tuple[Trial | None, bool]:
        """The exported sub-network's trial (True), else the summary's pick (False)."""
        layers = self.export_subnet.get("layers")
        if layers:
            subnet = Subnet(tuple(tuple(layer) for layer in layers))
            for t in self.trials:
                if t.subnet == subnet:
                    return t, True
        picked = _dict(self.summary.get("pick"))
        for t in self.trials:
            if t.id == picked.get("id"):
                return t, False
        return None, False

    @property
    def pick_rule(self) -> str | None:
        return self.summary.get("pick_rule") or self.config.get("pick")

    def unpruned_validation(self) -> float | None:
        value = _dict(self.summary.get("unpruned")).get("validation")
        if value is None:
            value = _dict(self.finetune.get("best")).get(self.metric)
        return value

    def exported_validation(self) -> float | None:
        value = _dict(_dict(self.export.get("validation")).get("float")).get(self.metric)
        if value is None:
            value = _dict(self.summary.get("exported")).get("validation")
        return value

    def shape(self) -> dict[str, int]:
        return _dict(self.meta.get("shape")) or _dict(self.export_subnet.get("shape"))


# --------------------------------------------------------------------------- formatting


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _human(n: float | None) -> str:
    if n is None:
        return ""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


def _num(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "" if value is None else _esc(value)
    return f"{value:.{digits}f}"


def _pct(value: float | None, whole: float | None) -> str:
    return f"{100 * value / whole:.0f}%" if value is not None and whole else ""


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]], numeric_from: int = 1) -> str:
    cells = "".join(f"<th{' class=num' if i >= numeric_from else ''}>{_esc(h)}</th>"
                    for i, h in enumerate(head))
    body = []
    for row in rows:
        body.append("<tr>" + "".join(
            f"<td{' class=num' if i >= numeric_from else ''}>{_esc(c)}</td>"
            for i, c in enumerate(row)) + "</tr>")
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="section-{anchor}"><h2>{_esc(title)}</h2>{body}</section>'


def _note(text: str) -> str:
    return f'<p class="note">{_esc(text)}</p>'


def _figure_html(fig: Any, div_id: str) -> str:
    pio = require("plotly.io", "report")
    height = fig.layout.height or 450
    return pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=div_id,
                       default_height=f"{height}px",
                       config={"displaylogo": False, "responsive": True})


# --------------------------------------------------------------------------- sections


def _config_section(run: _Run) -> str:
    cfg = run.config
    if not cfg:
        return _section("config", "Configuration",
                        _note("no config.json: this run was not made by nasprune run"))
    data, train, search = (_dict(cfg.get(k)) for k in ("data", "train", "search"))
    facts = [
        ("model", cfg.get("model")),
        ("task", data.get("task")),
        ("training examples", data.get("max_train_examples") or "all"),
        ("epochs / batch size / learning rate",
         f"{train.get('epochs')} / {train.get('batch_size')} / {train.get('learning_rate')}"),
        ("super-network strategy", train.get("strategy")),
        ("search space / searcher / trials",
         f"{search.get('space')} / {search.get('searcher')} / {search.get('trials')}"),
        ("objectives", ", ".join(search.get("objectives") or ())),
        ("pick rule", cfg.get("pick")),
        ("recovery", f"{cfg.get('recover')} ({cfg.get('recover_epochs')} epochs)"
         if cfg.get("recover") else "none"),
        ("export formats", ", ".join(cfg.get("export_formats") or ())
         + (f" + {cfg['quantize']}" if cfg.get("quantize") else "")),
    ]
    body = _table(("setting", "value"), [(k, "" if v is None else v) for k, v in facts],
                  numeric_from=9)
    body += ("<details><summary>config.json</summary><pre>"
             + _esc(json.dumps(cfg, indent=2, default=str)) + "</pre></details>")
    return _section("config", "Configuration", body)


def _finetune_section(run: _Run) -> str:
    history = [h for h in run.finetune.get("history") or () if isinstance(h, dict)]
    if not history:
        return _section("finetune", "Fine-tuning",
                        _note("no fine-tuning history yet (finetune/metrics.json)"))
    go = require("plotly.graph_objects", "report")
    metric = run.finetune.get("metric") or run.metric
    epochs = [h.get("epoch", i + 1) for i, h in enumerate(history)]
    fig = go.Figure()
    search = [_dict(h.get("search")).get(metric) for h in history]
    if any(v is not None for v in search):
        fig.add_trace(go.Scatter(x=epochs, y=search, mode="lines+markers",
                                 name=f"{metric} on the search split (chooses the epoch)"))
    fig.add_trace(go.Scatter(x=epochs, y=[h.get(metric) for h in history],
                             mode="lines+markers", name=f"{metric} on the validation split"))
    best = _dict(run.finetune.get("best")).get("epoch")
    if best is not None:
        fig.add_vline(x=best, line_dash="dot", line_color="grey",
                      annotation_text=f"best epoch {best}", annotation_position="bottom left")
    fig.update_layout(title="Fine-tuning: the task metric per epoch", height=360,
                      xaxis={"title": "epoch", "dtick": 1}, yaxis={"title": metric},
                      legend={"orientation": "h", "y": -0.25}, margin={"t": 50, "b": 40})
    facts = []
    for key, label in (("train_examples", "training examples"),
                       ("search_examples", "search-split examples"),
                       ("validation_examples", "validation examples"),
                       ("train_seconds", "training time (s)"), ("device", "device")):
        if key in run.finetune:
            value = run.finetune[key]
            shown = round(value, 1) if isinstance(value, float) else value
            facts.append(f"{label}: <b>{_esc(shown)}</b>")
    return _section("finetune", "Fine-tuning",
                    _figure_html(fig, "finetune-curve") + "<p>" + " · ".join(facts) + "</p>")


def _hover(run: _Run, trial: Trial, role: str | None = None) -> str:
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
            lines.append(f"{label}: {_human(m[key])} ({_pct(m[key], full.get(key))})")
    if "latency" in m:
        lines.append(f"latency: {m['latency']:.2f} ms ({_pct(m['latency'], full.get('latency'))})")
    return "<br>".join(lines)


def pareto_figure(run: _Run) -> tuple[Any, list[Trial]]:
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


def _pareto_section(run: _Run) -> str:
    if not run.trials:
        return _section("pareto", "Pareto front", _note(
            "no search yet (search/trials.db holds no finished trials): run nasprune search"))
    fig, front = pareto_figure(run)
    note = (f"<p>Each dot is one evaluated sub-network, measured on the <b>{_esc(run.split)}"
            f"</b> split (held out of training); validation figures exist only for the "
            f"unpruned model and the exported pick. Buttons switch the x axis. Shapes read "
            f"<code>heads/units</code> per layer, <code>xN</code> for N identical layers."
            f"</p>")
    return _section("pareto", "Pareto front", _figure_html(fig, "pareto") + note
                    + f'<p data-front-size="{len(front)}">{len(front)} of {len(run.trials)} '
                    "sub-networks are Pareto-optimal.</p>")


def _shape_section(run: _Run) -> str:
    shape = run.shape()
    subnet = run.pick.subnet if run.pick is not None else None
    if subnet is None and run.export_subnet.get("layers"):
        subnet = Subnet(tuple(tuple(layer) for layer in run.export_subnet["layers"]))
    if subnet is None or not shape:
        return _section("shape", "The pick's shape", _note("no pick yet"))
    go = require("plotly.graph_objects", "report")
    subplots = require("plotly.subplots", "report")
    heads_total, units_total = shape.get("num_heads"), shape.get("ffn")
    layers = [f"layer {i + 1}" for i in range(subnet.num_layers)]
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
    return _section("shape", "The pick's shape", _figure_html(fig, "pick-shape"))


def _export_section(run: _Run) -> str:
    if not run.export and not run.summary.get("exported"):
        return _section("export", "Export: before and after",
                        _note("no export yet (export/metrics.json): run nasprune run or "
                              "nasprune export"))
    metric, split = run.metric, run.split
    pick = run.pick.metrics if run.pick is not None else _dict(run.export.get("search"))
    cost = _dict(run.export.get("cost"))
    full = run.full or _dict(run.summary.get("full"))
    after = _dict(run.recovery.get("after"))
    searched = _dict(after.get(split)).get(metric, pick.get("metric"))
    rows = [
        (f"{metric}", split, _num(full.get("metric")), _num(searched),
         _delta(full.get("metric"), searched)),
        (f"{metric}", "validation", _num(run.unpruned_validation()),
         _num(run.exported_validation()),
         _delta(run.unpruned_validation(), run.exported_validation())),
    ]
    for name, values in _dict(run.export.get("validation")).items():
        if name != "float" and isinstance(values, dict) and metric in values:
            rows.append((f"{metric} ({name})", "validation", "", _num(values[metric]),
                         _delta(run.exported_validation(), values[metric])))
    for key, label in (("params", "total parameters"), ("encoder_params", "encoder parameters"),
                       ("flops", "FLOPs per sequence")):
        value = cost.get(key, pick.get(key))
        if value is not None or full.get(key) is not None:
            rows.append((label, "—", _human(full.get(key)), _human(value),
                         _pct(value, full.get(key)) + " of unpruned" if full.get(key) else ""))
    if pick.get("latency") is not None:
        rows.append(("latency (ms)", "—", _num(full.get("latency"), 2),
                     _num(pick.get("latency"), 2), _pct(pick["latency"], full.get("latency"))
                     + " of unpruned" if full.get("latency") else ""))
    body = _table(("quantity", "split", "unpruned", "exported pick", "change"), rows,
                  numeric_from=2)
    if run.pick is not None:
        body += (f"<p>Pick {_esc(run.pick_rule or '')}: trial {run.pick.id}, "
                 f"<code>{_esc(run.pick.subnet)}</code></p>")
    before = _dict(run.recovery.get("before"))
    if before and after:
        method = _dict(run.recovery.get("config")).get("method") or \
            _dict(run.summary.get("recovery")).get("method") or "recovery"
        recovery_rows = [(metric, name, _num(_dict(before.get(name)).get(metric)),
                          _num(_dict(after.get(name)).get(metric)),
                          _delta(_dict(before.get(name)).get(metric),
                                 _dict(after.get(name)).get(metric)))
                         for name in (split, "validation") if name in before]
        body += f"<h3>Recovery of the pick ({_esc(method)})</h3>" + _table(
            ("quantity", "split", "before recovery", "after recovery", "change"),
            recovery_rows, numeric_from=2)
    return _section("export", "Export: before and after", body)


def _delta(a: Any, b: Any) -> str:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return f"{100 * (b - a):+.2f} points"
    return ""


def _loadtest_summaries(run_dir: Path) -> list[tuple[Path, dict]]:
    found = []
    for path in sorted(run_dir.rglob("summary.json")):
        if path == run_dir / "summary.json":
            continue
        data = _read_json(path)
        if isinstance(data, dict) and isinstance(data.get("targets"), dict) and data["targets"]:
            found.append((path, data))
    return found


def loadtest_figure(summary: Mapping[str, Any]) -> Any:
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
    slo = _dict(summary.get("config")).get("slo_ms")
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


def _loadtest_section(run: _Run, out: Path) -> str:
    found = _loadtest_summaries(run.path)
    if not found:
        return _section("loadtest", "Load tests", _note(
            "no load test in this run directory (run nasprune loadtest with --out inside it, "
            "e.g. --out RUN/loadtest)"))
    parts = []
    for i, (path, summary) in enumerate(found):
        where = path.parent.relative_to(run.path)
        parts.append(f"<h3>{_esc(where)}</h3>")
        parts.append(_figure_html(loadtest_figure(summary), f"loadtest-{i}"))
        rows = []
        for name, target in summary["targets"].items():
            saturated = target.get("saturation_users")
            rows.append((name, target.get("url", ""),
                         _num(target.get("max_ok_rps"), 1),
                         "not saturated" if saturated is None else f"{saturated} users"))
        parts.append(_table(("target", "url", "peak req/s", "saturation"), rows,
                            numeric_from=2))
        if summary.get("saturation_rule"):
            parts.append(f"<p>saturation: {_esc(summary['saturation_rule'])}</p>")
        links = []
        for name, file in _dict(_dict(summary.get("files")).get("locust_html")).items():
            target_file = path.parent / file
            if target_file.is_file():
                href = os.path.relpath(target_file, out.parent)
                links.append(f'<a href="{_esc(href)}">{_esc(name)}</a>')
        if links:
            parts.append("<p>Locust's own reports: " + ", ".join(links) + "</p>")
    return _section("loadtest", "Load tests", "".join(parts))


# --------------------------------------------------------------------------- the page


def build_report(run_dir: str | Path, out: str | Path | None = None) -> str:
    """The report's HTML text (``out`` only sets where relative links point from)."""
    path = check_run_dir(run_dir).resolve()
    offline = require("plotly.offline", "report")
    run = _Run(path)
    out_path = Path(out).resolve() if out is not None else path / REPORT_NAME
    heading = run_title(path, run.config) or path.name
    sections = [_config_section(run), _finetune_section(run), _pareto_section(run),
                _shape_section(run), _export_section(run), _loadtest_section(run, out_path)]
    from nasprune import __version__

    stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime())
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>nasprune report: {_esc(heading)}</title>"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<style>{_CSS}</style>"
        f"<script type=\"text/javascript\">{offline.get_plotlyjs()}</script>"
        "</head><body>"
        f"<header><h1>nasprune report: {_esc(heading)}</h1>"
        f"<p>{_esc(path)} · written {stamp} by nasprune {__version__}</p></header>"
        "<main>" + "".join(sections) + "</main></body></html>\n"
    )


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the run's HTML report (default ``RUN/report.html``) and return its path.

    Raises ``NaspruneError`` when ``run_dir`` is not a run directory or Plotly is missing.
    """
    text = build_report(run_dir, out)
    target = Path(out) if out is not None else Path(run_dir) / REPORT_NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, target)
    return target
