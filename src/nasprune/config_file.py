"""Runs described in a file: ``nasprune run --config FILE``.

A TOML or YAML file holds the flags of ``nasprune run`` as keys (``max-train-examples``,
``max_train_examples``, ``lr`` or its parameter name ``learning_rate``); a run's
``config.json`` (the nested ``RunConfig``) is read back into the same flags, so
``--config RUN/config.json`` repeats that run.
"""

from __future__ import annotations

import json
from pathlib import Path

from nasprune.errors import NaspruneError

#: config.json section -> {field: flag} for the fields that have a flag of their own.
_SECTIONS = {
    "data": {k: k for k in ("task", "data_dir", "train_file", "validation_file",
                            "label_column", "regression", "max_train_examples",
                            "max_eval_examples", "seed", "search_split", "search_file",
                            "distill_file", "drop_invalid")} | {"text_columns": "text_columns"},
    "train": {k: k for k in ("epochs", "batch_size", "learning_rate", "grad_accum",
                             "warmup_ratio", "max_length", "device", "precision", "threads",
                             "strategy")},
    "search": {k: k for k in ("space", "searcher", "trials", "objectives", "any_heads",
                              "unit_step", "low_fidelity", "importance",
                              "calibration_examples", "backend", "address", "workers",
                              "cpus_per_worker", "gpus_per_worker")},
}
_TOP = {"model": "model", "pick": "pick", "export_formats": "export_format",
        "quantize": "quantize", "recover": "recover", "recover_epochs": "recover_epochs",
        "force": "force"}


def _parse(path: Path) -> dict:
    text = path.read_text()
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            import tomllib

            return tomllib.loads(text)
        if suffix in (".yaml", ".yml"):
            import yaml

            value = yaml.safe_load(text)
            return value if value is not None else {}
        if suffix == ".json":
            return json.loads(text)
    except Exception as exc:  # each parser has its own error type; all mean "bad file"
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise NaspruneError(f"cannot read {path}: {first}") from exc
    raise NaspruneError(f"--config {path}: use a .toml, .yaml/.yml or .json file")


def _flags_of_run_config(saved: dict) -> dict:
    out = {flag: saved[key] for key, flag in _TOP.items() if key in saved}
    for section, names in _SECTIONS.items():
        for key, flag in names.items():
            if key in saved.get(section, {}):
                out[flag] = saved[section][key]
    epochs = saved.get("train", {}).get("strategy_options", {}).get("epochs")
    if epochs is not None:
        out["supernet_epochs"] = epochs
    return out


def read_config_file(path: str | Path, names: dict[str, str]) -> dict:
    """The flags a file sets, by parameter name; lists become comma-separated text and
    unset (``null``) values are left out, so the flags' own defaults apply.

    ``names`` maps every accepted key (a flag without its dashes, or a parameter name)
    to its parameter name; a key outside it is refused with the closest match."""
    path = Path(path)
    if not path.is_file():
        raise NaspruneError(f"config file not found: {path}")
    raw = _parse(path)
    if not isinstance(raw, dict):
        raise NaspruneError(f"{path} must hold a table of flags, not {type(raw).__name__}")
    flags = (_flags_of_run_config(raw) if {"data", "train", "search"} & set(raw)
             else {str(k).replace("-", "_"): v for k, v in raw.items()})
    unknown = sorted(set(flags) - set(names))
    if unknown:
        import difflib

        hints = [f"{u!r}" + (f" (did you mean {close[0]!r}?)" if (
            close := difflib.get_close_matches(u, names, n=1)) else "") for u in unknown]
        raise NaspruneError(f"{path}: unknown key(s) {', '.join(hints)}")
    flags = {names[k]: v for k, v in flags.items()}
    out = {}
    for key, value in flags.items():
        if value is None:
            continue
        out[key] = ",".join(map(str, value)) if isinstance(value, list | tuple) else value
    return out
