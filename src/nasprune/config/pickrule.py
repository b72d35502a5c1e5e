"""The grammar of a pick rule (``params<=0.5``, ``latency<=12ms``, ``largest``, a trial id):
pure text, no torch, so ``nasprune.config`` checks a rule when a command starts, and
``search.pick`` applies it to a finished search."""

from __future__ import annotations

import re
from collections.abc import Mapping

from nasprune.core import COSTS
from nasprune.errors import NaspruneError

#: Objectives a budget rule may constrain (``metric`` is maximised, the rest minimised).
KNOWN_METRICS = ("error", "metric", *COSTS)

_RULE = re.compile(
    r"^\s*(?P<name>[a-z_]+)\s*(?P<op><=|>=|<|>)\s*(?P<num>[0-9]*\.?[0-9]+(?:e[-+]?[0-9]+)?)"
    r"\s*(?P<unit>ms|s|%|k|m|g)?\s*$",
    re.IGNORECASE,
)
_SCALE = {"k": 1e3, "m": 1e6, "g": 1e9}


def parse_rule(rule: str, full: Mapping[str, float]) -> tuple[str, str, float]:
    """``"params<=0.5"`` -> ``("params", "<=", 0.5 * full params)``: an absolute threshold.

    Units: ``error``/``metric`` are fractions (``%`` allowed); ``latency`` is in
    milliseconds (``ms``/``s`` suffix absolute, bare number = fraction of the full model);
    ``params``/``encoder_params``/``flops`` take ``k``/``M``/``G`` or a plain count above 1 as
    absolute values, and a bare number <= 1 or a ``%`` as a fraction of the full model.
    """
    m = _RULE.match(rule)
    if not m:
        raise NaspruneError(
            f"cannot read the pick rule {rule!r}: use largest, smallest, a trial id, or "
            "NAME<=VALUE such as params<=0.5, flops<=0.3, latency<=12ms, error<=0.1"
        )
    name, op, num, unit = m["name"].lower(), m["op"], float(m["num"]), (m["unit"] or "")
    if name not in KNOWN_METRICS:
        raise NaspruneError(f"unknown metric {name!r} in {rule!r}; use one of {KNOWN_METRICS}")
    u = unit.lower()
    if name in ("error", "metric"):
        if u not in ("", "%"):
            raise NaspruneError(f"{name} takes a fraction or a percentage, not {unit!r}")
        return name, op, num / 100 if u == "%" else num
    if name == "latency":
        if u == "ms":
            return name, op, num
        if u == "s":
            return name, op, num * 1000
        if u not in ("", "%"):
            raise NaspruneError(f"latency takes ms, s, % or a fraction of the full model: {rule!r}")
        fraction = num / 100 if u == "%" else num
    else:
        if u in _SCALE:
            return name, op, num * _SCALE[u]
        if u in ("ms", "s"):
            raise NaspruneError(f"{name} is a count, not a time: {rule!r}")
        if u == "" and num > 1:
            return name, op, num
        fraction = num / 100 if u == "%" else num
    scale = float(full.get(name, 0.0) or 0.0)
    if scale <= 0:
        raise NaspruneError(f"no {name} measured for the full model to take a fraction of")
    return name, op, fraction * scale


def budget(rule: str) -> float | None:
    """The encoder-parameter fraction of ``encoder_params<=x`` (super-network distillation
    samples around it), else ``None``; checks the rule's syntax either way."""
    text = rule.strip().lstrip("#")
    if text.lower() in ("largest", "smallest") or text.isdigit():
        return None
    metric, op, threshold = parse_rule(rule, dict.fromkeys(KNOWN_METRICS, 1.0))
    return threshold if metric == "encoder_params" and op in ("<=", "<") else None
