"""Stepped-users load tests of one or more prediction endpoints (extra ``[loadtest]``).

For each named target, Locust runs headless in its own process (``locustfile.py``:
locust patches the standard library with gevent, which must stay out of this process)
with a step shape: each user count is held for ``step_time`` seconds, inputs drawn from a
real validation file. The locustfile writes one row per request; here those rows are
cut into steps and summarised (requests/s, p50/p95/p99, failure rate), saved as CSV and
JSON, plotted, and the saturation point is found: the first step whose p95 exceeds the
SLO or whose failure rate exceeds 1 %. A step whose failure rate exceeds
``max_failure_rate`` (default 50 %) makes the load test fail: its status codes are named
(``failure_report``) instead of a saturation point being reported. Locust's own HTML
report is kept next to the results.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
import random
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nasprune.errors import NaspruneError

#: A step is saturated when more than this share of its requests failed.
MAX_FAILURE_RATE = 0.01

#: Column names tried, in order, when no text column is given; value = its pair column.
_TEXT_COLUMNS = {"sentence": None, "text": None, "sentence1": "sentence2",
                 "premise": "hypothesis", "question1": "question2", "question": "sentence"}


@dataclass
class LoadTestConfig:
    """Everything ``nasprune loadtest`` takes; saved (without the token) in the summary."""

    targets: dict[str, str]  # name -> base URL, e.g. {"base": "http://127.0.0.1:8000"}
    users: list[int] = field(default_factory=lambda: [1, 8, 16, 32])
    step_time: float = 10.0
    texts_from: Path | None = None
    text_column: str | None = None
    pair_column: str | None = None
    max_texts: int = 2000
    slo_ms: float = 200.0
    out_dir: Path = Path("loadtest")
    think_ms: float = 0.0  # pause between a user's requests; 0 = back to back
    token: str | None = None
    timeout_s: float = 30.0  # per request; a timeout counts as a failure
    seed: int = 0
    max_failure_rate: float = 0.5  # a step failing more than this fails the load test

    def __post_init__(self) -> None:
        if not self.targets:
            raise NaspruneError("give at least one --target NAME=URL")
        if not self.users or any(u < 1 for u in self.users):
            raise NaspruneError("user counts must be positive integers")
        if self.step_time <= 0:
            raise NaspruneError("step time must be positive")
        if self.slo_ms <= 0:
            raise NaspruneError("the SLO must be positive")
        if not 0 <= self.max_failure_rate <= 1:
            raise NaspruneError(f"--max-failure-rate must be within 0..1, got "
                                f"{self.max_failure_rate!r}")
        self.out_dir = Path(self.out_dir)
        if self.texts_from is not None:
            self.texts_from = Path(self.texts_from)

    def public_dict(self) -> dict:
        data = asdict(self)
        data["token"] = "set" if self.token else None
        data["out_dir"] = str(self.out_dir)
        data["texts_from"] = str(self.texts_from) if self.texts_from else None
        return data


@dataclass
class StepStats:
    """One target at one user count."""

    target: str
    step: int
    users: int
    requests: int
    failures: int
    failure_rate: float
    duration_s: float
    rps: float  # all completed requests per second
    ok_rps: float  # successful requests per second (the throughput that is plotted)
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    #: failed requests by HTTP status ("0": no response: timeout or connection error)
    failure_statuses: dict[str, int] = field(default_factory=dict)


@dataclass
class TargetResult:
    name: str
    url: str
    steps: list[StepStats]
    saturation_users: int | None  # first saturated step's users; None = never saturated
    max_ok_rps: float


# --------------------------------------------------------------------------- parsing


def parse_targets(specs: list[str]) -> dict[str, str]:
    """``["base=http://127.0.0.1:8000", ...]`` -> ordered ``{name: url}``."""
    targets: dict[str, str] = {}
    for spec in specs:
        name, sep, url = spec.partition("=")
        name, url = name.strip(), url.strip().rstrip("/")
        if not sep or not name or not url:
            raise NaspruneError(f"target must look like NAME=URL, got {spec!r}")
        if not url.startswith(("http://", "https://")):
            raise NaspruneError(f"target {name!r}: URL must start with http:// or https://")
        if name in targets:
            raise NaspruneError(f"target name {name!r} given twice")
        if not all(c.isalnum() or c in "-_." for c in name):
            raise NaspruneError(f"target name {name!r}: use letters, digits, '-', '_', '.'")
        targets[name] = url
    return targets


def parse_users(spec: str) -> list[int]:
    """``"1,8,16,32"`` or ``"START:STEP:MAX"`` (e.g. ``"8:8:64"``) -> user counts."""
    try:
        if ":" in spec:
            start, step, stop = (int(x) for x in spec.split(":"))
            if start < 1 or step < 1 or stop < start:
                raise ValueError
            users = list(range(start, stop + 1, step))
        else:
            users = [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise NaspruneError(
            f"--users must be a list like 1,8,16,32 or START:STEP:MAX, got {spec!r}"
        ) from None
    if not users or any(u < 1 for u in users):
        raise NaspruneError(f"--users needs positive counts, got {spec!r}")
    return users


def load_texts(path: str | Path, text_column: str | None = None,
               pair_column: str | None = None, *, limit: int = 2000,
               seed: int = 0) -> list[list[str]]:
    """Inputs for the load test from a TSV/CSV/JSONL file: ``[text]`` or ``[text, pair]``."""
    from nasprune.data.tasks import read_table

    frame = read_table(path)
    if text_column is None:
        for name, pair in _TEXT_COLUMNS.items():
            if name in frame.columns:
                text_column = name
                if pair_column is None and pair in frame.columns:
                    pair_column = pair
                break
        else:
            raise NaspruneError(
                f"{path}: no text column found among {list(frame.columns)}; "
                "pass --text-column")
    for column in (text_column, pair_column):
        if column is not None and column not in frame.columns:
            raise NaspruneError(f"{path}: no column {column!r} (has {list(frame.columns)})")
    columns = [text_column] + ([pair_column] if pair_column else [])
    rows = [[str(v) for v in row] for row in frame[columns].itertuples(index=False)]
    rows = [row for row in rows if all(part.strip() for part in row)]
    if not rows:
        raise NaspruneError(f"{path}: column {text_column!r} has no non-empty text")
    if len(rows) > limit:
        rows = random.Random(seed).sample(rows, limit)
    return rows


# --------------------------------------------------------------------------- running


def wait_ready(url: str, token: str | None = None, timeout: float = 30.0) -> None:
    """Block until ``url``/readyz answers 200, or raise a user-facing error."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            request = urllib.request.Request(f"{url}/readyz")
            if token:
                request.add_header("Authorization", f"Bearer {token}")
            with urllib.request.urlopen(request, timeout=5) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(getattr(exc, "reason", exc))
        time.sleep(0.2)
    raise NaspruneError(f"{url} is not ready after {timeout:.0f} s ({last})")


