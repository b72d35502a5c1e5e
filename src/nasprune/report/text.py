"""Short text forms shared by the figures, the tables and the page: a sub-network's shape
in a few characters, a count with a unit."""

from __future__ import annotations

from typing import Any


def human(n: float | None) -> str:
    """``12.35M``, ``1.50G``, ``800``; ``""`` for None."""
    if n is None:
        return ""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


def compact(subnet: Any) -> str:
    """``12/1536x3 0/0x3``: runs of identical layers, so the table fits a terminal."""
    parts, layers = [], list(subnet.layers)
    i = 0
    while i < len(layers):
        j = i
        while j + 1 < len(layers) and layers[j + 1] == layers[i]:
            j += 1
        h, u = layers[i]
        parts.append(f"{h}/{u}" + (f"x{j - i + 1}" if j > i else ""))
        i = j + 1
    return " ".join(parts)
