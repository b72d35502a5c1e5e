"""The report's sections, in page order; each says in a note what is missing when its
stage has not run yet."""

from __future__ import annotations

import json
import os
from pathlib import Path

from nasprune.core.subnet import Subnet
from nasprune.files import read_json_or_none
from nasprune.report.figures import finetune_figure, loadtest_figure, shape_figure
from nasprune.report.markup import delta, esc, figure_html, note, num, pct, section, table
from nasprune.report.pareto_figure import pareto_figure
from nasprune.report.run import RunContents, as_dict
from nasprune.report.text import human


def page_sections(run: RunContents, out: Path) -> list[str]:
    """Every section's HTML, in page order (``out``: where the page's links point from)."""
    return [_config_section(run), _finetune_section(run), _pareto_section(run),
            _shape_section(run), _export_section(run), _loadtest_section(run, out)]


def _config_section(run: RunContents) -> str:
    cfg = run.config
    if not cfg:
        return section("config", "Configuration",
                       note("no config.json: this run was not made by nasprune run"))
    data, train, search = (as_dict(cfg.get(k)) for k in ("data", "train", "search"))
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
        ("recovery", f"{cfg.get('recover')} ({cfg.get('recover_epochs')} epochs"
         f"{', scaled to the pick' if cfg.get('recover_scaled') else ''})"
         if cfg.get("recover") else "none"),
        ("export formats", ", ".join(cfg.get("export_formats") or ())
         + (f" + {cfg['quantize']}" if cfg.get("quantize") else "")),
    ]
    body = table(("setting", "value"), [(k, "" if v is None else v) for k, v in facts],
                 numeric_from=9)
    body += ("<details><summary>config.json</summary><pre>"
             + esc(json.dumps(cfg, indent=2, default=str)) + "</pre></details>")
    return section("config", "Configuration", body)


def _finetune_section(run: RunContents) -> str:
    history = [h for h in run.finetune.get("history") or () if isinstance(h, dict)]
    if not history:
        return section("finetune", "Fine-tuning",
                       note("no fine-tuning history yet (finetune/metrics.json)"))
    metric = run.finetune.get("metric") or run.metric
    fig = finetune_figure(history, metric, as_dict(run.finetune.get("best")).get("epoch"))
    facts = []
    for key, label in (("train_examples", "training examples"),
                       ("search_examples", "search-split examples"),
                       ("validation_examples", "validation examples"),
                       ("train_seconds", "training time (s)"), ("device", "device")):
        if key in run.finetune:
            value = run.finetune[key]
            shown = round(value, 1) if isinstance(value, float) else value
            facts.append(f"{label}: <b>{esc(shown)}</b>")
    return section("finetune", "Fine-tuning",
                   figure_html(fig, "finetune-curve") + "<p>" + " · ".join(facts) + "</p>")


def _pareto_section(run: RunContents) -> str:
    if not run.trials:
        return section("pareto", "Pareto front", note(
            "no search yet (search/trials.db holds no finished trials): run nasprune search"))
    fig, front = pareto_figure(run)
    explained = (f"<p>Each dot is one evaluated sub-network, measured on the <b>"
                 f"{esc(run.split)}</b> split (held out of training); validation figures "
                 f"exist only for the unpruned model and the exported pick. Buttons switch "
                 f"the x axis. Shapes read <code>heads/units</code> per layer, <code>xN</code> "
                 f"for N identical layers.</p>")
    return section("pareto", "Pareto front", figure_html(fig, "pareto") + explained
                   + f'<p data-front-size="{len(front)}">{len(front)} of {len(run.trials)} '
                   "sub-networks are Pareto-optimal.</p>")


def _shape_section(run: RunContents) -> str:
    shape = run.shape()
    subnet = run.pick.subnet if run.pick is not None else None
    if subnet is None and run.export_subnet.get("layers"):
        subnet = Subnet(tuple(tuple(layer) for layer in run.export_subnet["layers"]))
    if subnet is None or not shape:
        return section("shape", "The pick's shape", note("no pick yet"))
    return section("shape", "The pick's shape",
                   figure_html(shape_figure(subnet, shape), "pick-shape"))