#: Statuses that no amount of load explains: the load test would only repeat them.
_CONFIG_ERRORS = {401: "missing or wrong bearer token (--token / NASPRUNE_TOKEN)",
                  403: "forbidden", 404: "no /v1/predict here (is it a nasprune server?)",
                  405: "no POST /v1/predict here (is it a nasprune server?)",
                  415: "the server does not take JSON", 422: "the server refused the input"}


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
        if exc.code in _CONFIG_ERRORS:
            raise NaspruneError(f"target {name!r} answered HTTP {exc.code} to a test request: "
                                f"{_CONFIG_ERRORS[exc.code]}") from None
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


def summarise_record(name: str, record: Path) -> list[StepStats]:
    """Cut the per-request record into steps (by request start time) and summarise each."""
    import numpy as np

    marks: list[tuple[int, int, float]] = []  # step, users, start time
    stop = None
    requests: list[tuple[float, float, bool, str]] = []
    with open(record, newline="") as handle:
        for row in csv.DictReader(handle):
            if row["kind"] == "step":
                marks.append((int(row["step"]), int(row["users"]), float(row["time"])))
            elif row["kind"] == "stop":
                stop = float(row["time"])
            elif row["kind"] == "req":
                requests.append((float(row["time"]), float(row["response_ms"]),
                                 row["ok"] == "1", row.get("status") or "0"))
    if not marks:
        raise NaspruneError(f"the load test of {name!r} recorded no steps ({record})")
    end = stop if stop is not None else max((t + ms / 1000 for t, ms, _, _ in requests),
                                            default=marks[-1][2])
    starts = [m[2] for m in marks]
    per_step: list[list[tuple[float, bool, str]]] = [[] for _ in marks]
    for started, ms, ok, status in requests:
        index = max(0, np.searchsorted(starts, started, side="right") - 1)
        per_step[index].append((ms, ok, status))
    stats = []
    for i, (step, users, begin) in enumerate(marks):
        finish = starts[i + 1] if i + 1 < len(marks) else end
        duration = max(finish - begin, 1e-9)
        times = np.array([ms for ms, _, _ in per_step[i]], dtype=float)
        failed = Counter(status for _, ok, status in per_step[i] if not ok)
        failures = sum(failed.values())
        n = len(times)

        def pct(q: float, times=times) -> float:
            return float(np.percentile(times, q)) if len(times) else math.nan

        stats.append(StepStats(
            target=name, step=step, users=users, requests=n, failures=failures,
            failure_rate=failures / n if n else 0.0, duration_s=round(duration, 3),
            rps=n / duration, ok_rps=(n - failures) / duration,
            p50_ms=pct(50), p95_ms=pct(95), p99_ms=pct(99),
            mean_ms=float(times.mean()) if n else math.nan,
            max_ms=float(times.max()) if n else math.nan,
            failure_statuses={k: failed[k] for k in sorted(failed, key=failed.__getitem__,
                                                           reverse=True)}))
    return stats


