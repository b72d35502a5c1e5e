"""Runs a load test: every target is checked, then driven by Locust, then summarised.

For each named target, Locust runs headless in its own process (``locustfile.py``:
locust patches the standard library with gevent, which must stay out of this process)
with a step shape: each user count is held for ``step_time`` seconds. First every target
must be ready and answer one test request with a status that load could explain. The
record Locust leaves is summarised (``stats.py``), saved as steps.csv and summary.json,
and plotted (``plots.py``); Locust's own HTML report is kept next to the results.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import asdict
from pathlib import Path

from nasprune.deploy.loadtest.config import LoadTestConfig, load_texts
from nasprune.deploy.loadtest.plots import plot
from nasprune.deploy.loadtest.stats import (
    CONFIG_ERRORS,
    MAX_FAILURE_RATE,
    StepStats,
    TargetResult,
    failure_report,
    saturation,
    summarise_record,
    write_csv,
)
from nasprune.deploy.serve.process import wait_ready
from nasprune.errors import NaspruneError


def preflight(name: str, url: str, item: list[str], token: str | None = None,
              timeout: float = 30.0) -> None:
    """One request to ``url``/v1/predict; a status that load cannot explain stops here."""
    body = {"text": item[0]} if len(item) == 1 else {"text": item[0], "text_pair": item[1]}
    request = urllib.request.Request(f"{url}/v1/predict", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"},
                                     method="POST")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return
    except urllib.error.HTTPError as exc:
        if exc.code in CONFIG_ERRORS:
            raise NaspruneError(f"target {name!r} answered HTTP {exc.code} to a test request: "
                                f"{CONFIG_ERRORS[exc.code]}") from None
    except (urllib.error.URLError, OSError):
        pass  # load-dependent (timeouts, 503): left to the load test to measure


def run_target(name: str, url: str, config: LoadTestConfig, texts_file: Path) -> list[StepStats]:
    """One headless Locust process against one target; returns its per-step statistics."""
    if importlib.util.find_spec("locust") is None:
        raise NaspruneError("locust is not installed: pip install 'nasprune[loadtest]'")
    raw = config.out_dir / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    record = raw / f"{name}_requests.csv"
    env = {
        **os.environ,
        "NASPRUNE_LT_TEXTS": str(texts_file),
        "NASPRUNE_LT_USERS": ",".join(str(u) for u in config.users),
        "NASPRUNE_LT_STEP_TIME": str(config.step_time),
        "NASPRUNE_LT_RECORD": str(record),
        "NASPRUNE_LT_TOKEN": config.token or "",
        "NASPRUNE_LT_THINK_MS": str(config.think_ms),
        "NASPRUNE_LT_TIMEOUT_S": str(config.timeout_s),
    }
    locustfile = Path(__file__).with_name("locustfile.py")
    command = [sys.executable, "-m", "locust", "-f", str(locustfile), "--headless",
               "--host", url, "--csv", str(raw / name), "--only-summary",
               "--html", str(config.out_dir / f"locust-{name}.html"),
               "--loglevel", "WARNING", "--exit-code-on-error", "0"]
    budget = len(config.users) * config.step_time + config.timeout_s + 60
    log = raw / f"{name}_locust.log"
    with open(log, "w") as out:
        try:
            proc = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                  timeout=budget, check=False)
        except subprocess.TimeoutExpired:
            raise NaspruneError(f"locust did not finish within {budget:.0f} s; see {log}") from None
    if proc.returncode != 0:
        tail = log.read_text().strip().splitlines()[-5:]
        raise NaspruneError(f"locust failed for {name!r} (exit {proc.returncode}): "
                            + " | ".join(tail))
    return summarise_record(name, record)


def run_loadtest(config: LoadTestConfig, texts: list[list[str]] | None = None
                 ) -> list[TargetResult]:
    """Load-test every target in turn; writes steps.csv, summary.json and loadtest.png."""
    if texts is None:
        if config.texts_from is None:
            raise NaspruneError("give --texts-from FILE (a validation set to draw inputs from)")
        texts = load_texts(config.texts_from, config.text_column, config.pair_column,
                           limit=config.max_texts, seed=config.seed)
    config.out_dir.mkdir(parents=True, exist_ok=True)
    texts_file = config.out_dir / "raw" / "texts.json"
    texts_file.parent.mkdir(parents=True, exist_ok=True)
    texts_file.write_text(json.dumps(texts))
    for name, url in config.targets.items():
        wait_ready(url, config.token)
        preflight(name, url, texts[0], config.token, timeout=config.timeout_s)
    results = []
    for name, url in config.targets.items():
        steps = run_target(name, url, config, texts_file)
        saturated = saturation(steps, config.slo_ms)
        results.append(TargetResult(
            name=name, url=url, steps=steps,
            saturation_users=saturated.users if saturated else None,
            max_ok_rps=max((s.ok_rps for s in steps), default=0.0)))
    write_csv(results, config.out_dir / "steps.csv")
    plot(results, config.slo_ms, config.out_dir / "loadtest.png")
    summary = {
        "config": config.public_dict(),
        "texts": len(texts),
        "saturation_rule": f"first step with p95 > {config.slo_ms:g} ms or failure rate "
                           f"> {MAX_FAILURE_RATE:.0%}",
        "targets": {r.name: {"url": r.url, "saturation_users": r.saturation_users,
                             "max_ok_rps": r.max_ok_rps,
                             "steps": [asdict(s) for s in r.steps]} for r in results},
        "failures": failure_report(results, config.max_failure_rate),
        "files": {"steps_csv": "steps.csv", "plot": "loadtest.png", "raw": "raw/",
                  "locust_html": {r.name: f"locust-{r.name}.html" for r in results}},
    }
    (config.out_dir / "summary.json").write_text(json.dumps(_finite(summary), indent=2))
    return results


def _finite(value):
    """NaN (a step without requests) becomes null: JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
