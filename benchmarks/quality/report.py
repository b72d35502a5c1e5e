"""The result files: one table per model and task, the pick details, the targets met or
not, the stage times and one Pareto figure per task."""

from __future__ import annotations

import json

from benchmarks.common import RESULTS, SETTINGS, write_results
from benchmarks.quality.settings import (
    ARMS,
    BUDGETS,
    DEFAULT_ARM,
    DEFAULT_MODEL,
    MODELS,
    PICK_ROUNDS,
    PLACE,
    REFERENCE,
    SPEED_ROUNDS,
    run_name,
    run_prefix,
)
from benchmarks.quality.stages import Stages, points


def markdown(rows: list[dict], details: dict, stage_times: dict) -> str:
    import statistics

    lines = ["# Compression quality: pick accuracy after each recipe", "",
             "Picks are chosen on the search split (held out of the training data); the "
             "validation columns are the GLUE validation set, read only to report. "
             "`le50` = accuracy of the pick with <= 50 % of the encoder parameters after the "
             "arm's recovery, and so on. Hypervolume: (error, encoder fraction), reference "
             f"point {REFERENCE}. Minutes: every stage the arm needs, the shared fine-tuning "
             "included.", ""]
    for model, task in dict.fromkeys((r["model"], r["task"]) for r in rows):
        lines += [f"## {MODELS[model]} · {task.upper()}", "",
                  "| arm | split | seeds | unpruned | le50 | le30 | le20 | hypervolume | "
                  "minutes |", "|---|---|---|---|---|---|---|---|---|"]
        for arm in ARMS:
            for split in ("validation", "search"):
                group = [r for r in rows if r["task"] == task and r["arm"] == arm
                         and r["split"] == split and r["model"] == model]
                if not group:
                    continue

                def mean(key, group=group):
                    return statistics.mean(r[key] for r in group)

                delta = [f"{mean(k):.3f} ({mean(k) - mean('unpruned'):+.3f})"
                         for k in ("le50", "le30", "le20")]
                lines.append(f"| {ARMS[arm]} | {split} | {len(group)} | {mean('unpruned'):.3f} | "
                             + " | ".join(delta) + f" | {mean('hypervolume'):.4f} | "
                             f"{mean('seconds') / 60:.0f} |")
        first = details.get((model, task), {})
        once = all("speedup_rounds" in p for d in first.values() for p in d["picks"].values())
        timing = (f"median of {SPEED_ROUNDS} interleaved rounds, measured once per "
                  "sub-network after the arms" if once else f"median of {PICK_ROUNDS} "
                  "interleaved rounds, measured in each pick's own stage, under whatever else "
                  "ran then")
        lines += ["", "Picks (first seed): sub-network, encoder fraction, speed-up of the "
                  "extracted pick over the unpruned model at batch 1 / 32 (PyTorch, 2 "
                  f"threads; validation texts of the median length; {timing}).", "",
                  "| arm | budget | sub-network | encoder | validation | speed-up b1 / b32 |",
                  "|---|---|---|---|---|---|"]
        for arm, d in first.items():
            for budget, p in d["picks"].items():
                s = p["speedup"]
                lines.append(f"| {arm} | {float(budget):.0%} | `{p['subnet']}` | "
                             f"{p['encoder_fraction']:.1%} | {p['validation']:.3f} | "
                             f"{s['b1']:.2f}x / {s['b32']:.2f}x |")
        lines += search_times(model, task, stage_times)
        lines += ["", f"![Pareto fronts]({PLACE.name}-{run_prefix(model, task)}.png)", ""]
        if task == "rte":
            lines += ["RTE has 277 validation pairs (one is 0.36 points) and 249 search pairs: "
                      "differences of 2-3 points are within noise.", ""]
    lines += targets(rows, details)
    lines += ["## Stage times (seconds)", "", "| run | stage | seconds |", "|---|---|---|"]
    for run, done in stage_times.items():
        for name, info in done.items():
            lines.append(f"| {run} | {name} | {info['seconds']:.0f} |")
    return "\n".join(lines)


def search_times(model: str, task: str, stage_times: dict) -> list[str]:
    """The tutorial's exact search (arm (a): small space, masking, random, 100 candidates)
    against the default search (arm (d)), per seed, on the same machine."""
    lines = []
    for run, done in stage_times.items():
        if run.rpartition("-s")[0] != run_prefix(model, task):
            continue
        a, d = done.get("a:search"), done.get("d:search")
        if a and d:
            lines.append(f"- {run}: the tutorial's search {a['seconds'] / 60:.1f} min, the "
                         f"default search {d['seconds'] / 60:.1f} min "
                         f"({d['seconds'] / a['seconds']:.2f}x)")
    return ["", "Search time, 100 candidates each:", "", *lines] if lines else []


#: The issues' targets for the default arm, on validation, as (model, task, key, most points
#: lost); ``unpruned`` is a floor instead, ``speedup`` a least factor at batch 32.
TARGETS = (("minilm-l6", "sst2", "le50", 1.0), ("minilm-l6", "sst2", "le30", 3.0),
           ("minilm-l6", "rte", "le50", 2.0),
           ("mpnet-base", "rte", "unpruned", 0.65), ("mpnet-base", "rte", "le50", 2.0),
           ("mpnet-base", "rte", "le30", 4.0), ("mpnet-base", "sst2", "le50", 1.0),
           ("mpnet-base", "sst2", "le30", 2.0), ("mpnet-base", "sst2", "speedup", 1.8),
           ("mpnet-base", "rte", "speedup", 1.8))