def saturation(steps: list[StepStats], slo_ms: float) -> StepStats | None:
    """The first step whose p95 exceeds the SLO or whose failure rate exceeds 1 %."""
    for step in steps:
        if step.requests == 0 or step.p95_ms > slo_ms or step.failure_rate > MAX_FAILURE_RATE:
            return step
    return None


def describe_statuses(statuses: dict[str, int]) -> str:
    """``{"401": 57, "0": 2}`` -> ``"HTTP 401 x57, no response x2"``."""
    parts = [("no response" if code in ("", "0") else f"HTTP {code}") + f" x{count}"
             for code, count in statuses.items()]
    return ", ".join(parts) or "no status recorded"


def failure_report(results: list[TargetResult], max_failure_rate: float) -> list[str]:
    """One line per target with a step failing more than ``max_failure_rate``; [] if none."""
    lines = []
    for result in results:
        bad = [s for s in result.steps if s.requests and s.failure_rate > max_failure_rate]
        if not bad:
            continue
        worst = max(bad, key=lambda s: s.failure_rate)
        hint = ""
        if "401" in worst.failure_statuses:
            hint = f" ({_CONFIG_ERRORS[401]})"
        lines.append(f"{result.name}: {worst.failure_rate:.0%} of {worst.requests} requests "
                     f"failed at {worst.users} users ({describe_statuses(worst.failure_statuses)})"
                     f"{hint}, above --max-failure-rate {max_failure_rate:.0%}")
    return lines


# --------------------------------------------------------------------------- outputs


def write_csv(results: list[TargetResult], path: Path) -> None:
    names = list(StepStats.__dataclass_fields__)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=names)
        writer.writeheader()
        for result in results:
            for step in result.steps:
                row = asdict(step)
                row["failure_statuses"] = ";".join(f"{k}:{v}"
                                                   for k, v in step.failure_statuses.items())
                writer.writerow({k: round(v, 3) if isinstance(v, float) else v
                                 for k, v in row.items()})


def plot(results: list[TargetResult], slo_ms: float, path: Path) -> None:
    """Latency (p50 solid, p95 dashed) and throughput vs. users, all targets on one figure."""
    import matplotlib.pyplot as plt

    fig = figure(results, slo_ms)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def figure(results: list[TargetResult], slo_ms: float):
    """The figure ``plot`` saves (integer user ticks; the saturation caption only when a
    target saturated)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (lat, thr) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, result in enumerate(results):
        color = f"C{i}"
        users = [s.users for s in result.steps]
        lat.plot(users, [s.p50_ms for s in result.steps], "o-", color=color,
                 label=f"{result.name} p50")
        lat.plot(users, [s.p95_ms for s in result.steps], "s--", color=color,
                 label=f"{result.name} p95")
        thr.plot(users, [s.ok_rps for s in result.steps], "o-", color=color, label=result.name)
        if result.saturation_users is not None:
            for axis in (lat, thr):
                axis.axvline(result.saturation_users, color=color, linestyle=":", alpha=0.7)
    lat.axhline(slo_ms, color="grey", linestyle="-.", linewidth=1, label=f"SLO {slo_ms:g} ms")
    lat.set(xlabel="concurrent users", ylabel="response time (ms)",
            title="Response time vs. users")
    thr.set(xlabel="concurrent users", ylabel="successful requests / s",
            title="Throughput vs. users")
    for axis in (lat, thr):
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))  # users are whole numbers
    lat.set_yscale("log")
    if any(r.saturation_users is not None for r in results):
        fig.suptitle("dotted lines: saturation point (p95 > SLO or > 1 % failures)",
                     fontsize=9)
    fig.tight_layout()
    return fig


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
