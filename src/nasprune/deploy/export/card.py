"""The model card (``README.md``) of an export, with Hugging Face metadata.

Every figure of the card names the split it was measured on:

- ``search``: examples held out of the training data, on which the sub-network was chosen
  (``metrics.json`` ``search``; a run without a held-out split chose on ``validation``, and
  says so with ``facts={"search_split": "validation"}``);
- ``validation``: the task's validation set, measured at export (``metrics.json``
  ``validation``; nothing was chosen on it unless the search split is ``validation``).

``facts`` (``export_model(card=...)``) adds what export cannot know, every key optional::

    {"unpruned": {"validation": {"accuracy": 0.91}, "search": {"accuracy": 0.92}},
     "search_split": "search",          # where metrics.json "search" was measured
     "speedup": {"PyTorch, batch 32": 1.9} or 1.9,   # measured, vs. the unpruned model
     "dataset": "glue", "license": "apache-2.0",   # default: GLUE tasks, the base model's
     "recipe": {"search space": "layerwise", "trials": 200, ...},
     "notes": "free text"}

and ``export_model(recovery=...)`` the recovery report (``before``/``after`` per split).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from nasprune.core.subnet import ModelShape, Subnet
from nasprune.deploy.export.card_meta import metadata

SPLIT_NOTES = {
    "search": "examples held out of the training data; the sub-network was chosen on them",
    "validation": "the task's validation set, never trained on",
}


@dataclass
class CardInfo:
    name: str
    layout: str  # "vanilla" or "remote"
    subnet: Subnet
    shape: ModelShape
    model_type: str  # the stock family
    remote_type: str | None  # model_type in config.json for remote exports
    source_model: str | None
    report: dict  # metrics.json
    params: int
    full_params: int | None
    file_bytes: dict[str, int]
    version: str
    created: str
    task: str | None = None
    reason: str | None = None  # why the export needs remote code
    kept: tuple[int, ...] = ()
    has_tokenizer: bool = False
    backends: dict = field(default_factory=dict)
    recovery: dict | None = None
    facts: dict = field(default_factory=dict)
    quantize: str | None = None  # what nasprune.load and nasprune serve answer with


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:.4f}" if isinstance(value, float) else f"{value:,}"


def _speed(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:.2f}x"
    return str(value)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _pick(scores: Any, metric: str | None) -> tuple[str, Any] | None:
    """(name, value) of the headline metric in ``scores`` (a dict or a bare number)."""
    if isinstance(scores, (int, float)) and not isinstance(scores, bool):
        return (metric or "metric", scores)
    if not isinstance(scores, dict):
        return None
    for name in (metric, "metric", "error"):
        if name and isinstance(scores.get(name), (int, float)):
            return ("metric" if name == "metric" and metric is None else name, scores[name])
    return None


def metric_rows(info: CardInfo) -> list[tuple[str, str, str, Any]]:
    """(model, split, metric, value) for every figure of the card."""
    report, facts = info.report, info.facts
    metric = report.get("task_metric") or facts.get("metric")
    search_split = str(facts.get("search_split") or "search")
    rows = []

    def add(model: str, split: str, scores: Any) -> None:
        picked = _pick(scores, metric)
        if picked is not None:
            rows.append((model, split, picked[0], picked[1]))

    unpruned = facts.get("unpruned") or {}
    if isinstance(unpruned, dict):
        for split, scores in unpruned.items():
            add("unpruned (fine-tuned) model", str(split), scores)
    add("this sub-network, in the search (super-network weights)", search_split,
        report.get("search") or {})
    recovery = info.recovery or {}
    for stage, label in (("before", "extracted, before recovery"),
                         ("after", "after recovery")):
        for split, scores in (recovery.get(stage) or {}).items():
            if isinstance(scores, dict):
                add(label, split, scores)
    names = {"float": "exported, PyTorch float32", "onnx": "exported, ONNX Runtime float32",
             "int8": f"exported, int8 ({report.get('int8_backend', 'dynamic')})"}
    for backend, scores in (report.get("validation") or {}).items():
        add(names.get(backend, f"exported, {backend}"), "validation", scores)
    return rows


def _shape_table(info: CardInfo) -> list[str]:
    s = info.shape
    lines = ["| layer (0-based) | heads kept | FFN units kept | in this export |",
             "|---|---|---|---|"]
    new_index = {old: new for new, old in enumerate(info.kept)}
    for i, (h, u) in enumerate(info.subnet.layers):
        if h == 0 and u == 0:
            where = "removed"
        elif info.layout == "vanilla":
            where = f"layer {new_index[i]}"
        else:
            where = "kept" + ("" if h and u else (" (no attention)" if not h else " (no FFN)"))
        lines.append(f"| {i} | {h} / {s.num_heads} | {u} / {s.ffn} | {where} |")
    return lines


def _loading(info: CardInfo) -> list[str]:
    d = info.name
    remote = ", trust_remote_code=True" if info.layout == "remote" else ""
    tok = (f'tokenizer = AutoTokenizer.from_pretrained("{d}"{remote})\n'
           if info.has_tokenizer else "")
    imports = ("from transformers import AutoModelForSequenceClassification"
               + (", AutoTokenizer" if info.has_tokenizer else ""))
    out = ["## How to load", ""]
    if info.layout == "vanilla":
        out += ["A stock transformers model: no remote code, no nasprune needed.", "",
                "```python", imports,
                "", f'model = AutoModelForSequenceClassification.from_pretrained("{d}")',
                tok.rstrip("\n"), "```", ""]
    else:
        out += [f"Per-layer head and unit counts need the model class shipped in "
                f"`modeling_nasprune.py` ({info.reason}). Its config has `model_type: "
                f"{info.remote_type}`, which stock transformers does not know, so loading "
                "without `trust_remote_code=True` fails instead of silently building the "
                "full model with random weights.", "",
                "```python", imports, "",
                "model = AutoModelForSequenceClassification.from_pretrained(",
                f'    "{d}", trust_remote_code=True)', tok.rstrip("\n"), "```", ""]
        if info.has_tokenizer:
            out += ["The tokenizer is a stock class (`tokenizer_class` in "
                    "`tokenizer_config.json`), but `AutoTokenizer` reads `config.json` first "
                    "and, without `trust_remote_code=True`, asks whether to run the remote "
                    "code; loading that class directly needs neither.", ""]
    out += ["With nasprune (checks every file against `manifest.json`, runs no code from "
            "the directory):", "", "```python", "import nasprune", "",
            f'model, tokenizer = nasprune.load("{d}")' + (
                "  # tokenizer is None: none was exported" if not info.has_tokenizer else ""),
            "```", ""]
    if "onnx" in info.backends:
        out += [f'ONNX Runtime: `nasprune.load("{d}", backend="onnx")` (`model.onnx`'
                + (", int8: `model.int8.onnx`" if "onnx_int8" in info.backends else "")
                + "). The graphs carry their own shapes, so `onnxruntime.InferenceSession` "
                "opens them with no config and no Python code of this directory."
                + ("" if info.layout == "vanilla" else
                   " Optimum's `ORTModelForSequenceClassification` reads `config.json` "
                   f"first, and its model type `{info.remote_type}` is not a stock one "
                   "(a stock config would describe the unpruned shape), so it needs "
                   "`trust_remote_code=True` here."), ""]
    elif "torch_int8" in info.backends:
        out += ["int8: `nasprune.load` applies PyTorch dynamic quantization at load "
                "(the export was made with `--quantize int8`).", ""]
    return [line for line in out if line is not None]


def _removed(what: str, kept: list[int], full: int) -> str:
    """How many of ``what`` the kept layers lost, and in how many of them."""
    lost = [full - n for n in kept if n < full]
    if not lost:
        return f"every {what[:-1]} kept"
    where = "every layer" if len(lost) == len(kept) else f"{len(lost)} of {len(kept)} layers"
    return f"{sum(lost):,} of {full * len(kept):,} {what} removed (in {where})"


def _what_was_removed(info: CardInfo) -> str:
    """What the sub-network keeps: layers, then how much of the heads and units of the
    kept layers was removed (not "some with fewer" when every layer lost most)."""
    s, layers = info.shape, [layer for layer in info.subnet.layers if layer != (0, 0)]
    parts = [f"{len(layers)} of {s.num_layers} encoder layers kept"]
    if layers:
        parts += [_removed("attention heads", [h for h, _ in layers], s.num_heads),
                  _removed("FFN units", [u for _, u in layers], s.ffn)]
    return "; ".join(parts)


def _quantized(info: CardInfo) -> list[str]:
    """The quantized model beside the float one: both figures, how many answers it
    changed (a net change hides flips both ways), and batching as measured."""
    report, q = info.report, info.quantize
    if q is None or f"{q}_change" not in report:
        return []
    metric = report.get("task_metric", "metric")
    validation = report.get("validation") or {}
    before, after = (validation.get(k, {}).get(metric) for k in ("float", q))
    text = (f"{q} (ONNX Runtime static quantization, activation scales calibrated on "
            f"{report.get(f'{q}_calibrated_on') or 'training texts'}): validation {metric} "
            f"{_fmt(after)} against {_fmt(before)} in float32 ({report[f'{q}_change']:+.4f})")
    changed = report.get(f"{q}_flips")
    if isinstance(changed, dict):
        text += (f"; it changes {changed['changed']} of {changed['examples']} predictions "
                 f"({changed['right_to_wrong']} right to wrong, {changed['wrong_to_right']} "
                 "wrong to right)")
    text += (f". `nasprune.load` and `nasprune serve` answer with the {q} model by default "
             "(the export was made with `--quantize " + q + "`); `quantized=False` loads "
             "float32.")
    alone = (validation.get(q) or {}).get("batch_1")
    if isinstance(alone, dict) and alone.get("changed") == 0:
        text += (" Its scales are fixed in the file: on these examples each text got the "
                 "same answer alone and in its batch (largest logit difference "
                 f"{alone.get('max_abs_diff', 0):.2g}).")
    elif isinstance(alone, dict):
        text += (f" Run alone instead of in its batch, {alone.get('changed')} of its "
                 f"answers differed (largest logit difference "
                 f"{alone.get('max_abs_diff', 0):.2g}).")
    return [text + " Every figure above was measured in padded batches as `nasprune serve` "
            "runs them.", ""]


def _recipe_line(key: str, value: Any) -> str:
    """A recipe entry; a pick by trial id is no budget rule and says so."""
    if key == "pick rule" and re.fullmatch(r"\d+", str(value)):
        return f"- picked: trial {value} (by id, no budget rule)"
    return f"- {key}: {_fmt(value)}"


def model_card(info: CardInfo) -> str:
    """The ``README.md`` text."""
    import yaml

    rows = metric_rows(info)
    report, facts = info.report, info.facts
    cost = report.get("cost") or {}
    source = f"`{info.source_model}`" if info.source_model else "an unnamed model"
    lines = ["---", yaml.safe_dump(metadata(info, rows), sort_keys=False).rstrip("\n"), "---",
             "", f"# {info.name}: a pruned {info.model_type} sequence classifier", "",
             f"A structurally pruned copy of {source}"
             + (f" for **{info.task}**" if info.task else "")
             + f", made with nasprune {info.version}: "
             f"{_what_was_removed(info)}. It is a smaller dense model, "
             + ("loadable by stock transformers without remote code."
                if info.layout == "vanilla" else "loadable with `trust_remote_code=True`."),
             "", "## Results", "", "| model | split | metric | value |", "|---|---|---|---|"]
    lines += [f"| {m} | {split} | {name} | {_fmt(v)} |" for m, split, name, v in rows]
    if not rows:
        lines.append("| (no metric was measured for this export) | - | - | - |")
    splits = sorted({r[1] for r in rows})
    lines += ["", "Splits: " + "; ".join(
        f"**{sp}**: {SPLIT_NOTES.get(sp, 'as named by the run')}" for sp in splits) + "."
        if splits else "", ""]
    if isinstance(report.get("validation_examples"), int):
        lines += [f"Validation figures: {report['validation_examples']} examples, measured "
                  "when the export was written.", ""]
    lines += _quantized(info)
    lines += ["## Sub-network", "", f"`{info.subnet}` (heads/units per original layer).", ""]
    lines += _shape_table(info) + [""]
    size = [f"- parameters: {info.params:,}" + (
        f" ({info.params / info.full_params:.1%} of the unpruned {info.full_params:,})"
        if info.full_params else "")]
    if "encoder_params" in cost:
        size.append(f"- encoder parameters: {int(cost['encoder_params']):,}")
    if "flops_fraction" in cost:
        size.append(f"- encoder FLOPs at {cost.get('seq_len', 128)} tokens: "
                    f"{cost['flops_fraction']:.1%} of the unpruned encoder (analytic)")
    for name, n in sorted(info.file_bytes.items()):
        size.append(f"- `{name}`: {_mb(n)}")
    speed = facts.get("speedup")
    if isinstance(speed, dict) and speed:
        size += [f"- measured speed-up over the unpruned model, {k}: {_speed(v)}"
                 for k, v in speed.items()]
    elif isinstance(speed, (int, float)) and not isinstance(speed, bool):
        size.append(f"- measured speed-up over the unpruned model: {_speed(speed)}")
    else:
        size.append("- speed-up: not measured for this export (see the FLOPs fraction)")
    lines += ["## Size and speed", "", *size, ""]
    how = [f"1. {source}, fine-tuned on the task, was the super-network: its heads and FFN "
           "units reordered by importance, so every sub-network keeps a prefix of each.",
           "2. A multi-objective search over sub-networks (task error vs. size) measured "
           f"each candidate on the **{facts.get('search_split') or 'search'}** split and "
           "this one was picked from the Pareto front.",
           ("3. The extracted sub-network was then recovered towards the unpruned model "
            f"(recovery: {(info.recovery.get('config') or {}).get('method', '?')}; its "
            "figures before and after are above)."
            if info.recovery else "3. No recovery step after extraction."),
           f"4. nasprune {info.version} extracted the kept weights into a physically smaller "
           f"model and wrote this directory on {info.created}."]
    recipe = facts.get("recipe")
    if isinstance(recipe, dict) and recipe:
        how += ["", *[_recipe_line(k, v) for k, v in recipe.items()]]
    if facts.get("notes"):
        how += ["", str(facts["notes"])]
    lines += ["## How it was made", "", *how, ""]
    lines += _loading(info)
    lines += ["## Files", "", "`manifest.json` lists every file with its sha256 (this card "
              "included); `nasprune.load` refuses a changed, missing or added file. "
              "`metrics.json` holds the figures above, `subnet.json` the sub-network.", ""]
    return "\n".join(lines)
