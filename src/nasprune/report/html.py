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

Plotly is an optional dependency (``pip install 'nasprune[report]'``), imported only by
the report's modules.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from nasprune.errors import require
from nasprune.report.markup import esc
from nasprune.report.run import RunContents, check_run_dir, run_title
from nasprune.report.sections import page_sections
from nasprune.rundir import RunDir

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


def build_report(run_dir: str | Path, out: str | Path | None = None) -> str:
    """The report's HTML text (``out`` only sets where relative links point from)."""
    path = check_run_dir(run_dir).resolve()
    offline = require("plotly.offline", "report")
    run = RunContents(path)
    out_path = Path(out).resolve() if out is not None else RunDir(path).report_file
    heading = run_title(path, run.config) or path.name
    sections = page_sections(run, out_path)
    from nasprune import __version__

    stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime())
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>nasprune report: {esc(heading)}</title>"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<style>{_CSS}</style>"
        f"<script type=\"text/javascript\">{offline.get_plotlyjs()}</script>"
        "</head><body>"
        f"<header><h1>nasprune report: {esc(heading)}</h1>"
        f"<p>{esc(path)} · written {stamp} by nasprune {__version__}</p></header>"
        "<main>" + "".join(sections) + "</main></body></html>\n"
    )


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the run's HTML report (default ``RUN/report.html``) and return its path.

    Raises ``NaspruneError`` when ``run_dir`` is not a run directory or Plotly is missing.
    """
    text = build_report(run_dir, out)
    target = Path(out) if out is not None else RunDir(run_dir).report_file
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, target)
    return target
