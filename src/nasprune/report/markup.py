"""The HTML pieces the report's sections are made of: escaped text, numbers, tables,
notes and embedded Plotly figures."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from nasprune.errors import require


def esc(value: Any) -> str:
    """``value`` as HTML text (quotes escaped too, so it may stand in an attribute)."""
    return html.escape(str(value), quote=True)


def num(value: Any, digits: int = 4) -> str:
    """A number with ``digits`` decimals; other values as escaped text, None as ``""``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "" if value is None else esc(value)
    return f"{value:.{digits}f}"


def pct(value: float | None, whole: float | None) -> str:
    """``value`` as a whole percentage of ``whole`` (``""`` when either is unknown)."""
    return f"{100 * value / whole:.0f}%" if value is not None and whole else ""


def delta(a: Any, b: Any) -> str:
    """The change from ``a`` to ``b`` in percentage points (``""`` unless both are numbers)."""
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return f"{100 * (b - a):+.2f} points"
    return ""


def table(head: Sequence[str], rows: Sequence[Sequence[Any]], numeric_from: int = 1) -> str:
    """An HTML table; columns from ``numeric_from`` on are right-aligned numbers."""
    cells = "".join(f"<th{' class=num' if i >= numeric_from else ''}>{esc(h)}</th>"
                    for i, h in enumerate(head))
    body = []
    for row in rows:
        body.append("<tr>" + "".join(
            f"<td{' class=num' if i >= numeric_from else ''}>{esc(c)}</td>"
            for i, c in enumerate(row)) + "</tr>")
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def section(anchor: str, title: str, body: str) -> str:
    """One section of the page, ``id="section-ANCHOR"``."""
    return f'<section id="section-{anchor}"><h2>{esc(title)}</h2>{body}</section>'


def note(text: str) -> str:
    """The grey note that stands in for a part the run does not have yet."""
    return f'<p class="note">{esc(text)}</p>'


def figure_html(fig: Any, div_id: str) -> str:
    """A Plotly figure as a ``<div>`` (the page inlines Plotly's JavaScript once)."""
    pio = require("plotly.io", "report")
    height = fig.layout.height or 450
    return pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=div_id,
                       default_height=f"{height}px",
                       config={"displaylogo": False, "responsive": True})