def _export_section(run: RunContents) -> str:
    if not run.export and not run.summary.get("exported"):
        return section("export", "Export: before and after",
                       note("no export yet (export/metrics.json): run nasprune run or "
                            "nasprune export"))
    metric, split = run.metric, run.split
    pick = run.pick.metrics if run.pick is not None else as_dict(run.export.get("search"))
    cost = as_dict(run.export.get("cost"))
    full = run.full or as_dict(run.summary.get("full"))
    after = as_dict(run.recovery.get("after"))
    searched = as_dict(after.get(split)).get(metric, pick.get("metric"))
    rows = [
        (f"{metric}", split, num(full.get("metric")), num(searched),
         delta(full.get("metric"), searched)),
        (f"{metric}", "validation", num(run.unpruned_validation()),
         num(run.exported_validation()),
         delta(run.unpruned_validation(), run.exported_validation())),
    ]
    for name, values in as_dict(run.export.get("validation")).items():
        if name != "float" and isinstance(values, dict) and metric in values:
            rows.append((f"{metric} ({name})", "validation", "", num(values[metric]),
                         delta(run.exported_validation(), values[metric])))
    for key, label in (("params", "total parameters"), ("encoder_params", "encoder parameters"),
                       ("flops", "FLOPs per sequence")):
        value = cost.get(key, pick.get(key))
        if value is not None or full.get(key) is not None:
            rows.append((label, "—", human(full.get(key)), human(value),
                         pct(value, full.get(key)) + " of unpruned" if full.get(key) else ""))
    if pick.get("latency") is not None:
        rows.append(("latency (ms)", "—", num(full.get("latency"), 2),
                     num(pick.get("latency"), 2), pct(pick["latency"], full.get("latency"))
                     + " of unpruned" if full.get("latency") else ""))
    body = table(("quantity", "split", "unpruned", "exported pick", "change"), rows,
                 numeric_from=2)
    if run.pick is not None:
        body += (f"<p>Pick {esc(run.pick_rule or '')}: trial {run.pick.id}, "
                 f"<code>{esc(run.pick.subnet)}</code></p>")
    before = as_dict(run.recovery.get("before"))
    if before and after:
        method = as_dict(run.recovery.get("config")).get("method") or \
            as_dict(run.summary.get("recovery")).get("method") or "recovery"
        recovery_rows = [(metric, name, num(as_dict(before.get(name)).get(metric)),
                          num(as_dict(after.get(name)).get(metric)),
                          delta(as_dict(before.get(name)).get(metric),
                                as_dict(after.get(name)).get(metric)))
                         for name in (split, "validation") if name in before]
        body += f"<h3>Recovery of the pick ({esc(method)})</h3>" + table(
            ("quantity", "split", "before recovery", "after recovery", "change"),
            recovery_rows, numeric_from=2)
    return section("export", "Export: before and after", body)


def _loadtest_summaries(run_dir: Path) -> list[tuple[Path, dict]]:
    found = []
    for path in sorted(run_dir.rglob("summary.json")):
        if path == run_dir / "summary.json":
            continue
        data = read_json_or_none(path)
        if isinstance(data, dict) and isinstance(data.get("targets"), dict) and data["targets"]:
            found.append((path, data))
    return found


def _loadtest_section(run: RunContents, out: Path) -> str:
    found = _loadtest_summaries(run.path)
    if not found:
        return section("loadtest", "Load tests", note(
            "no load test in this run directory (run nasprune loadtest with --out inside it, "
            "e.g. --out RUN/loadtest)"))
    parts = []
    for i, (path, summary) in enumerate(found):
        where = path.parent.relative_to(run.path)
        parts.append(f"<h3>{esc(where)}</h3>")
        parts.append(figure_html(loadtest_figure(summary), f"loadtest-{i}"))
        rows = []
        for name, target in summary["targets"].items():
            saturated = target.get("saturation_users")
            rows.append((name, target.get("url", ""),
                         num(target.get("max_ok_rps"), 1),
                         "not saturated" if saturated is None else f"{saturated} users"))
        parts.append(table(("target", "url", "peak req/s", "saturation"), rows,
                           numeric_from=2))
        if summary.get("saturation_rule"):
            parts.append(f"<p>saturation: {esc(summary['saturation_rule'])}</p>")
        links = []
        for name, file in as_dict(as_dict(summary.get("files")).get("locust_html")).items():
            target_file = path.parent / file
            if target_file.is_file():
                href = os.path.relpath(target_file, out.parent)
                links.append(f'<a href="{esc(href)}">{esc(name)}</a>')
        if links:
            parts.append("<p>Locust's own reports: " + ", ".join(links) + "</p>")
    return section("loadtest", "Load tests", "".join(parts))