def targets(rows: list[dict], details: dict) -> list[str]:
    """The targets, met or not, from the default arm's validation rows (mean of seeds)."""
    import statistics

    def mean(model, task, arm, key):
        group = [r[key] for r in rows if r["task"] == task and r["arm"] == arm
                 and r["split"] == "validation" and r["model"] == model]
        return (statistics.mean(group), len(group)) if group else (None, 0)

    lines = [f"## Targets (arm ({DEFAULT_ARM}), validation, mean of the seeds run so far)", "",
             "| model | task | target | measured | seeds | met |", "|---|---|---|---|---|---|"]
    for model, task, key, bound in TARGETS:
        value, n = mean(model, task, DEFAULT_ARM, key if key != "speedup" else "le50")
        base, _ = mean(model, task, DEFAULT_ARM, "unpruned")
        label = MODELS[model]
        if value is None:
            continue
        if key == "unpruned":
            lines.append(f"| {label} | {task} | unpruned >= {bound:g} | {value:.3f} | {n} | "
                         f"{'yes' if value >= bound else 'no'} |")
        elif key == "speedup":
            pick = details.get((model, task), {}).get(DEFAULT_ARM, {}).get("picks", {})
            factor = next((p["speedup"]["b32"] for b, p in pick.items() if float(b) == 0.5),
                          None)
            if factor is not None:
                lines.append(f"| {label} | {task} | le50 pick >= {bound:g}x faster at batch "
                             f"32 | {factor:.2f}x (first seed) | 1 | "
                             f"{'yes' if factor >= bound else 'no'} |")
        else:
            lost = 100 * (base - value)
            lines.append(f"| {label} | {task} | {key}: within {bound:g} points of unpruned | "
                         f"{value:.3f} vs {base:.3f} ({-lost:+.1f} points) | {n} | "
                         f"{'yes' if lost <= bound else 'no'} |")
    for model in MODELS:
        own, _ = mean(model, "sst2", DEFAULT_ARM, "hypervolume")
        for other in ("a", "b"):
            theirs, n = mean(model, "sst2", other, "hypervolume")
            if own is not None and theirs is not None:
                lines.append(f"| {MODELS[model]} | sst2 | hypervolume above arm ({other}) | "
                             f"{own:.4f} vs {theirs:.4f} | {n} | "
                             f"{'yes' if own > theirs else 'no'} |")
    return lines + [""]


def plot(model: str, task: str, seed: int, stages: Stages) -> None:
    """One figure per task: the fronts the searches found (before recovery), from the
    stage files (the trial stores need not be there)."""
    from nasprune.report.plots import plot_pareto

    runs = {ARMS[arm].split(":")[0]: points(stages.done[key]["result"])[0]
            for arm, key in (("a", "a:trials"), ("b", "b:trials"), ("d", "d:trials"))
            if key in stages.done}
    if runs:
        plot_pareto(runs, RESULTS / f"{PLACE.name}-{run_prefix(model, task)}.png",
                    x="encoder_params", log_x=False, split="search",
                    title=f"{MODELS[model]} {task.upper()} (seed {seed}): fronts before recovery")


def report(all_rows: list[dict] | None = None) -> None:
    """quality.json/md from every recorded run (not only those of this call): the rows,
    and per model and task the first seed's picks and plot."""
    rows, details, stage_times = [], {}, {}
    previous = RESULTS / f"{PLACE.name}.json"
    if all_rows is None and previous.is_file():
        rows = json.loads(previous.read_text()).get("summary", [])
    elif all_rows is not None:
        rows = all_rows
    # today's default arm; rows from before the model dimension are MiniLM-L6's
    rows = [{"model": DEFAULT_MODEL, **r, "default": r["arm"] == DEFAULT_ARM} for r in rows]
    for path in sorted((RESULTS / f"{PLACE.name}-stages").glob("*-s?.json")):
        stage_times[path.stem] = json.loads(path.read_text())
    for model in MODELS:
        for task in SETTINGS:
            for seed in range(10):
                name = run_name(model, task, seed)
                detail = RESULTS / f"{PLACE.name}-stages" / f"{name}-detail.json"
                if detail.is_file() and (model, task) not in details:
                    details[(model, task)] = json.loads(detail.read_text())
                    stages = RESULTS / f"{PLACE.name}-stages" / f"{name}.json"
                    plot(model, task, seed, Stages(stages))
    payload = {"protocol": "picks and stopping on the search split; figures on GLUE "
               "validation (split 'validation') and on the search split (split 'search')",
               "budgets": list(BUDGETS), "arms": ARMS, "default_arm": DEFAULT_ARM,
               "summary": rows,  # picks by task, as before the model dimension, or model/task
               "picks": {t if m == DEFAULT_MODEL else f"{m}/{t}": d
                         for (m, t), d in details.items()}}
    write_results(PLACE.name, payload, markdown(rows, details, stage_times))
